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


def render(results: list[dict], out: str, *, mode: str, wall_time_s: float | None = None) -> str:
    """Write ``<out>/index.html`` and ``<out>/results.json``; return the HTML path."""
    os.makedirs(out, exist_ok=True)
    import normlab
    import torch

    env = {"normlab": normlab.__version__, "torch": torch.__version__, "python": platform.python_version(),
           "machine": platform.machine(), "cpus": os.cpu_count(), "generated": time.strftime("%Y-%m-%d %H:%M:%S")}
    counts = {s: sum(r["verdict"]["status"] == s for r in results) for s in VERDICTS}
    rows = "".join(
        f"<tr><td><a href='#{_esc(r['claim'])}'>{_esc(r['claim'])}</a></td><td>{_esc(r['title'])}</td>"
        f"<td>{_badge(r['verdict']['status'])}</td><td>{_esc(r['verdict']['key_number'])}</td>"
        f"<td>{_esc(r['mode'])}</td><td>{r['seeds']}</td><td>{r['runs_finished']}/{r['runs_expected']}</td></tr>"
        for r in results)
    sections = []
    for r in results:
        v = r["verdict"]
        images = "".join(_img(p) for p in r["plots"] if os.path.exists(p))
        if r.get("plot_error"):
            images += f"<p class='meta'>The plot could not be drawn:</p><pre>{_esc(r['plot_error'])}</pre>"
        paper = f"<p><b>Compare with:</b> {_esc(r['paper'])}</p>" if r["paper"] else ""
        if v.get("versus_paper"):
            paper += f"<p><b>Paper vs here:</b> {_esc(v['versus_paper'])}</p>"
        numbers = json.dumps(v["numbers"], indent=1, default=str)
        sections.append(
            f"<section id='{_esc(r['claim'])}'><h2>{_esc(r['claim'])} &mdash; {_esc(r['title'])}</h2>"
            f"<p><b>Claim.</b> {_esc(r['statement'])}</p><p><b>Setup.</b> {_esc(r['setup'])} "
            f"<span class='meta'>({_esc(r['mode'])} mode, {r['seeds']} seeds, {r['runs_finished']} runs, "
            f"{r['wall_time_s']:.0f} s of compute)</span></p>{images}"
            f"<p><b>Verdict:</b> {_badge(v['status'])} {_esc(v['summary'])}</p>"
            f"{_tests_table(v.get('tests', []))}"
            f"<p class='meta'><b>Rule.</b> {_esc(v['rule'])}</p>{paper}"
            f"<details><summary>numbers</summary><pre>{_esc(numbers)}</pre></details></section>")
    took = f", {wall_time_s / 60:.1f} min" if wall_time_s is not None else ""
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>normlab evidence report</title>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{CSS}</style></head><body>"
            f"<h1>normlab evidence report</h1>"
            f"<p class='meta'>Mode: <b>{_esc(mode)}</b>{_esc(took)}. normlab {_esc(env['normlab'])}, torch "
            f"{_esc(env['torch'])}, Python {_esc(env['python'])}, {_esc(env['cpus'])} CPUs ({_esc(env['machine'])}),"
            f" generated {_esc(env['generated'])}. Each claim's verdict is computed from its runs' records by the "
            f"rule shown, on confidence intervals (Welch's t for independent groups, t on the per-seed "
            f"differences where runs share seed and data): supported when the whole interval lies beyond the "
            f"claimed minimum effect (or, for a claim of equivalence, inside the tolerance), not supported when "
            f"it lies wholly on the other side, inconclusive when it straddles. A claim that does not hold at "
            f"this small scale is reported as such.</p>"
            f"<p>{', '.join(f'{n} {s}' for s, n in counts.items() if n or s != 'below the bar')}.</p>"
            f"<table><thead><tr><th>claim</th><th>title</th><th>verdict</th><th>key number</th><th>mode</th>"
            f"<th>seeds</th><th>runs</th></tr></thead><tbody>{rows}</tbody></table>"
            + "".join(sections) + "</body></html>")
    path = os.path.join(out, "index.html")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, path)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"mode": mode, "env": env, "wall_time_s": wall_time_s, "claims": results}, f, indent=1,
                  default=str)
    return path
