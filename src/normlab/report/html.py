"""One self-contained ``index.html`` (inline CSS, images embedded) and ``results.json``."""

from __future__ import annotations

import base64
import html
import json
import math
import os
import platform
import time

from ..experiments.spec import VERDICTS
from ..experiments.verdicts import key_phrase

__all__ = ["render"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#1d1d1f;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{border-bottom:1px solid #e4e4e4;padding:.3rem .5rem;
text-align:left;vertical-align:top}th{background:#f6f6f6}
.v{font-weight:600;padding:.1rem .45rem;border-radius:.3rem;white-space:nowrap}
.supported{background:#dff3e3;color:#17612a}.not-supported{background:#fbe1e1;color:#8a1c1c}
.inconclusive{background:#f1f1f1;color:#555}.below-the-bar{background:#fdf0d5;color:#7a4b00}
.meta{color:#666;font-size:.88rem}img{max-width:100%;height:auto;display:block;margin:.6rem 0}
table.tests{font-size:.82rem;margin:.4rem 0}
pre{background:#f7f7f7;padding:.6rem;overflow-x:auto;font-size:.8rem}
.quick{background:#fff6d6;border:1px solid #e8d48a;padding:.5rem .7rem;border-radius:.3rem}
.flip{color:#8a1c1c;font-weight:600}td.paper{font-size:.8rem;color:#444}
"""


def _esc(x) -> str:
    return html.escape(str(x))


def _badge(status: str) -> str:
    return f'<span class="v {status.replace(" ", "-")}">{_esc(status)}</span>'


def _img(path: str) -> str:
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    alt = os.path.basename(path)
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _interval(lo, hi) -> str:
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "no interval (too few runs)"
    return "exact" if lo == hi else f"[{lo:.3g}, {hi:.3g}]"


def _tests_table(tests: list[dict]) -> str:
    """The intervals a verdict was computed from: quantity, estimate, CI, level, n, method, outcome."""
    if not tests:
        return ""
    rows = "".join(
        f"<tr><td>{_esc(t['what'])}</td><td>{float(t['estimate']):.3g}</td><td>{_esc(_interval(t['lo'], t['hi']))}"
        f"</td><td>{float(t['level']):.0%}</td><td>{_esc('+'.join(str(k) for k in t['n']))}</td>"
        f"<td>{_esc(t['method'])}</td><td>{_badge(t['status']) if t.get('status') else ''}</td></tr>"
        for t in tests)
    return ("<table class='tests'><thead><tr><th>judged quantity</th><th>estimate</th><th>confidence interval</th>"
            "<th>level</th><th>n</th><th>method</th><th>outcome</th></tr></thead><tbody>" + rows + "</tbody></table>")


NO_FIGURE = "the source gives no figure"


def full_mode_beside(results: list[dict], out: str) -> dict[str, dict]:
    """Claim -> its full-mode judgement, for the claims of a quick report whose full-mode runs are all in ``out``."""
    from ..experiments import get
    from ..experiments.suite import judge

    found = {}
    for r in results:
        try:
            exp = get(r["claim"])
        except KeyError:
            continue
        full = judge(exp, "full", out, context=r.get("context") or None)
        if full["runs_expected"] and full["runs_finished"] == full["runs_expected"]:
            found[r["claim"]] = full
    return found


def _versus(r: dict) -> str:
    """The source's figure beside ours: the claim's own line, else its paper text and our key phrase."""
    v = r["verdict"]
    if v.get("versus_paper"):
        return v["versus_paper"]
    return f"paper: {r['paper'] or NO_FIGURE}; here: {key_phrase(v)}"


def _compute_line(results: list[dict], wall_time_s: float | None) -> str:
    runs = sum(r["runs_finished"] for r in results)
    compute = sum(r["wall_time_s"] for r in results)
    took = f"; this invocation took {wall_time_s / 60:.1f} min" if wall_time_s is not None else ""
    return (f"{runs} runs, {compute / 60:.1f} min of compute (the sum of their recorded run times, whenever they "
            f"ran){took}")


def render(results: list[dict], out: str, *, mode: str, wall_time_s: float | None = None) -> str:
    """Write ``<out>/index.html`` and ``<out>/results.json``; return the HTML path.

    A quick report says so at the top and beside each claim whose quick setup differs; where ``out`` also holds
    a claim's full-mode records, its full-mode verdict is shown beside the quick one, and a flip is marked.
    """
    os.makedirs(out, exist_ok=True)
    full = full_mode_beside(results, out) if mode == "quick" else {}
    import normlab
    import torch

    env = {"normlab": normlab.__version__, "torch": torch.__version__, "python": platform.python_version(),
           "machine": platform.machine(), "cpus": os.cpu_count(), "generated": time.strftime("%Y-%m-%d %H:%M:%S")}
    counts = {s: sum(r["verdict"]["status"] == s for r in results) for s in VERDICTS}
    def beside(r: dict) -> str:
        f = full.get(r["claim"])
        if f is None:
            return ""
        flip = f["verdict"]["status"] != r["verdict"]["status"]
        return (f"<br><span class='meta'>full:</span> {_badge(f['verdict']['status'])}"
                + (" <span class='flip'>flips</span>" if flip else ""))

    rows = "".join(
        f"<tr><td><a href='#{_esc(r['claim'])}'>{_esc(r['claim'])}</a></td><td>{_esc(r['title'])}</td>"
        f"<td>{_badge(r['verdict']['status'])}{beside(r)}</td><td>{_esc(key_phrase(r['verdict']))}</td>"
        f"<td class='paper'>{_esc(r['paper'] or NO_FIGURE)}</td>"
        f"<td>{_esc(r['mode'])}</td><td>{r['seeds']}</td><td>{r['runs_finished']}/{r['runs_expected']}</td></tr>"
        for r in results)
    sections = []
    for r in results:
        v = r["verdict"]
        images = "".join(_img(p) for p in r["plots"] if os.path.exists(p))
        if r.get("plot_error"):
            images += f"<p class='meta'>The plot could not be drawn:</p><pre>{_esc(r['plot_error'])}</pre>"
        paper = f"<p><b>Paper vs here:</b> {_esc(_versus(r))}</p>"
        if r.get("quick_differs"):
            paper = f"<p class='quick'><b>Quick setup.</b> {_esc(r['quick_differs'])}</p>" + paper
        f = full.get(r["claim"])
        if f is not None:
            flip = f["verdict"]["status"] != v["status"]
            paper += (f"<p><b>Full mode</b> (its records are here too): {_badge(f['verdict']['status'])}"
                      f"{' <span class=flip>a flip: the quick verdict differs</span>' if flip else ''} "
                      f"{_esc(f['verdict']['summary'])}</p>")
        numbers = json.dumps(v["numbers"], indent=1, default=str)
        sections.append(
            f"<section id='{_esc(r['claim'])}'><h2>{_esc(r['claim'])} &mdash; {_esc(r['title'])}</h2>"
            f"<p><b>Claim.</b> {_esc(r['statement'])}</p><p><b>Setup.</b> {_esc(r['setup'])} "
            f"<span class='meta'>({_esc(r['mode'])} mode, {r['seeds']} seeds, {r['runs_finished']} runs, "
            f"{r['wall_time_s']:.0f} s of compute)</span></p>{images}"
            f"<p><b>Verdict:</b> {_badge(v['status'])} {_esc(v['summary'])}</p>"
            f"<p class='meta'><b>Key number.</b> {_esc(v['key_number'])}</p>"
            f"{_tests_table(v.get('tests', []))}"
            f"<p class='meta'><b>Rule.</b> {_esc(v['rule'])}</p>{paper}"
            f"<details><summary>numbers</summary><pre>{_esc(numbers)}</pre></details></section>")
    banner = ("<p class='quick'><b>Quick mode.</b> Small models, few steps, fewer seeds: these verdicts are about "
              "the quick setups, and each claim whose quick setup is weaker or different says how. Full mode (drop "
              "--quick) is the reference.</p>") if mode == "quick" else ""
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>normlab evidence report</title>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{CSS}</style></head><body>"
            f"<h1>normlab evidence report{' (quick mode)' if mode == 'quick' else ''}</h1>{banner}"
            f"<p class='meta'>Mode: <b>{_esc(mode)}</b>; {_esc(_compute_line(results, wall_time_s))}. normlab {_esc(env['normlab'])}, torch "
            f"{_esc(env['torch'])}, Python {_esc(env['python'])}, {_esc(env['cpus'])} CPUs ({_esc(env['machine'])}),"
            f" generated {_esc(env['generated'])}. Each claim's verdict is computed from its runs' records by the "
            f"rule shown, on confidence intervals (Welch's t for independent groups, t on the per-seed "
            f"differences where runs share seed and data): supported when the whole interval lies beyond the "
            f"claimed minimum effect (or, for a claim of equivalence, inside the tolerance), not supported when "
            f"it lies wholly on the other side, below the bar when it shows an effect in the claimed direction "
            f"smaller than the claimed minimum, inconclusive when it straddles; a claim refuted by one of many "
            f"parts is corrected for their number (Holm). A claim that does not hold at "
            f"this small scale is reported as such.</p>"
            f"<p>{', '.join(f'{n} {s}' for s, n in counts.items() if n or s != 'below the bar')}.</p>"
            f"<table><thead><tr><th>claim</th><th>title</th><th>verdict</th><th>key number</th><th>paper</th>"
            f"<th>mode</th>"
            f"<th>seeds</th><th>runs</th></tr></thead><tbody>{rows}</tbody></table>"
            + "".join(sections) + "</body></html>")
    path = os.path.join(out, "index.html")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, path)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"mode": mode, "env": env, "wall_time_s": wall_time_s,
                   "compute_s": sum(r["wall_time_s"] for r in results), "claims": results,
                   "full_mode_beside": full}, f, indent=1, default=str)
    return path
