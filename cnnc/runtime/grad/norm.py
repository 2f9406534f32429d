"""Backward of batch norm, in training mode (batch statistics) and in eval mode.

The input is read as a strided [rows, C] matrix, rows being (n, spatial...), the channel
the tile's second axis, so a channels-last tensor (channel stride 1) is read in
contiguous runs. With M rows per channel, xc = x - mean and xhat = xc * invstd:

    dbias   = sum(dy)                   dweight = sum(dy * xhat) = invstd * sum(dy * xc)
    train:  dx = weight * invstd / M * (M * dy - sum(dy) - xhat * sum(dy * xhat))
    eval:   dx = dy * weight * invstd,  invstd = 1 / sqrt(running_var + eps)

all in float32 (float64 for float64 tensors). The training forward keeps the statistics
it normalised with (`stats`: mean and invstd, as a [2, C] tensor), so the backward reads
them rather than recomputing: one pass of sums, one of dx. Without them a first pass sums
x and the second also sums xc**2 (the biased variance, as the forward normalised with).

An activation whose derivative is 0 outside a window of its output and 1 inside (relu:
y <= 0; relu6 and hardtanh: y <= lo or y >= hi, as cnnc/ops/activations.py's derivatives)
is folded in: `mask=(y, lo, hi)` makes dy read as dz = where(y at or past a bound, 0, dy),
and `masked_out` receives dz (the gradient of a tensor the forward added before the
activation, a residual's), written by the pass of sums. Passes are programs of (block of
channels, chunk of rows), each writing one partial per channel and chunk (no atomics: the
result is the same on every run); whoever needs a channel's sum adds its chunks' partials.
The interpreter runs one chunk; a GPU splits the rows so that even a few channels fill it.

Kernels: `_norm_sum_kernel` (pass 1: sum x; pass 2: sum dz, sum dz*xc and maybe sum
xc**2, and dz itself for `masked_out`), then `_norm_apply_kernel` (dx, and from its first
chunk dweight and dbias). Where a conv's output z is the input (one autograd unit with the
conv, cnnc/codegen/backward_pair.py), pass 3 replaces both: pass 2's sums, then the last
chunk of each channel block to finish (an atomic counter) adds the chunks' partials in
chunk order (the same result on every run) and writes per-channel coefficients of dx,
which grad_conv applies as it loads dy (`grad_batch_norm_coefficients`).
"""

import os

import torch
import triton
import triton.language as tl

from ..support import ceil_div
from .tensor import _tensor_acc, _tensor_index_64

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# ---- cnnc backward kernels (copied into generated files) ----
_NORM_TILE = 65536 if INTERPRET else 2048  # elements of a [rows, channels] tile
_NORM_CHANNELS = 256 if INTERPRET else 32  # channels of a tile, at most


@triton.jit
def _norm_rows(r, S2, S3, S4, s0, s2, s3, s4):
    """Offsets of rows r = (n, d, h, w) of an [N, C, S2, S3, S4] tensor."""
    w = r % S4
    rest = r // S4
    h = rest % S3
    rest = rest // S3
    d = rest % S2
    n = rest // S2
    return n * s0 + d * s2 + h * s3 + w * s4


@triton.jit
def _norm_chunks_sum(part_ptr, cs, cmask, C, CHUNKS):
    """A channel's sum from its chunks' partials ([CHUNKS, C])."""
    acc = tl.load(part_ptr + cs, mask=cmask, other=0.0)
    for k in range(1, CHUNKS):
        acc += tl.load(part_ptr + k * C + cs, mask=cmask, other=0.0)
    return acc


@triton.jit
def _norm_mean(mean_ptr, p1_ptr, cs, cmask, C, CHUNKS, M, MEAN_GIVEN: tl.constexpr,
               ACC: tl.constexpr):
    if MEAN_GIVEN:
        return tl.load(mean_ptr + cs, mask=cmask, other=0.0).to(ACC)
    else:
        return _norm_chunks_sum(p1_ptr, cs, cmask, C, CHUNKS) / M


