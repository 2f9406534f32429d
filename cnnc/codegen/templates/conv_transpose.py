"""Transposed convolution 1-, 2- and 3-d as a gather-form implicit GEMM, with an epilogue.

nn.ConvTransposeNd scatters every input position i into the outputs o = i*s - p + k*d.
Read backwards, output o gathers from the input positions i = (o + p - k*d) / s, and a
tap (k) contributes only where that division is exact and 0 <= i < in. So rows of the
GEMM tile are output positions (n, o_1, ..., o_S), columns are the output channels of
one group, and the reduction runs over (ci, k_1, ..., k_S) of that group; the two
conditions are masks on the input load. The weight keeps PyTorch's layout
[C_in, C_out / groups, k...] and is read through its strides, so nothing is repacked.
output_padding only lengthens the output: its extra positions gather like any other.
"""

from __future__ import annotations

import math

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
    # fuse.py applies a batch norm after a conv_transpose as an epilogue affine instead.
    assert kernel.folded_bn is None, "conv_transpose takes no folded batch norm"
    x = graph.node(conv.inputs[0])
    S = len(a.kernel_size)
    dims = SPATIAL[S]
    c_in, c_out = x.shape[1], a.out_channels
    consts = {
        "C_IN_G": c_in // a.groups, "C_OUT_G": c_out // a.groups,
        **{f"{d.upper()}": x.shape[2 + i] for i, d in enumerate(dims)},
        **{f"O{d.upper()}": conv.shape[2 + i] for i, d in enumerate(dims)},
        **{f"K{d.upper()}": a.kernel_size[i] for i, d in enumerate(dims)},
        **{f"S{d.upper()}": a.stride[i] for i, d in enumerate(dims)},
        **{f"P{d.upper()}": a.padding[i] for i, d in enumerate(dims)},
        **{f"D{d.upper()}": a.dilation[i] for i, d in enumerate(dims)},
    }
    rank = len(graph.node(kernel.output).shape)
    epi = Epilogue(graph, kernel.epilogue, kernel.anchor)
    has_bias = a.bias
    name = ctx.name
    rows = [f"o{d}" for d in dims]
    sizes = [f"O{d.upper()}" for d in dims]

    src = Source()
    src.line("@triton.jit")
    pointers = ["x_ptr", "w_ptr"] + (["b_ptr"] if has_bias else []) + ["out_ptr"]
    with src.indent(f"def {name}("):
        src.line(", ".join(pointers) + ",  # input, weight, " +
                 ("bias, " if has_bias else "") + "output")
        if epi.params():
            src.line(", ".join(epi.params()) + ",  # epilogue operands")
        src.line("N,  # batch size")
        for label, prefix in (("input", "sx"), ("weight", "sw"), ("output", "so")):
            src.line(", ".join(f"{prefix}{i}" for i in range(S + 2)) + f",  # {label} strides")
        src.line("C_IN_G: tl.constexpr, C_OUT_G: tl.constexpr,  # channels per group")
        for group, what in ((0, "input size"), (1, "output size"), (2, "kernel size"),
                            (3, "stride"), (4, "padding"), (5, "dilation")):
            names = list(consts)[2 + group * S: 2 + (group + 1) * S]
            src.line(", ".join(f"{k}: tl.constexpr" for k in names) + f",  # {what}")
        src.line("BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,")
        src.line("DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,")
    src.line("):")
    with src.indent():
        src.line('"""' + f"conv_transpose{S}d as a gather-form implicit GEMM.")
        src.line("")
        src.extend(ctx.describe())
        src.line('"""')
        src.line("pid_m = tl.program_id(0)")
        src.line("pid_n = tl.program_id(1)")
        src.line("group = tl.program_id(2)")
        src.line("# Rows: output positions (n, " + ", ".join(rows) + "); N * " +
                 " * ".join(sizes) + " may pass 2**31, so they are split in int64.")
        src.line("offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)")
        src.line("rest = offs_m")
        for var, size in zip(reversed(rows), reversed(sizes)):
            src.line(f"{var} = (rest % {size}).to(tl.int32)")
            src.line(f"rest = rest // {size}")
        src.line("n = rest")
        src.line("m_mask = n < N")
        src.line("# Columns: output channels of this group.")
        src.line("offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)")
        src.line("n_mask = offs_n < C_OUT_G")
        src.line("co = group * C_OUT_G + offs_n")
        src.line("K_TOTAL = C_IN_G * " + " * ".join(f"K{d.upper()}" for d in dims))
        src.line("x_base = n * sx0 + (group * C_IN_G).to(tl.int64) * sx1")
        src.line("w_base = (group * C_IN_G).to(tl.int64) * sw0")
        if has_bias:
            src.line("bias = tl.load(b_ptr + co, mask=n_mask, other=0.0).to(tl.float32)")
        src.extend(epi.channel_lines("co", "n_mask"))
        src.line("acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
        with src.indent("for k0 in range(0, K_TOTAL, BLOCK_K):"):
            src.line("offs_k = k0 + tl.arange(0, BLOCK_K)")
            src.line("k_mask = offs_k < K_TOTAL")
            src.line("# reduction index -> (ci, " + ", ".join(f"k{d}" for d in dims) + ")")
            split_index(src, "offs_k", [f"k{d}" for d in dims],
                        [f"K{d.upper()}" for d in dims], "rest_k")
            src.line("ci = rest_k")
            src.line("# The input position each (output, tap) pair gathers from; it exists "
                     "only where")
            src.line("# the stride divides exactly and it lies inside the input.")
            x_offset = "x_base[:, None] + ci[None, :] * sx1"
            w_offset = "w_base + ci[:, None] * sw0 + offs_n[None, :] * sw1"
            for i, d in enumerate(dims):
                D = d.upper()
                if a.stride[i] == 1:
                    src.line(f"i{d} = o{d}[:, None] + P{D} - k{d}[None, :] * D{D}")
                    src.line(f"valid_{d} = (i{d} >= 0) & (i{d} < {D})")
                else:
                    # Negative t rounds differently on the GPU and in the interpreter;
                    # `t >= 0` masks those lanes, so either rounding is fine.
                    src.line(f"t_{d} = o{d}[:, None] + P{D} - k{d}[None, :] * D{D}")
                    src.line(f"i{d} = t_{d} // S{D}")
                    src.line(f"valid_{d} = (t_{d} >= 0) & (t_{d} % S{D} == 0) & (i{d} < {D})")
                x_offset += f" + i{d} * sx{2 + i}"
                w_offset += f" + k{d}[:, None] * sw{2 + i}"
            load_mask = "m_mask[:, None] & k_mask[None, :] & " + " & ".join(
                f"valid_{d}" for d in dims)
            src.line(f"a = tl.load(x_ptr + {x_offset},")
            src.line(f"            mask={load_mask}, other=0.0)")
            src.line(f"b = tl.load(w_ptr + {w_offset},")
            src.line("            mask=k_mask[:, None] & n_mask[None, :], other=0.0)")
            with src.indent("if UPCAST_DOT:  # the interpreter's tl.dot misreads bfloat16"):
                src.line("a = a.to(tl.float32)")
                src.line("b = b.to(tl.float32)")
            src.line("acc += tl.dot(a, b, input_precision=DOT_PRECISION)")
        if has_bias:
            src.line("acc += bias[None, :]")

        def index(d: int) -> str:
            if d == 0:
                return "n[:, None]"
            if d == 1:
                return "co[None, :]"
            return f"{rows[d - 2]}[:, None]"

        tile_mask = "m_mask[:, None] & n_mask[None, :]"
        src.extend(epi.lines("acc", index, tile_mask, rank, channels="[None, :]"))
        offset = "n[:, None] * so0 + co[None, :] * so1"
        for i, var in enumerate(rows):
            offset += f" + {var}[:, None] * so{2 + i}"
        src.line("# Store through the output's strides (it may be a slice of a concat).")
        src.line(f"tl.store(out_ptr + {offset}, acc.to(out_ptr.dtype.element_ty), "
                 f"mask={tile_mask})")
    src.line("")
    src.line("")

    # -------------------------------------------------------------- launcher
    args: list[Argument] = [Argument("x", "value", conv.inputs[0]),
                            Argument("w", "param", f"{conv.scope}.weight")]
    if has_bias:
        args.append(Argument("b", "param", f"{conv.scope}.bias"))
    launcher = f"launch_{name}"
    call = ["out"] + [arg.name for arg in args]
    operand_args, operand_call = epilogue_arguments(epi)
    src.line(f"def {launcher}({', '.join(call + operand_args)}):")
    with src.indent():
        src.line("N = x.shape[0]")
        src.line("M = N * " + " * ".join(str(consts[s]) for s in sizes))
        caps = "TILES['gemm']"
        reduction = consts["C_IN_G"] * math.prod(a.kernel_size)
        src.line(f"BLOCK_M, BLOCK_N, BLOCK_K = tile(M, {caps}[0]), tile({consts['C_OUT_G']}, "
                 f"{caps}[1]), tile({reduction}, {caps}[2])")
        src.line(f"grid = (triton.cdiv(M, BLOCK_M), triton.cdiv({consts['C_OUT_G']}, BLOCK_N), "
                 f"{a.groups})")
        kernel_args = ["x", "w"] + (["b"] if has_bias else []) + ["out"]
        kernel_args += operand_call
        kernel_args += ["N", "*x.stride()", "*w.stride()", "*out.stride()"]
        kernel_args += [f"{k}={v}" for k, v in consts.items()]
        kernel_args += ["BLOCK_M=BLOCK_M", "BLOCK_N=BLOCK_N", "BLOCK_K=BLOCK_K",
                        "DOT_PRECISION=dot_precision(x)",
                        "UPCAST_DOT=upcast_dot(x)"]
        launch_lines(src, name, "grid", kernel_args)
    helpers = {"tanh"} if epi.uses_tanh else set()
    return EmittedKernel(name, src.text(), launcher, args + [
        Argument(n, kind, ref) for n, kind, ref in epilogue_refs(epi)], helpers=helpers)


