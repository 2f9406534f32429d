"""Implicit-GEMM convolution for 1-, 2- and 3-d, with an epilogue and an optional pool.

Rows of the GEMM tile are output positions (n, o_1, ..., o_S), columns are the output
channels of one group, and the reduction runs over the taps (k_1, ..., k_S) and the input
channels of that group, taps outside and channels inside. Activations are channels-last
inside a compiled module and weights are created channels-last ([C_out, k..., C_in]
physically), so both operands are contiguous along the channels; every tensor is still
read through its strides, which are compile-time constants (Triton then knows how far
loads are contiguous and aligned), so any layout gives the right result.

Three shapes of reduction loop, chosen by the channels per group:
- channel blocks (9 or more): one step is one tap and BLOCK_K channels. Index math is
  1-D (per row: the tap's input position, padding; per column: the channel), and the
  loads are runs of channels that Triton turns into 16-byte asynchronous copies.
- tap blocks (2 to 8, an RGB stem say): one step covers BLOCK_K // CP taps of CP channel
  slots (CP: the channels rounded up to a power of two), so a 3-channel 7x7 stem does not
  feed thirteen zero channels of sixteen to every dot. Where a tap's channels are not a
  whole number of 4-byte words (3 of 16 bits), the launcher reads a copy of the input and
  the weight padded with zero channels to CP (one ATen op each), so each tap is one
  aligned run that Triton loads with asynchronous copies (software-pipelined).
- depthwise (one input channel per group): every output channel is a column and each tap
  is a multiply-accumulate on channel-contiguous rows; there is no GEMM to speak of.
Spatial padding is index arithmetic on the input (zeros masks, reflect/replicate/circular
remap), never a padded copy. With a fused pool (non-overlapping windows only), rows are
pooled positions and the kernel computes the conv and its epilogue at each window offset.
"""

from __future__ import annotations

import math

from ...ops.conv import conv_pads
from ..builder import KernelBuilder
from ..epilogue import Epilogue, epilogue_arguments, epilogue_refs
from ..kernel import SPATIAL, EmitContext, EmittedKernel, split_index

TAP_BLOCKS_UP_TO = 8  # channels per group up to which a step covers several taps
# The launcher's names for the strides of the input, weight and output: XS0=x_strides[0]...
STRIDES = {"X": "x_strides", "A": "x_strides", "W": "w_strides", "O": "out_strides"}


