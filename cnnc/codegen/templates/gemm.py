"""GEMM for `linear`: out[rows, f] = in[rows, :] @ weight[f, :]^T (+ bias), then the epilogue.

Rows are every leading position of the input (nn.Linear acts on the last dim). With a
prologue, the input is an adaptive average pool followed by flatten, computed while
loading the A tile: A[n, k] is the mean of x[n, c, window(p)] where k = (c, p). Two
common pools load plain tiles, which Triton pipelines:
- a global pool (output 1 x 1, k = c): the mean over positions of channel rows, which
  are contiguous in a channels-last input. A first loop writes the program's rows of means
  to a scratch block (its loop over positions is pipelined), then the dot loop reads them
  back with the weight tiles: both operands of every dot by asynchronous copies. (Summing
  positions inside the dot loop leaves the weight tile's load outside Triton's innermost,
  pipelined loop; a dot per position would multiply the FLOPs by the map's size.)
- a pool whose windows are single elements (output size = input size, VGG's 7 x 7): a
  flatten, so A is the input's rows when it is contiguous (the module allocates it so).
Strides are compile-time constants: Triton then knows how far loads are contiguous.
"""

from __future__ import annotations

from ...ops.adaptive_pool import adaptive_sizes
from ..builder import KernelBuilder
from ..epilogue import Epilogue, epilogue_arguments, epilogue_refs
from ..kernel import SPATIAL, EmitContext, EmittedKernel, split_index
from ..source import Source
from .conv import STRIDES


