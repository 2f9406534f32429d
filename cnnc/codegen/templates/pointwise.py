"""Elementwise chains: activations, add/mul with broadcasting, batch-norm affine, dropout.

One program per block of output elements; the flat index is split into the output's
dims (all static but the batch), the first op's input and every other operand are read
through broadcast strides, and the whole chain runs in registers before one store.
"""

from __future__ import annotations

from ..epilogue import Epilogue, epilogue_arguments, epilogue_refs
from ..kernel import Argument, EmitContext, EmittedKernel, def_lines, launch_lines
from ..source import Source


def emit(ctx: EmitContext) -> EmittedKernel:
    graph, kernel = ctx.graph, ctx.kernel
    anchor = graph.node(kernel.anchor)
    first = anchor.inputs[0]
    out = graph.node(kernel.output)
    rank = len(out.shape)
    epi = Epilogue(graph, [kernel.anchor, *kernel.epilogue], first)
    in_rank = rank  # the first input is read through strides broadcast to the output
    name = ctx.name
    consts = {f"D{d}": out.shape[d] for d in range(1, rank)}
    dropout = [graph.node(n) for n in epi.nodes if graph.node(n).op == "dropout"]

    src = Source()
    src.line("@triton.jit")
    params = ["x_ptr", "out_ptr"] + epi.params() + ["total"]
    params += [f"sx{d}" for d in range(in_rank)] + [f"so{d}" for d in range(rank)]
    params += ["seed"] if dropout else []
    params += [f"{k}: tl.constexpr" for k in consts] + ["BLOCK: tl.constexpr"]
    def_lines(src, name, params)
    with src.indent():
        ops = " -> ".join(graph.node(n).op for n in epi.nodes)
        src.line(f'"""Elementwise: {ops}."""')
        src.line("offs = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)")
        src.line("mask = offs < total")
        src.line("# flat index -> (" + ", ".join(f"i{d}" for d in range(rank)) + ")")
        src.line("rest = offs")
        for d in reversed(range(1, rank)):
            src.line(f"i{d} = rest % D{d}")
            src.line(f"rest = rest // D{d}")
        src.line("i0 = rest")
        x_off = " + ".join(f"i{d} * sx{d}" for d in range(in_rank))
        src.line(f"acc = tl.load(x_ptr + {x_off}, mask=mask, other=0.0).to(tl.float32)")

        def index(d: int) -> str:
            return f"i{d}"

        src.extend(epi.lines("acc", index, "mask", rank, random_offsets="offs"))
        o_off = " + ".join(f"i{d} * so{d}" for d in range(rank))
        src.line(f"tl.store(out_ptr + {o_off}, acc.to(out_ptr.dtype.element_ty), mask=mask)")
    src.line("")
    src.line("")
    operand_params, operand_call = epilogue_arguments(epi)
    launcher = f"launch_{name}"
    src.line(f"def {launcher}({', '.join(['out', 'x'] + operand_params)}):")
    with src.indent():
        src.line("total = out.numel()")
        src.line("BLOCK = tile(total, TILES['elementwise'])")
        call = ["x", "out"] + operand_call + ["total", "*broadcast_strides(x, out.shape)",
                                              "*out.stride()"]
        if dropout:
            call.append("int(torch.randint(0, 2**31 - 1, (1,)).item())")
        call += [f"{k}={v}" for k, v in consts.items()] + ["BLOCK=BLOCK"]
        launch_lines(src, name, '(triton.cdiv(total, BLOCK),)', call, 5)
    helpers = {"tanh"} if epi.uses_tanh else set()
    args = [Argument("x", "value", first)]
    refs = [Argument(n, kind, ref) for n, kind, ref in epilogue_refs(epi)]
    return EmittedKernel(name, src.text(), launcher, args + refs, helpers=helpers)