def emit(ctx: EmitContext) -> EmittedKernel:
    graph, kernel = ctx.graph, ctx.kernel
    conv = graph.node(kernel.anchor)
    a = conv.attrs
    x = graph.node(conv.inputs[0])
    S = len(a.kernel_size)
    dims = SPATIAL[S]
    pads = [left for left, _ in conv_pads(a)]
    c_in, c_out = x.shape[1], a.out_channels
    c_in_g = c_in // a.groups
    consts = {
        "C_IN_G": c_in_g, "C_OUT_G": c_out // a.groups,
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
    taps = math.prod(a.kernel_size)
    if c_in_g == 1:
        loop = "depthwise"
        consts["C_OUT"] = c_out
    elif c_in_g <= TAP_BLOCKS_UP_TO:
        loop = "taps"
        consts["CP"] = 1 << (c_in_g - 1).bit_length()
    else:
        loop = "channels"
    consts["TAPS"] = taps
    # A reduction of at most 16 (a 1x1 conv over 16 channels, say) is a single dot step.
    reduction = taps * consts.get("CP", c_in_g)
    row_tiles = loop != "depthwise" and reduction <= 16
    strides = [f"{t}{i}" for t in ("XS", "WS", "OS") for i in range(S + 2)]
    out_node = graph.node(kernel.output)
    rank = len(out_node.shape)
    # A folded batch norm is the epilogue's first node: its scale and shift are computed in
    # the kernel from its parameters, so the conv's own weights are read as they are.
    fold = [kernel.folded_bn] if kernel.folded_bn is not None else []
    epi = Epilogue(graph, fold + kernel.epilogue, kernel.anchor)
    has_bias = a.bias
    rows = [f"q{d}" for d in dims] if pool else [f"o{d}" for d in dims]
    sizes = [f"Q{d.upper()}" for d in dims] if pool else [f"O{d.upper()}" for d in dims]

    what = {"depthwise": "a depthwise multiply-accumulate",
            "taps": "an implicit GEMM over blocks of taps",
            "channels": "an implicit GEMM, taps outside and channel blocks inside"}[loop]
    columns, groups = (c_out, 1) if loop == "depthwise" else (consts["C_OUT_G"], a.groups)
    family, depth, steps = {"depthwise": ("depthwise", 1, taps),
                            "channels": ("conv", c_in_g, taps),
                            "taps": ("conv", taps * consts.get("CP", 1), 1)}[loop]
    if pool is not None and loop != "depthwise":
        family = "conv_pool"  # a second accumulator tile: the pooled values
    # Split-K (SPLIT_K programs share a tile's reduction, then the last one to finish applies
    # the epilogue to the sum) where a step is a tap and a channel block, with no pool.
    splits = loop == "channels" and pool is None and not row_tiles
    b = KernelBuilder(ctx, family, f"conv{S}d as {what}"
                      + (" with a fused pool." if pool else "."))
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
    if splits:
        b.group("split-K: partial sums and tile counters (fresh at each launch)",
                ["ws_ptr", "count_ptr"], ["*split_buffers(SPLIT)"], per_call=True)
    b.group("epilogue operands", epi.params(), operand_call)
    bn_stats = kernel.bn_stats is not None
    if bn_stats:
        b.group("the batch norm's partial statistics [2, row tiles, C_out] (fresh at each "
                "launch), row tiles", ["bn_part_ptr"], ["bn_part"], per_call=True)
        b.group("row tiles of BLOCK_M rows", ["TILES_M"], ["(M + BLOCK_M - 1) // BLOCK_M"])
    b.group("batch size", ["N"])
    b.constants("channels per group, sizes, kernel, stride, padding, dilation"
                + (", pool" if pool else "") + ", taps", consts)
    # Strides are compile-time constants: Triton then knows how far loads are contiguous.
    b.group("input, weight and output strides", strides,
            ["*x_strides", "*w_strides", "*out_strides"], constexpr=True)
    b.flags("the dot's precision: TF32 where PyTorch's convolutions use it",
            {"DOT_PRECISION": "conv_precision(x)"}, keyed=True)
    b.flags("the interpreter's bfloat16 dot", {"UPCAST_DOT": "upcast_dot(x)"})
    if loop == "taps":
        # A 6-byte pixel (3 channels of 16 bits) has no aligned 4-byte piece, the smallest
        # asynchronous copy: the launcher reads a copy of the input and of the weight with
        # each group's channels padded by zeros to CP (helpers.aligned_channels).
        b.operands += [f"x = aligned_channels(x, {a.groups}, {consts['CP']})",
                       f"w = aligned_channels(w, 1, {consts['CP']})"]
        b.flags("whether x and w were padded with zero channels to CP per group",
                {"CHANNELS_PADDED": f"x.shape[1] != {c_in}"})
    m = "N * " + " * ".join(str(consts[s]) for s in sizes)
    b.problem(["N = x.shape[0]", f"M = {m}",
               "x_strides, w_strides, out_strides = x.stride(), w.stride(), out.stride()"], "M")
    b.tile_lines.append(f"BLOCK_M, BLOCK_N, BLOCK_K, warps, stages = gemm_tiles(config, M, "
                        f"{columns}, {depth}, x, {steps})")
    b.tiles += ["BLOCK_M", "BLOCK_N", "BLOCK_K"]
    b.warps, b.stages = "warps", "stages"
    rows_per_program = "BLOCK_M"
    if row_tiles:
        # on a GPU, the loads of the next tile of rows overlap this one's dot
        b.tile_expr("ROW_TILES", "1 if INTERPRET else 4")
        rows_per_program = "(BLOCK_M * ROW_TILES)"
    slices = str(groups)
    if splits:
        b.tile_lines.append(f"TILES_MN = (M + BLOCK_M - 1) // BLOCK_M * (({columns} + BLOCK_N - 1)"
                            f" // BLOCK_N) * {groups}")
        b.tile_expr("SPLIT_K", f"split_k(config, TILES_MN, {taps} * (({c_in_g} + BLOCK_K - 1) "
                    "// BLOCK_K))")
        b.kept["SPLIT"] = f"split_plan(SPLIT_K, M, {c_out}, TILES_MN, out)"
        slices = f"{groups} * SPLIT_K"
    b.grid_dims(("M", rows_per_program), (str(columns), "BLOCK_N"), (slices, None))
    if bn_stats:
        # the batch norm merges these partials (templates/batch_norm_train.py): it needs
        # their number and their rows, BLOCK_M each (the last tile's, the rest)
        b.kept["BN_PARTS"] = f"(2, (M + BLOCK_M - 1) // BLOCK_M, {c_out})"
        b.kept["BN_ROWS"] = "BLOCK_M"
        b.before.append("bn_part = torch.empty(BN_PARTS, device=out.device, "
                        "dtype=work_dtype(out))")
        b.after.append("return bn_part, BN_ROWS  # for the batch norm that reads `out`")

    src = b.body
    src.line("pid_m = tl.program_id(0)")
    src.line("pid_n = tl.program_id(1)")
    if splits:
        with src.indent("if SPLIT_K > 1:  # SPLIT_K programs per tile, on axis 2"):
            src.line("group = tl.program_id(2) // SPLIT_K")
            src.line("pid_k = tl.program_id(2) % SPLIT_K  # this program's share of the steps")
        with src.indent("else:  # loop bounds the compiler knows"):
            src.line("group = tl.program_id(2)")
            src.line("pid_k = 0")
    else:
        src.line("group = tl.program_id(2)")
    src.line("offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)")
    if loop == "depthwise":
        src.line("# Columns: every output channel; each reads input channel co // C_OUT_G.")
        src.line("n_mask = offs_n < C_OUT")
        src.line("co = offs_n")
        src.line("ci = co" if consts["C_OUT_G"] == 1 else "ci = co // C_OUT_G")
    else:
        src.line("# Columns: output channels of this group.")
        src.line("n_mask = offs_n < C_OUT_G")
        src.line("co = group * C_OUT_G + offs_n")
    src.line("w_col = co * WS0")
    if has_bias:
        src.line("bias = tl.load(b_ptr + co, mask=n_mask, other=0.0).to(tl.float32)")
    src.extend(epi.channel_lines("co", "n_mask"))

    def window_start(positions: list[str]) -> None:
        src.line("# Each output's window starts at o * stride - padding.")
        for d, pos in zip(dims, positions):
            src.line(f"base_{d} = {pos} * S{d.upper()} - P{d.upper()}")

    def input_position(valid: str, tap: str) -> str:
        """Lines placing the tap's input position in i{d}; returns the load's row mask."""
        mask = valid
        for d in dims:
            D = d.upper()
            src.line(f"i{d} = base_{d}{tap} + k{d} * D{D}")
            src.extend(_padding_lines(a.padding_mode, f"i{d}", D))
            if a.padding_mode == "zeros":
                mask += f" & (i{d} >= 0) & (i{d} < {D})"
        return mask

    def split_tap(tap: str) -> None:
        split_index(src, tap, [f"k{d}" for d in dims], [f"K{d.upper()}" for d in dims],
                    "rest_k")

    def dot() -> None:
        src.line("if UPCAST_DOT:  # the interpreter's bfloat16 dot is unreliable")
        src.line("    a, b = a.to(tl.float32), b.to(tl.float32)")
        src.line("acc += tl.dot(a, b, input_precision=DOT_PRECISION)")

    def channel_blocks(positions: list[str], valid: str) -> None:
        src.line("offs_c = tl.arange(0, BLOCK_K)")
        src.line("C_STEPS = (C_IN_G + BLOCK_K - 1) // BLOCK_K  # a constexpr")
        steps = "range(pid_k, TAPS * C_STEPS, SPLIT_K)" if splits else "range(0, TAPS * C_STEPS)"
        with src.indent(f"for step in {steps}:"):
            src.line("# step -> (tap, channel block): 1-D index math, per row and per "
                     "channel")
            src.line("c = (step % C_STEPS) * BLOCK_K + offs_c")
            src.line("c_mask = c < C_IN_G")
            src.line("tap = step // C_STEPS")
            split_tap("tap")
            mask = input_position(valid, "")
            src.line("x_tap = x_row + " + " + ".join(f"i{d} * XS{2 + i}"
                                                     for i, d in enumerate(dims)))
            src.line("w_tap = w_col + " + " + ".join(f"k{d} * WS{2 + i}"
                                                     for i, d in enumerate(dims)))
            src.line(f"a = tl.load(x_ptr + x_tap[:, None] + c[None, :] * XS1, "
                     f"mask=({mask})[:, None] & c_mask[None, :], other=0.0)")
            src.line("b = tl.load(w_ptr + w_tap[None, :] + c[:, None] * WS1, "
                     "mask=c_mask[:, None] & n_mask[None, :], other=0.0)")
            dot()

    def tap_blocks(positions: list[str], valid: str) -> None:
        with src.indent("for k0 in range(0, TAPS * CP, BLOCK_K):"):
            src.line("# reduction index -> (tap, channel slot): CP slots per tap, "
                     "C_IN_G of them real")
            src.line("offs_k = k0 + tl.arange(0, BLOCK_K)")
            src.line("c = offs_k % CP")
            src.line("tap = offs_k // CP")
            with src.indent("if CHANNELS_PADDED:  # the zero channels are read too: whole, "
                            "aligned runs of CP"):
                src.line("k_mask = tap < TAPS")
            with src.indent("else:"):
                src.line("k_mask = (tap < TAPS) & (c < C_IN_G)")
            split_tap("tap")
            mask = input_position(f"({valid})[:, None] & k_mask[None, :]", "[:, None]")
            offset = "x_row[:, None] + " + " + ".join(
                f"i{d} * XS{2 + i}" for i, d in enumerate(dims)) + " + c[None, :] * XS1"
            src.line(f"a = tl.load(x_ptr + {offset}, mask={mask}, other=0.0)")
            w_offset = " + ".join(f"k{d} * WS{2 + i}" for i, d in enumerate(dims))
            src.line(f"b = tl.load(w_ptr + w_col[None, :] + ({w_offset} + c * WS1)[:, None], "
                     "mask=k_mask[:, None] & n_mask[None, :], other=0.0)")
            dot()

    def depthwise(positions: list[str], valid: str) -> None:
        with src.indent("for tap in range(0, TAPS):"):
            split_tap("tap")
            mask = input_position(valid, "")
            src.line("x_tap = x_row + " + " + ".join(f"i{d} * XS{2 + i}"
                                                     for i, d in enumerate(dims)))
            src.line(f"xv = tl.load(x_ptr + x_tap[:, None] + ci[None, :] * XS1, "
                     f"mask=({mask})[:, None] & n_mask[None, :], other=0.0)")
            w_offset = " + ".join(f"k{d} * WS{2 + i}" for i, d in enumerate(dims))
            src.line(f"wv = tl.load(w_ptr + w_col + {w_offset}, mask=n_mask, other=0.0)")
            src.line("acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]")

    body = {"channels": channel_blocks, "taps": tap_blocks, "depthwise": depthwise}[loop]

    # C_out by name, not number: kernels of layers that differ only in their channel
    # counts keep one body
    c_total = ("C_OUT" if "C_OUT" in consts else
               "C_OUT_G" if a.groups == 1 else f"(C_OUT_G * {a.groups})")

    def conv_tile(positions: list[str], valid: str) -> None:
        window_start(positions)
        src.line("acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
        body(positions, valid)
        if splits:
            _combine_split(src, c_total)
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

    def row_tile(first: str) -> None:
        src.line("# Rows: output positions (n, " + ", ".join(rows) + ").")
        src.line("if INDEX_64:  # some tensor can reach 2**31 elements: index in int64")
        src.line(f"    offs_m = {first}.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)")
        src.line("else:")
        src.line(f"    offs_m = {first} * BLOCK_M + tl.arange(0, BLOCK_M)")
        src.line("rest = offs_m")
        for var, size in zip(reversed(rows), reversed(sizes)):
            src.line(f"{var} = rest % {size}")
            src.line(f"rest = rest // {size}")
        src.line("n = rest")
        src.line("m_mask = n < N")
        if loop == "depthwise":
            src.line("x_row = n * XS0")
        elif loop == "taps" and a.groups == 1:
            src.line("x_row = n * XS0  # (group * C_IN_G would hide that rows are aligned)")
        elif loop == "taps":
            src.line("x_row = n * XS0 + group * (CP if CHANNELS_PADDED else C_IN_G) * XS1")
        else:
            src.line("x_row = n * XS0 + group * C_IN_G * XS1")
        tile_mask = "m_mask[:, None] & n_mask[None, :]"
        if pool is None:
            conv_tile(rows, "m_mask")
            src.extend(epi.lines("acc", index_for(rows), tile_mask, rank,
                                 channels="[None, :]"))
            result = "acc"
        else:
            result = _pool_lines(src, pool, dims, conv_tile, epi, index_for, tile_mask, rank)
        store_mask = "keep" if splits else tile_mask  # split-K: the last program's tile
        src.line("# Store through the output's strides (it may be a slice of a concat).")
        row = "n * OS0" + "".join(f" + {var} * OS{2 + i}" for i, var in enumerate(rows))
        src.line(f"o_row = {row}")
        src.line(f"tl.store(out_ptr + o_row[:, None] + co[None, :] * OS1, "
                 f"{result}.to(out_ptr.dtype.element_ty), mask={store_mask})")
        if bn_stats:
            _partial_statistics(src, store_mask, first, c_total)

    if row_tiles:
        src.line("# The reduction is one step: nothing for a K loop to overlap. A loop over")
        src.line("# ROW_TILES tiles of rows instead lets the next tile's loads overlap this")
        src.line("# tile's dot and stores (the weights' tile is the same for all of them).")
        with src.indent("for row_tile in range(0, ROW_TILES):"):
            row_tile("(pid_m * ROW_TILES + row_tile)")
    else:
        row_tile("pid_m")
    if epi.uses_tanh:
        b.helpers.add("tanh")
    return b.build()


def _combine_split(src, c_out: str) -> None:
    """Split-K: every program adds its partial sums into the tile's float32 sums; the last
    of the SPLIT_K to arrive (a counter per tile) reads the whole sum back, and only its
    epilogue is stored. With SPLIT_K = 1 all of it is compiled away."""
    with src.indent("if SPLIT_K > 1:"):
        src.line(f"ws = ws_ptr + offs_m[:, None] * {c_out} + co[None, :]  # sums: [M, C_out]")
        src.line("tile_mask = m_mask[:, None] & n_mask[None, :]")
        src.line("tl.atomic_add(ws, acc, mask=tile_mask)")
        src.line("tile_id = (group * tl.num_programs(0) + pid_m) * tl.num_programs(1) + pid_n")
        src.line("arrived = tl.atomic_add(count_ptr + tile_id, 1)")
        src.line("# the others' sums are in L2 (atomics); the counter's acquire orders this load")
        src.line("keep = tile_mask & ((tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32) + arrived)"
                 " == SPLIT_K - 1)")
        src.line('acc = tl.load(ws, mask=keep, other=0.0, cache_modifier=".cg")')
    with src.indent("else:"):
        src.line("keep = m_mask[:, None] & n_mask[None, :]")


def _partial_statistics(src, mask: str, tile: str, c_out: str) -> None:
    """The batch norm's partial statistics of this tile (Kernel.bn_stats): per output
    channel, the mean and M2 of the values just stored (rounded to the output's dtype, as
    the batch norm reads them), a two-pass over the registers. The tile is read back (from
    L2) rather than reduced from `acc`: reductions of the dot's accumulator layout took
    ResNet's sm_90 convs from ~108 registers to 130-238 (one program per SM instead of
    two); read back, 124. Programs of a split-K tile that do not apply the epilogue have
    no valid rows and store nothing."""
    src.line("# The batch norm's partial statistics of this tile: mean and M2 per channel,")
    src.line("# of the values this program just stored (a barrier makes them visible to all")
    src.line("# of its threads).")
    src.line("tl.debug_barrier()")
    src.line(f"bn_v = tl.load(out_ptr + o_row[:, None] + co[None, :] * OS1, mask={mask}, "
             "other=0.0).to(tl.float32)")
    src.line(f"bn_rows = tl.sum(({mask}).to(tl.float32), axis=0)")
    src.line("bn_mean = tl.sum(bn_v, axis=0) / tl.maximum(bn_rows, 1.0)")
    src.line(f"bn_dev = tl.where({mask}, bn_v - bn_mean[None, :], 0.0)")
    src.line(f"bn_part = bn_part_ptr + {tile} * {c_out} + co")
    src.line("tl.store(bn_part, bn_mean, mask=bn_rows > 0.0)")
    src.line(f"tl.store(bn_part + TILES_M * {c_out}, tl.sum(bn_dev * bn_dev, axis=0), "
             "mask=bn_rows > 0.0)")


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
