"""A training batch norm's backward coefficients, taken in the epilogue of the data
gradient of the conv that reads its (activated) output: grad_conv's `bn_input`.

In a chain z -> batch norm -> activation -> x -> conv, the conv's data gradient dx is the
activation's output gradient, so the sums that the batch norm's backward needs (sum g and
sum g*(z - mean) per channel, g = dx masked by the activation's window) can be taken from
each data-gradient tile while its fp32 accumulator is still in registers, instead of by a
separate launch over dx (norm.py's grad_batch_norm_coefficients). Each tile stores its
per-channel partials (its chunk: the tile's row tile x stride phase) into a [2, chunks, C]
workspace; an atomic counter per channel tile (group, column tile) finds the program that
arrives last, which adds the chunks' partials in a fixed order (the same result on every
run; a [rows, channels] block at a time, as a chunk count can reach thousands) and turns
the sums into coefficients with norm.py's `_norm_coefficients`: coef = (A, B, K, mean),
dweight and dbias, exactly as grad_batch_norm_coefficients' would be on the same dx.

Only a data gradient stored once per position can do this (zero padding); the reflect,
replicate and circular borders add rows with atomics, and there the launcher calls
grad_batch_norm_coefficients after the conv's launch instead (`_conv_bn_finish`).
"""

import torch
import triton
import triton.language as tl

from .conv_tile import _conv_tile_live
from .norm import _norm_coefficients, grad_batch_norm_coefficients

# ---- cnnc backward kernels (copied into generated files) ----
_CONV_BN_BLOCK = 2048  # partials the last program adds per step (tests make it small)


@triton.jit
def _conv_bn_sums(
        acc, offs, mask, pid_m, pid_n, pid_g, tiles_m, tiles_n,
        x_ptr, z_ptr, stats_ptr, w_ptr, coef_ptr, dw_ptr, db_ptr, part_ptr, count_ptr,
        lo, hi, C, M,
        C_G: tl.constexpr, BLOCK_N: tl.constexpr,
        S0: tl.constexpr, S1: tl.constexpr, S2: tl.constexpr,
        MASKED: tl.constexpr, AFFINE: tl.constexpr, ROWS: tl.constexpr, ACC: tl.constexpr):
    """A data-gradient tile's share of the coefficients of the batch norm whose activated
    output x is the conv's input: acc is the tile's dx (fp32), offs and mask its offsets
    in dx, x and z (all in dx's layout). g = acc where lo < x < hi (MASKED; as
    _conv_tile_live); the tile's sums of g and g*(z - mean) per channel go to its chunk of
    part_ptr ([2, chunks, C], then a [2, C] row pair for the totals); the last program of
    its channel tile (count_ptr, per group x column tile) adds every chunk and writes
    coef, dweight and dbias (AFFINE) of these channels. stats_ptr: [2, C] (mean, invstd);
    M: rows per channel of z (N * spatial); ROWS: chunks added per step."""
    phases = S0 * S1 * S2
    g_idx = pid_g // phases
    chunk = (pid_g % phases) * tiles_m + pid_m
    chunks = tiles_m * phases
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c_mask = cols < C_G
    ch = g_idx * C_G + cols  # depthwise: g_idx is 0 and the columns are the channels
    g = tl.where(mask, _conv_tile_live(acc, x_ptr, offs, mask, lo, hi, MASKED), 0.0)
    mean = tl.load(stats_ptr + ch, mask=c_mask, other=0.0).to(ACC)
    z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(ACC)
    zc = tl.where(mask, z - mean[None, :], 0.0)
    tl.store(part_ptr + chunk * C + ch, tl.sum(g, axis=0), mask=c_mask)
    tl.store(part_ptr + (chunks + chunk) * C + ch, tl.sum(g * zc, axis=0), mask=c_mask)
    arrived = 0  # one chunk: this program is the last
    if chunks > 1:
        tl.debug_barrier()  # every thread's partials stored before the counter's release
        arrived = tl.atomic_add(count_ptr + g_idx * tiles_n + pid_n, 1)
    if arrived == chunks - 1:
        # The chunks' partials in a fixed order: rows of a block summed at the end.
        s_g = tl.zeros((ROWS, BLOCK_N), ACC)
        s_gc = tl.zeros((ROWS, BLOCK_N), ACC)
        for k0 in range(0, chunks, ROWS):
            k = k0 + tl.arange(0, ROWS)
            live = (k < chunks)[:, None] & c_mask[None, :]
            s_g += tl.load(part_ptr + (k * C)[:, None] + ch[None, :], mask=live, other=0.0,
                           cache_modifier=".cg")
            s_gc += tl.load(part_ptr + ((chunks + k) * C)[:, None] + ch[None, :], mask=live,
                            other=0.0, cache_modifier=".cg")
        total_ptr = part_ptr + 2 * chunks * C
        tl.store(total_ptr + ch, tl.sum(s_g, axis=0), mask=c_mask)
        tl.store(total_ptr + C + ch, tl.sum(s_gc, axis=0), mask=c_mask)
        tl.debug_barrier()  # the totals, stored by this program's threads, read back
        _norm_coefficients(total_ptr, w_ptr, stats_ptr + C, mean, coef_ptr, dw_ptr, db_ptr,
                           ch, c_mask, C, 1, M, AFFINE, ACC)


