"""Backward of the whole-tensor operators: softmax and log_softmax, dropout, upsample,
and the reduction of a broadcast operand's gradient (add and mul with broadcasting).

- softmax: dx = y * (dy - sum(dy * y)); log_softmax: dx = dy - exp(y) * sum(dy), the
  sums along `dim`, from the output y. One program per block of rows (every position of
  the other dims), reading through strides; a first sweep along dim sums, a second writes.
- dropout: dx = dy * (keep ? 1 / (1 - p) : 0) with keep = tl.rand(seed, i) >= p and i the
  element's flat index in the logical (row-major) order of the output: the forward's mask
  (codegen/epilogue.py), regenerated from the seed, never stored.
- upsample (F.interpolate, every mode the op has): each output element adds dy times its
  taps' weights into a float32 buffer with atomics (nearest 1 tap per dim, linear 2,
  cubic 4, ATen's source-index and weight rules, clamped cubic taps as ATen's backward
  clamps them), cast to the input's dtype afterwards where that is not float32.
- sum_to: the sum, in float32, of a gradient over the dims its operand was broadcast along.

Tensors of rank below 5 are handled as rank 5 with size-1 dims in front (stride 0).
Sums and products run in float32, or float64 for float64 tensors (what gradcheck needs;
upsample's source coordinates too, as ATen's opmath; nearest's stay float32, as ATen's).
"""

import os

import torch
import triton
import triton.language as tl

from ..support import ceil_div, upsample_ratio

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# ---- cnnc backward kernels (copied into generated files) ----
_TENSOR_TILE = 65536 if INTERPRET else 1024  # elements of a tile


def _tensor_pad5(values, fill):
    values = tuple(values)
    if len(values) > 5:
        raise ValueError(f"cnnc's backward kernels take tensors of rank 5 at most, not "
                         f"{len(values)}")
    return (fill,) * (5 - len(values)) + values


def _tensor_index_64(*tensors):
    """Index in int64: where a tensor has 2**31 elements or more, and always under the
    interpreter, whose overflow checks of int32 arithmetic cost more than the kernels."""
    return INTERPRET or max(t.numel() for t in tensors) >= 2**31


def _tensor_acc(*tensors):
    """The accumulation dtype: float64 for float64 tensors (gradcheck), else float32."""
    return tl.float64 if any(t.dtype == torch.float64 for t in tensors) else tl.float32


@triton.jit
def _tensor_unflatten(offs, D1, D2, D3, D4):
    """The indices (i0, i1, i2, i3, i4) of flat (row-major) indices into sizes (., D1..D4):
    every kernel's one decoding (fewer dims: size 1 in front, e.g. D1 = 1)."""
    i4 = offs % D4
    rest = offs // D4
    i3 = rest % D3
    rest = rest // D3
    i2 = rest % D2
    rest = rest // D2
    i1 = rest % D1
    i0 = rest // D1
    return i0, i1, i2, i3, i4


@triton.jit
def _tensor_offsets(offs, D1, D2, D3, D4, s0, s1, s2, s3, s4):
    """Offsets of flat (row-major) indices into a rank-5 tensor of sizes (., D1..D4)."""
    i0, i1, i2, i3, i4 = _tensor_unflatten(offs, D1, D2, D3, D4)
    return i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3 + i4 * s4


