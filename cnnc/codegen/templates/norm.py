"""layer_norm and group_norm: per-row statistics, affine, and an epilogue slot.

A row is what one mean and variance cover: for layer_norm one position of the leading
dims (its values are the last len(normalized_shape) dims), for group_norm one (batch item,
group) pair (its values are the group's C / G channels at every position). One program per
row. The values are read through the input's strides, in chunks of BLOCK_D (for a 4-d or
5-d group_norm the group's channels vary fastest: adjacent in channels-last), three
times: the mean, then the variance as the mean of squared deviations from it (two passes
in float32: no cancellation of E[x^2] - E[x]^2), then y = (x - mean) * rstd with
rstd = 1 / sqrt(var + eps), times the weight plus the bias, then the fused elementwise
chain, stored through the output's strides. An inf or NaN in a row makes its whole row
NaN, as in PyTorch.
"""

from __future__ import annotations

import math

from ..builder import KernelBuilder
from ..epilogue import Epilogue, epilogue_arguments, epilogue_refs
from ..kernel import EmitContext, EmittedKernel
from ..source import number


def emit(ctx: EmitContext) -> EmittedKernel:
    graph, kernel = ctx.graph, ctx.kernel
    node = graph.node(kernel.anchor)
    x = graph.node(node.inputs[0])
    shape = x.shape
    rank = len(shape)
    group = node.op == "group_norm"
    if group:
        G = node.attrs.num_groups
        CG = shape[1] // G
        row_dims, col_dims = [0], list(range(2, rank))  # plus the group's channels
        D = CG * math.prod(shape[2:])
        affine = node.attrs.affine
    else:
        k = len(node.attrs.normalized_shape)
        row_dims, col_dims = list(range(rank - k)), list(range(rank - k, rank))
        D = math.prod(node.attrs.normalized_shape)
        affine = node.attrs.elementwise_affine
    epi = Epilogue(graph, kernel.epilogue, kernel.anchor)
    chain = "".join(f" -> {graph.node(n).op}" for n in epi.nodes)
    what = (f"group_norm over {G} groups of {CG} channels" if group
            else f"layer_norm over the last {len(col_dims)} dims")

    b = KernelBuilder(ctx, "reduction", f"{what}{chain}; one program per row of {D} values.")
    b.argument("x", "value", x.id)
    names = {spec.name: node.param_name(spec) for spec in node.params}
    if affine:
        b.argument("w", "param", names["weight"])
        b.argument("b", "param", names["bias"])
    for name, kind, ref in epilogue_refs(epi):
        b.argument(name, kind, ref)
    _, operand_call = epilogue_arguments(epi)
    b.group("input, (weight, bias,) output", ["x_ptr"] + (["w_ptr", "b_ptr"] if affine else [])
            + ["out_ptr"], ["x"] + (["w", "b"] if affine else []) + ["out"])
    b.group("epilogue operands", epi.params(), operand_call)
    if affine and not group:
        # The module may store a 4-d or 5-d weight channels-last: read it by its strides.
        b.group("weight and bias strides", [f"sw{d}" for d in col_dims]
                + [f"sb{d}" for d in col_dims], ["*w.stride()", "*b.stride()"])
    b.group("input and output strides", [f"sx{d}" for d in range(rank)]
            + [f"so{d}" for d in range(rank)], ["*x.stride()", "*out.stride()"])
    consts = {f"S{d}": shape[d] for d in range(1, rank)} | {"D": D}
    if group:
        consts |= {"G": G, "CG": CG}
    b.constants("sizes, values per row" + (", groups, channels per group" if group else ""),
                consts)
    b.problem([f"ROWS = x.numel() // {D}"], "ROWS")
    b.tile_expr("BLOCK_D", f"min(triton.next_power_of_2({D}), config['BLOCK'])")
    b.grid_dims(("ROWS", None))

    src = b.body
    b.program_id("row")
    src.line("# The row's position: " + ("(i0, group g)" if group else
                                         "(" + ", ".join(f"i{d}" for d in row_dims) + ")"))
    src.line("rest = row")
    if group:
        src.line("g = rest % G")
        src.line("i0 = rest // G")
    else:
        for d in reversed(row_dims[1:]):
            src.line(f"i{d} = rest % S{d}")
            src.line(f"rest = rest // S{d}")
        src.line("i0 = rest")

    def columns() -> None:
        """cols (this chunk's positions in the row), cmask, each dim's index, `offs`."""
        src.line("cols = d0 + tl.arange(0, BLOCK_D)")
        with src.indent("if INDEX_64:"):
            src.line("cols = cols.to(tl.int64)")
        src.line("cmask = cols < D")
        src.line("rest = cols")
        if group and rank in (4, 5):
            # channels-last (how the module stores 4-d and 5-d values): the group's
            # channels of one position are adjacent, so they vary fastest
            src.line("i1 = g * CG + rest % CG")
            src.line("rest = rest // CG")
            for d in reversed(col_dims[1:]):
                src.line(f"i{d} = rest % S{d}")
                src.line(f"rest = rest // S{d}")
            src.line(f"i{col_dims[0]} = rest")
        else:
            for d in reversed(col_dims if group else col_dims[1:]):
                src.line(f"i{d} = rest % S{d}")
                src.line(f"rest = rest // S{d}")
            src.line("i1 = g * CG + rest" if group else f"i{col_dims[0]} = rest")
        src.line("x_offs = " + " + ".join(f"i{d} * sx{d}" for d in range(rank)))
        src.line("x = tl.load(x_ptr + x_offs, mask=cmask, other=0.0).to(tl.float32)")

    src.line("# Pass 1: the mean.")
    src.line("total = tl.zeros((BLOCK_D,), dtype=tl.float32)")
    with src.indent("for d0 in range(0, D, BLOCK_D):"):
        columns()
        src.line("total += x")
    src.line("mean = tl.sum(total, axis=0) / D")
    src.line("# Pass 2: the (biased) variance, from the deviations.")
    src.line("total = tl.zeros((BLOCK_D,), dtype=tl.float32)")
    with src.indent("for d0 in range(0, D, BLOCK_D):"):
        columns()
        src.line("dev = tl.where(cmask, x - mean, 0.0)")
        src.line("total += dev * dev")
    src.line("var = tl.sum(total, axis=0) / D")
    src.line(f"rstd = _cnnc_rstd(var, {number(float(node.attrs.eps))})")
    src.line("# Pass 3: normalise, affine, epilogue, store.")
    with src.indent("for d0 in range(0, D, BLOCK_D):"):
        columns()
        src.line("acc = (x - mean) * rstd")
        if affine:
            # per channel, or per normalised position
            w_at = "i1" if group else " + ".join(f"i{d} * sw{d}" for d in col_dims)
            b_at = "i1" if group else " + ".join(f"i{d} * sb{d}" for d in col_dims)
            src.line(f"acc = acc * tl.load(w_ptr + {w_at}, mask=cmask, other=1.0)"
                     f".to(tl.float32) + tl.load(b_ptr + {b_at}, mask=cmask, other=0.0)"
                     ".to(tl.float32)")
        src.extend(epi.lines("acc", lambda d: f"i{d}", "cmask", rank))
        o_offs = " + ".join(f"i{d} * so{d}" for d in range(rank))
        src.line(f"tl.store(out_ptr + {o_offs}, acc.to(out_ptr.dtype.element_ty), mask=cmask)")
    if epi.uses_tanh:
        b.helpers.add("tanh")
    return b.build()
