"""A fake experiment (claim C97) whose runs mark their start and sleep; for the interrupt tests.

Loaded through NORMLAB_EXPERIMENTS in a subprocess only (never in the test process, where the
claim-case test would see an extra claim).  ``FAKE_SLOW_SLEEP`` sets each run's sleep in seconds,
``FAKE_SLOW_MARKS`` a directory where each run writes a file when it starts.
"""

import os
import time

from normlab.experiments import Verdict, experiment, register


def slow_run(config, seed):
    marks = os.environ.get("FAKE_SLOW_MARKS")
    if marks:
        with open(os.path.join(marks, f"{config['name']}-{seed}-{os.getpid()}"), "w") as f:
            f.write("started")
    time.sleep(float(os.environ.get("FAKE_SLOW_SLEEP", "1")))
    return {"value": float(seed)}


register(experiment(
    claim="C97", title="slow fake", statement="runs take a while", setup="sleeps",
    grid=lambda mode: [(n, {"name": n}) for n in ("a", "b", "c")],
    seeds={"quick": 3, "full": 3}, run=slow_run,
    verdict=lambda records: Verdict("inconclusive", f"{len(records)} records", "none"),
))
