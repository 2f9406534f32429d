"""Backward of layer_norm and group_norm: per-row statistics, recomputed from x in float32.

A row is what one mean and variance cover, as in the forward (codegen/templates/norm.py):
for layer_norm one position of the leading dims, its D values the normalised trailing
dims; for group_norm one (batch item, group), its D values the group's channels at every
position. With xc = x - mean, rstd = 1 / sqrt(mean(xc**2) + eps), xhat = xc * rstd and
dyw = dy * weight (dy without affine):

    dx      = rstd * (dyw - (sum(dyw) + xhat * rstd * sum(dyw * xc)) / D)   (sums over the row)
    dweight = sum(dy * xhat),  dbias = sum(dy)                     (sums over the other rows)

all in float32 (float64 for float64 tensors). Every tensor is read as rank 5 through its
strides (size-1 dims added, stride 0), split into three runs of dims: the row dims, the
weight dims (whose flat index is the weight's: layer_norm's normalised dims, group_norm's
channel) and the rest (group_norm's spatial dims). A tile is [rows, weights, rest].

One kernel, programs (chunk of rows, group): for each block of rows, pass 1 sums x (the
mean), pass 2 sums xc**2, dyw and dyw*xc, pass 3 writes dx and sums the weight's and the
bias's partials over the rows and the rest. Where a group's weights fit one tile the
partials stay in registers across the chunk and are stored once per chunk; else they are
added per block of rows into the chunk's own row of a float32 buffer (atomics, never
contended across programs). With one chunk and one tile of weights the kernel writes
dweight and dbias itself; else `_group_norm_finish_kernel` adds the chunks' partials. The
interpreter runs one chunk; a GPU splits the rows so that even a few groups fill it.
"""

import os

import torch
import triton
import triton.language as tl

from ..support import ceil_div
from .tensor import _tensor_acc, _tensor_index_64

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# ---- cnnc backward kernels (copied into generated files) ----
_GROUP_NORM_TILE = 65536 if INTERPRET else 2048  # elements of a [rows, weights, rest] tile


@triton.jit
def _group_norm_offset(i, LO: tl.constexpr, HI: tl.constexpr, S1, S2, S3, S4,
                       s0, s1, s2, s3, s4):
    """Offsets of flat (row-major) indices i over dims LO..HI-1 of a rank-5 tensor of
    sizes (., S1, S2, S3, S4) and strides s0..s4 (0 where the run is empty)."""
    off = i * 0
    if HI > 4 and LO <= 4:
        off += (i % S4) * s4
        i = i // S4
    if HI > 3 and LO <= 3:
        off += (i % S3) * s3
        i = i // S3
    if HI > 2 and LO <= 2:
        off += (i % S2) * s2
        i = i // S2
    if HI > 1 and LO <= 1:
        off += (i % S1) * s1
        i = i // S1
    if HI > 0 and LO == 0:
        off += i * s0
    return off


@triton.jit
def _group_norm_tile(rs, wi, bs, ROW_HI: tl.constexpr, W_HI: tl.constexpr, S1, S2, S3, S4,
                     s0, s1, s2, s3, s4):
    """Offsets of a [rows, weights, rest] tile."""
    return (_group_norm_offset(rs, 0, ROW_HI, S1, S2, S3, S4, s0, s1, s2, s3, s4)[:, None, None]
            + _group_norm_offset(wi, ROW_HI, W_HI, S1, S2, S3, S4,
                                 s0, s1, s2, s3, s4)[None, :, None]
            + _group_norm_offset(bs, W_HI, 5, S1, S2, S3, S4, s0, s1, s2, s3, s4)[None, None, :])


@triton.jit
def _group_norm_sum(t):
    """Per-row sums of a [rows, weights, rest] tile."""
    return tl.sum(tl.sum(t, axis=2), axis=1)


@triton.jit
def _group_norm_column(t):
    """Per-weight sums of a [rows, weights, rest] tile."""
    return tl.sum(tl.sum(t, axis=2), axis=0)


