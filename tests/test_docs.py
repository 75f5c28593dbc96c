"""The documentation site builds with warnings as errors, and its pages render in headless Chromium.

The build is the documented command (``mkdocs build --strict``, the ``docs`` extra; the lock
installs it).  A harness page then loads the home page in an iframe, reads the navigation, follows
every link of it and reports what each page shows: its heading, and on the API pages the objects
that mkdocstrings generated from the docstrings.  (No ``--virtual-time-budget`` here: with the
site's pages in an iframe, Chromium's virtual time sometimes never reached the budget and the run
hung; the real-time ``--timeout`` is only a bound.)  Chromium comes from Debian's ``chromium``
package, which ``.ci/run`` installs; without it (or without mkdocs) the test is skipped, except
under CI, where it fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from browser import dump_dom, require_chromium

ROOT = Path(__file__).parents[1]

HARNESS = """<!doctype html><html><head><meta charset="utf-8"><title>harness</title></head><body>
<iframe id="f" style="width:1280px;height:900px"></iframe>
<script>
const frame = document.getElementById("f");
function load(url) {
  return new Promise(resolve => {
    frame.onload = () => resolve(frame.contentDocument);
    frame.src = url;
  });
}
function describe(doc) {
  return {
    url: doc.location.pathname,
    h1: (doc.querySelector("article h1") || {}).textContent || null,
    objects: Array.from(doc.querySelectorAll(".doc-object > .doc-heading, h2.doc-heading, h3.doc-heading"))
      .map(h => h.textContent.trim().split(/\\s+/)[0]),
    signatures: doc.querySelectorAll(".doc-signature").length,
    tables: doc.querySelectorAll("article table").length,
    broken_images: Array.from(doc.images).filter(i => i.complete && i.naturalWidth === 0).length,
  };
}
(async () => {
  const home = await load("index.html");
  const links = Array.from(home.querySelectorAll("nav.md-nav--primary a.md-nav__link[href]"))
    .map(a => ({title: a.textContent.trim(), href: new URL(a.getAttribute("href"), home.baseURI).href}))
    .filter(l => !l.href.includes("#"));
  const pages = {};
  for (const link of links) {
    if (pages[link.href]) continue;
    pages[link.href] = Object.assign({title: link.title}, describe(await load(link.href)));
  }
  const out = document.createElement("pre");
  out.id = "result";
  out.textContent = "RESULT " + JSON.stringify({nav: links.map(l => l.title), pages: Object.values(pages)});
  document.body.appendChild(out);
})();
</script></body></html>"""


def _nav_titles(nav) -> list[str]:
    titles = []
    for entry in nav:
        for title, value in entry.items():
            titles += _nav_titles(value) if isinstance(value, list) else [title]
    return titles


def _mkdocs_config() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))


def _require(found: bool, what: str) -> None:
    if not found:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is not installed; .ci/run installs it")
        pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    _require(importlib_find("mkdocs") and importlib_find("mkdocstrings_handlers.python"),
             "the docs extra (pip install 'normlab[docs]')")
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "WARNING" not in log, log[-4000:]
    return out


def importlib_find(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def test_every_nav_page_exists_and_every_page_is_in_the_nav():
    config = _mkdocs_config()
    files = []
    for entry in config["nav"]:
        for value in entry.values():
            stack = [value]
            while stack:
                item = stack.pop()
                if isinstance(item, str):
                    files.append(item)
                else:
                    stack += [v for e in item for v in e.values()]
    assert all((ROOT / "docs" / f).is_file() for f in files), [f for f in files if not (ROOT / "docs" / f).is_file()]
    pages = sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md"))
    assert sorted(files) == pages, "a docs page outside the nav, or a nav entry twice"


def test_the_site_renders_in_headless_chromium(site, tmp_path):
    require_chromium()
    (site / "harness.html").write_text(HARNESS, encoding="utf-8")
    # --timeout is a hard stop; the DOM is dumped once the harness is done
    proc = dump_dom(site, "harness.html", tmp_path / "profile", stop="--timeout=120000", timeout=240)
    m = re.search(r"RESULT (\{.*\})", proc.stdout)
    assert m, f"the harness did not report (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    result = json.loads(m.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))

    # navigation: every page of mkdocs.yml's nav is linked from the home page, and each one loads
    titles = _nav_titles(_mkdocs_config()["nav"])
    assert set(titles) <= set(result["nav"]), sorted(set(titles) - set(result["nav"]))
    pages = {p["title"]: p for p in result["pages"]}
    for title in titles:
        page = pages[title]
        assert page["h1"], f"{title}: no heading rendered ({page['url']})"
        assert page["broken_images"] == 0, title

    # API pages: objects generated from the docstrings, with signatures
    expected = {"normlab.layers": ["LayerNorm", "BatchNorm", "GroupNorm", "RMSNorm", "Norm"],
                "normlab.tools": ["convert", "to_torch", "fold_batchnorm", "freeze_batchnorm"],
                "normlab.functional": ["normalize"], "normlab.kernels": ["implementation", "use", "cpp_available"],
                "normlab.models": ["GPT", "ConvNet"], "normlab.train": ["train", "TrainConfig"],
                "normlab.doctor": ["doctor"], "normlab.experiments": ["experiment", "register", "compare"]}
    for title, names in expected.items():
        page = pages[title]
        assert page["signatures"] > 0, f"{title}: no signatures rendered"
        missing = [n for n in names if n not in page["objects"]]
        assert not missing, f"{title} lacks {missing}; it shows {page['objects'][:40]}"
    assert pages["The layers"]["tables"] >= 1  # the family table
    console_errors = [line for line in proc.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    assert not console_errors, console_errors
