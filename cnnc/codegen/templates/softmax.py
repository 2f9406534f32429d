"""softmax / log_softmax along any dim of a tensor of rank 1 to 5.

The tensor is seen as [outer, D, inner]: a row is one position of every dim but `dim`,
and the kernel reduces along D. Rows are decoded into per-dim indices and read through
the input's strides (so channels-last or sliced inputs work without a copy). One program
handles a block of rows. When D fits one tile the row is loaded once; otherwise a first
pass keeps a running max and a sum of exponentials rescaled to it (the "online softmax"),
and a second pass writes exp(x - max) / sum, or x - max - log(sum) for log_softmax.
"""

from __future__ import annotations

from ..builder import KernelBuilder
from ..kernel import EmitContext, EmittedKernel


def emit(ctx: EmitContext) -> EmittedKernel:
    graph = ctx.graph
    node = graph.node(ctx.kernel.anchor)
    x = graph.node(node.inputs[0])
    rank = len(x.shape)
    dim = node.attrs.dim % rank
    log = node.op == "log_softmax"
    others = [d for d in range(rank) if d != dim]
    # Static sizes are compile-time constants; a symbolic (batch) size is read at run time.
    static = {d: size for d, size in enumerate(x.shape) if isinstance(size, int)}
    # Sizes the row decoder divides by: every non-reduced dim except the outermost.
    decode = others[1:]

    b = KernelBuilder(ctx, "reduction", f"{node.op} along dim {dim} of a rank-{rank} tensor; "
                      "one program per block of rows.")
    b.argument("x", "value", node.inputs[0])
    b.group("input, output", ["x_ptr", "out_ptr"], ["x", "out"])
    runtime = [(f"S{d}", f"x.shape[{d}]") for d in decode if d not in static]
    if dim not in static:
        runtime.append(("D", "D"))
    b.group("rows, and the sizes the batch sets", ["ROWS"] + [p for p, _ in runtime],
            ["ROWS"] + [c for _, c in runtime])
    b.group("input and output strides", [f"sx{d}" for d in range(rank)]
            + [f"so{d}" for d in range(rank)], ["*x.stride()", "*out.stride()"])
    consts = {f"S{d}": static[d] for d in decode if d in static}
    if dim in static:
        consts["D"] = static[dim]
    b.constants("sizes", consts)
    b.problem([f"D = x.shape[{dim}]", "ROWS = x.numel() // D"], "ROWS")
    b.tile_expr("BLOCK_D", "min(triton.next_power_of_2(D), config['BLOCK'])")
    b.tile_expr("BLOCK_R", "min(triton.next_power_of_2(ROWS), max(1, config['BLOCK'] // BLOCK_D))")
    b.tile_expr("SINGLE_PASS", "D <= BLOCK_D")
    b.grid_dims(("ROWS", "BLOCK_R"))

    src = b.body
    src.line(f"# Rows: positions (i{', i'.join(str(d) for d in others)}) of the dims other "
             f"than dim {dim}." if others else "# One row: the whole vector.")
    b.program_id("pid")
    src.line("rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)")
    src.line("row_mask = rows < ROWS")
    if others:
        src.line("rest = rows")
        for d in reversed(decode):
            src.line(f"i{d} = rest % S{d}")
            src.line(f"rest = rest // S{d}")
        src.line(f"i{others[0]} = rest")
        src.line("x_row = " + " + ".join(f"i{d} * sx{d}" for d in others))
        src.line("o_row = " + " + ".join(f"i{d} * so{d}" for d in others))
    else:
        src.line("x_row = rows * 0")
        src.line("o_row = rows * 0")
    src.line("cols = tl.arange(0, BLOCK_D)")

    def load(start: str) -> None:
        src.line(f"d = {start} + cols" if start else "d = cols")
        src.line("mask = row_mask[:, None] & (d < D)[None, :]")
        src.line(f"x = tl.load(x_ptr + x_row[:, None] + d[None, :] * sx{dim}, mask=mask, "
                 'other=float("-inf")).to(tl.float32)')

    def store(value: str) -> None:
        src.line(f"tl.store(out_ptr + o_row[:, None] + d[None, :] * so{dim}, "
                 f"{value}.to(out_ptr.dtype.element_ty), mask=mask)")

    def result() -> str:
        if log:
            return "(x - m_safe[:, None] - tl.log(total)[:, None])"
        return "(tl.exp(x - m_safe[:, None]) / total[:, None])"

    # A row of -inf keeps max = -inf; subtracting 0 instead keeps exp() finite and
    # gives PyTorch's nan (0 / 0, -inf + inf) for such rows without inf - inf.
    with src.indent("if SINGLE_PASS:"):
        src.line("# The whole row fits one tile: load it once.")
        load("")
        src.line("m = tl.max(x, axis=1)")
        src.line('m_safe = tl.where(m == float("-inf"), 0.0, m)')
        src.line("total = tl.sum(tl.exp(x - m_safe[:, None]), axis=1)")
        src.line("total = tl.where(row_mask, total, 1.0)")
        store(result())
    with src.indent("else:"):
        src.line("# Pass 1: running max m and sum of exp(x - m), rescaled when m grows.")
        src.line('m = tl.full((BLOCK_R,), float("-inf"), tl.float32)')
        src.line("total = tl.zeros((BLOCK_R,), dtype=tl.float32)")
        with src.indent("for d0 in range(0, D, BLOCK_D):"):
            load("d0")
            src.line("m_new = tl.maximum(m, tl.max(x, axis=1))")
            src.line('m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)')
            src.line("total = total * tl.exp(m - m_safe) + "
                     "tl.sum(tl.exp(x - m_safe[:, None]), axis=1)")
            src.line("m = m_new")
        src.line('m_safe = tl.where(m == float("-inf"), 0.0, m)')
        src.line("total = tl.where(row_mask, total, 1.0)")
        src.line("# Pass 2: normalise and store.")
        with src.indent("for d0 in range(0, D, BLOCK_D):"):
            load("d0")
            store(result())
    return b.build()