@triton.jit
def _group_norm_kernel(
    x_ptr, dy_ptr, w_ptr, dx_ptr, part_ptr, dw_ptr, db_ptr,
    R, A, B, WT, S1, S2, S3, S4, ROWS_PER, CHUNKS, eps,
    sx0, sx1, sx2, sx3, sx4, sy0, sy1, sy2, sy3, sy4, sd0, sd1, sd2, sd3, sd4,
    sw0, sw1, sw2, sw3, sw4, sg0, sg1, sg2, sg3, sg4, sh0, sh1, sh2, sh3, sh4,
    ROW_HI: tl.constexpr, W_HI: tl.constexpr, AFFINE: tl.constexpr, DX: tl.constexpr,
    DW: tl.constexpr, DB: tl.constexpr, A_ONE: tl.constexpr, FINAL: tl.constexpr,
    ACC: tl.constexpr, INDEX_64: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_A: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    """Rows of a chunk of group g: A weights (x's dims ROW_HI..W_HI-1, from g * A) times B
    positions of the rest per row; WT weights in all. x, dy, dx, weight, dweight, dbias
    strides: sx, sy, sd, sw, sg, sh."""
    chunk = tl.program_id(0)
    g = tl.program_id(1)
    if INDEX_64:
        chunk = chunk.to(tl.int64)
        g = g.to(tl.int64)
    D = A * B
    ra = tl.arange(0, BLOCK_R)
    aa = tl.arange(0, BLOCK_A)
    ba = tl.arange(0, BLOCK_B)
    acc_w = tl.zeros((BLOCK_A,), ACC)
    acc_b = tl.zeros((BLOCK_A,), ACC)
    r_first = chunk * ROWS_PER
    r_end = tl.minimum(r_first + ROWS_PER, R)
    for r0 in range(r_first, r_end, BLOCK_R):
        rs = r0 + ra
        rmask = rs < r_end
        if DX or DW:
            total = tl.zeros((BLOCK_R,), ACC)
            for a0 in range(0, A, BLOCK_A):
                wi = g * A + a0 + aa
                amask = a0 + aa < A
                for b0 in range(0, B, BLOCK_B):
                    bs = b0 + ba
                    m = rmask[:, None, None] & amask[None, :, None] & (bs < B)[None, None, :]
                    x_off = _group_norm_tile(rs, wi, bs, ROW_HI, W_HI, S1, S2, S3, S4,
                                             sx0, sx1, sx2, sx3, sx4)
                    total += _group_norm_sum(tl.load(x_ptr + x_off, mask=m, other=0.0).to(ACC))
            mean = total / D
            var = tl.zeros((BLOCK_R,), ACC)
            sum_dyw = tl.zeros((BLOCK_R,), ACC)
            sum_dyw_xc = tl.zeros((BLOCK_R,), ACC)
            for a0 in range(0, A, BLOCK_A):
                wi = g * A + a0 + aa
                amask = a0 + aa < A
                if DX and AFFINE:
                    w_off = _group_norm_offset(wi, ROW_HI, W_HI, S1, S2, S3, S4,
                                               sw0, sw1, sw2, sw3, sw4)
                    w = tl.load(w_ptr + w_off, mask=amask, other=0.0).to(ACC)
                for b0 in range(0, B, BLOCK_B):
                    bs = b0 + ba
                    m = rmask[:, None, None] & amask[None, :, None] & (bs < B)[None, None, :]
                    x_off = _group_norm_tile(rs, wi, bs, ROW_HI, W_HI, S1, S2, S3, S4,
                                             sx0, sx1, sx2, sx3, sx4)
                    x = tl.load(x_ptr + x_off, mask=m, other=0.0).to(ACC)
                    xc = tl.where(m, x - mean[:, None, None], 0.0)
                    var += _group_norm_sum(xc * xc)
                    if DX:
                        y_off = _group_norm_tile(rs, wi, bs, ROW_HI, W_HI, S1, S2, S3, S4,
                                                 sy0, sy1, sy2, sy3, sy4)
                        dyw = tl.load(dy_ptr + y_off, mask=m, other=0.0).to(ACC)
                        if AFFINE:
                            dyw = dyw * w[None, :, None]
                        sum_dyw += _group_norm_sum(dyw)
                        sum_dyw_xc += _group_norm_sum(dyw * xc)
            rstd = 1.0 / tl.sqrt(var / D + eps)
        for a0 in range(0, A, BLOCK_A):
            wi = g * A + a0 + aa
            amask = a0 + aa < A
            if DX and AFFINE:
                w_off = _group_norm_offset(wi, ROW_HI, W_HI, S1, S2, S3, S4,
                                           sw0, sw1, sw2, sw3, sw4)
                w = tl.load(w_ptr + w_off, mask=amask, other=0.0).to(ACC)
            part_w = tl.zeros((BLOCK_A,), ACC)
            part_b = tl.zeros((BLOCK_A,), ACC)
            for b0 in range(0, B, BLOCK_B):
                bs = b0 + ba
                m = rmask[:, None, None] & amask[None, :, None] & (bs < B)[None, None, :]
                y_off = _group_norm_tile(rs, wi, bs, ROW_HI, W_HI, S1, S2, S3, S4,
                                         sy0, sy1, sy2, sy3, sy4)
                dy = tl.load(dy_ptr + y_off, mask=m, other=0.0).to(ACC)
                if DX or DW:
                    x_off = _group_norm_tile(rs, wi, bs, ROW_HI, W_HI, S1, S2, S3, S4,
                                             sx0, sx1, sx2, sx3, sx4)
                    x = tl.load(x_ptr + x_off, mask=m, other=0.0).to(ACC)
                    xhat = (x - mean[:, None, None]) * rstd[:, None, None]
                if DX:
                    dyw = dy
                    if AFFINE:
                        dyw = dy * w[None, :, None]
                    inner = (sum_dyw[:, None, None]
                             + xhat * (rstd * sum_dyw_xc)[:, None, None]) / D
                    dx = rstd[:, None, None] * (dyw - inner)
                    d_off = _group_norm_tile(rs, wi, bs, ROW_HI, W_HI, S1, S2, S3, S4,
                                             sd0, sd1, sd2, sd3, sd4)
                    tl.store(dx_ptr + d_off, dx.to(dx_ptr.dtype.element_ty), mask=m)
                if DW:
                    part_w += _group_norm_column(dy * xhat)  # dy is 0 off the mask
                if DB:
                    part_b += _group_norm_column(dy)
            if A_ONE:
                acc_w += part_w
                acc_b += part_b
            else:
                if DW:
                    tl.atomic_add(part_ptr + chunk * WT + wi, part_w, mask=amask)
                if DB:
                    tl.atomic_add(part_ptr + (CHUNKS + chunk) * WT + wi, part_b, mask=amask)
    if A_ONE:
        wi = g * A + aa
        amask = aa < A
        if FINAL:
            if DW:
                g_off = _group_norm_offset(wi, ROW_HI, W_HI, S1, S2, S3, S4,
                                           sg0, sg1, sg2, sg3, sg4)
                tl.store(dw_ptr + g_off, acc_w.to(dw_ptr.dtype.element_ty), mask=amask)
            if DB:
                h_off = _group_norm_offset(wi, ROW_HI, W_HI, S1, S2, S3, S4,
                                           sh0, sh1, sh2, sh3, sh4)
                tl.store(db_ptr + h_off, acc_b.to(db_ptr.dtype.element_ty), mask=amask)
        else:
            if DW:
                tl.store(part_ptr + chunk * WT + wi, acc_w, mask=amask)
            if DB:
                tl.store(part_ptr + (CHUNKS + chunk) * WT + wi, acc_b, mask=amask)


@triton.jit
def _group_norm_finish_kernel(
    part_ptr, dw_ptr, db_ptr, WT, CHUNKS, S1, S2, S3, S4,
    sg0, sg1, sg2, sg3, sg4, sh0, sh1, sh2, sh3, sh4,
    ROW_HI: tl.constexpr, W_HI: tl.constexpr, DW: tl.constexpr, DB: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """dweight and dbias: the sums of the chunks' partials ([2, CHUNKS, WT])."""
    wi = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = wi < WT
    if DW:
        acc = tl.load(part_ptr + wi, mask=m, other=0.0)
        for k in range(1, CHUNKS):
            acc += tl.load(part_ptr + k * WT + wi, mask=m, other=0.0)
        g_off = _group_norm_offset(wi, ROW_HI, W_HI, S1, S2, S3, S4, sg0, sg1, sg2, sg3, sg4)
        tl.store(dw_ptr + g_off, acc.to(dw_ptr.dtype.element_ty), mask=m)
    if DB:
        acc = tl.load(part_ptr + CHUNKS * WT + wi, mask=m, other=0.0)
        for k in range(CHUNKS + 1, 2 * CHUNKS):
            acc += tl.load(part_ptr + k * WT + wi, mask=m, other=0.0)
        h_off = _group_norm_offset(wi, ROW_HI, W_HI, S1, S2, S3, S4, sh0, sh1, sh2, sh3, sh4)
        tl.store(db_ptr + h_off, acc.to(db_ptr.dtype.element_ty), mask=m)


def _group_norm_chunks(rows, block_r, groups):
    """How many chunks a group's rows split into: on a GPU enough for ~1024 programs even
    with few groups (at least 8 blocks of rows each); the interpreter runs one."""
    if INTERPRET:
        return 1
    return max(1, min(256, ceil_div(rows, block_r * 8), ceil_div(1024, groups)))


def _group_norm_prod(values):
    out = 1
    for v in values:
        out *= v
    return out


def _group_norm_launch(dy, x, weight, sizes, strides, row_hi, w_hi, groups, eps, needs):
    """dy and x read as rank 5 (sizes, strides: x's; dy and dx take their own strides in
    the same dims): rows over dims [0, row_hi), weights over [row_hi, w_hi), then the rest."""
    need_dx, need_dw, need_db = needs
    affine = weight is not None
    need_dw, need_db = need_dw and affine, need_db and affine
    dx = torch.empty_like(x) if need_dx else None
    dw = torch.empty_like(weight) if need_dw else None
    db = torch.empty_like(weight) if need_db else None
    R, WT, B = (_group_norm_prod(sizes[:row_hi]), _group_norm_prod(sizes[row_hi:w_hi]),
                _group_norm_prod(sizes[w_hi:]))
    A = WT // groups
    if not (need_dx or need_dw or need_db) or x.numel() == 0:
        for grad in (dw, db):
            if grad is not None:
                grad.zero_()  # nothing to sum
        return dx, dw, db

    def act(t):  # an activation's strides in the rank-5 dims
        return (0,) * 5 if t is None else strides(t.stride())

    def param(t):  # a weight's
        return (0,) * 5 if t is None else (0,) * row_hi + tuple(t.stride()) + (0,) * (5 - w_hi)

    block_a = triton.next_power_of_2(A) if A <= _GROUP_NORM_TILE else _GROUP_NORM_TILE
    block_b = min(triton.next_power_of_2(B), max(1, _GROUP_NORM_TILE // block_a))
    block_r = min(triton.next_power_of_2(R), max(1, _GROUP_NORM_TILE // (block_a * block_b)))
    chunks = _group_norm_chunks(R, block_r, groups)
    rows_per = ceil_div(R, chunks)
    chunks = ceil_div(R, rows_per)
    a_one = block_a >= A
    final = a_one and chunks == 1
    acc = _tensor_acc(dy, x, *([weight] if affine else []))
    work = dict(dtype=torch.float64 if acc == tl.float64 else torch.float32, device=dy.device)
    sums = need_dw or need_db
    # [dweight's, dbias's] partials per chunk; zeros where the kernel adds into them
    part = (torch.empty if a_one else torch.zeros)(
        (2, chunks, WT) if sums and not final else (1,), **work)
    _group_norm_kernel[(chunks, groups)](
        x, dy, weight if affine else part, dx if need_dx else part, part,
        dw if need_dw else part, db if need_db else part,
        R, A, B, WT, *sizes[1:], rows_per, chunks, eps, *act(x), *act(dy), *act(dx),
        *param(weight), *param(dw), *param(db),
        ROW_HI=row_hi, W_HI=w_hi, AFFINE=affine, DX=need_dx, DW=need_dw, DB=need_db,
        A_ONE=a_one, FINAL=final, ACC=acc, INDEX_64=_tensor_index_64(x, dy), BLOCK_R=block_r,
        BLOCK_A=block_a, BLOCK_B=block_b)
    if sums and not final:
        block = min(triton.next_power_of_2(WT), _GROUP_NORM_TILE)
        _group_norm_finish_kernel[(ceil_div(WT, block),)](
            part, dw if need_dw else part, db if need_db else part, WT, chunks, *sizes[1:],
            *param(dw), *param(db), ROW_HI=row_hi, W_HI=w_hi, DW=need_dw, DB=need_db, BLOCK=block)
    return dx, dw, db


def _group_norm_check(what, dy, x, weight, weight_shape):
    if x.shape != dy.shape:
        raise ValueError(f"{what} gradient: dy {tuple(dy.shape)} and x {tuple(x.shape)} must "
                         "have one shape")
    if x.dim() > 5:
        raise ValueError(f"{what} gradient: cnnc's backward kernels take tensors of rank 5 "
                         f"at most, not {x.dim()}")
    if weight is not None and tuple(weight.shape) != tuple(weight_shape):
        raise ValueError(f"{what} gradient: weight {tuple(weight.shape)} must have the shape "
                         f"{tuple(weight_shape)}")


def grad_layer_norm(dy, x, weight, *, normalized_shape, eps, needs=(True, True, True)):
    """Gradients of F.layer_norm(x, normalized_shape, weight, bias, eps) -> (dx, dweight,
    dbias); weight None (elementwise_affine False): dweight/dbias None. Statistics (mean,
    rstd) recomputed from x per row in fp32."""
    shape = tuple(normalized_shape)
    k = len(shape)
    _group_norm_check("layer_norm", dy, x, weight, shape)
    if not 1 <= k <= x.dim() or tuple(x.shape[x.dim() - k:]) != shape:
        raise ValueError(f"layer_norm gradient: normalized_shape {shape} must be the last "
                         f"dims of x {tuple(x.shape)}")
    lead = 5 - x.dim()
    sizes = (1,) * lead + tuple(x.shape)
    return _group_norm_launch(dy, x, weight, sizes, lambda s: (0,) * lead + tuple(s),
                              5 - k, 5, 1, eps, needs)


def grad_group_norm(dy, x, weight, *, num_groups, eps, needs=(True, True, True)):
    """Gradients of F.group_norm(x, num_groups, weight, bias, eps) -> (dx, dweight, dbias);
    weight None (affine False): dweight/dbias None. Statistics (mean, rstd) recomputed from
    x per (batch item, group) in fp32."""
    _group_norm_check("group_norm", dy, x, weight, x.shape[1:2])
    if x.dim() < 2 or num_groups < 1 or x.shape[1] % num_groups:
        raise ValueError(f"group_norm gradient: num_groups={num_groups} must divide the "
                         f"channels of x {tuple(x.shape)} ([N, C, ...])")
    gap = 5 - x.dim()  # size-1 spatial dims after the channel
    sizes = tuple(x.shape[:2]) + (1,) * gap + tuple(x.shape[2:])
    return _group_norm_launch(dy, x, weight, sizes,
                              lambda s: tuple(s[:2]) + (0,) * gap + tuple(s[2:]),
                              1, 2, num_groups, eps, needs)
