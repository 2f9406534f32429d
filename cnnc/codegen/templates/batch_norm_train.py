"""Batch norm with batch statistics (training mode, or no running statistics).

The input is read as a strided [rows, C] view, rows being (n, spatial...): a row index is
split into its dims once per row, never per element, and the channel is the tile's second
axis, so a channels-last input (channel stride 1) is read in contiguous runs of channels.
Any other layout is read correctly through its strides. Programs are (block of channels,
chunk of rows); on a GPU there are enough chunks to fill the machine even with few channels.

1. `..._stats` (only when a channel's rows are split into several chunks): Welford's
   running mean and sum of squared deviations per lane, merged over the lanes (Chan et
   al.) into one partial (mean, M2) per channel and chunk, stored in a float32 workspace.
   Values are taken relative to a pivot, the channel's first value, so a large mean costs
   no precision. Its first program counts the batch (num_batches_tracked += 1).
2. The apply kernel: merges the channels' partials (a few hundred floats, from L2), or with
   one chunk (FUSED: the interpreter, small tensors) computes them itself as in 1; updates
   the running statistics (the first chunk's programs) as nn.BatchNorm does; normalises its
   chunk, applies the affine and the fused epilogue, and stores. The input is read once
   for the statistics and once here. Its first chunk's programs also store the batch mean
   and invstd it normalised with, float32, into a [2, C] tensor the launcher returns: the
   training backward (cnnc/runtime/grad/norm.py) reads them rather than recomputing them
   (forward-only plans drop it: 2 * C floats).

From a conv (Kernel.stats_from, passes/fuse.py): where the input is a conv's output that
only the batch norm reads, the conv's epilogue stored partial statistics (mean, M2) per
tile of BLOCK_M rows of its [N * spatial, C] output and channel, the rows in the batch
norm's [rows, C] order; its launcher returned (partials, BLOCK_M), which this launcher
takes as `partials`. No kernel reads the input for statistics: the apply kernel merges
the conv's partials, relative to a pivot (the first tile's mean), counts the batch, and
normalises, so the input is read once. Where there are more than CONV_PARTIALS partials
(the generated runtime's; 6272 for ResNet's stem at batch 64), every apply program would
re-read them all from L2 (a few hundred programs times megabytes): kernel 1 is then
`..._merge`, which merges groups of consecutive partials into at most CONV_PARTIALS of the
same format, reading only the partials (8 bytes per tile and channel).

Running statistics: running = (1 - f) * running + f * batch, with the unbiased variance
(n / (n - 1)), f the momentum or, with momentum none, 1 / num_batches_tracked after this
batch, read from a tensor no program of the same kernel writes.
"""

from __future__ import annotations

from ..builder import KernelBuilder
from ..epilogue import Epilogue, epilogue_arguments, epilogue_refs
from ..kernel import SPATIAL, EmitContext, EmittedKernel
from ..source import Source, number

# Launch shape on a GPU: enough programs to fill ~132 SMs several times over even with 64
# channels, but at least MIN_TILES tiles of rows per program and at most MAX_CHUNKS chunks
# per channel (every apply program merges all of its channels' chunks).
PROGRAMS, MIN_TILES, MAX_CHUNKS = 1024, 8, 256
CONV_PARTS_BLOCK = 64  # a conv's partials merged per step (there is one per tile of rows)