def emit(ctx: EmitContext) -> EmittedKernel:
    graph, kernel = ctx.graph, ctx.kernel
    linear = graph.node(kernel.anchor)
    a = linear.attrs
    pooled = graph.node(kernel.prologue[0]) if kernel.prologue else None
    source = graph.node(pooled.inputs[0]) if pooled else graph.node(linear.inputs[0])
    in_features = graph.node(linear.inputs[0]).shape[-1]
    out_shape = graph.node(kernel.output).shape
    rank = len(out_shape)
    lead = len(linear.shape) - 1  # leading (row) dims of input and output
    # A folded batch norm is the epilogue's first node (scale and shift computed in the kernel).
    fold = [kernel.folded_bn] if kernel.folded_bn is not None else []
    epi = Epilogue(graph, fold + kernel.epilogue, kernel.anchor)
    has_bias = a.bias
    # Batch norm's channels are the features (offs_n) only when the output is [rows, F].
    per_feature = rank == 2
    consts = {"K": in_features, "F": a.out_features}
    consts.update({f"R{d}": linear.shape[d] for d in range(1, lead)})
    prologue = None
    if pooled is not None:
        dims = SPATIAL[len(source.shape) - 2]
        sizes = tuple(source.shape[2:])
        outs = adaptive_sizes(pooled.attrs, sizes)
        prologue = ("global" if all(o == 1 for o in outs) else
                    "flatten" if tuple(outs) == sizes else "windows")
        for i, d in enumerate(dims):
            size, out = sizes[i], outs[i]
            consts[f"{d.upper()}"] = size
            consts[f"P{d.upper()}"] = out
            consts[f"WIN{d.upper()}"] = -(-size // out) + (1 if size % out else 0)
    in_rank = len(source.shape)
    what = "adaptive avg pool + flatten + linear" if pooled else "linear"
    b = KernelBuilder(ctx, "gemm", f"{what} as a GEMM; rows are the input's leading positions.")
    b.argument("x", "value", source.id)
    b.argument("w", "param", f"{linear.scope}.weight")
    if has_bias:
        b.argument("b", "param", f"{linear.scope}.bias")
    for name, kind, ref in epilogue_refs(epi):
        b.argument(name, kind, ref)
    _, operand_call = epilogue_arguments(epi)
    b.group("input, weight, (bias,) output", ["a_ptr", "w_ptr"] + (["b_ptr"] if has_bias else [])
            + ["out_ptr"], ["x", "w"] + (["b"] if has_bias else []) + ["out"])
    # Split-K (SPLIT_K programs share a tile's reduction; the last applies the epilogue) for
    # a plain input; a pooling prologue's loads are not split.
    splits = prologue is None
    if splits:
        b.group("split-K: partial sums and tile counters (fresh at each launch)",
                ["ws_ptr", "count_ptr"], ["*split_buffers(SPLIT)"], per_call=True)
    if prologue == "global":
        b.group("each program's rows of channel means (scratch, written before read)",
                ["pool_ptr"], ["scratch(POOLED)"], per_call=True)
    b.group("epilogue operands", epi.params(), operand_call)
    b.group("rows", ["M"])
    b.constants("features in and out, leading sizes, pooled sizes", consts)
    # Strides are compile-time constants: Triton then knows how far loads are contiguous.
    strides = ([f"AS{i}" for i in range(in_rank)] + ["WS0", "WS1"]
               + [f"OS{i}" for i in range(rank)])
    b.flags("input, weight and output strides", {s: f"{STRIDES[s[0]]}[{s[2:]}]" for s in strides})
    b.flags("the dot's precision: TF32 where PyTorch's matmuls use it",
            {"DOT_PRECISION": "dot_precision(x)"}, keyed=True)
    flags = {"UPCAST_DOT": "upcast_dot(x)"}
    if prologue == "flatten":
        flags["FLAT"] = f"x_strides[1:] == {tuple(_contiguous_strides(source.shape[1:]))}"
    b.flags("the interpreter's bfloat16 dot" + (", whether the input is contiguous"
                                                  if prologue == "flatten" else ""), flags)
    rows = " * ".join(["x.shape[0]"] + [str(linear.shape[d]) for d in range(1, lead)])
    b.problem([f"M = {rows}",
               "x_strides, w_strides, out_strides = x.stride(), w.stride(), out.stride()"], "M")
    b.tile("BLOCK_M", "M")
    b.tile("BLOCK_N", str(a.out_features))
    b.tile("BLOCK_K", str(in_features))

    src = b.body
    b.grouped_program_ids("M", "BLOCK_M", "F", "BLOCK_N", str(a.out_features))
    if splits:
        tiles = b.grid[0]
        b.tile_expr("SPLIT_K",
                    f"split_k(config, {tiles}, ({in_features} + BLOCK_K - 1) // BLOCK_K)")
        b.kept["SPLIT"] = f"split_plan(SPLIT_K, M, {a.out_features}, {tiles}, out)"
        b.grid.append("SPLIT_K")
        with src.indent("if SPLIT_K > 1:"):
            src.line("pid_k = tl.program_id(1)  # this program's share of the reduction")
        with src.indent("else:  # loop bounds the compiler knows"):
            src.line("pid_k = 0")
    src.line("offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)")
    src.line("m_mask = offs_m < M")
    src.line("# row -> (i0, " + ", ".join(f"i{d}" for d in range(1, lead)) + ")")
    src.line("rest = offs_m")
    for d in reversed(range(1, lead)):
        src.line(f"i{d} = rest % R{d}")
        src.line(f"rest = rest // R{d}")
    src.line("i0 = rest")
    a_row = " + ".join(f"i{d} * AS{d}" for d in range(lead)) if not pooled else "i0 * AS0"
    src.line(f"a_row = {a_row}")
    src.line("offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)")
    src.line("n_mask = offs_n < F")
    if prologue == "global":
        b.kept["POOLED"] = f"(({b.grid[0]}) * BLOCK_M * {in_features}, w.dtype, out.device)"
        _global_pool_scratch(src, dims)
    src.line("acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
    loop = ("range(pid_k * BLOCK_K, K, BLOCK_K * SPLIT_K)" if splits
            else "range(0, K, BLOCK_K)")
    with src.indent(f"for k0 in {loop}:"):
        src.line("offs_k = k0 + tl.arange(0, BLOCK_K)")
        src.line("k_mask = offs_k < K")
        src.line("tile_mask = m_mask[:, None] & k_mask[None, :]")
        plain = (f"a = tl.load(a_ptr + a_row[:, None] + offs_k[None, :] * AS{in_rank - 1}, "
                 "mask=tile_mask, other=0.0)")
        load_b = ("b = tl.load(w_ptr + offs_n[None, :] * WS0 + offs_k[:, None] * WS1, "
                  "mask=k_mask[:, None] & n_mask[None, :], other=0.0)")
        if prologue is None:
            src.line(plain)
        elif prologue == "global":
            src.line("a = tl.load(pooled + offs_k[None, :], mask=k_mask[None, :], other=0.0)")
        elif prologue == "flatten":
            with src.indent("if FLAT:  # the input is contiguous: its rows are A's rows"):
                src.line(plain.replace(f"AS{in_rank - 1}", "1"))
            with src.indent("else:"):
                _pooled_load(src, dims)
        else:
            _pooled_load(src, dims)
        src.line(load_b)
        src.line("if UPCAST_DOT:  # the interpreter's bfloat16 dot is unreliable")
        src.line("    a, b = a.to(tl.float32), b.to(tl.float32)")
        src.line("acc += tl.dot(a, b, input_precision=DOT_PRECISION)")
    out_mask = "m_mask[:, None] & n_mask[None, :]"
    if splits:
        with src.indent("if SPLIT_K > 1:  # the last of the tile's programs stores the sum"):
            src.line("ws = ws_ptr + offs_m[:, None] * F + offs_n[None, :]  # sums: [M, F]")
            src.line(f"tl.atomic_add(ws, acc, mask={out_mask})")
            src.line("arrived = tl.atomic_add(count_ptr + pid, 1)")
            src.line(f"keep = {out_mask} & ((tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32) "
                     "+ arrived) == SPLIT_K - 1)")
            src.line('acc = tl.load(ws, mask=keep, other=0.0, cache_modifier=".cg")')
        with src.indent("else:"):
            src.line(f"keep = {out_mask}")
    if has_bias:
        src.line("acc += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)"
                 "[None, :]")

    def index(d: int) -> str:
        return "offs_n[None, :]" if d == rank - 1 else f"i{d}[:, None]"

    if per_feature:
        src.extend(epi.channel_lines("offs_n", "n_mask"))
    src.extend(epi.lines("acc", index, out_mask, rank,
                         channels="[None, :]" if per_feature else None))
    offset = " + ".join(f"i{d} * OS{d}" for d in range(lead))
    src.line(f"tl.store(out_ptr + ({offset})[:, None] + offs_n[None, :] * OS{rank - 1}, "
             f"acc.to(out_ptr.dtype.element_ty), mask={'keep' if splits else out_mask})")
    if epi.uses_tanh:
        b.helpers.add("tanh")
    return b.build()


def _contiguous_strides(shape) -> list[int]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return strides[::-1]


def _global_pool_scratch(src: Source, dims) -> None:
    """The program's rows of A, each channel's mean over every position, into its scratch
    block [BLOCK_M, K] (`pooled`), ahead of the dot loop."""
    src.line("# A: each channel's mean over every position, into this program's scratch rows.")
    src.line("# Channel rows are contiguous in a channels-last input; the loop over positions")
    src.line("# is software-pipelined, and the dot loop below reads the means back.")
    src.line("pooled = pool_ptr + pid.to(tl.int64) * (BLOCK_M * K) "
             "+ tl.arange(0, BLOCK_M)[:, None] * K")
    window = " * ".join(d.upper() for d in dims)
    with src.indent("for k0 in range(0, K, BLOCK_K):"):
        src.line("offs_k = k0 + tl.arange(0, BLOCK_K)")
        src.line("k_mask = offs_k < K")
        src.line("tile_mask = m_mask[:, None] & k_mask[None, :]")
        src.line("total = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)")
        with src.indent(f"for position in tl.range(0, {window}, num_stages=2):"):
            split_index(src, "position", [f"p{d}" for d in dims], [d.upper() for d in dims],
                        "rest_p")
            offset = "a_row + " + " + ".join(f"p{d} * AS{2 + i}" for i, d in enumerate(dims))
            src.line(f"total += tl.load(a_ptr + ({offset})[:, None] + offs_k[None, :] * AS1, "
                     "mask=tile_mask, other=0.0).to(tl.float32)")
        src.line(f"tl.store(pooled + offs_k[None, :], (total / ({window}))"
                 ".to(w_ptr.dtype.element_ty), mask=k_mask[None, :])")
    src.line("tl.debug_barrier()  # every thread's means are written before any is read")


def _pooled_load(src: Source, dims) -> None:
    """A[n, k] = mean of x[n, c, window(p)], k = (c, p...): the adaptive pool's windows."""
    src.line("# column -> (c, " + ", ".join(f"p{d}" for d in dims) + ") of the pooled tensor")
    split_index(src, "offs_k", [f"p{d}" for d in dims],
                [f"P{d.upper()}" for d in dims], "rest_k")
    src.line("c = rest_k")
    count = []
    for d in dims:
        D = d.upper()
        src.line(f"start_{d} = (p{d} * {D}) // P{D}")
        src.line(f"end_{d} = ((p{d} + 1) * {D} + P{D} - 1) // P{D}")
        count.append(f"(end_{d} - start_{d})")
    src.line("total = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)")
    window = " * ".join(f"WIN{d.upper()}" for d in dims)
    with src.indent(f"for w in range(0, {window}):"):
        split_index(src, "w", [f"w{d}" for d in dims],
                    [f"WIN{d.upper()}" for d in dims], "rest_w")
        valid = " & ".join(f"(start_{d} + w{d} < end_{d})" for d in dims)
        offset = "a_row[:, None] + c[None, :] * AS1" + "".join(
            f" + (start_{d} + w{d})[None, :] * AS{2 + i}" for i, d in enumerate(dims))
        src.line(f"total += tl.load(a_ptr + {offset}, mask=tile_mask & ({valid})[None, :], "
                 "other=0.0).to(tl.float32)")
    src.line(f"a = (total / ({' * '.join(count)}).to(tl.float32)[None, :])"
             ".to(w_ptr.dtype.element_ty)")
