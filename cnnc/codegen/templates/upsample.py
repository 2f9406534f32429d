"""Nearest-neighbour upsampling of 1, 2 or 3 spatial dims (F.interpolate, mode="nearest").

One program handles a block of output elements (n, c, o_1, ..., o_S). Each output index
o maps to the source index PyTorch's CPU kernels use for a given scale_factor s:

    i = min(floor(float32(o) * float32(1 / s)), in - 1)

with the product rounded to float32, as ATen computes it, so factors such as 1.5 or 2.5
select exactly the rows PyTorch selects. For 2-d inputs ATen's upsample_nearest2d uses
`nearest_idx`, which first treats two sizes exactly: out == in copies (i = o) and
out == 2 * in halves (i = o >> 1); the 1-d and 3-d kernels always use the formula.
"""

from __future__ import annotations

import struct

from ...ops import OPS
from ..builder import KernelBuilder
from ..kernel import SPATIAL, EmitContext, EmittedKernel, split_index
from ..source import number


def float32(value: float) -> float:
    """The float32 nearest to value (C++'s static_cast<float>), as a Python float."""
    return struct.unpack("f", struct.pack("f", value))[0]


def source_index(o: str, size: int, out_size: int, scale: float, exact_sizes: bool) -> str:
    """The expression of the source index along one dim for output index `o`."""
    if exact_sizes and out_size == size:
        return o
    if exact_sizes and out_size == 2 * size:
        return f"{o} // 2"
    factor = number(float32(1.0 / scale))
    return f"tl.minimum(tl.floor({o}.to(tl.float32) * {factor}).to(tl.int64), {size - 1})"


def emit(ctx: EmitContext) -> EmittedKernel:
    graph = ctx.graph
    node = graph.node(ctx.kernel.anchor)
    x = graph.node(node.inputs[0])
    S = len(x.shape) - 2
    dims = SPATIAL[S]
    scales = OPS["upsample"].scales(node.attrs, S)
    exact_sizes = S == 2  # ATen's upsample_nearest2d goes through nearest_idx
    c = x.shape[1]

    consts = {"C": c}
    consts.update({d.upper(): x.shape[2 + i] for i, d in enumerate(dims)})
    consts.update({f"O{d.upper()}": node.shape[2 + i] for i, d in enumerate(dims)})

    shown = ", ".join(number(s) for s in scales)
    b = KernelBuilder(ctx, "elementwise", f"nearest-neighbour upsample{S}d by ({shown}); one "
                      "program per block of outputs.")
    b.argument("x", "value", node.inputs[0])
    b.group("input, output", ["x_ptr", "out_ptr"], ["x", "out"])
    b.group("output elements", ["TOTAL"])
    b.group("input and output strides", [f"sx{i}" for i in range(S + 2)]
            + [f"so{i}" for i in range(S + 2)], ["*x.stride()", "*out.stride()"])
    b.constants("channels, input sizes, output sizes", consts)
    b.problem(["TOTAL = out.numel()"], "TOTAL")
    b.tile("BLOCK", "TOTAL")
    b.grid_dims(("TOTAL", "BLOCK"))

    src = b.body
    src.line("# Outputs (n, c, " + ", ".join(f"o{d}" for d in dims) + ").")
    b.program_id("pid")
    src.line("offs = pid * BLOCK + tl.arange(0, BLOCK)")
    src.line("mask = offs < TOTAL")
    split_index(src, "offs", [f"o{d}" for d in dims],
                [f"O{d.upper()}" for d in dims], "rest")
    src.line("c = rest % C")
    src.line("n = rest // C")
    src.line("# Source indices: floor(o * float32(1 / scale_factor)), clamped.")
    if exact_sizes:
        src.line("# (2-d, as ATen's nearest_idx: out == in copies, out == 2 * in halves.)")
    for i, d in enumerate(dims):
        expr = source_index(f"o{d}", consts[d.upper()], consts[f"O{d.upper()}"], scales[i],
                            exact_sizes)
        src.line(f"i{d} = {expr}")
    x_offset = "n * sx0 + c * sx1" + "".join(f" + i{d} * sx{2 + i}"
                                              for i, d in enumerate(dims))
    o_offset = "n * so0 + c * so1" + "".join(f" + o{d} * so{2 + i}"
                                              for i, d in enumerate(dims))
    src.line(f"value = tl.load(x_ptr + {x_offset}, mask=mask)")
    src.line(f"tl.store(out_ptr + {o_offset}, value.to(out_ptr.dtype.element_ty), mask=mask)")
    return b.build()
