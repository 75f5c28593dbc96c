"""Headless Chromium for the browser tests: serve a folder on the loopback and dump a page's DOM."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium() -> str:
    """The browser's path; skip without it, except under CI (``.ci/run`` installs Debian's package)."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return CHROMIUM


def dump_dom(directory: Path, page: str, profile: Path, *, stop: str, timeout: float
             ) -> subprocess.CompletedProcess:
    """Serve ``directory`` on 127.0.0.1, open ``page`` in headless Chromium and return its run (DOM on stdout).

    ``stop`` says when Chromium dumps the DOM (``--virtual-time-budget=MS`` or ``--timeout=MS``);
    the console goes to stderr.
    """
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{page}"
        return subprocess.run(
            [require_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-quic", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", stop,
             "--dump-dom", url],
            capture_output=True, text=True, timeout=timeout)
    finally:
        server.shutdown()
