"""Backward of max/avg pools and adaptive max/avg pools, 1-3 spatial dims.

Every launcher pads the spatial dims to three (D, H, W) with size-1 dims (stride 0,
window 1), so one pair of kernels serves 1-, 2- and 3-d pools.

The input gradient is a gather, never a scatter: one program takes a block of input
elements (rows) and, per element, the few outputs whose windows can hold it (columns).
Along a dim of stride s, dilation d and window k, input i lies in the windows of outputs
o with o*s - p <= i <= o*s - p + (k-1)*d: at most (k-1)*d // s + 1 of them; an adaptive
pool's output o covers floor(o*in/out) up to ceil((o+1)*in/out), so i lies in outputs
floor(i*out/in) to ceil((i+1)*out/in) - 1. Each element's gradient is summed in float32
(float64 for float64 tensors) in registers and stored once, in the input's dtype and
memory format: no atomics, no zero-filled buffer, the same result on every run.

- avg: dx[i] = sum over those outputs of dy[o] / divisor(o), with PyTorch's divisor
  (divisor_override; else the window clipped to the padded input when count_include_pad,
  to the input itself otherwise; an adaptive window's own size).
- max: dx[i] = sum of dy[o] over the outputs o whose arg-max is i, the arg-max as
  PyTorch chooses it (the first maximum in window order; a NaN wins, the last NaN in
  window order, since PyTorch's `val > max || isnan(val)` replaces on every NaN; a window
  of -inf only gives its first element). One launch: the gather reads each candidate
  window from x and keeps o where no tap beats i (_pool_wins). Where that costs more than
  _POOL_RECOMPUTE_LOADS loads of x an element (candidates x window size: big adaptive
  windows), two: a first kernel stores each window's arg-max (its input position, flat
  over the spatial dims, one int per output), and the gather compares with it.
"""

import os

import torch
import triton
import triton.language as tl

from ..support import ceil_div
from .tensor import _tensor_acc, _tensor_flat, _tensor_index_64, _tensor_unflatten

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# ---- cnnc backward kernels (copied into generated files) ----
# Tiles: the interpreter pays per program and per operation, a GPU per register.
_POOL_TILE = 65536 if INTERPRET else 1024  # elements of a [rows, columns] tile


@triton.jit
def _pool_window(o, IN, OUT, S, P, ADAPTIVE: tl.constexpr):
    """Where output o's window starts along a dim (before padding is clipped), and the
    bound its taps stay below: the input's end, or an adaptive window's own end."""
    if ADAPTIVE:
        return (o * IN) // OUT, ((o + 1) * IN + OUT - 1) // OUT
    else:
        return o * S - P, o * 0 + IN  # shaped as o, so that callers may index it


@triton.jit
def _pool_tap(start, limit, k, DIL, ADAPTIVE: tl.constexpr):
    """Input index of tap k of a window along a dim (an adaptive window's DIL is 1), and
    whether it lies in the input (an adaptive window starts inside it)."""
    i = start + k * DIL
    if ADAPTIVE:
        return i, i < limit
    else:
        return i, (i >= 0) & (i < limit)


