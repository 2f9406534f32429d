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

from ..builder import KernelBuilder
from ..epilogue import Epilogue, epilogue_arguments, epilogue_refs
from ..kernel import SPATIAL, EmitContext, EmittedKernel, split_index
from ..source import Source
from .conv import TAP_BLOCKS_UP_TO


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
    rows = [f"j{d}" for d in dims]
    strides = [f"{t}{i}" for t in ("XS", "WS", "OS") for i in range(S + 2)]

    b = KernelBuilder(ctx, "conv", f"conv_transpose{S}d as a sub-pixel implicit GEMM: one grid "
                      "slice per output phase.")
    b.wide_in_interpreter = True  # as it was: int32 index math doubles its interpreted time
    b.argument("x", "value", conv.inputs[0])
    b.argument("w", "param", f"{conv.scope}.weight")
    if has_bias:
        b.argument("b", "param", f"{conv.scope}.bias")
    for ref_name, kind, ref in epilogue_refs(epi):
        b.argument(ref_name, kind, ref)
    _, operand_call = epilogue_arguments(epi)
    pointers = ["x_ptr", "w_ptr"] + (["b_ptr"] if has_bias else []) + ["out_ptr"]
    b.group("input, weight, " + ("bias, " if has_bias else "") + "output", pointers,
            ["x", "w"] + (["b"] if has_bias else []) + ["out"])
    b.group("epilogue operands", epi.params(), operand_call)
    b.group("batch size", ["N"])
    b.constants("channels per group" + (", channel slots per tap (C_IN_G up to a power of two)"
                                        if tap_blocks else "")
                + "; input size, output size, outputs per phase (at most), stride, padding, "
                "dilation", consts)
    # Strides are compile-time constants: Triton then knows how far loads are contiguous.
    b.group("input, weight and output strides", strides,
            ["*x_strides", "*w_strides", "*out_strides"], constexpr=True)
    b.flags("the dot's precision: TF32 where PyTorch's convolutions use it",
            {"DOT_PRECISION": "conv_precision(x)"}, keyed=True)
    b.flags("the interpreter's bfloat16 dot", {"UPCAST_DOT": "upcast_dot(x)"})
    b.problem(["N = x.shape[0]",
               "M = N * " + " * ".join(str(consts[f"J{d.upper()}"]) for d in dims)
               + "  # rows of one phase",
               "x_strides, w_strides, out_strides = x.stride(), w.stride(), out.stride()"], "M")
    taps = [[len(t) for t in phase_taps(k, st, dl)]
            for k, st, dl in zip(a.kernel_size, a.stride, a.dilation)]
    if tap_blocks:  # the phase with most taps in as few steps as the tile allows
        depth, steps = math.prod(max(t) for t in taps) * consts["CP"], 1
    else:
        depth, steps = consts["C_IN_G"], max(1, math.prod(min(t) for t in taps))
    b.tile_lines.append(f"BLOCK_M, BLOCK_N, BLOCK_K, warps, stages = gemm_tiles(config, M, "
                        f"{consts['C_OUT_G']}, {depth}, x, {steps})")
    b.tiles += ["BLOCK_M", "BLOCK_N", "BLOCK_K"]
    b.warps, b.stages = "warps", "stages"
    b.grid_dims(("M", "BLOCK_M"), (str(consts["C_OUT_G"]), "BLOCK_N"),
                (str(a.groups * phases), None))

    src = b.body
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
    src.line("if INDEX_64:  # some tensor can reach 2**31 elements: index in int64")
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
    if epi.uses_tanh:
        b.helpers.add("tanh")
    return b.build()


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