def _conv_bn_check(bn_input, x, needs):
    """bn_input: (z, weight, stats, window, bn_needs) of grad_conv, for its input x."""
    z, weight, stats, window, bn_needs = bn_input
    c = x.shape[1]
    if not needs[0]:
        raise ValueError("bn_input needs the data gradient (needs[0])")
    if tuple(z.shape) != tuple(x.shape) or tuple(stats.shape) != (2, c) or (
            not stats.is_contiguous()) or (
            weight is not None and tuple(weight.shape) != (c,)) or len(bn_needs) != 2 or (
            window is not None and len(window) != 2):
        raise ValueError(f"bn_input: z {tuple(z.shape)} must be x's shape {tuple(x.shape)}, "
                         f"stats a contiguous [2, {c}], weight None or [{c}], window None "
                         f"or (lo, hi)")


def _conv_bn_prepare(bn_input, x, dx, data, phases):
    """The kernel's arguments for `_conv_bn_sums` in the data-gradient programs (data: their
    (programs, arguments) from conv.py's _conv_data, dx their buffer, phases the product
    of the conv's strides) and the outputs
    (coef, dweight, dbias) it writes; ({}, None) where the data gradient cannot take the
    sums (atomic or empty: _conv_bn_finish computes them after)."""
    programs, args = data
    if not programs or args["DX_ATOMIC"]:
        return {}, None
    z, weight, stats, window, _ = bn_input
    # x and z are read at dx's offsets: in its layout (a copy only where theirs differs)
    x, z = (t if t.stride() == dx.stride() else torch.empty_like(dx, dtype=t.dtype).copy_(t)
            for t in (x, z))
    c = x.shape[1]
    work = dict(dtype=torch.float64 if dx.dtype == torch.float64 else torch.float32,
                device=dx.device)
    chunks = args["dx_tiles_m"] * phases  # a channel tile's programs: row tile x phase
    slots = programs // chunks  # the channel tiles: column tile x group
    coef = torch.empty((4, c), **work)
    dweight, dbias = (torch.empty_like(weight) for _ in "wb") if weight is not None \
        else (None, None)
    parts = torch.empty((2 * chunks + 2, c), **work)  # [2, chunks, C], then the totals
    # the programs of a channel tile that have arrived (a fill, not a launch, where several);
    # with one chunk never read, but int32 still: a GPU compiles the counter's branch too
    # (chunks is a run-time value), and the atomic's result must stay an int
    counts = torch.zeros(slots if chunks > 1 else 0, dtype=torch.int32, device=dx.device)
    lo, hi = window if window is not None else (0.0, 0.0)
    return dict(
        bn_x_ptr=x, bn_z_ptr=z, bn_stats_ptr=stats,
        bn_w_ptr=weight if weight is not None else parts, bn_coef_ptr=coef,
        bn_dw_ptr=dweight if weight is not None else parts,
        bn_db_ptr=dbias if weight is not None else parts, bn_part_ptr=parts,
        bn_count_ptr=counts, bn_lo=float(lo), bn_hi=float("inf") if hi is None else float(hi),
        bn_C=c, bn_M=z.numel() // c, DX_BN_SUMS=True, DX_BN_MASKED=window is not None,
        DX_BN_AFFINE=weight is not None,
        DX_BN_ROWS=max(1, _CONV_BN_BLOCK // args["DX_BLOCK_N"])), (coef, dweight, dbias)


def _conv_bn_finish(bn_input, x, dx, taken):
    """(coef, dweight, dbias) of grad_conv's bn_input, None where bn_needs says not needed:
    `taken` (what _conv_bn_prepare's launch wrote), else grad_batch_norm_coefficients of
    dx, a second launch."""
    z, weight, stats, window, bn_needs = bn_input
    if taken is None:
        mask = (x, window[0], window[1]) if window is not None else None
        taken = grad_batch_norm_coefficients(dx, z, weight, stats, needs=(True, True),
                                             mask=mask)
    coef, dweight, dbias = taken
    return coef, dweight if bn_needs[0] else None, dbias if bn_needs[1] else None
