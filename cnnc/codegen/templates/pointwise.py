"""Elementwise chains: activations, add/mul with broadcasting, batch-norm affine, dropout.

One program per block of output elements; the flat index is split into the output's
dims (all static but the batch), the first op's input and every other operand are read
through broadcast strides, and the whole chain runs in registers before one store.
"""

from __future__ import annotations

from ..builder import KernelBuilder
from ..epilogue import Epilogue, epilogue_arguments, epilogue_refs
from ..kernel import EmitContext, EmittedKernel


def emit(ctx: EmitContext) -> EmittedKernel:
    graph, kernel = ctx.graph, ctx.kernel
    anchor = graph.node(kernel.anchor)
    first = anchor.inputs[0]
    out = graph.node(kernel.output)
    rank = len(out.shape)
    epi = Epilogue(graph, [kernel.anchor, *kernel.epilogue], first)
    dropout = any(graph.node(n).op == "dropout" for n in epi.nodes)
    ops = " -> ".join(graph.node(n).op for n in epi.nodes)

    b = KernelBuilder(ctx, "elementwise", f"Elementwise: {ops}.")
    b.argument("x", "value", first)
    for name, kind, ref in epilogue_refs(epi):
        b.argument(name, kind, ref)
    _, operand_call = epilogue_arguments(epi)
    b.group("input, output", ["x_ptr", "out_ptr"], ["x", "out"])
    b.group("epilogue operands", epi.params(), operand_call)
    # The first input is read through strides broadcast to the output.
    b.group("input and output strides", [f"sx{d}" for d in range(rank)]
            + [f"so{d}" for d in range(rank)], ["*broadcast_strides(x, out.shape)",
                                                "*out.stride()"])
    if dropout:
        b.group("dropout's random seed", ["seed"],
                ["int(torch.randint(0, 2**31 - 1, (1,)).item())"], per_call=True)
    b.flat_elements(out.shape)
    src = b.body
    x_off = " + ".join(f"i{d} * sx{d}" for d in range(rank))
    src.line(f"acc = tl.load(x_ptr + {x_off}, mask=mask, other=0.0).to(tl.float32)")

    def index(d: int) -> str:
        return f"i{d}"

    src.extend(epi.lines("acc", index, "mask", rank, random_offsets="offs"))
    o_off = " + ".join(f"i{d} * so{d}" for d in range(rank))
    src.line(f"tl.store(out_ptr + {o_off}, acc.to(out_ptr.dtype.element_ty), mask=mask)")
    if epi.uses_tanh:
        b.helpers.add("tanh")
    return b.build()
