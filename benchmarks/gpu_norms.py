"""GPU bench of normlab's triton kernels against torch, torch.compile, Liger-Kernel and x.clone().

Usage::

    python benchmarks/gpu_norms.py                 # every case and width, bf16, fwd and bwd (needs CUDA)
    python benchmarks/gpu_norms.py --static        # no GPU: registers and spills compiled for sm_90
    python benchmarks/gpu_norms.py --help

The same as ``normlab bench --device cuda`` with every option; the method is in normlab/bench_gpu.py.
"""

import sys

from normlab.bench_gpu import main

if __name__ == "__main__":
    sys.exit(main())