@triton.jit
def _norm_invstd(invstd_ptr, p2_ptr, cs, cmask, C, CHUNKS, M, eps,
                 INVSTD_FROM: tl.constexpr, ACC: tl.constexpr):
    """0: the given invstd; 1: 1/sqrt(var + eps) of the given var; 2: of the batch."""
    if INVSTD_FROM == 0:
        return tl.load(invstd_ptr + cs, mask=cmask, other=1.0).to(ACC)
    elif INVSTD_FROM == 1:
        var = tl.load(invstd_ptr + cs, mask=cmask, other=1.0).to(ACC)
        return 1.0 / tl.sqrt(var + eps)
    else:
        var = _norm_chunks_sum(p2_ptr + 2 * CHUNKS * C, cs, cmask, C, CHUNKS) / M
        return 1.0 / tl.sqrt(var + eps)


@triton.jit
def _norm_load_dz(dy_ptr, y_ptr, rs, cs, m, y_off, S2, S3, S4, sm0, sm1, sm2, sm3, sm4, lo, hi,
                  MASK: tl.constexpr, ACC: tl.constexpr):
    """dy at rows rs of channels cs (offsets y_off); with MASK, times the activation's
    derivative from its output y: 0 where y <= lo (MASK 1), or y <= lo or y >= hi (2)."""
    dz = tl.load(dy_ptr + y_off, mask=m, other=0.0).to(ACC)
    if MASK > 0:
        m_off = _norm_rows(rs, S2, S3, S4, sm0, sm2, sm3, sm4)[:, None] + cs[None, :] * sm1
        y = tl.load(y_ptr + m_off, mask=m, other=0.0).to(ACC)
        cut = y <= lo
        if MASK == 2:
            cut = cut | (y >= hi)
        dz = tl.where(cut, 0.0, dz)
    return dz