def emit(ctx: EmitContext) -> EmittedKernel:
    graph, kernel = ctx.graph, ctx.kernel
    bn = graph.node(kernel.anchor)
    a = bn.attrs
    x = graph.node(bn.inputs[0])
    rank = len(x.shape)
    dims = SPATIAL.get(rank - 2, ())
    params_by_leaf = {spec.name: bn.param_name(spec) for spec in bn.params}
    affine = "weight" in params_by_leaf
    track = "running_mean" in params_by_leaf
    cumulative = track and a.momentum is None
    out_rank = len(graph.node(kernel.output).shape)
    epi = Epilogue(graph, kernel.epilogue, kernel.anchor)
    channels = x.shape[1]
    consts = {"C": channels, **{d.upper(): x.shape[2 + i] for i, d in enumerate(dims)}}
    inner, outer = min(_pow2(channels), 32), min(_pow2(channels), 4)
    from_conv = kernel.stats_from is not None

    # ------------------------------------------------------------------ kernel 1: partials
    s = None if from_conv else _statistics_kernel(ctx, rank, consts, track, dims)

    # ------------------------------------------------------------ kernel 2: merge + apply
    source = "the conv's epilogue stored" if from_conv else "of kernel 1"
    b = KernelBuilder(ctx, "batch_norm", f"batch_norm with batch statistics over a rank-{rank} "
                      f"input: merge the partials {source}, then normalise one chunk of rows.")
    b.wide_in_interpreter = True
    b.argument("x", "value", bn.inputs[0])
    if affine:
        b.argument("weight", "param", params_by_leaf["weight"])
        b.argument("bias", "param", params_by_leaf["bias"])
    if track:
        for leaf in ("running_mean", "running_var", "num_batches_tracked"):
            b.argument(leaf, "param", params_by_leaf[leaf])
    for ref_name, kind, ref in epilogue_refs(epi):
        b.argument(ref_name, kind, ref)
    if from_conv:  # what the conv's launcher returned: (partials, rows per partial)
        b.argument("partials", "stats", kernel.stats_from)
    pointers = ["x_ptr", "out_ptr", "part_ptr", "stats_ptr"]
    call = ["x", "out", "part", "stats"]
    if affine:
        pointers += ["weight_ptr", "bias_ptr"]
        call += ["weight", "bias"]
    if track:
        pointers += ["running_mean_ptr", "running_var_ptr", "tracked_ptr"]
        call += ["running_mean", "running_var", "num_batches_tracked"]
    if cumulative:
        pointers.append("count_ptr")
        call.append("count")
    b.group("input, output, partials, statistics kept, parameters and buffers", pointers, call,
            per_call=True)
    _, operand_call = epilogue_arguments(epi)
    b.group("epilogue operands", epi.params(), operand_call)
    _shape_groups(b, rank, consts, out_strides=True)
    if from_conv:
        b.group("the conv's partials: how many, rows each (the last one's: the rest)",
                ["NP", "PART_ROWS"], ["part.shape[1]", "part_rows"], per_call=True)
    b.problem([f"R = x.numel() // {channels}  # values per channel: rows of the [rows, C] view",
               "if R <= 1:",
               '    raise ValueError("batch_norm with batch statistics: expected more than 1 '
               'value per channel when training, got input size " + str(list(x.shape)))'], "R")
    # tiles of both kernels, before the apply kernel's own (BLOCK_P, FUSED)
    b.tile_lines += [
        "# Channels innermost (channels-last): wide channel tiles, contiguous loads.",
        f"BLOCK_C = {inner} if x.stride(1) == 1 else {outer}",
        "# An elementwise tile: the loops keep per-lane sums, no tl.sum inside.",
        "BLOCK_R = tile(R, config['BLOCK'] // BLOCK_C)",
        f"CB = ({channels} + BLOCK_C - 1) // BLOCK_C",
        "T = (R + BLOCK_R - 1) // BLOCK_R  # tiles of rows per channel block",
        "# One chunk per channel block on the interpreter (it pays per program).",
        f"P = 1 if INTERPRET else max(1, min({PROGRAMS} // CB, T // {MIN_TILES}, "
        f"{MAX_CHUNKS}))",
        "ROWS_PER = (T + P - 1) // P * BLOCK_R",
        "P = (R + ROWS_PER - 1) // ROWS_PER  # no chunk is empty",
    ]
    if from_conv:  # a conv's partials are many (a tile of rows each): wide blocks of them
        b.tile_expr("BLOCK_P", str(CONV_PARTS_BLOCK))
    else:
        b.tile_expr("BLOCK_P", "tile(P, 16)")
        b.tile_expr("FUSED", "P == 1")
    b.grid_dims(("CB", None), ("P", None))
    b.before.append(f"stats = torch.empty((2, {channels}), device=x.device, "
                    "dtype=work_dtype(x))")
    if from_conv:
        _launch_merge(b, _merge_kernel(ctx, channels), channels)
        if cumulative:
            b.before.append("count = num_batches_tracked + 1  # the count after this batch")
    else:
        _launch_statistics(b, s, channels, cumulative)
    if track:
        b.after.append("# Written by the kernels: tell PyTorch (and cached folded weights) that "
                       "they changed.")
        for buffer in ("running_mean", "running_var", "num_batches_tracked"):
            b.after.append(f"torch.autograd.graph.increment_version({buffer})")
    b.after.append("return stats  # the batch mean and invstd normalised with, for the backward")

    src = b.body
    _channels_and_pivot(src, from_partials=from_conv)
    src.line("total = R.to(tl.float32)")
    if from_conv:
        _merge(src, "NP", "PART_ROWS", pivoted=True)
    else:
        with src.indent("if FUSED:  # one chunk: this program's statistics are the batch's"):
            _chunk_statistics(src, dims)
            src.line("batch_mean = chunk_mean")
            src.line("squares = chunk_m2")
        with src.indent("else:"):
            _merge(src, "P", "ROWS_PER", pivoted=False)
    src.line("var = squares / total")
    src.line("mean = pivot + batch_mean")
    if track:
        with src.indent("if p == 0:"):
            with src.indent("if cb == 0:  # count the batch" if from_conv else "if FUSED:"):
                if from_conv:
                    src.line("tl.store(tracked_ptr, tl.load(tracked_ptr) + 1)")
                else:
                    with src.indent("if cb == 0:  # count the batch (else kernel 1 does)"):
                        src.line("tl.store(tracked_ptr, tl.load(tracked_ptr) + 1)")
            src.line("# Running statistics, updated in place (the running variance is "
                     "unbiased).")
            if cumulative:
                src.line("# momentum none: a cumulative average, 1 / num_batches_tracked "
                         "(after this batch).")
                src.line("factor = 1.0 / tl.load(count_ptr).to(tl.float32)")
            else:
                # a literal would be a float32 constant: float64's momentum is the double's
                src.line(f"factor = tl.full((), {number(float(a.momentum))}, tl.float32)")
            for buf, value in (("mean", "mean"), ("var", "(squares / (total - 1.0))")):
                ptr = f"running_{buf}_ptr"
                src.line(f"old = tl.load({ptr} + c, mask=c_ok, other=0.0).to(tl.float32)")
                src.line(f"new = (1.0 - factor) * old + factor * {value}")
                src.line(f"tl.store({ptr} + c, new.to({ptr}.dtype.element_ty), mask=c_ok)")
    # Rounded division and square root: as PyTorch's 1 / std::sqrt(var + eps).
    src.line(f"scale = _cnnc_rstd(var, {number(float(a.eps))})")
    with src.indent("if p == 0:  # the statistics normalised with, kept for the backward"):
        src.line("tl.store(stats_ptr + c, mean, mask=c_ok)")
        src.line("tl.store(stats_ptr + C + c, scale, mask=c_ok)")
    if affine:
        src.line("scale = scale * tl.load(weight_ptr + c, mask=c_ok, other=1.0)"
                 ".to(tl.float32)")
        src.line("shift = tl.load(bias_ptr + c, mask=c_ok, other=0.0).to(tl.float32)")
    else:
        src.line("shift = tl.zeros((BLOCK_C,), dtype=tl.float32)")
    src.line("# Normalise this program's chunk, apply the epilogue, store.")
    with src.indent("for row0 in range(start, end, BLOCK_R):"):
        _rows(src, dims, "x", "sx")
        src.line("v = tl.load(x_ptr + x_row[:, None] + x_col[None, :], mask=mask, "
                 "other=0.0).to(tl.float32)")
        # x - mean first: exact for values near a large mean, where x * scale would round
        src.line("acc = (v - mean[None, :]) * scale[None, :] + shift[None, :]")

        def index(d: int) -> str:
            return "n[:, None]" if d == 0 else "c[None, :]" if d == 1 else \
                f"{dims[d - 2]}_i[:, None]"

        src.extend(epi.lines("acc", index, "mask", out_rank))
        offset = "n * so0" + "".join(f" + {d}_i * so{2 + i}" for i, d in enumerate(dims))
        src.line(f"o_row = {offset}")
        src.line("tl.store(out_ptr + o_row[:, None] + (c * so1)[None, :], "
                 "acc.to(out_ptr.dtype.element_ty), mask=mask)")
    if epi.uses_tanh:
        b.helpers.add("tanh")
    return b.build()


