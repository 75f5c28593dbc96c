"""Triton kernels for LayerNorm and RMSNorm over the last dim, with the fused residual add (GPU, opt-in).

Rows of ``N`` elements, any ``N`` from 1 up: a row that fits in one block of at most
:data:`FWD_BLOCK_CAP` (forward) / :data:`BWD_BLOCK_CAP` (backward) elements is held in registers
(each element loaded and stored once); a wider row is walked in column blocks (the forward and the
backward read it twice), so no width falls outside the kernels.

The statistics are float32 for float32, bfloat16 and float16 inputs, computed as the reference in
:mod:`normlab.functional` computes them (corrected two-pass: ``shift = mean(x)``,
``corr = mean(x - shift)``, ``var = mean((x - shift)^2) - corr^2``), so rows with a large mean and a
small spread (mean 1e4, std 1e-2) keep their digits; a wide row's blocks are merged by Chan, Golub &
LeVeque's pairwise update, relative to the row's first element (``shift``).  The forward saves ``(shift, corr, rstd)`` per
row (``rstd`` alone for RMSNorm); the backward recomputes ``xhat`` from them.

The backward computes ``dx`` per row and the gradients of the affine parameters as per-program
partial sums in a ``(programs, N)`` float32 buffer, summed afterwards by ``torch.sum``: no atomics,
so the gradients are the same bits on every run with the same device and shapes.

Only triton's builtins are called: row sums are ``tl.reduce`` with triton's own sum combiner and
zeros are ``tl.full``, because ``tl.sum`` and ``tl.zeros`` are jitted helpers that triton's
interpreter cannot call when triton was imported before ``TRITON_INTERPRET=1`` was set (as in a
test session); the interpreter sums with numpy when it sees that combiner.

The kernels are made (``triton.jit``) at first use, so ``TRITON_INTERPRET=1`` set before that
runs them in triton's interpreter on CPU tensors (how the tests run them without a GPU).  This
module imports triton; nothing imports it before a call asks for the triton path (see
:mod:`normlab.kernels.triton_ops`).

The block caps and warp counts are first choices that no GPU has tuned yet (see ``docs/gpu.md``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # the module stays importable (doctests, docs); calls say what to install
    triton = None
    tl = None

__all__ = ["FWD_BLOCK_CAP", "BWD_BLOCK_CAP", "LOOP_BLOCK", "forward", "backward", "interpreting", "launch_config",
           "compile_for", "resource_usage"]

#: the widest row the forward holds in registers; wider rows are walked in blocks of LOOP_BLOCK
FWD_BLOCK_CAP = 16384
#: the same for the backward, which holds more per element (x, dy, gamma, and the partial sums)
BWD_BLOCK_CAP = 8192
#: no fused multiply-adds: each product and sum rounded as the reference (and triton's interpreter, which the
#: CPU tests run) rounds them, whatever a triton version's default (3.9 fuses, 3.10 will not)
FP_FUSION = False
#: the column block of the looped (wide-row) forward; the looped backward walks blocks of a quarter of it
LOOP_BLOCK = 4096


def _fwd(X, R, Y, S, W, B, STATS, M, N, eps,
         BLOCK: tl.constexpr, SINGLE: tl.constexpr, CENTER: tl.constexpr,
         HAS_RES: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = row * N
    cols = tl.arange(0, BLOCK)
    if SINGLE:  # the whole row in registers
        m = cols < N
        x = tl.load(X + base + cols, mask=m, other=0.0).to(tl.float32)
        if HAS_RES:  # the sum rounded to the input's dtype, as the unfused ``x + residual`` is
            s = (x + tl.load(R + base + cols, mask=m, other=0.0).to(tl.float32)).to(S.dtype.element_ty)
            tl.store(S + base + cols, s, mask=m)
            x = s.to(tl.float32)
        if CENTER:
            shift = tl.reduce(x, 0, tl.standard._sum_combine) / N
            d = tl.where(m, x - shift, 0.0)
            corr = tl.reduce(d, 0, tl.standard._sum_combine) / N
            var = tl.maximum(tl.reduce(d * d, 0, tl.standard._sum_combine) / N - corr * corr, 0.0)
            rstd = 1.0 / tl.sqrt(var + eps)
            y = (d - corr) * rstd
            tl.store(STATS + row, shift)
            tl.store(STATS + M + row, corr)
            tl.store(STATS + 2 * M + row, rstd)
        else:
            rstd = 1.0 / tl.sqrt(tl.reduce(x * x, 0, tl.standard._sum_combine) / N + eps)
            y = x * rstd
            tl.store(STATS + row, rstd)
        if HAS_W:
            y = y * tl.load(W + cols, mask=m, other=0.0).to(tl.float32)
        if HAS_B:
            y = y + tl.load(B + cols, mask=m, other=0.0).to(tl.float32)
        tl.store(Y + base + cols, y.to(Y.dtype.element_ty), mask=m)
    else:  # a wide row: one pass for the statistics, one for the outputs
        SRC = S if HAS_RES else X
        if CENTER:  # relative to the row's first element K, merged block by block (Chan, Golub & LeVeque)
            K = tl.load(X + base).to(tl.float32)
            if HAS_RES:  # the first element of the rounded sum, as the blocks below compute it
                K = (K + tl.load(R + base).to(tl.float32)).to(S.dtype.element_ty).to(tl.float32)
            n = 0.0
            mean = 0.0  # of x - K over the blocks so far
            m2 = 0.0  # their sum of squared deviations from that mean
        else:
            acc = tl.full([BLOCK], 0.0, tl.float32)
        for start in range(0, N, BLOCK):
            c = start + cols
            m = c < N
            x = tl.load(X + base + c, mask=m, other=0.0).to(tl.float32)
            if HAS_RES:
                s = (x + tl.load(R + base + c, mask=m, other=0.0).to(tl.float32)).to(S.dtype.element_ty)
                tl.store(S + base + c, s, mask=m)
                x = s.to(tl.float32)
            if CENTER:  # the block's mean and squared deviations by the corrected two-pass, in registers
                nb = tl.minimum(N - start, BLOCK).to(tl.float32)
                yb = tl.where(m, x - K, 0.0)
                mb = tl.reduce(yb, 0, tl.standard._sum_combine) / nb
                d = tl.where(m, yb - mb, 0.0)
                cb = tl.reduce(d, 0, tl.standard._sum_combine) / nb
                m2b = tl.maximum(tl.reduce(d * d, 0, tl.standard._sum_combine) - nb * cb * cb, 0.0)
                delta = (mb + cb) - mean
                total = n + nb
                mean = mean + delta * (nb / total)
                m2 = m2 + m2b + delta * delta * (n * nb / total)
                n = total
            else:
                acc += x * x
        if HAS_RES:
            tl.debug_barrier()  # the sums just stored are read back below, by other threads too
        if CENTER:
            shift = K
            corr = mean
            rstd = 1.0 / tl.sqrt(m2 / N + eps)
            tl.store(STATS + row, shift)
            tl.store(STATS + M + row, corr)
            tl.store(STATS + 2 * M + row, rstd)
        else:
            shift = 0.0
            corr = 0.0
            rstd = 1.0 / tl.sqrt(tl.reduce(acc, 0, tl.standard._sum_combine) / N + eps)
            tl.store(STATS + row, rstd)
        for start in range(0, N, BLOCK):
            c = start + cols
            m = c < N
            x = tl.load(SRC + base + c, mask=m, other=0.0).to(tl.float32)
            if CENTER:
                y = ((x - shift) - corr) * rstd
            else:
                y = x * rstd
            if HAS_W:
                y = y * tl.load(W + c, mask=m, other=0.0).to(tl.float32)
            if HAS_B:
                y = y + tl.load(B + c, mask=m, other=0.0).to(tl.float32)
            tl.store(Y + base + c, y.to(Y.dtype.element_ty), mask=m)


def _bwd(DY, DS, SRC, W, STATS, DX, DWP, DBP, M, N, rows_per,
         BLOCK: tl.constexpr, CENTER: tl.constexpr, HAS_DS: tl.constexpr,
         HAS_W: tl.constexpr, NEED_W: tl.constexpr, NEED_B: tl.constexpr):
    """Rows held in registers: each program takes ``rows_per`` rows, and its partial sums of the parameters'
    gradients over them."""
    pid = tl.program_id(0)
    r0 = pid * rows_per
    r1 = tl.minimum(r0 + rows_per, M)
    cols = tl.arange(0, BLOCK)
    m = cols < N
    if HAS_W:
        w = tl.load(W + cols, mask=m, other=0.0).to(tl.float32)
    dw = tl.full([BLOCK], 0.0, tl.float32)
    db = tl.full([BLOCK], 0.0, tl.float32)
    for r in range(r0, r1):
        row = tl.cast(r, tl.int64)
        base = row * N
        x = tl.load(SRC + base + cols, mask=m, other=0.0).to(tl.float32)
        dy = tl.load(DY + base + cols, mask=m, other=0.0).to(tl.float32)
        if CENTER:
            xhat = ((x - tl.load(STATS + row)) - tl.load(STATS + M + row)) * tl.load(STATS + 2 * M + row)
            rstd = tl.load(STATS + 2 * M + row)
        else:
            rstd = tl.load(STATS + row)
            xhat = x * rstd
        xhat = tl.where(m, xhat, 0.0)
        if HAS_W:
            wdy = dy * w
        else:
            wdy = dy
        c1 = tl.reduce(xhat * wdy, 0, tl.standard._sum_combine) / N
        if CENTER:
            dx = (wdy - (xhat * c1 + tl.reduce(wdy, 0, tl.standard._sum_combine) / N)) * rstd
        else:
            dx = (wdy - xhat * c1) * rstd
        if HAS_DS:
            dx += tl.load(DS + base + cols, mask=m, other=0.0).to(tl.float32)
        tl.store(DX + base + cols, dx.to(DX.dtype.element_ty), mask=m)
        if NEED_W:
            dw += dy * xhat
        if NEED_B:
            db += dy
    if NEED_W:
        tl.store(DWP + pid.to(tl.int64) * N + cols, dw, mask=m)
    if NEED_B:
        tl.store(DBP + pid.to(tl.int64) * N + cols, db, mask=m)


def _bwd_sums(DY, SRC, W, STATS, C12, M, N,
              BLOCK: tl.constexpr, CENTER: tl.constexpr, HAS_W: tl.constexpr):
    """Wide rows, first pass, one program per row: ``c1 = mean(xhat * gamma * dy)``, ``c2 = mean(gamma * dy)``."""
    row = tl.program_id(0).to(tl.int64)
    base = row * N
    cols = tl.arange(0, BLOCK)
    if CENTER:
        shift = tl.load(STATS + row)
        corr = tl.load(STATS + M + row)
        rstd = tl.load(STATS + 2 * M + row)
    else:
        rstd = tl.load(STATS + row)
    a1 = tl.full([BLOCK], 0.0, tl.float32)
    a2 = tl.full([BLOCK], 0.0, tl.float32)
    for start in range(0, N, BLOCK):
        c = start + cols
        m = c < N
        x = tl.load(SRC + base + c, mask=m, other=0.0).to(tl.float32)
        dy = tl.load(DY + base + c, mask=m, other=0.0).to(tl.float32)
        if CENTER:
            xhat = ((x - shift) - corr) * rstd
        else:
            xhat = x * rstd
        if HAS_W:
            wdy = dy * tl.load(W + c, mask=m, other=0.0).to(tl.float32)
        else:
            wdy = dy
        a1 += tl.where(m, xhat * wdy, 0.0)
        a2 += wdy
    tl.store(C12 + 2 * row, tl.reduce(a1, 0, tl.standard._sum_combine) / N)
    tl.store(C12 + 2 * row + 1, tl.reduce(a2, 0, tl.standard._sum_combine) / N)


def _bwd_cols(DY, DS, SRC, W, STATS, C12, DX, DWP, DBP, M, N, rows_per,
              BLOCK: tl.constexpr, CENTER: tl.constexpr, HAS_DS: tl.constexpr,
              HAS_W: tl.constexpr, NEED_W: tl.constexpr, NEED_B: tl.constexpr):
    """Wide rows, second pass: program (g, j) computes ``dx`` in column block j of row group g, and the
    group's partial sums of the parameters' gradients there (so the partial buffer has one row per group,
    not per program, and the column blocks give the parallelism)."""
    pid = tl.program_id(0)
    c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = c < N
    r0 = pid * rows_per
    r1 = tl.minimum(r0 + rows_per, M)
    if HAS_W:
        w = tl.load(W + c, mask=m, other=0.0).to(tl.float32)
    dw = tl.full([BLOCK], 0.0, tl.float32)
    db = tl.full([BLOCK], 0.0, tl.float32)
    for r in range(r0, r1):
        row = tl.cast(r, tl.int64)
        base = row * N
        x = tl.load(SRC + base + c, mask=m, other=0.0).to(tl.float32)
        dy = tl.load(DY + base + c, mask=m, other=0.0).to(tl.float32)
        if CENTER:
            rstd = tl.load(STATS + 2 * M + row)
            xhat = ((x - tl.load(STATS + row)) - tl.load(STATS + M + row)) * rstd
        else:
            rstd = tl.load(STATS + row)
            xhat = x * rstd
        xhat = tl.where(m, xhat, 0.0)
        if HAS_W:
            wdy = dy * w
        else:
            wdy = dy
        c1 = tl.load(C12 + 2 * row)
        if CENTER:
            dx = (wdy - (xhat * c1 + tl.load(C12 + 2 * row + 1))) * rstd
        else:
            dx = (wdy - xhat * c1) * rstd
        if HAS_DS:
            dx += tl.load(DS + base + c, mask=m, other=0.0).to(tl.float32)
        tl.store(DX + base + c, dx.to(DX.dtype.element_ty), mask=m)
        if NEED_W:
            dw += dy * xhat
        if NEED_B:
            db += dy
    if NEED_W:
        tl.store(DWP + pid.to(tl.int64) * N + c, dw, mask=m)
    if NEED_B:
        tl.store(DBP + pid.to(tl.int64) * N + c, db, mask=m)


_made: dict[bool, tuple[Any, ...]] = {}


def interpreting() -> bool:
    """Whether triton runs kernels in its interpreter (``TRITON_INTERPRET=1``, read at each call)."""
    return bool(triton is not None and triton.knobs.runtime.interpret)


def _kernels() -> tuple[Any, ...]:
    """The jitted kernels (fwd, bwd, bwd_sums, bwd_cols), made once per interpreter setting (``triton.jit``
    reads it when it decorates)."""
    if triton is None:
        raise RuntimeError("normlab's triton kernels need triton: pip install 'normlab[gpu]' (or pip install triton)")
    key = interpreting()
    if key not in _made:
        _made[key] = tuple(triton.jit(k) for k in (_fwd, _bwd, _bwd_sums, _bwd_cols))
    return _made[key]


def _check(x: Tensor) -> None:
    if x.device.type == "cpu" and not interpreting():
        raise RuntimeError("normlab's triton kernels run on CUDA tensors (or on CPU tensors under TRITON_INTERPRET=1, "
                           "triton's interpreter), got a CPU tensor")
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"normlab's triton kernels take float32, bfloat16 or float16 inputs, got {x.dtype}")


def launch_config(pass_: str, N: int, block_cap: int | None = None) -> tuple[bool, int, int]:
    """``(single, BLOCK, num_warps)`` of the ``"fwd"`` or ``"bwd"`` kernel for rows of ``N``: whether a row is
    held in registers (else walked in column blocks of BLOCK), and the warps per program."""
    fwd = pass_ == "fwd"
    cap = (FWD_BLOCK_CAP if fwd else BWD_BLOCK_CAP) if block_cap is None else block_cap
    single = N <= cap
    loop = LOOP_BLOCK if fwd else LOOP_BLOCK // 4
    block = _next_power_of_2(N) if single else min(loop, _next_power_of_2(cap))
    # elements per thread: 8 in the forward, 4 in the backward (which keeps x, dy, gamma, two partial
    # sums and four pointers per element), at most 32 warps: compiled for sm_90 by triton 3.9 this
    # keeps every forward and every looped backward without spills (docs/gpu.md has the table)
    return single, block, min(32, max(1, block // (256 if fwd else 128)))


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _device(x: Tensor):
    """The device context a launch needs (triton launches on the current CUDA device)."""
    import contextlib

    return torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()


def forward(x: Tensor, residual: Tensor | None, weight: Tensor | None, bias: Tensor | None, eps: float,
            center: bool, *, block_cap: int | None = None) -> tuple[Tensor, Tensor | None, Tensor]:
    """Normalize each row of a contiguous ``(M, N)`` ``x`` (of ``x + residual`` where given).

    Returns ``(y, s, stats)``: ``s`` the sum ``x + residual`` in x's dtype (None without a residual),
    ``stats`` float32 ``(3, M)`` = shift, corr, rstd (``(1, M)`` = rstd when not ``center``).
    ``block_cap`` lowers the register-held width (tests use it to reach the looped kernel cheaply).
    """
    _check(x)
    fwd = _kernels()[0]
    M, N = x.shape
    single, block, warps = launch_config("fwd", N, block_cap)
    y = torch.empty_like(x)
    s = torch.empty_like(x) if residual is not None else None
    stats = torch.empty((3 if center else 1, M), dtype=torch.float32, device=x.device)
    with _device(x):
        fwd[(M,)](x, residual if residual is not None else x, y, s if s is not None else y,
                  weight if weight is not None else x, bias if bias is not None else x, stats, M, N, float(eps),
                  BLOCK=block, SINGLE=single, CENTER=center, HAS_RES=residual is not None,
                  HAS_W=weight is not None, HAS_B=bias is not None, num_warps=warps, enable_fp_fusion=FP_FUSION)
    return y, s, stats


def _programs(x: Tensor, M: int) -> int:
    """How many programs share the rows in the backward (each writes one row of partial sums)."""
    if x.device.type == "cuda":
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count
        return max(1, min(M, 4 * sms))
    return max(1, min(M, 4))


def backward(dy: Tensor, dsum: Tensor | None, src: Tensor, weight: Tensor | None, stats: Tensor, center: bool,
             need_weight: bool, need_bias: bool, *, block_cap: int | None = None, programs: int | None = None
             ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Gradients of :func:`forward`: ``(dx, dweight, dbias)``, the parameters' in float32 (None where not needed).

    ``src`` is the normalized input (``x``, or the sum ``x + residual``), ``dsum`` the gradient reaching
    the sum output (added into ``dx``, which is then the gradient of both addends).  All ``(M, N)``
    tensors contiguous.  Rows held in registers: ``programs`` programs share the rows (default: 4 per SM),
    each writing one row of partial sums.  Wider rows: a first kernel takes the two row sums of each row, a
    second one ``dx`` and the partial sums per (row group, column block), ``programs`` row groups (default:
    4 per SM divided by the column blocks), so the partial buffer stays small next to the input.
    """
    _check(src)
    _, bwd, sums, cols = _kernels()
    M, N = src.shape
    single, block, warps = launch_config("bwd", N, block_cap)
    want = _programs(src, M) if programs is None else programs
    blocks = 1 if single else -(-N // block)
    G = max(1, min(M, want if single or programs is not None else -(-want // blocks)))  # row groups
    rows_per = -(-M // G)
    G = -(-M // rows_per)
    dx = torch.empty_like(src)
    dev = src.device
    need_weight = need_weight and weight is not None
    dwp = torch.empty((G, N), dtype=torch.float32, device=dev) if need_weight else stats
    dbp = torch.empty((G, N), dtype=torch.float32, device=dev) if need_bias else stats
    ds = dsum if dsum is not None else dy
    w = weight if weight is not None else src
    flags = dict(CENTER=center, HAS_W=weight is not None, num_warps=warps, enable_fp_fusion=FP_FUSION)
    with _device(src):
        if single:
            bwd[(G,)](dy, ds, src, w, stats, dx, dwp, dbp, M, N, rows_per, BLOCK=block, HAS_DS=dsum is not None,
                      NEED_W=need_weight, NEED_B=need_bias, **flags)
        else:
            c12 = torch.empty((M, 2), dtype=torch.float32, device=dev)
            sums[(M,)](dy, src, w, stats, c12, M, N, BLOCK=block, **flags)
            cols[(G, blocks)](dy, ds, src, w, stats, c12, dx, dwp, dbp, M, N, rows_per, BLOCK=block,
                              HAS_DS=dsum is not None, NEED_W=need_weight, NEED_B=need_bias, **flags)
    return dx, (dwp.sum(0) if need_weight else None), (dbp.sum(0) if need_bias else None)


_PTR = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float16: "*fp16"}


def compile_for(pass_: str, N: int, dtype: torch.dtype = torch.bfloat16, *, center: bool = True, fused: bool = False,
                affine: bool = True, arch: int = 90, block_cap: int | None = None):
    """Compile the kernels a pass on rows of ``N`` launches, for CUDA compute capability ``arch`` (90:
    H100), without a GPU (triton's compiler and ptxas run on the host): a list of compiled kernels,
    whose ``asm`` holds their PTX and cubin.  A check that the compiled (not interpreted) kernels build."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fwd, bwd, sums, cols = _kernels() if not interpreting() else _compiled_kernels()
    single, block, warps = launch_config(pass_, N, block_cap)
    p, f32, i32 = _PTR[dtype], "*fp32", "i32"
    if pass_ == "fwd":
        launches = [(fwd, {"X": p, "R": p, "Y": p, "S": p, "W": p, "B": p, "STATS": f32, "M": i32, "N": i32,
                           "eps": "fp32"},
                     {"SINGLE": single, "HAS_RES": fused, "HAS_W": affine, "HAS_B": affine and center})]
    else:
        grads = {"HAS_DS": fused, "HAS_W": affine, "NEED_W": affine, "NEED_B": affine and center}
        rest = {"DX": p, "DWP": f32, "DBP": f32, "M": i32, "N": i32, "rows_per": i32}
        if single:
            launches = [(bwd, {"DY": p, "DS": p, "SRC": p, "W": p, "STATS": f32, **rest}, grads)]
        else:
            launches = [(sums, {"DY": p, "SRC": p, "W": p, "STATS": f32, "C12": f32, "M": i32, "N": i32},
                         {"HAS_W": affine}),
                        (cols, {"DY": p, "DS": p, "SRC": p, "W": p, "STATS": f32, "C12": f32, **rest}, grads)]
    out = []
    for fn, sig, flags in launches:
        const: dict[str, int | bool] = {"BLOCK": block, "CENTER": center, **flags}
        sig = {**sig, **{k: "constexpr" for k in const}}
        out.append(triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const),
                                  target=GPUTarget("cuda", arch, 32),
                                  options={"num_warps": warps, "enable_fp_fusion": FP_FUSION}))
    return out


def _compiled_kernels() -> tuple[Any, ...]:
    """The kernels as ``triton.jit`` makes them outside the interpreter (for :func:`compile_for` under it)."""
    from triton.runtime.jit import JITFunction

    if False not in _made:
        _made[False] = tuple(JITFunction(k) for k in (_fwd, _bwd, _bwd_sums, _bwd_cols))
    return _made[False]


def resource_usage(compiled) -> dict[str, int] | None:
    """Registers per thread and bytes of stack, local (spilled) and shared memory of a compiled kernel,
    read from its cubin with the ``cuobjdump`` that ships with triton; None where that tool is missing."""
    import os
    import re
    import subprocess
    import tempfile

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return None
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        out = subprocess.run([tool, "-res-usage", path], capture_output=True, text=True, check=True).stdout
    return {k.lower(): int(v) for k, v in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", out)}
