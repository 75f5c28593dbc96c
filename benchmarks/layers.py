"""Benchmark normlab's layers against torch.nn, torch.compile and the memory-copy limit (CPU).

Usage::

    python benchmarks/layers.py                 # full shapes, all anchors
    python benchmarks/layers.py --quick --no-compile --json out.json

Same measurement as ``normlab bench`` (see normlab/bench.py for the method).
"""

import sys

from normlab.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