@triton.jit
def _pool_argmax_kernel(
    x_ptr, am_ptr, M, C, ID, IH, IW, OD, OH, OW,
    sx0, sx1, sx2, sx3, sx4,
    SD, SH, SW, PD, PH, PW, DD, DH, DW,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, ADAPTIVE: tl.constexpr,
    ACC: tl.constexpr, INDEX_64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Rows: outputs (n, c, od, oh, ow); columns: offsets in the window (kd, kh, kw)."""
    offs_m, m_mask = _tensor_flat(M, INDEX_64, BLOCK_M)
    n, c, od, oh, ow = _tensor_unflatten(offs_m, C, OD, OH, OW)
    base = n * sx0 + c * sx1
    start_d, lim_d = _pool_window(od, ID, OD, SD, PD, ADAPTIVE)
    start_h, lim_h = _pool_window(oh, IH, OH, SH, PH, ADAPTIVE)
    start_w, lim_w = _pool_window(ow, IW, OW, SW, PW, ADAPTIVE)
    best = tl.full((BLOCK_M,), float("-inf"), ACC)
    NONE = KD * KH * KW  # no element yet
    best_k = tl.full((BLOCK_M,), NONE, tl.int32)
    nan_k = tl.full((BLOCK_M,), -1, tl.int32)
    for k0 in range(0, KD * KH * KW, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        _, _, kd, kh, kw = _tensor_unflatten(offs_k, 1, KD, KH, KW)
        i_d, in_d = _pool_tap(start_d[:, None], lim_d[:, None], kd[None, :], DD, ADAPTIVE)
        i_h, in_h = _pool_tap(start_h[:, None], lim_h[:, None], kh[None, :], DH, ADAPTIVE)
        i_w, in_w = _pool_tap(start_w[:, None], lim_w[:, None], kw[None, :], DW, ADAPTIVE)
        valid = m_mask[:, None] & (offs_k < KD * KH * KW)[None, :] & in_d & in_h & in_w
        v = tl.load(x_ptr + base[:, None] + i_d * sx2 + i_h * sx3 + i_w * sx4,
                    mask=valid, other=float("-inf")).to(ACC)
        is_nan = valid & (v != v)
        nan_k = tl.maximum(nan_k, tl.max(tl.where(is_nan, offs_k[None, :], -1), axis=1))
        v = tl.where(valid & (v == v), v, float("-inf"))
        top = tl.max(v, axis=1)
        first = tl.min(tl.where(valid & (v == top[:, None]), offs_k[None, :], NONE), axis=1)
        # A later chunk wins only with a larger value (ties keep the earlier position).
        take = (first < NONE) & ((top > best) | (best_k == NONE))
        best = tl.where(take, top, best)
        best_k = tl.where(take, first, best_k)
    k = tl.where(nan_k >= 0, nan_k, best_k)
    _, _, kd, kh, kw = _tensor_unflatten(k, 1, KD, KH, KW)
    i_d, _ = _pool_tap(start_d, lim_d, kd, DD, ADAPTIVE)
    i_h, _ = _pool_tap(start_h, lim_h, kh, DH, ADAPTIVE)
    i_w, _ = _pool_tap(start_w, lim_w, kw, DW, ADAPTIVE)
    # A window wholly in the padding (dilation can skip the input) takes no gradient.
    am = tl.where(k == NONE, -1, (i_d * IH + i_h) * IW + i_w)
    tl.store(am_ptr + offs_m, am, mask=m_mask)


@triton.jit
def _pool_candidates(i, IN, OUT, S, P, K, DIL, ADAPTIVE: tl.constexpr):
    """The first and last output whose window can hold input index i along a dim."""
    if ADAPTIVE:
        lo = (i * OUT) // IN
        hi = ((i + 1) * OUT + IN - 1) // IN - 1
    else:
        a = i + P - (K - 1) * DIL
        lo = tl.where(a > 0, (a + S - 1) // S, 0)  # no division of a negative number
        hi = tl.minimum((i + P) // S, OUT - 1)
    return lo, hi


@triton.jit
def _pool_divisor_dim(o, IN, OUT, S, P, K, ADAPTIVE: tl.constexpr, INCLUDE_PAD: tl.constexpr):
    """Output o's window size along a dim, as PyTorch divides by it."""
    if ADAPTIVE:
        return ((o + 1) * IN + OUT - 1) // OUT - (o * IN) // OUT
    else:
        start = o * S - P
        end = tl.minimum(start + K, IN + P)
        if INCLUDE_PAD:
            return end - start
        else:
            return tl.minimum(end, IN) - tl.maximum(start, 0)


@triton.jit
def _pool_wins(
    x_ptr, x_base, candidate, me, i_d, i_h, i_w, od, oh, ow, ID, IH, IW, OD, OH, OW,
    sx2, sx3, sx4, SD, SH, SW, PD, PH, PW, KD, KH, KW, DD, DH, DW, ADAPTIVE: tl.constexpr,
):
    """Whether input element (i_d, i_h, i_w) (rows; its value `me`) is the arg-max PyTorch
    picks in the window of each candidate output (od, oh, ow) (columns): it is a tap of
    the window and no other tap beats it. A NaN is beaten only by a later NaN (the last
    NaN wins); a number by any NaN, a larger number, or an equal one earlier in window
    order (the first maximum wins; so a window of -inf gives its first element). Window
    order is the order of input positions, so "earlier" compares positions."""
    start_d, lim_d = _pool_window(od, ID, OD, SD, PD, ADAPTIVE)
    start_h, lim_h = _pool_window(oh, IH, OH, SH, PH, ADAPTIVE)
    start_w, lim_w = _pool_window(ow, IW, OW, SW, PW, ADAPTIVE)
    wins = candidate
    if not ADAPTIVE:  # a candidate's window spans the element, dilation may step over it
        wins = wins & ((i_d[:, None] - start_d) % DD == 0) & ((i_h[:, None] - start_h) % DH == 0)
        wins = wins & ((i_w[:, None] - start_w) % DW == 0)
    my_pos = ((i_d * IH + i_h) * IW + i_w)[:, None]
    me_nan = (me != me)[:, None]
    me = me[:, None]
    for kd in range(KD):
        j_d, in_d = _pool_tap(start_d, lim_d, kd, DD, ADAPTIVE)
        for kh in range(KH):
            j_h, in_h = _pool_tap(start_h, lim_h, kh, DH, ADAPTIVE)
            for kw in range(KW):
                j_w, in_w = _pool_tap(start_w, lim_w, kw, DW, ADAPTIVE)
                # Once beaten, a window reads no more.
                read = wins & in_d & in_h & in_w
                v = tl.load(x_ptr + x_base + j_d * sx2 + j_h * sx3 + j_w * sx4, mask=read,
                            other=0.0).to(me.dtype)
                pos = (j_d * IH + j_h) * IW + j_w
                v_nan = v != v
                beaten = tl.where(me_nan, v_nan & (pos > my_pos),
                                  v_nan | (v > me) | ((v == me) & (pos < my_pos)))
                wins = wins & ~(read & beaten)
    return wins


@triton.jit
def _pool_gather_kernel(
    dy_ptr, x_ptr, am_ptr, dx_ptr, TOTAL, C, ID, IH, IW, OD, OH, OW,
    sdy0, sdy1, sdy2, sdy3, sdy4, sx0, sx1, sx2, sx3, sx4, sdx0, sdx1, sdx2, sdx3, sdx4,
    SD, SH, SW, PD, PH, PW, KD, KH, KW, DD, DH, DW, DIVISOR,
    IS_MAX: tl.constexpr, RECOMPUTE: tl.constexpr, ADAPTIVE: tl.constexpr,
    INCLUDE_PAD: tl.constexpr, OVERRIDE: tl.constexpr,
    CD: tl.constexpr, CH: tl.constexpr, CW: tl.constexpr,
    CAND: tl.constexpr, ACC: tl.constexpr, INDEX_64: tl.constexpr, BLOCK: tl.constexpr,
):
    """Rows: input elements (n, c, id, ih, iw); columns: candidate outputs (jd, jh, jw).
    A max pool's arg-max comes from am (the arg-max kernel's) or, RECOMPUTE, from x."""
    offs, mask = _tensor_flat(TOTAL, INDEX_64, BLOCK)
    n, c, i_d, ih, iw = _tensor_unflatten(offs, C, ID, IH, IW)
    lo_d, hi_d = _pool_candidates(i_d, ID, OD, SD, PD, KD, DD, ADAPTIVE)
    lo_h, hi_h = _pool_candidates(ih, IH, OH, SH, PH, KH, DH, ADAPTIVE)
    lo_w, hi_w = _pool_candidates(iw, IW, OW, SW, PW, KW, DW, ADAPTIVE)
    _, _, jd, jh, jw = _tensor_unflatten(tl.arange(0, CAND), 1, CD, CH, CW)
    od = lo_d[:, None] + jd[None, :]
    oh = lo_h[:, None] + jh[None, :]
    ow = lo_w[:, None] + jw[None, :]
    valid = (mask[:, None] & (tl.arange(0, CAND) < CD * CH * CW)[None, :]
             & (od <= hi_d[:, None]) & (oh <= hi_h[:, None]) & (ow <= hi_w[:, None]))
    g = tl.load(dy_ptr + (n * sdy0 + c * sdy1)[:, None] + od * sdy2 + oh * sdy3 + ow * sdy4,
                mask=valid, other=0.0).to(ACC)
    if IS_MAX:
        if RECOMPUTE:
            x_base = n * sx0 + c * sx1
            me = tl.load(x_ptr + x_base + i_d * sx2 + ih * sx3 + iw * sx4, mask=mask,
                         other=0.0).to(ACC)
            hit = _pool_wins(x_ptr, x_base[:, None], valid, me, i_d, ih, iw, od, oh, ow,
                             ID, IH, IW, OD, OH, OW, sx2, sx3, sx4, SD, SH, SW, PD, PH, PW,
                             KD, KH, KW, DD, DH, DW, ADAPTIVE)
        else:
            flat_o = (((n * C + c)[:, None] * OD + od) * OH + oh) * OW + ow
            am = tl.load(am_ptr + flat_o, mask=valid, other=-1)
            hit = valid & (am == ((i_d * IH + ih) * IW + iw)[:, None])
        acc = tl.sum(tl.where(hit, g, 0.0), axis=1)
    else:
        if OVERRIDE:
            div = DIVISOR * 1.0
        else:
            div = (_pool_divisor_dim(od, ID, OD, SD, PD, KD, ADAPTIVE, INCLUDE_PAD)
                   * _pool_divisor_dim(oh, IH, OH, SH, PH, KH, ADAPTIVE, INCLUDE_PAD)
                   * _pool_divisor_dim(ow, IW, OW, SW, PW, KW, ADAPTIVE, INCLUDE_PAD)
                   ).to(ACC)
        acc = tl.sum(tl.where(valid, g / div, 0.0), axis=1)
    dx_off = n * sdx0 + c * sdx1 + i_d * sdx2 + ih * sdx3 + iw * sdx4
    tl.store(dx_ptr + dx_off, acc.to(dx_ptr.dtype.element_ty), mask=mask)


def _pool_dims(values, rank, fill):
    """A per-spatial-dim tuple padded in front to three dims (D, H, W)."""
    values = tuple(values) if isinstance(values, (tuple, list)) else (values,) * (rank - 2)
    return (fill,) * (5 - rank) + values


def _pool_strides(t):
    """Strides of an [N, C, *spatial] tensor as [N, C, D, H, W] (0 for padded dims)."""
    s = t.stride()
    return (s[0], s[1], *((0,) * (5 - t.dim())), *s[2:])


def _pool_sizes(t):
    return (1,) * (5 - t.dim()) + tuple(t.shape[2:])


def _pool_volume(dims):
    """The product of three per-dim counts (generated files import no math)."""
    return dims[0] * dims[1] * dims[2]


def _pool_pow2(n):
    return 1 << max(0, n - 1).bit_length()


def _pool_adaptive_reach(size, out):
    """The most outputs an input index of a dim lies in (adaptive windows)."""
    return max(-((-(i + 1) * out) // size) - (i * out) // size for i in range(size))


# The most loads of x an input element's gradient may cost when its windows' arg-maxes
# are recomputed in the gather (candidate windows x window size; ResNet's 3x3 stride-2
# pool: 4 x 9 = 36, LeNet's 2x2: 4). Past it, e.g. a big adaptive window spanning many
# outputs' windows, one arg-max per window stored by a first kernel costs far less.
_POOL_RECOMPUTE_LOADS = 256


def _pool_recomputes(reach, window):
    """Whether a max pool's backward is one launch (the gather recomputes each window's
    arg-max) rather than two (arg-maxes stored, then gathered)."""
    return _pool_volume(reach) * _pool_volume(window) <= _POOL_RECOMPUTE_LOADS


def _pool_launch(dy, x, window, stride, padding, dilation, *, is_max, adaptive,
                 include_pad=True, divisor=None):
    if x.dim() not in (3, 4, 5) or dy.dim() != x.dim() or dy.shape[:2] != x.shape[:2]:
        raise ValueError(f"pool gradient: dy {tuple(dy.shape)} does not fit x {tuple(x.shape)}")
    N, C = x.shape[:2]
    isz, osz = _pool_sizes(x), _pool_sizes(dy)
    dx = torch.empty_like(x)
    if x.numel() == 0:
        return dx
    if dy.numel() == 0:
        return dx.zero_()
    index_64 = _tensor_index_64(x, dy)
    if adaptive:
        reach = [_pool_adaptive_reach(i, o) for i, o in zip(isz, osz)]
    else:
        reach = [(k - 1) * d // s + 1 for k, d, s in zip(window, dilation, stride)]
    recompute = is_max and _pool_recomputes(reach, window)
    am = dx  # unused unless a max pool's arg-max is stored
    if is_max and not recompute:
        am = torch.empty(dy.shape, dtype=torch.int64 if index_64 else torch.int32,
                         device=x.device)
        M = dy.numel()
        # At least 16 rows, and a tile of _POOL_TILE elements: a wider one spills on sm_90.
        block_k = min(_pool_pow2(_pool_volume(window)), _POOL_TILE // 16)
        block_m = _POOL_TILE // block_k
        _pool_argmax_kernel[(ceil_div(M, block_m),)](
            x, am, M, C, *isz, *osz, *_pool_strides(x), *stride, *padding, *dilation,
            *window, ADAPTIVE=adaptive, ACC=_tensor_acc(x), INDEX_64=index_64,
            BLOCK_M=block_m, BLOCK_K=block_k)
    cand = _pool_pow2(_pool_volume(reach))
    block = max(16, _pool_pow2(_POOL_TILE // cand) // 2)
    total = x.numel()
    _pool_gather_kernel[(ceil_div(total, block),)](
        dy, x, am, dx, total, C, *isz, *osz, *_pool_strides(dy), *_pool_strides(x),
        *_pool_strides(dx), *stride, *padding, *window, *dilation, divisor or 1,
        IS_MAX=is_max, RECOMPUTE=recompute, ADAPTIVE=adaptive, INCLUDE_PAD=bool(include_pad),
        OVERRIDE=divisor is not None, CD=reach[0], CH=reach[1], CW=reach[2], CAND=cand,
        ACC=_tensor_acc(dy, x), INDEX_64=index_64, BLOCK=block)
    return dx


def grad_max_pool(dy, x, *, kernel_size, stride, padding, dilation, ceil_mode):
    """dx of max_pool1/2/3d (ceil_mode shows in dy's shape)."""
    r = x.dim()
    return _pool_launch(dy, x, _pool_dims(kernel_size, r, 1), _pool_dims(stride, r, 1),
                        _pool_dims(padding, r, 0), _pool_dims(dilation, r, 1),
                        is_max=True, adaptive=False)


def grad_avg_pool(dy, x, *, kernel_size, stride, padding, ceil_mode, count_include_pad,
                  divisor_override):
    """dx of avg_pool1/2/3d (x gives the shape, strides and dtype; its values are unused)."""
    r = x.dim()
    return _pool_launch(dy, x, _pool_dims(kernel_size, r, 1), _pool_dims(stride, r, 1),
                        _pool_dims(padding, r, 0), (1, 1, 1), is_max=False, adaptive=False,
                        include_pad=count_include_pad, divisor=divisor_override)


def _pool_adaptive_window(x, dy):
    """The longest adaptive window of each dim, padded to three dims."""
    return tuple(max(-((-(o + 1) * i) // n) - (o * i) // n for o in range(n))
                 for i, n in zip(_pool_sizes(x), _pool_sizes(dy)))


def grad_adaptive_avg_pool(dy, x, *, output_size):
    """dx of adaptive_avg_pool1/2/3d (dy's shape gives the resolved output size)."""
    return _pool_launch(dy, x, _pool_adaptive_window(x, dy), (1, 1, 1), (0, 0, 0), (1, 1, 1),
                        is_max=False, adaptive=True)


def grad_adaptive_max_pool(dy, x, *, output_size):
    """dx of adaptive_max_pool1/2/3d, the arg-max recomputed from x."""
    return _pool_launch(dy, x, _pool_adaptive_window(x, dy), (1, 1, 1), (0, 0, 0), (1, 1, 1),
                        is_max=True, adaptive=True)
