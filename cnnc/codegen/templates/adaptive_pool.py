"""adaptive_avg_pool1/2/3d and adaptive_max_pool1/2/3d as a window reduction.

Output i of a dim of input size `in` and output size `out` reduces the input positions
floor(i * in / out) up to ceil((i + 1) * in / out), as PyTorch does: windows of varying
size where `out` does not divide `in`, overlapping ones where `out` > `in`. The kernel
walks the largest window of each dim (known at compile time) and masks the offsets past
each output's own end. The tile and the launcher are pool.py's `window_kernel`.
"""

from __future__ import annotations

from ..kernel import SPATIAL, EmitContext, EmittedKernel
from .pool import WindowSpec, window_kernel


def largest_window(size: int, out: int) -> int:
    """The longest adaptive window along a dim: max over i of end(i) - start(i)."""
    return max(-((-(i + 1) * size) // out) - (i * size) // out for i in range(out))


def emit(ctx: EmitContext) -> EmittedKernel:
    pool = ctx.node(ctx.kernel.anchor)
    x = ctx.node(pool.inputs[0])
    dims = SPATIAL[len(x.shape) - 2]
    consts = {"C": x.shape[1]}
    for i, d in enumerate(dims):
        D = d.upper()
        size, out = x.shape[2 + i], pool.shape[2 + i]  # pool.shape resolves `none` sizes
        consts.update({D: size, f"O{D}": out, f"K{D}": largest_window(size, out)})
    starts = ["# Output o's window: floor(o * in / out) up to ceil((o + 1) * in / out)."]
    for d in dims:
        D = d.upper()
        starts.append(f"start_{d} = (o{d} * {D}) // O{D}")
        starts.append(f"end_{d} = ((o{d} + 1) * {D} + O{D} - 1) // O{D}")
    is_max = pool.op.startswith("adaptive_max")
    divisor = []
    if not is_max:
        sizes = " * ".join(f"(end_{d} - start_{d})" for d in dims)
        divisor = ["# The mean over the window's own elements.",
                   f"acc = acc / ({sizes}).to(tl.float32)"]
    spec = WindowSpec(
        reduce="max" if is_max else "avg",
        title=(f"{pool.op}: the max over each adaptive window." if is_max
               else f"{pool.op}: the mean over each adaptive window."),
        consts=consts,
        starts=starts,
        position=lambda d: f"start_{d}[:, None] + k{d}[None, :]",
        valid=lambda d: [f"(i{d} < end_{d}[:, None])"],
        divisor=divisor,
    )
    return window_kernel(ctx, spec)
