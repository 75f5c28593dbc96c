"""A fast fake experiment (claim C99) for testing the engine; loaded through NORMLAB_EXPERIMENTS."""

import os
import time

from normlab.experiments import Verdict, compare, experiment, register


def fake_run(config, seed):
    time.sleep(config["sleep"])
    if config.get("fail_seed") == seed:
        raise ZeroDivisionError("planned failure")
    return {"value": config["base"] + 0.01 * seed, "pid": os.getpid()}


def fake_verdict(records):
    a = [r["result"]["value"] for r in records if r["name"] == "a"]
    b = [r["result"]["value"] for r in records if r["name"] == "b"]
    return compare(a, b, expect="greater", what="value", label_a="a", label_b="b")


register(experiment(
    claim="C99", title="fake", statement="a is greater than b", setup="sleeps",
    grid=lambda mode: [("a", {"base": 2.0, "sleep": 0.6}), ("b", {"base": 1.0, "sleep": 0.6})],
    seeds={"quick": 3, "full": 4}, run=fake_run, verdict=fake_verdict,
))
