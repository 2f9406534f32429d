"""channel_shuffle as an index-map copy, with an epilogue slot.

F.channel_shuffle views the C channels as [groups, C/groups], transposes and flattens:
output channel c reads input channel (c % groups) * (C / groups) + c // groups. One program
per block of output elements; input and output are read and written through their strides
(channels-last or a slice of a concat), and the following elementwise chain runs on the
value before the store.
"""

from __future__ import annotations

from ..builder import KernelBuilder
from ..epilogue import Epilogue, epilogue_arguments, epilogue_refs
from ..kernel import EmitContext, EmittedKernel


def emit(ctx: EmitContext) -> EmittedKernel:
    graph, kernel = ctx.graph, ctx.kernel
    node = graph.node(kernel.anchor)
    out = graph.node(kernel.output)
    rank = len(out.shape)
    groups = node.attrs.groups
    epi = Epilogue(graph, kernel.epilogue, kernel.anchor)
    chain = "".join(f" -> {graph.node(n).op}" for n in epi.nodes)

    b = KernelBuilder(ctx, "elementwise", f"channel_shuffle({groups}){chain}: output channel c "
                      "reads input channel (c % G) * (C / G) + c // G.")
    b.argument("x", "value", node.inputs[0])
    for name, kind, ref in epilogue_refs(epi):
        b.argument(name, kind, ref)
    _, operand_call = epilogue_arguments(epi)
    b.group("input, output", ["x_ptr", "out_ptr"], ["x", "out"])
    b.group("epilogue operands", epi.params(), operand_call)
    b.group("input and output strides", [f"sx{d}" for d in range(rank)]
            + [f"so{d}" for d in range(rank)], ["*x.stride()", "*out.stride()"])
    b.constants("groups", {"G": groups})
    b.flat_elements(out.shape)
    src = b.body
    src.line("c_in = (i1 % G) * (D1 // G) + i1 // G")
    x_off = " + ".join(["c_in * sx1"] + [f"i{d} * sx{d}" for d in range(rank) if d != 1])
    src.line(f"acc = tl.load(x_ptr + {x_off}, mask=mask, other=0.0).to(tl.float32)")
    src.extend(epi.lines("acc", lambda d: f"i{d}", "mask", rank))
    o_off = " + ".join(f"i{d} * so{d}" for d in range(rank))
    src.line(f"tl.store(out_ptr + {o_off}, acc.to(out_ptr.dtype.element_ty), mask=mask)")
    if epi.uses_tanh:
        b.helpers.add("tanh")
    return b.build()