def _statistics_kernel(ctx: EmitContext, rank: int, consts: dict, track: bool,
                       dims: tuple[str, ...]) -> KernelBuilder:
    """Kernel 1: per (channel block, chunk of rows), the chunk's mean and M2 per channel."""
    bn = ctx.graph.node(ctx.kernel.anchor)
    s = KernelBuilder(ctx, "batch_norm", f"batch_norm statistics over a rank-{rank} input: per "
                      "(channel block, chunk of rows), the chunk's mean and M2 per channel.",
                      name=f"{ctx.name}_stats")
    s.wide_in_interpreter = True  # as it was: the interpreter checks int32 index math
    s.argument("x", "value", bn.inputs[0])
    s.group("input, partials" + (", batch count" if track else ""),
            ["x_ptr", "part_ptr"] + (["tracked_ptr"] if track else []),
            ["x", "part"] + (["num_batches_tracked"] if track else []), per_call=True)
    _shape_groups(s, rank, consts)
    src = s.body
    _channels_and_pivot(src)
    if track:
        with src.indent("if cb + p == 0:  # count the batch"):
            src.line("tl.store(tracked_ptr, tl.load(tracked_ptr) + 1)")
    _chunk_statistics(src, dims)
    src.line("tl.store(part_ptr + p * C + c, chunk_mean, mask=c_ok)")
    src.line("tl.store(part_ptr + (P + p) * C + c, chunk_m2, mask=c_ok)")
    return s


