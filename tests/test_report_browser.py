"""The report loads in a real browser (headless Chromium): no console errors, every image decodes.

Chromium comes from Debian's ``chromium`` package, which ``.ci/run`` installs; where it
is missing the test is skipped, except under CI, where it fails.
"""

from __future__ import annotations

import re

from browser import dump_dom, require_chromium

from normlab.experiments import Verdict
from normlab.report import render

HARNESS = """<!doctype html><html><head><meta charset="utf-8"><title>harness</title></head><body>
<iframe id="f" src="index.html" style="width:1200px;height:900px"></iframe>
<script>
const timer = setInterval(() => {
  const d = document.getElementById("f").contentDocument;
  if (!d || d.readyState !== "complete" || !d.querySelector("h1")) return;
  const imgs = Array.from(d.images);
  if (!imgs.every(i => i.complete)) return;  // a broken image is complete too, with naturalWidth 0
  clearInterval(timer);
  const ok = imgs.filter(i => i.naturalWidth > 0 && i.naturalHeight > 0).length;
  const out = document.createElement("pre");
  out.id = "result";
  out.textContent = "RESULT images=" + imgs.length + " decoded=" + ok +
                    " sections=" + d.querySelectorAll("section").length;
  document.body.appendChild(out);
}, 50);
</script></body></html>"""


def _report(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pngs = []
    for i in range(2):
        fig, ax = plt.subplots()
        ax.plot([1, 3, 2][: i + 2])
        pngs.append(str(tmp_path / f"p{i}.png"))
        fig.savefig(pngs[-1])
        plt.close(fig)
    results = [{"claim": f"C{18 + i}", "title": f"claim {i}", "statement": "s", "setup": "x", "paper": "",
                "mode": "quick", "runs_finished": 2, "runs_expected": 2, "seeds": 2, "wall_time_s": 1.0,
                "plots": [pngs[i]], "plot_error": None,
                "verdict": Verdict("supported", "sum", "rule", {}, "k").to_dict()} for i in range(2)]
    out = tmp_path / "report"
    render(results, str(out), mode="quick", wall_time_s=3.0)
    (out / "harness.html").write_text(HARNESS, encoding="utf-8")
    return out


def test_report_renders_in_headless_chromium(tmp_path):
    require_chromium()
    out = _report(tmp_path)
    proc = dump_dom(out, "harness.html", tmp_path / "profile", stop="--virtual-time-budget=15000", timeout=120)
    m = re.search(r"RESULT images=(\d+) decoded=(\d+) sections=(\d+)", proc.stdout)
    assert m, f"the harness did not report (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    images, decoded, sections = map(int, m.groups())
    assert images == 2 and decoded == 2 and sections == 2
    console_errors = [line for line in proc.stderr.splitlines()
                      if "CONSOLE" in line and ("index.html" in line or "Uncaught" in line)]
    assert not console_errors, console_errors
