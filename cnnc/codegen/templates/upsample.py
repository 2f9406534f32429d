"""Upsampling of 1, 2 or 3 spatial dims, every mode of F.interpolate, with ATen's indices.

One program handles a block of output elements (n, c, o_1, ..., o_S). Along each dim the
source coordinate is computed as PyTorch's kernels compute it, from a ratio r fixed at
compile time (runtime/support.py's `upsample_ratio`, the backward's too): nearest in
float32 for every dtype (ATen's nearest_idx takes a float scale); the interpolating modes
in their arithmetic's dtype (ATen's opmath: float32, double for float64), the ratio a
constant of the launch's dtype:

- align_corners: r = (in - 1) / (out - 1) (0 for one output), src = r * o;
- otherwise r = 1 / scale_factor where a scale_factor is given, else in / out;
  nearest: src = o * r; the interpolating modes: src = r * (o + 0.5) - 0.5, rounded once
  (a fused multiply-add, as the compiled ATen kernels compute it).

nearest reads i = min(floor(o * r), in - 1); 2-d inputs go through ATen's `nearest_idx`,
which first treats two sizes exactly: out == in copies (i = o), out == 2 * in halves
(i = o >> 1). linear (bilinear, trilinear per dim) clamps src at 0, reads i0 =
min(floor(src), in - 1) and i1 = i0 + 1 (i0 at the last row), weighted 1 - l and l, with
l = clamp(src - i0, 0, 1); where out == in it reads i0 = i1 = o, weighted 1 and 0. bicubic
reads the four rows floor(src) - 1 .. floor(src) + 2, clamped to the input, weighted by
Keys' cubic convolution with A = -0.75 at t = src - floor(src). Taps are summed innermost
dim first, every tap multiplied by its weight as ATen does (so NaN and inf propagate alike).
"""

from __future__ import annotations

from ...ops import OPS
from ...runtime.support import upsample_ratio as ratio
from ..builder import KernelBuilder
from ..kernel import SPATIAL, EmitContext, EmittedKernel, split_index
from ..source import Source, number

A = -0.75  # the bicubic kernel's parameter, PyTorch's


def nearest_index(o: str, size: int, out_size: int, r: float, exact_sizes: bool) -> str:
    """The expression of the source index along one dim for output index `o`."""
    if exact_sizes and out_size == size:
        return o
    if exact_sizes and out_size == 2 * size:
        return f"{o} // 2"
    return f"tl.minimum(tl.floor({o}.to(tl.float32) * {number(r)}).to(tl.int64), {size - 1})"


def tap_lines(src: Source, d: str, size: int, out_size: int, r: str, corners: bool,
              cubic: bool) -> int:
    """Indices i{d}_j and weights w{d}_j of the taps along dim d; returns their count.
    r: the ratio's expression (in the arithmetic's dtype)."""
    o = f"o{d}"
    if not cubic and out_size == size:
        src.line(f"# {d}: as many outputs as inputs: a copy (ATen's weights 1 and 0)")
        src.line(f"i{d}_0 = {o}")
        src.line(f"i{d}_1 = {o}")
        src.line(f"w{d}_0 = 1.0")
        src.line(f"w{d}_1 = 0.0")
        return 2
    # One rounding for r * (o + 0.5) - 0.5: compilers contract ATen's expression into a
    # fused multiply-add (CPU builds with FMA, and nvcc), which decides whether a source
    # coordinate just above an input row is that row (a weight of exactly 0) or not.
    where = (f"{o}.to(tl.float32) * {r}" if corners
             else f"tl.fma({o}.to(tl.float32) + 0.5, {r}, -0.5)")
    src.line(f"src{d} = {where}")
    if not cubic:
        src.line(f"src{d} = tl.where(src{d} < 0.0, 0.0, src{d})")
        src.line(f"i{d}_0 = tl.minimum(tl.floor(src{d}).to(tl.int64), {size - 1})")
        src.line(f"l{d} = tl.minimum(tl.maximum(src{d} - i{d}_0.to(tl.float32), 0.0), 1.0)")
        src.line(f"i{d}_1 = i{d}_0 + tl.where(i{d}_0 < {size - 1}, 1, 0)")
        src.line(f"w{d}_0 = 1.0 - l{d}")
        src.line(f"w{d}_1 = l{d}")
        return 2
    src.line(f"f{d} = tl.floor(src{d}).to(tl.int64)")
    src.line(f"t{d} = src{d} - f{d}.to(tl.float32)")
    for j in range(4):
        src.line(f"i{d}_{j} = tl.minimum(tl.maximum(f{d} + {j - 1}, 0), {size - 1})")

    def near(x: str) -> str:  # |x| <= 1: ((A + 2) x - (A + 3)) x x + 1
        return f"(({number(A + 2)} * {x} - {number(A + 3)}) * {x} * {x} + 1.0)"

    def far(x: str) -> str:  # 1 < |x| < 2: ((A x - 5A) x + 8A) x - 4A
        return (f"((({number(A)} * {x} - {number(5 * A)}) * {x} + {number(8 * A)}) * {x} "
                f"- {number(4 * A)})")

    src.line(f"u{d} = 1.0 - t{d}")
    src.line(f"w{d}_0 = {far(f'(t{d} + 1.0)')}")
    src.line(f"w{d}_1 = {near(f't{d}')}")
    src.line(f"w{d}_2 = {near(f'u{d}')}")
    src.line(f"w{d}_3 = {far(f'(u{d} + 1.0)')}")
    return 4