def _launch_statistics(b: KernelBuilder, s: KernelBuilder, channels: int,
                       cumulative: bool) -> None:
    """The apply kernel's launcher lines that launch kernel 1 (unless FUSED)."""
    stats_call, stats_values = s.launch_values(["x", "part", "num_batches_tracked"])
    b.kept.update({"FUSED_": "P == 1", "STATS_GRID": "(CB, P)", "PARTS": f"(2, P, {channels})",
                   f"{s.name.upper()}_ARGS": "(" + ", ".join(stats_values) + ",)"})
    before = Source()
    with before.indent("if FUSED_:  # each program sees all of its channels' rows: one kernel"):
        before.line("part = x  # not read")
        if cumulative:
            before.line("# the count after this batch, apart from the one the kernel writes")
            before.line("count = num_batches_tracked + 1")
    with before.indent("else:"):
        before.line("part = torch.empty(PARTS, device=x.device, dtype=work_dtype(x))")
        before.line(f"{s.name}[STATS_GRID]({', '.join(stats_call)}, num_warps=warps, "
                    "num_stages=stages)")
        if cumulative:
            before.line("count = num_batches_tracked  # counted by the kernel")
    b.before += before.lines
    b.companions.append(s.jit().text())


def _merge_kernel(ctx: EmitContext, channels: int) -> KernelBuilder:
    """Kernel 1 where a conv gave the statistics in more than CONV_PARTIALS partials (one
    per tile of its rows): per (channel block, group of GROUP consecutive partials), their
    merge, stored in the same format (so the apply kernel merges at most CONV_PARTIALS)."""
    m = KernelBuilder(ctx, "batch_norm", "batch_norm statistics from a conv's partials: per "
                      "(channel block, group of partials), the group's mean and M2.",
                      name=f"{ctx.name}_merge")
    m.wide_in_interpreter = True
    m.group("the conv's partials, the merged ones", ["part_ptr", "merged_ptr"],
            ["part", "merged"], per_call=True)
    m.group("rows per channel; the conv's partials: how many, rows each, per group",
            ["R", "NP", "PART_ROWS", "GROUP"], ["R_", "NP_", "part_rows", "group"],
            per_call=True)
    m.constants("channels", {"C": channels})
    m.tiles += ["BLOCK_C", "BLOCK_P"]
    src = m.body
    m.program_id("cb", 0)
    m.program_id("p", 1)
    src.line("c = cb * BLOCK_C + tl.arange(0, BLOCK_C)")
    src.line("c_ok = c < C")
    src.line("q_start = p * GROUP")
    src.line("q_end = tl.minimum(q_start + GROUP, NP)")
    src.line("total = (tl.minimum(q_end * PART_ROWS, R) - q_start * PART_ROWS).to(tl.float32)")
    src.line("# The pivot: the group's first mean (0 if that is not finite).")
    src.line("pivot = tl.load(part_ptr + q_start * C + c, mask=c_ok, other=0.0)")
    src.line("pivot = tl.where(pivot - pivot == 0.0, pivot, 0.0)")
    _merge(src, "q_end", "PART_ROWS", pivoted=True, first="q_start", parts="NP")
    src.line("tl.store(merged_ptr + p * C + c, pivot + batch_mean, mask=c_ok)")
    src.line("tl.store(merged_ptr + (tl.num_programs(1) + p) * C + c, squares, mask=c_ok)")
    return m


