"""torch vs normlab per bench case, timed in CPU time of the one calling thread (torch.set_num_threads(1)), interleaved.

    python benchmarks/kernels_cpu_time.py OUT.json as-is|steady [ROUNDS]

On a machine shared by many processes the wall time of a call is mostly waiting for a core (medians of
~30 ms, the scheduler's slices); the calling thread's CPU time (user + system: page faults included) is
what the call itself costs.  "steady": freed memory kept in the process, as `normlab bench` does; "as-is":
the allocator as a user's process has it (large outputs on fresh pages, with their faults).  Each row:
medians over ROUNDS (default 15) rounds of normlab's layer, torch's (and for the LayerNorm cases
normlab's RMSNorm), in a seeded shuffled order.  docs/kernels.md has the results and the method.
"""
import json
import random
import statistics
import sys
import time

import torch

import normlab as nl
from normlab import bench as B

torch.set_num_threads(1)
steady = sys.argv[2] == "steady" and B._steady_allocator()
nl.kernels.cpp_available()
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 15
warm = 3
rows = []


def cpu(f):
    t0 = time.thread_time_ns(); f(); return (time.thread_time_ns() - t0) / 1e6


for case in B.CASES:
    for dname, dtype in B.DTYPES.items():
        gen = torch.Generator().manual_seed(0)
        xs = [torch.randn(case.shape, generator=gen).to(dtype) for _ in range(case.inputs)]
        theirs = case.torch_layer(case.shape).to(dtype).train(case.train)
        ours = case.normlab_layer(case.shape).to(dtype).train(case.train)
        for backward in (False, True):
            fns = {"torch": B._runner(theirs, xs, backward), "normlab": B._runner(ours, xs, backward)}
            if case.name in ("LayerNorm", "LayerNorm-wide"):  # normlab's RMSNorm against torch's LayerNorm
                fns["normlab_rms"] = B._runner(nl.RMSNorm(case.shape[-1]).to(dtype), xs, backward)
            for _ in range(warm):
                for f in fns.values():
                    f()
            ts = {k: [] for k in fns}
            rng = random.Random(0)
            for _ in range(rounds):
                for k in rng.sample(list(fns), len(fns)):
                    ts[k].append(cpu(fns[k]))
            med = {k: statistics.median(v) for k, v in ts.items()}
            rows.append({"case": case.name, "shape": list(case.shape), "dtype": dname,
                         "passes": "fwd+bwd" if backward else "fwd", **{k + "_ms": v for k, v in med.items()},
                         "vs_torch": med["normlab"] / med["torch"],
                         **({"rms_vs_torch_ln": med["normlab_rms"] / med["torch"]} if "normlab_rms" in med else {})})
            print(f"{case.name:16s} {dname:8s} {rows[-1]['passes']:7s} torch {med['torch']:8.3f} normlab "
                  f"{med['normlab']:8.3f}  {rows[-1]['vs_torch']:.2f}"
                  + (f"  rms/torchLN {rows[-1]['rms_vs_torch_ln']:.2f}" if "normlab_rms" in med else ""), flush=True)
json.dump({"steady": steady, "normlab": nl.__file__, "rows": rows}, open(sys.argv[1], "w"), indent=1)
