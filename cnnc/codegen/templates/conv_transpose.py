"""Transposed convolution 1-, 2- and 3-d as a sub-pixel (phase) implicit GEMM, with an epilogue.

nn.ConvTransposeNd scatters every input position i into the outputs o = i*s - p + k*d.
Read backwards, output o gathers from i = (o + p - k*d) / s, and a tap k contributes only
where that division is exact. Whether it is depends on the output's phase r = (o + p) mod s
alone: tap k serves phase r exactly when k*d = r (mod s). So the outputs split into s
phases per dim (s_1 * ... * s_S in all, one grid slice each), and a phase's program
loops only over its own taps, k0(r), k0(r) + s/g, ... (g = gcd(s, d)): no tap that is
masked to zero reaches tl.dot. Within a phase the input position is
i = j + shift(r) - (k*d - r) / s for the phase's j-th output o = first(r) + j*s, with
every division exact. Rows of the GEMM tile are a phase's outputs (n, j_1, ..., j_S),
columns the output channels of one group; the reduction runs over the phase's taps
outside and input channels inside (channels-last: contiguous loads). The weight keeps
PyTorch's layout [C_in, C_out / groups, k...] and is read through its strides.
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
from .conv import STRIDES, TAP_BLOCKS_UP_TO


def phase_taps(kernel: int, stride: int, dilation: int) -> list[list[int]]:
    """The taps of each phase r: every k < kernel with k * dilation = r (mod stride)."""
    return [[k for k in range(kernel) if (k * dilation) % stride == r] for r in range(stride)]


def _table(var: str, index: str, values: list[int]) -> str:
    """`var = values[index]` for a scalar index: a chain of tl.where (or the one value)."""
    if len(set(values)) == 1:
        return f"{var} = {values[0]}"
    expr = str(values[-1])
    for r in reversed(range(len(values) - 1)):
        expr = f"tl.where({index} == {r}, {values[r]}, {expr})"
    return f"{var} = {expr}"


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
        **{f"J{d.upper()}": -(-conv.shape[2 + i] // a.stride[i]) for i, d in enumerate(dims)},
        **{f"S{d.upper()}": a.stride[i] for i, d in enumerate(dims)},
        **{f"P{d.upper()}": a.padding[i] for i, d in enumerate(dims)},
        **{f"D{d.upper()}": a.dilation[i] for i, d in enumerate(dims)},
    }
    phases = math.prod(a.stride)
    # Few input channels: a step covers several taps (as conv.py's tap blocks do).
    tap_blocks = consts["C_IN_G"] <= TAP_BLOCKS_UP_TO
    if tap_blocks:
        consts["CP"] = 1 << (consts["C_IN_G"] - 1).bit_length()
    rank = len(graph.node(kernel.output).shape)
    epi = Epilogue(graph, kernel.epilogue, kernel.anchor)
    has_bias = a.bias
    name = ctx.name
    rows = [f"j{d}" for d in dims]
    strides = [f"{t}{i}" for t in ("XS", "WS", "OS") for i in range(S + 2)]

    src = Source()
    src.line("@triton.jit")
    pointers = ["x_ptr", "w_ptr"] + (["b_ptr"] if has_bias else []) + ["out_ptr"]
    with src.indent(f"def {name}("):
        src.line(", ".join(pointers) + ",  # input, weight, " +
                 ("bias, " if has_bias else "") + "output")
        if epi.params():
            src.line(", ".join(epi.params()) + ",  # epilogue operands")
        src.line("N,  # batch size")
        src.line("C_IN_G: tl.constexpr, C_OUT_G: tl.constexpr,  # channels per group")
        if tap_blocks:
            src.line("CP: tl.constexpr,  # channel slots per tap: C_IN_G up to a power of two")
        for group, what in ((0, "input size"), (1, "output size"),
                            (2, "outputs per phase (at most)"), (3, "stride"), (4, "padding"),
                            (5, "dilation")):
            names = list(consts)[2 + group * S: 2 + (group + 1) * S]
            src.line(", ".join(f"{k}: tl.constexpr" for k in names) + f",  # {what}")
        for label, prefix in (("input", "XS"), ("weight", "WS"), ("output", "OS")):
            src.line(", ".join(f"{s}: tl.constexpr" for s in strides if s.startswith(prefix))
                     + f",  # {label} strides")
        src.line("BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,")
        src.line("DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr, WIDE: tl.constexpr,")
    src.line("):")
    with src.indent():
        src.line('"""' + f"conv_transpose{S}d as a sub-pixel implicit GEMM: one grid slice "
                 "per output phase.")
        src.line("")
        src.extend(ctx.describe())
        src.line('"""')
        src.line("pid_m = tl.program_id(0)")
        src.line("pid_n = tl.program_id(1)")
        src.line(f"group = tl.program_id(2) // {phases}")
        src.line(f"phase = tl.program_id(2) % {phases}")
        split_index(src, "phase", [f"r{d}" for d in dims], [f"S{d.upper()}" for d in dims],
                    "rest_r")
        src.line("# Per dim, the phase's outputs o = first + j * S (j < count) gather from")
        src.line("# i = j + shift - (k * D - r) // S through its taps k = k0 + t * step, t < taps.")
        for i, d in enumerate(dims):
            D = d.upper()
            src.line(f"first_{d} = (r{d} + S{D} - P{D} % S{D}) % S{D}")
            src.line(f"count_{d} = (O{D} - first_{d} + S{D} - 1) // S{D}")
            src.line(f"shift_{d} = (first_{d} + P{D} - r{d}) // S{D}")
            taps = phase_taps(a.kernel_size[i], a.stride[i], a.dilation[i])
            src.line(_table(f"k0_{d}", f"r{d}", [t[0] if t else 0 for t in taps]))
            src.line(_table(f"taps_{d}", f"r{d}", [len(t) for t in taps]))
            step = a.stride[i] // math.gcd(a.stride[i], a.dilation[i])
            src.line(f"step_{d} = {step}")
        src.line("# Rows: the phase's output positions (n, " + ", ".join(rows) + ").")
        src.line("if WIDE:  # some tensor has 2^31 elements or more: index in int64")
        src.line("    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)")
        src.line("else:")
        src.line("    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)")
        src.line("rest = offs_m")
        for var, d in zip(reversed(rows), reversed(dims)):
            src.line(f"{var} = rest % J{d.upper()}")
            src.line(f"rest = rest // J{d.upper()}")
        src.line("n = rest")
        src.line("m_mask = (n < N) & " + " & ".join(f"(j{d} < count_{d})" for d in dims))
        for d in dims:
            src.line(f"o{d} = first_{d} + j{d} * S{d.upper()}")
        src.line("# Columns: output channels of this group.")
        src.line("offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)")
        src.line("n_mask = offs_n < C_OUT_G")
        src.line("co = group * C_OUT_G + offs_n")
        src.line("x_row = n * XS0 + group * C_IN_G * XS1")
        src.line("w_col = offs_n * WS1 + group * C_IN_G * WS0")
        if has_bias:
            src.line("bias = tl.load(b_ptr + co, mask=n_mask, other=0.0).to(tl.float32)")
        src.extend(epi.channel_lines("co", "n_mask"))
        src.line("acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
        src.line("phase_taps = " + " * ".join(f"taps_{d}" for d in dims))
        if tap_blocks:
            _tap_blocks(src, dims)
        else:
            _channel_blocks(src, dims)
        if has_bias:
            src.line("acc += bias[None, :]")

        def index(d: int) -> str:
            if d == 0:
                return "n[:, None]"
            if d == 1:
                return "co[None, :]"
            return f"o{dims[d - 2]}[:, None]"

        tile_mask = "m_mask[:, None] & n_mask[None, :]"
        src.extend(epi.lines("acc", index, tile_mask, rank, channels="[None, :]"))
        src.line("# Store through the output's strides (it may be a slice of a concat).")
        src.line("o_row = n * OS0 + " + " + ".join(f"o{d} * OS{2 + i}"
                                                   for i, d in enumerate(dims)))
        src.line(f"tl.store(out_ptr + o_row[:, None] + co[None, :] * OS1, "
                 f"acc.to(out_ptr.dtype.element_ty), mask={tile_mask})")
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
        src.line("M = N * " + " * ".join(str(consts[f"J{d.upper()}"]) for d in dims)
                 + "  # rows of one phase")
        taps = [[len(t) for t in phase_taps(k, s, d)]
                for k, s, d in zip(a.kernel_size, a.stride, a.dilation)]
        if tap_blocks:  # the phase with most taps in as few steps as the tile allows
            depth, steps = math.prod(max(t) for t in taps) * consts["CP"], 1
        else:
            depth, steps = consts["C_IN_G"], max(1, math.prod(min(t) for t in taps))
        src.line(f"BLOCK_M, BLOCK_N, BLOCK_K, warps, stages = gemm_tiles('conv', M, "
                 f"{consts['C_OUT_G']}, {depth}, x, {steps})")
        src.line(f"grid = (triton.cdiv(M, BLOCK_M), triton.cdiv({consts['C_OUT_G']}, BLOCK_N), "
                 f"{a.groups * phases})")
        src.line("x_strides, w_strides, out_strides = x.stride(), w.stride(), out.stride()")
        kernel_args = ["x", "w"] + (["b"] if has_bias else []) + ["out"]
        kernel_args += operand_call
        kernel_args += ["N"]
        kernel_args += [f"{k}={v}" for k, v in consts.items()]
        kernel_args += [f"{s}={STRIDES[s[0]]}[{s[2:]}]" for s in strides]
        kernel_args += ["BLOCK_M=BLOCK_M", "BLOCK_N=BLOCK_N", "BLOCK_K=BLOCK_K",
                        "DOT_PRECISION=conv_precision(x)", "UPCAST_DOT=upcast_dot(x)",
                        "WIDE=wide(x, out)", "num_warps=warps", "num_stages=stages"]
        launch_lines(src, name, "grid", kernel_args)
    helpers = {"tanh"} if epi.uses_tanh else set()
    return EmittedKernel(name, src.text(), launcher, args + [
        Argument(n, kind, ref) for n, kind, ref in epilogue_refs(epi)], helpers=helpers)


def _input_positions(src: Source, dims, tap: str) -> str:
    """Lines placing each dim's tap k{d} and input position i{d} (tap: how the per-tap
    values broadcast); returns the positions' mask."""
    mask = []
    for d in dims:
        D = d.upper()
        src.line(f"k{d} = k0_{d} + t_{d} * step_{d}")
        src.line(f"i{d} = j{d}[:, None] + (shift_{d} - (k{d} * D{D} - r{d}) // S{D}){tap}"
                 if tap else f"i{d} = j{d} + (shift_{d} - (k{d} * D{D} - r{d}) // S{D})")
        mask.append(f"(i{d} >= 0) & (i{d} < {D})")
    return " & ".join(mask)


def _dot(src: Source) -> None:
    with src.indent("if UPCAST_DOT:  # the interpreter's tl.dot misreads bfloat16"):
        src.line("a = a.to(tl.float32)")
        src.line("b = b.to(tl.float32)")
    src.line("acc += tl.dot(a, b, input_precision=DOT_PRECISION)")


def _channel_blocks(src: Source, dims) -> None:
    """One step: one tap of the phase and BLOCK_K input channels (1-D index math)."""
    src.line("offs_c = tl.arange(0, BLOCK_K)")
    src.line("C_STEPS = (C_IN_G + BLOCK_K - 1) // BLOCK_K  # a constexpr")
    with src.indent("for step in range(0, phase_taps * C_STEPS):"):
        src.line("# step -> (tap of this phase, channel block): 1-D index math")
        src.line("c = (step % C_STEPS) * BLOCK_K + offs_c")
        src.line("c_mask = c < C_IN_G")
        src.line("tap = step // C_STEPS")
        split_index(src, "tap", [f"t_{d}" for d in dims], [f"taps_{d}" for d in dims],
                    "rest_t")
        inside = _input_positions(src, dims, "")
        src.line("x_tap = x_row + " + " + ".join(f"i{d} * XS{2 + i}"
                                                 for i, d in enumerate(dims)))
        src.line("w_tap = w_col + " + " + ".join(f"k{d} * WS{2 + i}"
                                                 for i, d in enumerate(dims)))
        src.line(f"a = tl.load(x_ptr + x_tap[:, None] + c[None, :] * XS1, "
                 f"mask=(m_mask & {inside})[:, None] & c_mask[None, :], other=0.0)")
        src.line("b = tl.load(w_ptr + w_tap[None, :] + c[:, None] * WS0, "
                 "mask=c_mask[:, None] & n_mask[None, :], other=0.0)")
        _dot(src)


def _tap_blocks(src: Source, dims) -> None:
    """Few input channels: one step covers BLOCK_K // CP of the phase's taps, CP channel
    slots each (C_IN_G of them real)."""
    with src.indent("for k0 in range(0, phase_taps * CP, BLOCK_K):"):
        src.line("# reduction index -> (tap of this phase, channel slot)")
        src.line("offs_k = k0 + tl.arange(0, BLOCK_K)")
        src.line("c = offs_k % CP")
        src.line("tap = offs_k // CP")
        src.line("k_mask = (tap < phase_taps) & (c < C_IN_G)")
        split_index(src, "tap", [f"t_{d}" for d in dims], [f"taps_{d}" for d in dims],
                    "rest_t")
        inside = _input_positions(src, dims, "[None, :]")
        x_offset = " + ".join(f"i{d} * XS{2 + i}" for i, d in enumerate(dims))
        w_offset = " + ".join(f"k{d} * WS{2 + i}" for i, d in enumerate(dims))
        src.line(f"a = tl.load(x_ptr + x_row[:, None] + {x_offset} + c[None, :] * XS1,")
        src.line(f"            mask=m_mask[:, None] & k_mask[None, :] & {inside}, other=0.0)")
        src.line(f"b = tl.load(w_ptr + w_col[None, :] + ({w_offset} + c * WS0)[:, None],")
        src.line("            mask=k_mask[:, None] & n_mask[None, :], other=0.0)")
        _dot(src)