def _launch_merge(b: KernelBuilder, m: KernelBuilder, channels: int) -> None:
    """The apply kernel's launcher lines taking the conv's partials, merged in groups first
    (kernel 1) where there are more than CONV_PARTIALS of them."""
    call, values = m.launch_values(["part", "merged"])
    b.kept.update({"R_": "R", "CB_": "CB",
                   f"{m.name.upper()}_ARGS": "(" + ", ".join(values) + ",)"})
    b.before += [
        "part, part_rows = partials  # the conv's partial statistics, rows per partial",
        "if part.shape[1] > CONV_PARTIALS:  # many: merge them in groups first",
        "    NP_ = part.shape[1]",
        "    group = (NP_ + CONV_PARTIALS - 1) // CONV_PARTIALS",
        f"    merged = torch.empty((2, (NP_ + group - 1) // group, {channels}), "
        "device=x.device, dtype=work_dtype(x))",
        f"    {m.name}[(CB_, merged.shape[1])]({', '.join(call)}, num_warps=warps, "
        "num_stages=stages)",
        "    part, part_rows = merged, group * part_rows",
    ]
    b.companions.append(m.jit().text())


def _merge(src: Source, count: str, rows: str, pivoted: bool, first: str = "0",
           parts: str | None = None) -> None:
    """batch_mean and squares (M2) of these channels from partials first ... count - 1
    (mean, M2) of `rows` rows each (the last one's: the rest) and `total` rows in all,
    merged as Chan et al.; pivoted: the partials' means are not yet relative to the pivot.
    parts: how many partials the [2, parts, C] workspace holds (default: count)."""
    parts = parts or count
    src.line("# Merge every partial's (mean, M2) of these channels (Chan et al.).")
    src.line("sum_mean = tl.zeros((BLOCK_C,), dtype=tl.float32)")
    with src.indent(f"for q0 in range({first}, {count}, BLOCK_P):"):
        _partials(src, count, rows, pivoted)
        src.line("sum_mean += tl.sum(n_q[:, None] * chunk_mean, axis=0)")
    src.line("batch_mean = sum_mean / total")
    src.line("squares = tl.zeros((BLOCK_C,), dtype=tl.float32)")
    with src.indent(f"for q0 in range({first}, {count}, BLOCK_P):"):
        _partials(src, count, rows, pivoted)
        src.line(f"chunk_m2 = tl.load(part_ptr + ({parts} + q[:, None]) * C + c[None, :], "
                 "mask=q_mask, other=0.0)")
        src.line("dev = chunk_mean - batch_mean[None, :]")
        src.line("squares += tl.sum(chunk_m2 + n_q[:, None] * dev * dev, axis=0)")


def _shape_groups(b: KernelBuilder, rank: int, consts: dict, out_strides: bool = False) -> None:
    """What both kernels take after their pointers: the [rows, C] view's size, the chunking,
    the strides, the shape constants; and their tiles."""
    b.group("rows per channel, rows per chunk, chunks", ["R", "ROWS_PER", "P"])
    b.group("input strides", [f"sx{i}" for i in range(rank)], ["*x.stride()"])
    if out_strides:
        b.group("output strides", [f"so{i}" for i in range(rank)], ["*out.stride()"])
    b.constants("channels, spatial sizes", consts)
    b.tiles += ["BLOCK_R", "BLOCK_C"]


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _channels_and_pivot(src: Source, from_partials: bool = False) -> None:
    """Program ids, this program's channels and rows, and each channel's pivot: its first
    value, or (from_partials) the first partial's mean."""
    src.line("cb = tl.program_id(0)")
    src.line("p = tl.program_id(1)")
    with src.indent("if INDEX_64:  # 64-bit offsets only where a tensor can reach 2**31 elements"):
        src.line("cb = cb.to(tl.int64)")
        src.line("p = p.to(tl.int64)")
    src.line("c = cb * BLOCK_C + tl.arange(0, BLOCK_C)")
    src.line("c_ok = c < C")
    src.line("x_col = c * sx1")
    src.line("start = p * ROWS_PER")
    src.line("end = tl.minimum(start + ROWS_PER, R)")
    first = "the first partial's mean" if from_partials else "the channel's first value"
    src.line(f"# The pivot: {first} (0 if that is not finite).")
    src.line("pivot = tl.load(" + ("part_ptr + c" if from_partials else "x_ptr + x_col")
             + ", mask=c_ok, other=0.0).to(tl.float32)")
    src.line("pivot = tl.where(pivot - pivot == 0.0, pivot, 0.0)")