def emit(ctx: EmitContext) -> EmittedKernel:
    graph = ctx.graph
    node = graph.node(ctx.kernel.anchor)
    attrs = node.attrs
    x = graph.node(node.inputs[0])
    S = len(x.shape) - 2
    dims = SPATIAL[S]
    scales = OPS["upsample"].scales(attrs, S)
    corners = bool(attrs.align_corners)
    sizes = x.shape[2:]
    outs = node.shape[2:]
    # ATen's area_pixel_compute_scale, as the backward computes it: float32, and double
    # (for float64) where the mode interpolates
    ratios = [ratio(sizes[i], outs[i], scales[i], attrs.mode, corners, False)
              for i in range(S)]
    doubles = [ratio(sizes[i], outs[i], scales[i], attrs.mode, corners, True)
               for i in range(S)]

    consts = {"C": x.shape[1]}
    consts.update({f"O{d.upper()}": outs[i] for i, d in enumerate(dims)})

    shown = ", ".join(number(r) for r in ratios)
    b = KernelBuilder(ctx, "elementwise", f"{attrs.mode} upsample{S}d, source ratios ({shown})"
                      f"{', align_corners' if corners else ''}; one program per block of "
                      "outputs.")
    b.argument("x", "value", node.inputs[0])
    b.group("input, output", ["x_ptr", "out_ptr"], ["x", "out"])
    b.group("output elements", ["TOTAL"])
    b.group("input and output strides", [f"sx{i}" for i in range(S + 2)]
            + [f"so{i}" for i in range(S + 2)], ["*x.stride()", "*out.stride()"])
    b.constants("channels, output sizes", consts)
    if attrs.mode != "nearest":
        b.flags("source ratios in the arithmetic's dtype: double for float64, else float32",
                {f"R{d.upper()}": f"{number(doubles[i])} if out.dtype == torch.float64 "
                                  f"else {number(ratios[i])}" for i, d in enumerate(dims)})
    b.problem(["TOTAL = out.numel()"], "TOTAL")
    b.tile("BLOCK", "TOTAL")
    b.grid_dims(("TOTAL", "BLOCK"))

    src = b.body
    src.line("# Outputs (n, c, " + ", ".join(f"o{d}" for d in dims) + ").")
    b.program_id("pid")
    src.line("offs = pid * BLOCK + tl.arange(0, BLOCK)")
    src.line("mask = offs < TOTAL")
    split_index(src, "offs", [f"o{d}" for d in dims],
                [f"O{d.upper()}" for d in dims], "rest")
    src.line("c = rest % C")
    src.line("n = rest // C")
    base = "n * sx0 + c * sx1"
    o_offset = "n * so0 + c * so1" + "".join(f" + o{d} * so{2 + i}"
                                              for i, d in enumerate(dims))
    if attrs.mode == "nearest":
        exact_sizes = S == 2  # ATen's upsample_nearest2d goes through nearest_idx
        src.line("# Source indices: floor(o * ratio), clamped.")
        if exact_sizes:
            src.line("# (2-d, as ATen's nearest_idx: out == in copies, out == 2 * in halves.)")
        for i, d in enumerate(dims):
            src.line(f"i{d} = {nearest_index(f'o{d}', sizes[i], outs[i], ratios[i], exact_sizes)}")
        x_offset = base + "".join(f" + i{d} * sx{2 + i}" for i, d in enumerate(dims))
        src.line(f"acc = tl.load(x_ptr + {x_offset}, mask=mask)")
    else:
        cubic = attrs.mode == "bicubic"
        for d in dims:  # the ratio a constant of the arithmetic's dtype (a bare float
            # constant would be a float32 one)
            src.line(f"r{d} = tl.full((), R{d.upper()}, tl.float32)")
        taps = [tap_lines(src, d, sizes[i], outs[i], f"r{d}", corners, cubic)
                for i, d in enumerate(dims)]
        _sum_taps(src, dims, taps, base)
    src.line(f"tl.store(out_ptr + {o_offset}, acc.to(out_ptr.dtype.element_ty), mask=mask)")
    return b.build()


def _sum_taps(src: Source, dims: tuple[str, ...], taps: list[int], base: str) -> None:
    """acc = sum over taps of value * weight, nested as ATen's Interpolate<n>: the innermost
    dim's sum first, each outer sum over the inner sums."""
    def value(prefix: tuple[int, ...]) -> str:
        level = len(prefix)
        if level == len(dims):
            offset = base + "".join(f" + i{d}_{j} * sx{2 + k}"
                                    for k, (d, j) in enumerate(zip(dims, prefix)))
            name = "v_" + "_".join(map(str, prefix))
            src.line(f"{name} = tl.load(x_ptr + {offset}, mask=mask, other=0.0)"
                     ".to(tl.float32)")
            return name
        d = dims[level]
        terms = [f"{value((*prefix, j))} * w{d}_{j}" for j in range(taps[level])]
        name = "s_" + "_".join(map(str, prefix)) if prefix else "acc"
        src.line(f"{name} = " + " + ".join(terms))
        return name

    value(())