@triton.jit
def _norm_sum_kernel(
    x_ptr, dy_ptr, mean_ptr, p1_ptr, out_ptr, y_ptr, dz_ptr, R, C, S2, S3, S4, ROWS_PER,
    CHUNKS, lo, hi, sx0, sx1, sx2, sx3, sx4, sy0, sy1, sy2, sy3, sy4,
    sm0, sm1, sm2, sm3, sm4, sz0, sz1, sz2, sz3, sz4,
    w_ptr, invstd_ptr, coef_ptr, dw_ptr, db_ptr, count_ptr,
    PASS: tl.constexpr, MEAN_GIVEN: tl.constexpr, VARIANCE: tl.constexpr,
    READ_X: tl.constexpr, MASK: tl.constexpr, WRITE_DZ: tl.constexpr, AFFINE: tl.constexpr,
    ACC: tl.constexpr, INDEX_64: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Pass 1: out[chunk, c] = sum x. Pass 2: out[0|1|2, chunk, c] = sum dz, sum dz*xc,
    sum xc**2 (the last only with VARIANCE; xc only with READ_X); dz stored with WRITE_DZ.
    Pass 3: pass 2 (READ_X, MEAN_GIVEN), then the last chunk of a channel block to finish
    writes its coefficients and dweight, dbias (_norm_coefficients)."""
    cs = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    chunk = tl.program_id(1)
    if INDEX_64:
        cs = cs.to(tl.int64)
        chunk = chunk.to(tl.int64)
    cmask = cs < C
    if PASS >= 2:
        if READ_X:
            mean = _norm_mean(mean_ptr, p1_ptr, cs, cmask, C, CHUNKS, R, MEAN_GIVEN, ACC)
    s_a = tl.zeros((BLOCK_C,), ACC)
    s_b = tl.zeros((BLOCK_C,), ACC)
    s_c = tl.zeros((BLOCK_C,), ACC)
    r_first = chunk * ROWS_PER
    r_end = tl.minimum(r_first + ROWS_PER, R)
    for r0 in range(r_first, r_end, BLOCK_R):
        rs = r0 + tl.arange(0, BLOCK_R)
        m = (rs < r_end)[:, None] & cmask[None, :]
        if READ_X:
            x_off = _norm_rows(rs, S2, S3, S4, sx0, sx2, sx3, sx4)[:, None] + cs[None, :] * sx1
            x = tl.load(x_ptr + x_off, mask=m, other=0.0).to(ACC)
        if PASS == 1:
            s_a += tl.sum(x, axis=0)
        else:
            y_off = _norm_rows(rs, S2, S3, S4, sy0, sy2, sy3, sy4)[:, None] + cs[None, :] * sy1
            dz = _norm_load_dz(dy_ptr, y_ptr, rs, cs, m, y_off, S2, S3, S4,
                               sm0, sm1, sm2, sm3, sm4, lo, hi, MASK, ACC)
            if WRITE_DZ:
                z_off = (_norm_rows(rs, S2, S3, S4, sz0, sz2, sz3, sz4)[:, None]
                         + cs[None, :] * sz1)
                tl.store(dz_ptr + z_off, dz.to(dz_ptr.dtype.element_ty), mask=m)
            s_a += tl.sum(dz, axis=0)
            if READ_X:
                xc = tl.where(m, x - mean[None, :], 0.0)
                s_b += tl.sum(dz * xc, axis=0)
                if VARIANCE:
                    s_c += tl.sum(xc * xc, axis=0)
    tl.store(out_ptr + chunk * C + cs, s_a, mask=cmask)
    if PASS == 2:
        tl.store(out_ptr + (CHUNKS + chunk) * C + cs, s_b, mask=cmask)
        if VARIANCE:
            tl.store(out_ptr + (2 * CHUNKS + chunk) * C + cs, s_c, mask=cmask)
    if PASS == 3:
        tl.store(out_ptr + (CHUNKS + chunk) * C + cs, s_b, mask=cmask)
        arrived = 0  # one chunk: this program is the last
        if CHUNKS > 1:  # the others' partials are in L2; the counter's acquire orders them
            arrived = tl.atomic_add(count_ptr + tl.program_id(0), 1)
        last = cmask & ((tl.zeros((BLOCK_C,), tl.int32) + arrived) == CHUNKS - 1)
        _norm_coefficients(out_ptr, w_ptr, invstd_ptr, mean, coef_ptr, dw_ptr, db_ptr, cs,
                           last, C, CHUNKS, R, AFFINE, ACC)


@triton.jit
def _norm_coefficients(part_ptr, w_ptr, invstd_ptr, mean, coef_ptr, dw_ptr, db_ptr, cs, last,
                       C, CHUNKS, M, AFFINE: tl.constexpr, ACC: tl.constexpr):
    """From the chunks' [2, CHUNKS, C] partials (sum g, sum g*zc), added in chunk order:
    coef[0..3, c] = (A, B, K, mean) with dz = A*g + B*(z - mean) + K, and dweight = sum
    g*zhat, dbias = sum g (AFFINE; else gamma is 1). Stores only where `last`."""
    sum_g = tl.zeros(cs.shape, ACC)
    sum_gc = tl.zeros(cs.shape, ACC)
    for k in range(0, CHUNKS):
        sum_g += tl.load(part_ptr + k * C + cs, mask=last, other=0.0, cache_modifier=".cg")
        sum_gc += tl.load(part_ptr + (CHUNKS + k) * C + cs, mask=last, other=0.0,
                          cache_modifier=".cg")
    invstd = tl.load(invstd_ptr + cs, mask=last, other=1.0).to(ACC)
    a = invstd
    if AFFINE:
        a = a * tl.load(w_ptr + cs, mask=last, other=0.0).to(ACC)
    sum_g_zhat = sum_gc * invstd
    tl.store(coef_ptr + cs, a, mask=last)
    tl.store(coef_ptr + C + cs, -a * invstd * sum_g_zhat / M, mask=last)
    tl.store(coef_ptr + 2 * C + cs, -a * sum_g / M, mask=last)
    tl.store(coef_ptr + 3 * C + cs, mean, mask=last)
    if AFFINE:
        tl.store(dw_ptr + cs, sum_g_zhat.to(dw_ptr.dtype.element_ty), mask=last)
        tl.store(db_ptr + cs, sum_g.to(db_ptr.dtype.element_ty), mask=last)


@triton.jit
def _norm_apply_kernel(
    x_ptr, dy_ptr, w_ptr, mean_ptr, invstd_ptr, p1_ptr, p2_ptr, dx_ptr, dw_ptr, db_ptr,
    y_ptr, R, C, S2, S3, S4, ROWS_PER, CHUNKS, eps, lo, hi,
    sx0, sx1, sx2, sx3, sx4, sy0, sy1, sy2, sy3, sy4, sd0, sd1, sd2, sd3, sd4,
    sm0, sm1, sm2, sm3, sm4,
    TRAIN: tl.constexpr, MEAN_GIVEN: tl.constexpr, INVSTD_FROM: tl.constexpr,
    AFFINE: tl.constexpr, DX: tl.constexpr, DW: tl.constexpr, DB: tl.constexpr,
    SUMS: tl.constexpr, MASK: tl.constexpr, ACC: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    cs = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    chunk = tl.program_id(1)
    if INDEX_64:
        cs = cs.to(tl.int64)
        chunk = chunk.to(tl.int64)
    cmask = cs < C
    invstd = _norm_invstd(invstd_ptr, p2_ptr, cs, cmask, C, CHUNKS, R, eps, INVSTD_FROM, ACC)
    if SUMS:
        sum_dy = _norm_chunks_sum(p2_ptr, cs, cmask, C, CHUNKS)
        sum_dy_xhat = _norm_chunks_sum(p2_ptr + CHUNKS * C, cs, cmask, C, CHUNKS) * invstd
    if chunk == 0:
        if DW:
            tl.store(dw_ptr + cs, sum_dy_xhat.to(dw_ptr.dtype.element_ty), mask=cmask)
        if DB:
            tl.store(db_ptr + cs, sum_dy.to(db_ptr.dtype.element_ty), mask=cmask)
    if DX:
        scale = invstd
        if AFFINE:
            scale = scale * tl.load(w_ptr + cs, mask=cmask, other=0.0).to(ACC)
        if TRAIN:
            mean = _norm_mean(mean_ptr, p1_ptr, cs, cmask, C, CHUNKS, R, MEAN_GIVEN, ACC)
            scale = scale / R
        r_first = chunk * ROWS_PER
        r_end = tl.minimum(r_first + ROWS_PER, R)
        for r0 in range(r_first, r_end, BLOCK_R):
            rs = r0 + tl.arange(0, BLOCK_R)
            m = (rs < r_end)[:, None] & cmask[None, :]
            y_off = _norm_rows(rs, S2, S3, S4, sy0, sy2, sy3, sy4)[:, None] + cs[None, :] * sy1
            dy = _norm_load_dz(dy_ptr, y_ptr, rs, cs, m, y_off, S2, S3, S4,
                               sm0, sm1, sm2, sm3, sm4, lo, hi, MASK, ACC)
            if TRAIN:
                x_off = (_norm_rows(rs, S2, S3, S4, sx0, sx2, sx3, sx4)[:, None]
                         + cs[None, :] * sx1)
                x = tl.load(x_ptr + x_off, mask=m, other=0.0).to(ACC)
                xhat = (x - mean[None, :]) * invstd[None, :]
                dx = scale[None, :] * (R * dy - sum_dy[None, :]
                                       - xhat * sum_dy_xhat[None, :])
            else:
                dx = dy * scale[None, :]
            d_off = _norm_rows(rs, S2, S3, S4, sd0, sd2, sd3, sd4)[:, None] + cs[None, :] * sd1
            tl.store(dx_ptr + d_off, dx.to(dx_ptr.dtype.element_ty), mask=m)


def _norm_strides(t):
    """Strides of an [N, C, *spatial] tensor as [N, C, D, H, W] (0 for absent dims)."""
    if t is None:
        return (0,) * 5
    s = t.stride()
    return (s[0], s[1], *((0,) * (5 - t.dim())), *s[2:])


def _norm_chunks(rows, block_r, c_blocks):
    """How many chunks a channel's rows split into: on a GPU enough for ~1024 programs
    even with few channels (at least 8 tiles each); the interpreter runs one."""
    if INTERPRET:
        return 1
    return max(1, min(256, ceil_div(rows, block_r * 8), ceil_div(1024, c_blocks)))


def _norm_mask(mask, dy):
    """(y, lo, hi, MASK) for the kernels from mask=(y, lo, hi) or None; hi None or +inf:
    no upper bound (relu's derivative passes y = +inf)."""
    if mask is None:
        return dy, 0.0, 0.0, 0
    y, lo, hi = mask
    if y.shape != dy.shape:
        raise ValueError(f"batch norm gradient: mask's y {tuple(y.shape)} is not dy's shape "
                         f"{tuple(dy.shape)}")
    upper = hi is not None and hi != float("inf")
    return y, float(lo), float(hi) if upper else 0.0, 2 if upper else 1


def _norm_tiles(dy, *tensors):
    """(channel blocks, chunks, work tensors' dtype and device, the kernels' sizes, their
    tile constants) for dy [N, C, ...]; tensors: the others read (for the accumulator)."""
    C = dy.shape[1]
    R = dy.numel() // C if C else 0
    spatial = (1,) * (5 - dy.dim()) + tuple(dy.shape[2:])
    block_c = min(triton.next_power_of_2(C), _NORM_CHANNELS)
    block_r = max(16, _NORM_TILE // block_c)
    c_blocks = ceil_div(C, block_c)
    chunks = _norm_chunks(R, block_r, c_blocks)
    rows_per = ceil_div(max(R, 1), chunks)
    chunks = ceil_div(max(R, 1), rows_per)
    acc = _tensor_acc(dy, *(t for t in tensors if t is not None))
    work = dict(dtype=torch.float64 if acc == tl.float64 else torch.float32, device=dy.device)
    tiles = dict(ACC=acc, INDEX_64=_tensor_index_64(dy), BLOCK_R=block_r, BLOCK_C=block_c)
    return c_blocks, chunks, work, (R, C, *spatial, rows_per, chunks), tiles


def _norm_launch(dy, x, weight, mean, invstd, invstd_from, eps, needs, train, mask=None,
                 masked_out=None):
    if dy.dim() < 2 or dy.dim() > 5 or (x is not None and x.shape != dy.shape):
        raise ValueError(f"batch norm gradient: dy {tuple(dy.shape)} and x "
                         f"{None if x is None else tuple(x.shape)} must be one [N, C, ...] shape")
    if masked_out is not None and masked_out.shape != dy.shape:
        raise ValueError(f"batch norm gradient: masked_out {tuple(masked_out.shape)} is not "
                         f"dy's shape {tuple(dy.shape)}")
    need_dx, need_dw, need_db = needs
    affine = weight is not None
    need_dw, need_db = need_dw and affine, need_db and affine
    C = dy.shape[1]
    dx = torch.empty_like(dy if x is None else x) if need_dx else None
    dw = torch.empty_like(weight) if need_dw else None
    db = torch.empty_like(weight) if need_db else None
    write_dz = masked_out is not None
    if not (need_dx or need_dw or need_db or write_dz) or dy.numel() == 0:
        for g in (dw, db):
            if g is not None:
                g.zero_()  # an empty batch: nothing to sum
        return dx, dw, db
    y, lo, hi, masking = _norm_mask(mask, dy)
    c_blocks, chunks, work, common, tiles = _norm_tiles(dy, x, weight, mean, invstd)
    mean_given = mean is not None
    read_x = train or need_dw
    variance = invstd_from == 2
    xs, ms = _norm_strides(x), _norm_strides(y)
    p1 = p2 = torch.empty(1, **work)
    if read_x and not mean_given:
        p1 = torch.empty((chunks, C), **work)
        _norm_sum_kernel[(c_blocks, chunks)](
            x, dy, p1, p1, p1, dy, dy, *common, 0.0, 0.0, *xs, *_norm_strides(dy), *ms,
            *_norm_strides(None), *(p1,) * 6, PASS=1, MEAN_GIVEN=False, VARIANCE=False,
            READ_X=True, MASK=0, WRITE_DZ=False, AFFINE=False, **tiles)
    if train or need_dw or need_db or write_dz:
        p2 = torch.empty((3 if variance else 2, chunks, C), **work)
        _norm_sum_kernel[(c_blocks, chunks)](
            x if read_x else dy, dy, mean if mean_given else p1, p1, p2, y,
            masked_out if write_dz else dy, *common, lo, hi, *xs, *_norm_strides(dy), *ms,
            *_norm_strides(masked_out), *(p2,) * 6, PASS=2, MEAN_GIVEN=mean_given,
            VARIANCE=variance, READ_X=read_x, MASK=masking, WRITE_DZ=write_dz, AFFINE=False,
            **tiles)
    if not (need_dx or need_dw or need_db):
        return dx, dw, db
    if write_dz:  # dz is written: the apply pass reads it instead of dy and y
        dy, masking = masked_out, 0
    _norm_apply_kernel[(c_blocks, chunks if need_dx else 1)](
        x if x is not None else dy, dy, weight if affine else p2, mean if mean_given else p1,
        invstd if invstd is not None else p2, p1, p2, dx if need_dx else p2,
        dw if need_dw else p2, db if need_db else p2, y, *common, eps, lo, hi, *xs,
        *_norm_strides(dy), *_norm_strides(dx), *ms, TRAIN=train, MEAN_GIVEN=mean_given,
        INVSTD_FROM=invstd_from, AFFINE=affine, DX=need_dx, DW=need_dw, DB=need_db,
        SUMS=train or need_dw or need_db, MASK=masking, **tiles)
    return dx, dw, db


def grad_batch_norm(dy, x, weight, *, eps, needs=(True, True, True), stats=None, mask=None,
                    masked_out=None):
    """(dx, dweight, dbias) of training-mode batch norm (batch statistics over every dim
    but 1, biased variance). stats: the forward's [2, C] (mean, invstd) it normalised with
    (one pass of sums, one of dx), else recomputed from x. weight None (affine=False):
    dweight, dbias None. mask=(y, lo, hi): dy is the gradient of an activation's output y
    whose derivative is 0 where y <= lo or y >= hi (hi None or inf: no upper bound);
    masked_out: a tensor of dy's shape that receives that activation's input gradient dz."""
    mean, invstd = (None, None) if stats is None else (stats[0], stats[1])
    return _norm_launch(dy, x, weight, mean, invstd, 0 if invstd is not None else 2, eps,
                        needs, train=True, mask=mask, masked_out=masked_out)


def grad_batch_norm_eval(dy, x, weight, running_mean, running_var, *, eps,
                         needs=(True, True, True)):
    """(dx, dweight, dbias) of eval-mode batch norm (running statistics are constants):
    dx = dy * weight / sqrt(running_var + eps). x gives dx its layout and, with
    running_mean, serves dweight (both may be None when dweight is not needed)."""
    need_dw = needs[1] and weight is not None
    if need_dw and (x is None or running_mean is None):
        raise ValueError("eval batch norm's weight gradient needs x and running_mean")
    return _norm_launch(dy, x, weight, running_mean if need_dw else None, running_var, 1, eps,
                        needs, train=False)


def grad_batch_norm_coefficients(dy, z, weight, stats, *, needs=(True, True), mask=None,
                                 masked_out=None):
    """A training batch norm's backward as per-channel coefficients, one launch: returns
    (coef, dweight, dbias), coef a [4, C] float32 (float64 for float64) tensor of (A, B,
    K, mean) such that the input gradient is dz = A*g + B*(z - mean) + K, g being dy
    masked as grad_batch_norm's `mask` says (A = weight*invstd, B = -A*invstd*dweight/M,
    K = -A*dbias/M, dweight = sum g*zhat, dbias = sum g; weight None: 1, and no dweight,
    dbias). The batch norm's input gradient is then never written: a conv's gradient
    launcher applies it as it loads dy (grad_conv's `affine=(z, coef)`). stats: the
    forward's [2, C] (mean, invstd); needs: (dweight, dbias); masked_out: as
    grad_batch_norm's (written by the same launch)."""
    if dy.dim() < 2 or dy.dim() > 5 or z.shape != dy.shape:
        raise ValueError(f"batch norm coefficients: dy {tuple(dy.shape)} and z "
                         f"{tuple(z.shape)} must be one [N, C, ...] shape")
    if masked_out is not None and masked_out.shape != dy.shape:
        raise ValueError(f"batch norm gradient: masked_out {tuple(masked_out.shape)} is not "
                         f"dy's shape {tuple(dy.shape)}")
    affine = weight is not None
    y, lo, hi, masking = _norm_mask(mask, dy)
    c_blocks, chunks, work, common, tiles = _norm_tiles(dy, z, weight, stats)
    C = dy.shape[1]
    # every value written by the launch (no fill launches), but for an empty batch
    empty = torch.zeros if dy.numel() == 0 else torch.empty
    coef = empty((4, C), **work)
    dw, db = (empty(C, dtype=weight.dtype, device=weight.device) for _ in "wb") if affine \
        else (None, None)
    if dy.numel() == 0:
        return coef, dw if needs[0] else None, db if needs[1] else None
    parts = torch.empty((2, chunks, C), **work)
    # the chunks of a channel block that have arrived (a fill launch only where several)
    counts = torch.zeros(c_blocks, dtype=torch.int32, device=dy.device) if chunks > 1 \
        else parts
    mean, invstd = stats[0], stats[1]
    _norm_sum_kernel[(c_blocks, chunks)](
        z, dy, mean, parts, parts, y, masked_out if masked_out is not None else dy, *common,
        lo, hi, *_norm_strides(z), *_norm_strides(dy), *_norm_strides(y),
        *_norm_strides(masked_out), *((weight, invstd, coef, dw, db) if affine else
                                      (parts, invstd, coef, parts, parts)), counts,
        PASS=3, MEAN_GIVEN=True, VARIANCE=False, READ_X=True, MASK=masking,
        WRITE_DZ=masked_out is not None, AFFINE=affine, **tiles)
    return coef, dw if needs[0] else None, db if needs[1] else None