def _rows(src: Source, dims: tuple[str, ...], name: str, strides: str) -> None:
    """Rows row0 ... row0 + BLOCK_R split into (n, spatial...), once per row, and their offsets."""
    src.line("rows = row0 + tl.arange(0, BLOCK_R)")
    src.line("row_ok = rows < end")
    src.line("mask = row_ok[:, None] & c_ok[None, :]")
    # Outermost first, each quotient's remainder by a multiply and a subtraction.
    sizes = [d.upper() for d in dims]
    src.line("rest = rows")
    for i, d in enumerate(["n", *(f"{d}_i" for d in dims)]):
        inner = " * ".join(sizes[i:])
        if not inner:
            src.line(f"{d} = rest")
            break
        inner = f"({inner})" if "*" in inner else inner
        src.line(f"{d} = rest // {inner}")
        src.line(f"rest = rest - {d} * {inner}")
    offset = f"n * {strides}0" + "".join(f" + {d}_i * {strides}{2 + i}"
                                         for i, d in enumerate(dims))
    src.line(f"{name}_row = {offset}")


def _partials(src: Source, count: str, rows: str, pivoted: bool) -> None:
    """A block of partials q: their row counts and their means (less the pivot) for these
    channels."""
    src.line("q = q0 + tl.arange(0, BLOCK_P)")
    with src.indent("if INDEX_64:"):
        src.line("q = q.to(tl.int64)")
    src.line(f"q_ok = q < {count}")
    src.line("q_mask = q_ok[:, None] & c_ok[None, :]")
    src.line(f"n_q = tl.where(q_ok, tl.minimum({rows}, R - q * {rows}), 0).to(tl.float32)")
    src.line("chunk_mean = tl.load(part_ptr + q[:, None] * C + c[None, :], mask=q_mask, "
             "other=0.0)")
    if pivoted:
        src.line("chunk_mean = tl.where(q_mask, chunk_mean - pivot[None, :], 0.0)")


def _chunk_statistics(src: Source, dims: tuple[str, ...]) -> None:
    """This program's rows: Welford per lane, then the lanes merged into chunk_mean and
    chunk_m2 per channel."""
    src.line("# Welford per lane (a lane is a row of the tile), on values less the pivot.")
    src.line("# The mean is updated as a weighted average, so a +inf makes it +inf, not NaN.")
    src.line("count = tl.zeros((BLOCK_R, 1), dtype=tl.float32)")
    src.line("mean = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)")
    src.line("m2 = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)")
    with src.indent("for row0 in range(start, end, BLOCK_R):"):
        _rows(src, dims, "x", "sx")
        src.line("y = tl.load(x_ptr + x_row[:, None] + x_col[None, :], mask=mask, "
                 "other=0.0).to(tl.float32) - pivot[None, :]")
        src.line("valid = row_ok[:, None]")
        src.line("count += tl.where(valid, 1.0, 0.0)")
        src.line("step = tl.where(valid, 1.0 / tl.maximum(count, 1.0), 0.0)")
        src.line("new_mean = mean * (1.0 - step) + y * step")
        src.line("m2 += tl.where(valid, (y - mean) * (y - new_mean), 0.0)")
        src.line("mean = new_mean")
    src.line("# Merge the lanes (Chan et al.): no lane's values are summed raw.")
    src.line("chunk = (end - start).to(tl.float32)")
    src.line("chunk_mean = tl.sum(count * mean, axis=0) / chunk")
    src.line("dev = mean - chunk_mean[None, :]")
    src.line("chunk_m2 = tl.sum(m2 + count * dev * dev, axis=0)")
