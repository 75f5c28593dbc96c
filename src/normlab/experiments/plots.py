"""Plot helpers shared by the experiment modules: matplotlib without a display, one saved figure per call."""

from __future__ import annotations

from .verdicts import by_name, mean


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (imported lazily: the registry must import fast)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_fig(fig, path: str) -> str:
    """Lay out, write at 110 dpi, close; return the path."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def seed_lines(ax, records, xy, **style):
    """One line per record (seed), one colour per run name, labelled once: ``xy(record) -> (xs, ys)``."""
    for i, (name, recs) in enumerate(sorted(by_name(records).items())):
        for j, r in enumerate(recs):
            xs, ys = xy(r)
            ax.plot(xs, ys, color=f"C{i}", label=name if j == 0 else None, **style)


def curves_plot(records, prefix, title, ylabel="training loss (nats/char)"):
    """Training-loss curve of every record, one colour per run name."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    seed_lines(ax, records, lambda r: zip(*r["result"]["curve"]) if r["result"]["curve"] else ((), ()),
               alpha=0.8, lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title + " (one line per seed)")
    ax.legend(fontsize=8)
    return save_fig(fig, prefix + "-curves.png")


def layer_profile_plot(groups: dict[str, list[list[float]]], prefix: str, title: str, ylabel: str,
                        xlabel: str = "block (input side -> output side)", log: bool = True):
    """One line per group: the mean over seeds per layer, with the min-max band across seeds."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, (name, runs) in enumerate(sorted(groups.items())):
        n = min(len(r) for r in runs)
        xs = list(range(n))
        lo = [min(r[k] for r in runs) for k in xs]
        hi = [max(r[k] for r in runs) for k in xs]
        mid = [mean(r[k] for r in runs) for k in xs]
        ax.plot(xs, mid, marker="o", color=f"C{i}", label=name)
        ax.fill_between(xs, lo, hi, color=f"C{i}", alpha=0.2)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_fig(fig, prefix + "-layers.png")