@triton.jit
def _tensor_flat(TOTAL, INDEX_64: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    if INDEX_64:
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    else:
        offs = pid * BLOCK + tl.arange(0, BLOCK)
    return offs, offs < TOTAL


@triton.jit
def _tensor_copy_kernel(src_ptr, dst_ptr, TOTAL, D1, D2, D3, D4, s0, s1, s2, s3, s4,
                        d0, d1, d2, d3, d4, INDEX_64: tl.constexpr, BLOCK: tl.constexpr):
    offs, mask = _tensor_flat(TOTAL, INDEX_64, BLOCK)
    v = tl.load(src_ptr + _tensor_offsets(offs, D1, D2, D3, D4, s0, s1, s2, s3, s4), mask=mask)
    tl.store(dst_ptr + _tensor_offsets(offs, D1, D2, D3, D4, d0, d1, d2, d3, d4),
             v.to(dst_ptr.dtype.element_ty), mask=mask)


def _tensor_copy(src, dst):
    """dst[...] = src (same shape, any strides and dtypes), one kernel."""
    sizes = _tensor_pad5(src.shape, 1)
    _tensor_copy_kernel[(ceil_div(src.numel(), _TENSOR_TILE),)](
        src, dst, src.numel(), *sizes[1:], *_tensor_pad5(src.stride(), 0),
        *_tensor_pad5(dst.stride(), 0), INDEX_64=_tensor_index_64(src),
        BLOCK=_TENSOR_TILE)
    return dst


# ------------------------------------------------------------------ dropout
@triton.jit
def _tensor_dropout_kernel(dy_ptr, dx_ptr, TOTAL, D1, D2, D3, D4, s0, s1, s2, s3, s4,
                           d0, d1, d2, d3, d4, seed, p, scale, ACC: tl.constexpr,
                           INDEX_64: tl.constexpr, BLOCK: tl.constexpr):
    # int32 flat indices, as the forward's pointwise kernel draws its numbers with.
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < TOTAL
    index = offs
    if INDEX_64:
        index = offs.to(tl.int64)
    g = tl.load(dy_ptr + _tensor_offsets(index, D1, D2, D3, D4, s0, s1, s2, s3, s4),
                mask=mask, other=0.0).to(ACC)
    keep = tl.rand(seed, offs) >= p
    # A product, as the forward's: an inf or NaN gradient where dropped stays NaN.
    dx = g * tl.where(keep, scale, 0.0)
    tl.store(dx_ptr + _tensor_offsets(index, D1, D2, D3, D4, d0, d1, d2, d3, d4),
             dx.to(dx_ptr.dtype.element_ty), mask=mask)


def grad_dropout(dy, *, p, seed):
    """dx of training-mode dropout whose forward drew `seed` (the mask is regenerated)."""
    dx = torch.empty_like(dy)
    if dy.numel() == 0:
        return dx
    scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
    sizes = _tensor_pad5(dy.shape, 1)
    _tensor_dropout_kernel[(ceil_div(dy.numel(), _TENSOR_TILE),)](
        dy, dx, dy.numel(), *sizes[1:], *_tensor_pad5(dy.stride(), 0),
        *_tensor_pad5(dx.stride(), 0), seed, float(p), scale, ACC=_tensor_acc(dy),
        INDEX_64=_tensor_index_64(dy), BLOCK=_TENSOR_TILE)
    return dx


# ------------------------------------------------------------------ softmax
@triton.jit
def _tensor_softmax_kernel(
    dy_ptr, y_ptr, dx_ptr, ROWS, D, A1, A2, A3,
    sg0, sg1, sg2, sg3, sgd, sy0, sy1, sy2, sy3, syd, sx0, sx1, sx2, sx3, sxd,
    LOG: tl.constexpr, ACC: tl.constexpr, INDEX_64: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Rows: positions of the other dims (a0..a3); columns: the reduced dim."""
    rows, r_mask = _tensor_flat(ROWS, INDEX_64, BLOCK_R)
    a0, _, a1, a2, a3 = _tensor_unflatten(rows, 1, A1, A2, A3)
    g_row = a0 * sg0 + a1 * sg1 + a2 * sg2 + a3 * sg3
    y_row = a0 * sy0 + a1 * sy1 + a2 * sy2 + a3 * sy3
    x_row = a0 * sx0 + a1 * sx1 + a2 * sx2 + a3 * sx3
    total = tl.zeros((BLOCK_R,), ACC)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        m = r_mask[:, None] & (ds < D)[None, :]
        g = tl.load(dy_ptr + g_row[:, None] + ds[None, :] * sgd, mask=m,
                    other=0.0).to(ACC)
        if LOG:
            total += tl.sum(g, axis=1)
        else:
            y = tl.load(y_ptr + y_row[:, None] + ds[None, :] * syd, mask=m,
                        other=0.0).to(ACC)
            total += tl.sum(g * y, axis=1)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        m = r_mask[:, None] & (ds < D)[None, :]
        g = tl.load(dy_ptr + g_row[:, None] + ds[None, :] * sgd, mask=m,
                    other=0.0).to(ACC)
        y = tl.load(y_ptr + y_row[:, None] + ds[None, :] * syd, mask=m,
                    other=0.0).to(ACC)
        if LOG:
            dx = g - tl.exp(y) * total[:, None]
        else:
            dx = y * (g - total[:, None])
        tl.store(dx_ptr + x_row[:, None] + ds[None, :] * sxd, dx.to(dx_ptr.dtype.element_ty),
                 mask=m)


def _tensor_softmax(dy, y, dim, log):
    if dy.shape != y.shape or not 1 <= y.dim() <= 5:
        raise ValueError(f"softmax gradient: dy {tuple(dy.shape)} and y {tuple(y.shape)} "
                         "must be one shape of rank 1 to 5")
    dim = dim % y.dim()
    dx = torch.empty_like(y)
    if y.numel() == 0:
        return dx
    others = [d for d in range(y.dim()) if d != dim]
    sizes = (1,) * (4 - len(others)) + tuple(y.shape[d] for d in others)

    def strides(t):
        return (0,) * (4 - len(others)) + tuple(t.stride(d) for d in others) + (t.stride(dim),)

    D = y.shape[dim]
    rows = y.numel() // D
    block_d = min(triton.next_power_of_2(D), _TENSOR_TILE // 16)
    block_r = max(1, min(_TENSOR_TILE // block_d, triton.next_power_of_2(rows)))
    _tensor_softmax_kernel[(ceil_div(rows, block_r),)](
        dy, y, dx, rows, D, *sizes[1:], *strides(dy), *strides(y), *strides(dx), LOG=log,
        ACC=_tensor_acc(dy, y), INDEX_64=_tensor_index_64(y), BLOCK_R=block_r, BLOCK_D=block_d)
    return dx


def grad_softmax(dy, y, *, dim):
    """dx of softmax along dim, from its output y."""
    return _tensor_softmax(dy, y, dim, False)


def grad_log_softmax(dy, y, *, dim):
    """dx of log_softmax along dim, from its output y."""
    return _tensor_softmax(dy, y, dim, True)


# ------------------------------------------------------------------ upsample
@triton.jit
def _tensor_cubic(t, A: tl.constexpr):
    """Keys' cubic convolution weight at distance t (ATen's A = -0.75)."""
    near = ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0
    far = ((A * t - 5.0 * A) * t + 8.0 * A) * t - 4.0 * A
    return tl.where(t <= 1.0, near, far)


@triton.jit
def _tensor_tap(o, IN, OUT, RATIO: tl.constexpr, t: tl.constexpr, MODE: tl.constexpr,
                ALIGN: tl.constexpr, COORD: tl.constexpr):
    """Input index and weight of tap t of output index o along a dim. MODE 0: nearest
    (ATen's nearest_idx, in float32); 1: linear; 2: cubic, in COORD (ATen's opmath:
    float64 for float64, else float32), the ratio a constant of that dtype."""
    if MODE == 0:
        ratio = tl.full((), RATIO, tl.float32)
        src = tl.minimum(tl.floor(o.to(tl.float32) * ratio).to(o.dtype), IN - 1)
        src = tl.where(OUT == IN, o, tl.where(OUT == 2 * IN, o // 2, src))
        return src, 1.0
    else:
        ratio = tl.full((), RATIO, COORD)
        if ALIGN:
            real = ratio * o.to(COORD)
        else:
            real = ratio * (o.to(COORD) + 0.5) - 0.5
        if MODE == 1:
            real = tl.maximum(real, 0.0)
        i0 = tl.minimum(tl.floor(real).to(o.dtype), IN - 1)
        lam = tl.minimum(tl.maximum(real - i0.to(COORD), 0.0), 1.0)
        if MODE == 1:
            same = OUT == IN  # ATen's backward copies when the sizes agree
            if t == 0:
                return tl.where(same, o, i0), tl.where(same, 1.0, 1.0 - lam)
            else:
                i1 = i0 + (i0 < IN - 1).to(o.dtype)
                return tl.where(same, o, i1), tl.where(same, 0.0, lam)
        else:
            idx = tl.minimum(tl.maximum(i0 - 1 + t, 0), IN - 1)
            if t == 0:
                w = _tensor_cubic(lam + 1.0, -0.75)
            elif t == 1:
                w = _tensor_cubic(lam, -0.75)
            elif t == 2:
                w = _tensor_cubic(1.0 - lam, -0.75)
            else:
                w = _tensor_cubic(2.0 - lam, -0.75)
            return idx, w


@triton.jit
def _tensor_upsample_kernel(
    dy_ptr, acc_ptr, TOTAL, C, ID, IH, IW, OD, OH, OW,
    sg0, sg1, sg2, sg3, sg4, sa0, sa1, sa2, sa3, sa4,
    RD: tl.constexpr, RH: tl.constexpr, RW: tl.constexpr,
    MD: tl.constexpr, MH: tl.constexpr, MW: tl.constexpr,
    TD: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr, ALIGN: tl.constexpr,
    COORD: tl.constexpr, INDEX_64: tl.constexpr, BLOCK: tl.constexpr,
):
    """One program per block of outputs (n, c, od, oh, ow)."""
    offs, mask = _tensor_flat(TOTAL, INDEX_64, BLOCK)
    n, c, od, oh, ow = _tensor_unflatten(offs, C, OD, OH, OW)
    g = tl.load(dy_ptr + n * sg0 + c * sg1 + od * sg2 + oh * sg3 + ow * sg4, mask=mask,
                other=0.0).to(acc_ptr.dtype.element_ty)
    base = n * sa0 + c * sa1
    for td in tl.static_range(TD):
        i_d, w_d = _tensor_tap(od, ID, OD, RD, td, MD, ALIGN, COORD)
        for th in tl.static_range(TH):
            i_h, w_h = _tensor_tap(oh, IH, OH, RH, th, MH, ALIGN, COORD)
            for tw in tl.static_range(TW):
                i_w, w_w = _tensor_tap(ow, IW, OW, RW, tw, MW, ALIGN, COORD)
                tl.atomic_add(acc_ptr + base + i_d * sa2 + i_h * sa3 + i_w * sa4,
                              g * (w_d * w_h * w_w), mask=mask)


def grad_upsample(dy, x, *, scale_factor, size, mode, align_corners):
    """dx of the upsample op (F.interpolate), attrs as the op spells them; dy's shape gives
    the output size (x: shape, strides and dtype)."""
    S = x.dim() - 2
    if S not in (1, 2, 3) or dy.dim() != x.dim() or dy.shape[:2] != x.shape[:2]:
        raise ValueError(f"upsample gradient: dy {tuple(dy.shape)} does not fit x "
                         f"{tuple(x.shape)}")
    if scale_factor is None:
        scales = (None,) * S
    else:
        scales = tuple(scale_factor) if isinstance(scale_factor, (tuple, list)) else (
            (scale_factor,) * S)
    kind = {"nearest": 0, "linear": 1, "bilinear": 1, "trilinear": 1, "bicubic": 2}[mode]
    isz, osz = tuple(x.shape[2:]), tuple(dy.shape[2:])
    if kind == 2 and isz == osz:
        kind = 0  # ATen's bicubic backward copies when every size agrees (nearest: o -> o)
    double = x.dtype == torch.float64
    ratios = [upsample_ratio(i, o, s, mode, align_corners, double)
              for i, o, s in zip(isz, osz, scales)]
    pad = 3 - S
    modes = (0,) * pad + (kind,) * S
    taps = [(1, 2, 4)[m] for m in modes]
    wide = x.dtype in (torch.float32, torch.float64)
    acc = torch.zeros_like(x, dtype=x.dtype if wide else torch.float32)
    if dy.numel() and x.numel():
        _tensor_upsample_kernel[(ceil_div(dy.numel(), _TENSOR_TILE),)](
            dy, acc, dy.numel(), x.shape[1], *((1,) * pad + isz), *((1,) * pad + osz),
            *dy.stride()[:2], *((0,) * pad + dy.stride()[2:]),
            *acc.stride()[:2], *((0,) * pad + acc.stride()[2:]),
            *((1.0,) * pad + tuple(float(r) for r in ratios)), *modes, *taps,
            ALIGN=bool(align_corners), COORD=tl.float64 if double else tl.float32,
            INDEX_64=_tensor_index_64(dy, x), BLOCK=_TENSOR_TILE)
    return acc if wide else _tensor_copy(acc, torch.empty_like(x))


# ------------------------------------------------------------------ broadcast reduction
@triton.jit
def _tensor_sum_kernel(
    g_ptr, out_ptr, KEPT, RED, K1, K2, K3, K4, gk0, gk1, gk2, gk3, gk4,
    ok0, ok1, ok2, ok3, ok4, R1, R2, R3, R4, gr0, gr1, gr2, gr3, gr4, ACC: tl.constexpr,
    INDEX_64: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """Rows: elements of the result (kept dims); columns: the broadcast dims, summed."""
    offs, o_mask = _tensor_flat(KEPT, INDEX_64, BLOCK_O)
    g_base = _tensor_offsets(offs, K1, K2, K3, K4, gk0, gk1, gk2, gk3, gk4)
    acc = tl.zeros((BLOCK_O,), ACC)
    for r0 in range(0, RED, BLOCK_R):
        rs = r0 + tl.arange(0, BLOCK_R)
        r_off = _tensor_offsets(rs, R1, R2, R3, R4, gr0, gr1, gr2, gr3, gr4)
        m = o_mask[:, None] & (rs < RED)[None, :]
        v = tl.load(g_ptr + g_base[:, None] + r_off[None, :], mask=m, other=0.0)
        acc += tl.sum(v.to(ACC), axis=1)
    out_off = _tensor_offsets(offs, K1, K2, K3, K4, ok0, ok1, ok2, ok3, ok4)
    tl.store(out_ptr + out_off, acc.to(out_ptr.dtype.element_ty), mask=o_mask)


def grad_sum_to(g, shape):
    """g summed (in float32) over the dims along which `shape` was broadcast to g's shape,
    in g's dtype; g itself when the shapes agree."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.dim() - len(shape)
    padded = (1,) * lead + shape
    if lead < 0 or any(s not in (1, n) for s, n in zip(padded, g.shape)):
        raise ValueError(f"cannot sum a gradient of shape {tuple(g.shape)} to {shape}")
    channels_last = {4: torch.channels_last, 5: torch.channels_last_3d}.get(len(shape))
    fmt = torch.contiguous_format
    if (channels_last is not None and g.dim() == len(shape) and not g.is_contiguous()
            and g.is_contiguous(memory_format=channels_last)):
        fmt = channels_last  # the result follows a channels-last gradient
    out = torch.empty(shape, dtype=g.dtype, device=g.device, memory_format=fmt)
    out_strides = (0,) * lead + out.stride()
    kept = [d for d in range(g.dim()) if padded[d] == g.shape[d]]
    red = [d for d in range(g.dim()) if padded[d] != g.shape[d]]
    k_sizes = _tensor_pad5([g.shape[d] for d in kept], 1)
    r_sizes = _tensor_pad5([g.shape[d] for d in red], 1)
    n_kept, n_red = out.numel(), g.numel() // max(out.numel(), 1)
    if n_kept == 0:
        return out
    block_r = min(triton.next_power_of_2(max(n_red, 1)), _TENSOR_TILE // 16)
    block_o = max(16, _TENSOR_TILE // block_r)
    _tensor_sum_kernel[(ceil_div(n_kept, block_o),)](
        g, out, n_kept, n_red, *k_sizes[1:], *_tensor_pad5([g.stride(d) for d in kept], 0),
        *_tensor_pad5([out_strides[d] for d in kept], 0), *r_sizes[1:],
        *_tensor_pad5([g.stride(d) for d in red], 0), ACC=_tensor_acc(g),
        INDEX_64=_tensor_index_64(g),
        BLOCK_O=block_o, BLOCK_R=block_r)
    return out
