"""Implicit-GEMM convolution for 1-, 2- and 3-d, with an epilogue and an optional pool.

Rows of the GEMM tile are output positions (n, o_1, ..., o_S), columns are the output
channels of one group, and the reduction runs over (ci, k_1, ..., k_S) of that group.
Padding is index arithmetic on the input (zeros masks, reflect/replicate/circular remap),
never a padded copy. With a fused pool, rows are pooled positions and the kernel
computes the conv (and its epilogue) at every window offset, reducing as it goes.
"""

from __future__ import annotations

import math

from ...ops.conv import conv_pads
from ..epilogue import Epilogue, epilogue_arguments, epilogue_refs
from ..kernel import (
    SPATIAL,
    Argument,
    EmitContext,
    EmittedKernel,
    launch_lines,
    split_index,
)
from ..source import Source


def emit(ctx: EmitContext) -> EmittedKernel:
    graph, kernel = ctx.graph, ctx.kernel
    conv = graph.node(kernel.anchor)
    a = conv.attrs
    x = graph.node(conv.inputs[0])
    S = len(a.kernel_size)
    dims = SPATIAL[S]
    pads = [left for left, _ in conv_pads(a)]
    c_in, c_out = x.shape[1], a.out_channels
    consts = {
        "C_IN_G": c_in // a.groups, "C_OUT_G": c_out // a.groups,
        **{f"{d.upper()}": x.shape[2 + i] for i, d in enumerate(dims)},
        **{f"O{d.upper()}": conv.shape[2 + i] for i, d in enumerate(dims)},
        **{f"K{d.upper()}": a.kernel_size[i] for i, d in enumerate(dims)},
        **{f"S{d.upper()}": a.stride[i] for i, d in enumerate(dims)},
        **{f"P{d.upper()}": pads[i] for i, d in enumerate(dims)},
        **{f"D{d.upper()}": a.dilation[i] for i, d in enumerate(dims)},
    }
    pool = graph.node(kernel.pool) if kernel.pool is not None else None
    if pool is not None:
        pa = pool.attrs
        consts.update({f"Q{d.upper()}": pool.shape[2 + i] for i, d in enumerate(dims)})
        consts.update({f"PK{d.upper()}": pa.kernel_size[i] for i, d in enumerate(dims)})
        consts.update({f"PS{d.upper()}": pa.stride[i] for i, d in enumerate(dims)})
        consts.update({f"PP{d.upper()}": pa.padding[i] for i, d in enumerate(dims)})
        consts.update({f"PD{d.upper()}": pa.dilation[i] for i, d in enumerate(dims)})
    out_node = graph.node(kernel.output)
    rank = len(out_node.shape)
    # A folded batch norm is the epilogue's first node: its scale and shift are computed in
    # the kernel from its parameters, so the conv's own weights are read as they are.
    fold = [kernel.folded_bn] if kernel.folded_bn is not None else []
    epi = Epilogue(graph, fold + kernel.epilogue, kernel.anchor)
    has_bias = a.bias
    name = ctx.name
    # Depthwise (one input channel per group): no GEMM to speak of; every output channel
    # is a column, and the kernel window is a multiply-accumulate loop.
    direct = consts["C_IN_G"] == 1
    if direct:
        consts["C_OUT"] = c_out

    src = Source()
    src.line("@triton.jit")
    params = ["x_ptr", "w_ptr"] + (["b_ptr"] if has_bias else []) + ["out_ptr"]
    params += epi.params()
    params += ["N"] + [f"sx{i}" for i in range(S + 2)] + [f"so{i}" for i in range(S + 2)]
    params += [f"{k}: tl.constexpr" for k in consts]
    params += ["BLOCK_M: tl.constexpr", "BLOCK_N: tl.constexpr", "BLOCK_K: tl.constexpr",
               "DOT_PRECISION: tl.constexpr", "UPCAST_DOT: tl.constexpr", "WIDE: tl.constexpr"]
    with src.indent(f"def {name}("):
        src.line(", ".join(params[:4]) + ",  # input, weight, (bias,) output")
        rest = params[4:]
        for i in range(0, len(rest), 6):
            src.line(", ".join(rest[i:i + 6]) + ",")
    src.line("):")
    with src.indent():
        what = "a depthwise multiply-accumulate" if direct else "an implicit GEMM"
        src.line('"""' + f"conv{S}d as {what}" + (" with a fused pool" if pool else "")
                 + '."""')
        rows = [f"q{d}" for d in dims] if pool else [f"o{d}" for d in dims]
        sizes = [f"Q{d.upper()}" for d in dims] if pool else [f"O{d.upper()}" for d in dims]
        src.line("pid_m = tl.program_id(0)")
        src.line("pid_n = tl.program_id(1)")
        src.line("group = tl.program_id(2)")
        src.line("# Rows: output positions (n, " + ", ".join(rows) + ").")
        src.line("if WIDE:  # some tensor has 2^31 elements or more: index in int64")
        src.line("    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)")
        src.line("else:")
        src.line("    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)")
        src.line("rest = offs_m")
        for var, size in zip(reversed(rows), reversed(sizes)):
            src.line(f"{var} = rest % {size}")
            src.line(f"rest = rest // {size}")
        src.line("n = rest.to(tl.int64)")
        src.line("m_mask = rest < N")
        src.line("offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)")
        src.line("K_TOTAL = C_IN_G * " + " * ".join(f"K{d.upper()}" for d in dims))
        if direct:
            src.line("# Columns: every output channel; each reads input channel co // C_OUT_G.")
            src.line("n_mask = offs_n < C_OUT")
            src.line("co = offs_n")
            src.line("ci = co // C_OUT_G")
            src.line("x_base = n * sx0")
        else:
            src.line("# Columns: output channels of this group.")
            src.line("n_mask = offs_n < C_OUT_G")
            src.line("co = group * C_OUT_G + offs_n")
            src.line("x_base = n * sx0 + (group * C_IN_G).to(tl.int64) * sx1")
        if has_bias:
            src.line("bias = tl.load(b_ptr + co, mask=n_mask, other=0.0).to(tl.float32)")
        src.extend(epi.channel_lines("co", "n_mask"))

        def gather(positions: list[str], valid: str, k_index: str, k_mask: str):
            """Input coordinates of a tile (padding as index arithmetic): (offset, mask)."""
            mask = f"({valid})[:, None] & {k_mask}"
            offset = "x_base[:, None] + ci[None, :] * sx1"
            for i, (d, pos) in enumerate(zip(dims, positions)):
                D = d.upper()
                src.line(f"i{d} = {pos}[:, None] * S{D} - P{D} + k{d}{k_index} * D{D}")
                src.extend(_padding_lines(a.padding_mode, f"i{d}", D))
                if a.padding_mode == "zeros":
                    mask += f" & (i{d} >= 0) & (i{d} < {D})"
                offset += f" + i{d} * sx{2 + i}"
            return offset, mask

        def direct_tile(positions: list[str], valid: str) -> None:
            src.line("acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
            with src.indent("for kk in range(0, K_TOTAL):"):
                src.line("# window offset -> (" + ", ".join(f"k{d}" for d in dims) + ")")
                split_index(src, "kk", [f"k{d}" for d in dims],
                            [f"K{d.upper()}" for d in dims], "rest_k")
                offset, load_mask = gather(positions, valid, "", "n_mask[None, :]")
                src.line(f"xv = tl.load(x_ptr + {offset}, mask={load_mask}, other=0.0)")
                src.line("wv = tl.load(w_ptr + co * K_TOTAL + kk, mask=n_mask, other=0.0)")
                src.line("acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]")
            if has_bias:
                src.line("acc += bias[None, :]")

        def conv_tile(positions: list[str], valid: str) -> None:
            if direct:
                return direct_tile(positions, valid)
            src.line("acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
            with src.indent("for k0 in range(0, K_TOTAL, BLOCK_K):"):
                src.line("offs_k = k0 + tl.arange(0, BLOCK_K)")
                src.line("if WIDE:")
                src.line("    offs_k = offs_k.to(tl.int64)")
                src.line("k_mask = offs_k < K_TOTAL")
                src.line("# reduction index -> (ci, " + ", ".join(f"k{d}" for d in dims) + ")")
                split_index(src, "offs_k", [f"k{d}" for d in dims],
                            [f"K{d.upper()}" for d in dims], "rest_k")
                src.line("ci = rest_k")
                offset, load_mask = gather(positions, valid, "[None, :]", "k_mask[None, :]")
                src.line(f"a = tl.load(x_ptr + {offset}, mask={load_mask}, other=0.0)")
                src.line("b = tl.load(w_ptr + co[None, :] * K_TOTAL + offs_k[:, None], "
                         "mask=k_mask[:, None] & n_mask[None, :], other=0.0)")
                src.line("if UPCAST_DOT:  # the interpreter's bfloat16 dot is unreliable")
                src.line("    a, b = a.to(tl.float32), b.to(tl.float32)")
                src.line("acc += tl.dot(a, b, input_precision=DOT_PRECISION)")
            if has_bias:
                src.line("acc += bias[None, :]")

        def index_for(positions: list[str]):
            def index(d: int) -> str:
                if d == 0:
                    return "n[:, None]"
                if d == 1:
                    return "co[None, :]"
                return f"{positions[d - 2]}[:, None]"
            return index

        tile_mask = "m_mask[:, None] & n_mask[None, :]"
        if pool is None:
            conv_tile(rows, "m_mask")
            src.extend(epi.lines("acc", index_for(rows), tile_mask, rank, channels="[None, :]"))
            result = "acc"
        else:
            result = _pool_lines(src, pool, dims, conv_tile, epi, index_for, tile_mask, rank)
        offset = "n[:, None] * so0 + co[None, :] * so1"
        for i, var in enumerate(rows):
            offset += f" + {var}[:, None] * so{2 + i}"
        src.line(f"tl.store(out_ptr + {offset}, {result}.to(out_ptr.dtype.element_ty), "
                 f"mask={tile_mask})")
    src.line("")
    src.line("")

    # -------------------------------------------------------------- launcher
    args: list[Argument] = [Argument("x", "value", conv.inputs[0])]
    args.append(Argument("w", "param", f"{conv.scope}.weight"))
    if a.bias:
        args.append(Argument("b", "param", f"{conv.scope}.bias"))
    launcher = f"launch_{name}"
    call = ["out"] + [arg.name for arg in args]
    operand_args, operand_call = epilogue_arguments(epi)
    src.line(f"def {launcher}({', '.join(call + operand_args)}):")
    with src.indent():
        src.line("N = x.shape[0]")
        m = "N * " + " * ".join(str(consts[s]) for s in sizes)
        src.line(f"M = {m}")
        caps = "TILES['gemm']"
        columns, groups = (c_out, 1) if direct else (consts["C_OUT_G"], a.groups)
        src.line(f"BLOCK_M, BLOCK_N, BLOCK_K = tile(M, {caps}[0]), tile({columns}, "
                 f"{caps}[1]), tile({consts['C_IN_G'] * math.prod(a.kernel_size)}, {caps}[2])")
        src.line(f"grid = (triton.cdiv(M, BLOCK_M), triton.cdiv({columns}, BLOCK_N), {groups})")
        kernel_args = ["x", "w.contiguous()"] + (["b"] if has_bias else []) + ["out"]
        kernel_args += operand_call
        kernel_args += ["N", "*x.stride()", "*out.stride()"]
        kernel_args += [f"{k}={v}" for k, v in consts.items()]
        kernel_args += ["BLOCK_M=BLOCK_M", "BLOCK_N=BLOCK_N", "BLOCK_K=BLOCK_K",
                        "DOT_PRECISION=dot_precision(x)",
                        "UPCAST_DOT=upcast_dot(x)", "WIDE=wide(x, out)"]
        launch_lines(src, name, "grid", kernel_args)
    helpers = {"tanh"} if epi.uses_tanh else set()
    return EmittedKernel(name, src.text(), launcher, args + [
        Argument(n, kind, ref) for n, kind, ref in epilogue_refs(epi)], helpers=helpers)


def _padding_lines(mode: str, var: str, size: str) -> list[str]:
    if mode == "reflect":
        return [f"{var} = tl.where({var} < 0, -{var}, {var})",
                f"{var} = tl.where({var} >= {size}, 2 * ({size} - 1) - {var}, {var})"]
    if mode == "replicate":
        return [f"{var} = tl.minimum(tl.maximum({var}, 0), {size} - 1)"]
    if mode == "circular":
        return [f"{var} = tl.where({var} < 0, {var} + {size}, {var})",
                f"{var} = tl.where({var} >= {size}, {var} - {size}, {var})"]
    return []


def _pool_lines(src, pool, dims, conv_tile, epi, index_for, tile_mask, rank) -> str:
    """The window loop of a fused max/avg pool; returns the variable holding the result."""
    is_max = pool.op.startswith("max")
    window = " * ".join(f"PK{d.upper()}" for d in dims)
    if is_max:
        src.line('pooled = tl.full((BLOCK_M, BLOCK_N), float("-inf"), tl.float32)')
    else:
        src.line("pooled = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
    with src.indent(f"for window in tl.static_range({window}):"):
        split_index(src, "window", [f"p{d}" for d in dims],
                    [f"PK{d.upper()}" for d in dims], "rest_p")
        inside = []
        positions = []
        for d in dims:
            D = d.upper()
            src.line(f"o{d} = q{d} * PS{D} - PP{D} + p{d} * PD{D}")
            inside.append(f"(o{d} >= 0) & (o{d} < O{D})")
            positions.append(f"o{d}")
        src.line("inside = m_mask & " + " & ".join(inside))
        conv_tile(positions, "inside")
        src.extend(epi.lines("acc", index_for(positions), tile_mask, rank, channels="[None, :]"))
        if is_max:
            src.line('pooled = tl.maximum(pooled, tl.where(inside[:, None], acc, float("-inf")), '
                     'propagate_nan=tl.PropagateNan.ALL)')
        else:
            src.line("pooled += tl.where(inside[:, None], acc, 0.0)")
    if is_max:
        return "pooled"
    a = pool.attrs
    terms_full, terms_in = [], []
    for d in dims:
        D = d.upper()
        src.line(f"start_{d} = q{d} * PS{D} - PP{D}")
        src.line(f"end_{d} = tl.minimum(start_{d} + PK{D}, O{D} + PP{D})")
        src.line(f"window_{d} = end_{d} - start_{d}")
        terms_full.append(f"window_{d}")
        src.line(f"start_{d} = tl.maximum(start_{d}, 0)")
        src.line(f"end_{d} = tl.minimum(end_{d}, O{D})")
        terms_in.append(f"(end_{d} - start_{d})")
    if a.divisor_override is not None:
        src.line(f"divisor = {a.divisor_override}.0")
        return "(pooled / divisor)"
    src.line("divisor = (" + " * ".join(terms_full if a.count_include_pad else terms_in)
             + ").to(tl.float32)")
    return "(pooled / divisor[:, None])"
