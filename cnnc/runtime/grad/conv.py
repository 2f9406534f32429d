"""Backward of conv1d/2d/3d (every padding mode) and conv_transpose1d/2d/3d, in Triton.
Every kernel is written once for 3 spatial dims; lower ranks pad the front dims with size
1 (stride 0).

Conv data gradient (`_conv_dx_kernel`, TRANSPOSED): an implicit GEMM over dy. Rows are
positions p of the *padded* input, columns a group's input channels, the reduction runs
over taps (outside) and the group's output channels (inside): dx_pad[n, c, p] = sum over
k, co with p = o * stride + k * dilation of dy[n, co, o] * w[co, c, k]. Stride is handled
by phases, not inserted zeros or masked taps: grid axis 2 enumerates the stride**dims
residues r of p, a program holds rows p = lo + r + q * stride of one residue, and a tap k
reaches them only when stride divides lo + r - k * dilation, a test on scalars, so every
other tap is skipped (no load, no dot) and o = (p - k * dilation) / stride is exact. Zero
padding takes only the real input's rows (lo = the left pad) and stores dx. Reflect,
replicate and circular padding take every padded row and add it onto the input position
it read: several rows land on one position, so they use fp32 atomic adds into a zeroed
fp32 buffer (cast to the input's dtype by `_conv_cast_kernel` when that is not fp32).
Depthwise (one input channel per group), the columns are the groups and each tap is a
multiply-accumulate, not a dot padded to 16 columns.

Conv_transpose data gradient (the same kernel, not TRANSPOSED): a plain conv of dy with
the transpose's weight, rows at x's positions (output_padding only lengthened y).

Weight gradient (`_conv_dw_kernel`): an implicit GEMM dw[co, c, k] = sum over (n, o) of
dy[n, co, o] * x_pad[n, c, o * stride + k * dilation]; rows are a group's output channels,
columns the weight's flattened (tap, channel) pairs, the reduction runs over batch x
output positions. On a GPU that reduction is split over grid axis 2 so that a long one
(a large batch, a small weight) fills the machine, the splits adding partial sums with
fp32 atomics into a zeroed buffer (one split, stored directly, under the interpreter).
The bias gradient, a sum of dy, rides in the programs of the first column tile (the same
dy tiles); without a weight gradient the kernel runs with COMPUTE_W off as a reduction.
For conv_transpose x and dy swap roles (dw[ci, co, k] = sum over (n, i) of x[n, ci, i] *
dy[n, co, i * stride + k * dilation - pad]), so its bias gradient is a second launch.
Depthwise, rows are every output channel and a 3-d tile is summed instead of a dot.

Accumulation is fp32; gradients come back in the dtype and memory format of their
tensor. float64 accumulates in fp64: it runs in the interpreter (gradcheck) and compiles
for sm_90 (fp64 dots), untested on a GPU.
"""

import os

import torch
import triton
import triton.language as tl

from ..support import allows_tf32, ceil_div, tile

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# ---- cnnc backward kernels (copied into generated files) ----
_CONV_MODES = {"zeros": 0, "reflect": 1, "replicate": 2, "circular": 3}
_CONV_FORCE_SPLITS = None  # tests set a split count to check the atomic path


@triton.jit
def _conv_remap(i, size, MODE: tl.constexpr):
    """The input position a padded position reads, and whether it reads one (zeros)."""
    if MODE == 1:  # reflect (the pad is smaller than the size: one reflection)
        i = tl.where(i < 0, -i, i)
        i = tl.where(i >= size, 2 * (size - 1) - i, i)
    elif MODE == 2:  # replicate
        i = tl.minimum(tl.maximum(i, 0), size - 1)
    elif MODE == 3:  # circular (the pad is at most the size: one wrap)
        i = tl.where(i < 0, i + size, i)
        i = tl.where(i >= size, i - size, i)
    return i, (i >= 0) & (i < size)


@triton.jit
def _conv_dx_kernel(
        a_ptr, w_ptr, out_ptr, N,
        A0, A1, A2, T0, T1, T2, Q0, Q1, Q2, LO0, LO1, LO2, HI0, HI1, HI2,
        sa_n, sa_c, sa0, sa1, sa2, sw_g, sw_r, sw_c, sw0, sw1, sw2,
        so_n, so_c, so0, so1, so2,
        C_G: tl.constexpr, R_G: tl.constexpr,
        K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr,
        S0: tl.constexpr, S1: tl.constexpr, S2: tl.constexpr,
        D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr,
        P0: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr,
        TRANSPOSED: tl.constexpr, MODE: tl.constexpr, ATOMIC: tl.constexpr,
        DEPTHWISE: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr, WIDE: tl.constexpr,
        ACC: tl.constexpr):
    """out[n, g*C_G + c, pos] = sum over taps and r < R_G of a[n, g*R_G + r, .] * w[.]:
    a conv's data gradient (TRANSPOSED, one stride phase per program) or a plain conv.
    DEPTHWISE (one output channel per group): columns are the groups (C_G of them), each
    a multiply-accumulate over its R_G channels, not a dot padded to 16 columns."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_g = tl.program_id(2)
    if TRANSPOSED:
        g = pid_g // (S0 * S1 * S2)
        phase = pid_g % (S0 * S1 * S2)
        r2 = phase % S2
        r1 = (phase // S2) % S1
        r0 = phase // (S1 * S2)
    else:
        g = pid_g
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if WIDE:
        offs_m = offs_m.to(tl.int64)
        cols = cols.to(tl.int64)
    q2 = offs_m % Q2
    rest = offs_m // Q2
    q1 = rest % Q1
    rest = rest // Q1
    q0 = rest % Q0
    n = rest // Q0
    m_mask = n < N
    if TRANSPOSED:  # rows: padded positions of this phase
        p0 = LO0 + r0 + q0 * S0
        p1 = LO1 + r1 + q1 * S1
        p2 = LO2 + r2 + q2 * S2
        m_mask = m_mask & (p0 < HI0) & (p1 < HI1) & (p2 < HI2)
    else:  # rows: output positions of the conv
        p0 = q0
        p1 = q1
        p2 = q2
    c_mask = cols < C_G
    a_row = n * sa_n
    w_col = g * sw_g + cols * sw_c
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for tap in range(0, K0 * K1 * K2):
        k2 = tap % K2
        k1 = (tap // K2) % K1
        k0 = tap // (K1 * K2)
        if TRANSPOSED:
            # The tap reaches this phase's rows only if stride divides p - k * dilation
            # (a multiple of the stride is added so that % sees no negative number).
            use = (((LO0 + r0 - k0 * D0 + S0 * K0 * D0) % S0 == 0)
                   & ((LO1 + r1 - k1 * D1 + S1 * K1 * D1) % S1 == 0)
                   & ((LO2 + r2 - k2 * D2 + S2 * K2 * D2) % S2 == 0))
            t0 = p0 - k0 * D0
            t1 = p1 - k1 * D1
            t2 = p2 - k2 * D2
            o0 = t0 // S0
            o1 = t1 // S1
            o2 = t2 // S2
            valid = (m_mask & (t0 >= 0) & (t1 >= 0) & (t2 >= 0)
                     & (o0 < A0) & (o1 < A1) & (o2 < A2))
        else:
            use = True
            o0 = p0 * S0 + k0 * D0 - P0
            o1 = p1 * S1 + k1 * D1 - P1
            o2 = p2 * S2 + k2 * D2 - P2
            valid = (m_mask & (o0 >= 0) & (o1 >= 0) & (o2 >= 0)
                     & (o0 < A0) & (o1 < A1) & (o2 < A2))
        if use:
            a_tap = a_row + o0 * sa0 + o1 * sa1 + o2 * sa2
            w_tap = k0 * sw0 + k1 * sw1 + k2 * sw2
            if DEPTHWISE:
                for r in range(0, R_G):
                    a = tl.load(a_ptr + a_tap[:, None] + ((cols * R_G + r) * sa_c)[None, :],
                                mask=valid[:, None] & c_mask[None, :], other=0.0)
                    wv = tl.load(w_ptr + cols * sw_g + r * sw_r + w_tap, mask=c_mask, other=0.0)
                    acc += a.to(ACC) * wv.to(ACC)[None, :]
            else:
                for c0 in range(0, R_G, BLOCK_K):
                    rr = c0 + tl.arange(0, BLOCK_K)
                    if WIDE:
                        rr = rr.to(tl.int64)
                    r_mask = rr < R_G
                    a = tl.load(a_ptr + a_tap[:, None] + ((g * R_G + rr) * sa_c)[None, :],
                                mask=valid[:, None] & r_mask[None, :], other=0.0)
                    b = tl.load(w_ptr + (w_col + w_tap)[None, :] + (rr * sw_r)[:, None],
                                mask=r_mask[:, None] & c_mask[None, :], other=0.0)
                    if UPCAST:  # the interpreter's bfloat16 dot is unreliable
                        a = a.to(tl.float32)
                        b = b.to(tl.float32)
                    acc += tl.dot(a, b, input_precision=DOT_PRECISION)
    if TRANSPOSED:
        i0, _ = _conv_remap(p0 - P0, T0, MODE)
        i1, _ = _conv_remap(p1 - P1, T1, MODE)
        i2, _ = _conv_remap(p2 - P2, T2, MODE)
    else:
        i0 = p0
        i1 = p1
        i2 = p2
    out = (out_ptr + (n * so_n + i0 * so0 + i1 * so1 + i2 * so2)[:, None]
           + ((g * C_G + cols) * so_c)[None, :])
    mask = m_mask[:, None] & c_mask[None, :]
    if ATOMIC:
        tl.atomic_add(out, acc, mask=mask)
    else:
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _conv_dw_kernel(
        g_ptr, x_ptr, dw_ptr, db_ptr, N, CHUNK,
        G0, G1, G2, X0, X1, X2,
        sg_n, sg_c, sg0, sg1, sg2, sx_n, sx_c, sx0, sx1, sx2,
        sw_m, sw_c, sw0, sw1, sw2, s_b,
        M_G: tl.constexpr, C_G: tl.constexpr,
        K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr,
        S0: tl.constexpr, S1: tl.constexpr, S2: tl.constexpr,
        D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr,
        P0: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr,
        MODE: tl.constexpr, COMPUTE_W: tl.constexpr, FUSE_BIAS: tl.constexpr,
        ATOMIC: tl.constexpr, DEPTHWISE: tl.constexpr, M_PER_X: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr, WIDE: tl.constexpr,
        ACC: tl.constexpr):
    """dw[g*M_G + m, c, k] = sum over (n, o) in this split's chunk of g[n, g*M_G + m, o] *
    x_pad[n, g*C_G + c, o * S + k * D - P]; db[g*M_G + m] = sum of g (column tile 0).
    DEPTHWISE (C_G == 1): rows are every output channel, m reading x channel m // M_PER_X,
    so a row's products are summed (a 3-d tile), not a dot of a 16-row tile of one row."""
    pid = tl.program_id(0)
    grp = tl.program_id(1)
    split = tl.program_id(2)
    J = K0 * K1 * K2 * C_G
    tiles_n = tl.cdiv(J, BLOCK_N)
    pid_m = pid // tiles_n
    pid_n = pid % tiles_n
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    j = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if WIDE:
        m = m.to(tl.int64)
        j = j.to(tl.int64)
    m_mask = m < M_G
    j_mask = j < J
    c = j % C_G
    tap = j // C_G
    k2 = tap % K2
    k1 = (tap // K2) % K1
    k0 = tap // (K1 * K2)
    g_col = (grp * M_G + m) * sg_c
    x_col = (grp * C_G + c) * sx_c
    x_ch = (m // M_PER_X) * sx_c  # DEPTHWISE: each row's own input channel
    total = N * G0 * G1 * G2
    start = split * CHUNK
    end = tl.minimum(start + CHUNK, total)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    bacc = tl.zeros((BLOCK_M,), dtype=ACC)
    for r0 in range(start, end, BLOCK_K):
        r = r0 + tl.arange(0, BLOCK_K)
        if WIDE:
            r = r.to(tl.int64)
        r_mask = r < end
        o2 = r % G2
        rest = r // G2
        o1 = rest % G1
        rest = rest // G1
        o0 = rest % G0
        n = rest // G0
        a = tl.load(g_ptr + g_col[:, None] + (n * sg_n + o0 * sg0 + o1 * sg1 + o2 * sg2)[None, :],
                    mask=m_mask[:, None] & r_mask[None, :], other=0.0)
        if FUSE_BIAS:
            bacc += tl.sum(a.to(ACC), axis=1)
        if COMPUTE_W:
            i0, v0 = _conv_remap(o0[:, None] * S0 + (k0 * D0 - P0)[None, :], X0, MODE)
            i1, v1 = _conv_remap(o1[:, None] * S1 + (k1 * D1 - P1)[None, :], X1, MODE)
            i2, v2 = _conv_remap(o2[:, None] * S2 + (k2 * D2 - P2)[None, :], X2, MODE)
            inside = r_mask[:, None] & j_mask[None, :] & v0 & v1 & v2
            pos = (n * sx_n)[:, None] + i0 * sx0 + i1 * sx1 + i2 * sx2
            if DEPTHWISE:
                b = tl.load(x_ptr + x_ch[:, None, None] + pos[None, :, :],
                            mask=m_mask[:, None, None] & inside[None, :, :], other=0.0)
                acc += tl.sum(a.to(ACC)[:, :, None] * b.to(ACC), axis=1)
            else:
                b = tl.load(x_ptr + x_col[None, :] + pos, mask=inside, other=0.0)
                if UPCAST:  # the interpreter's bfloat16 dot is unreliable
                    a = a.to(tl.float32)
                    b = b.to(tl.float32)
                acc += tl.dot(a, b, input_precision=DOT_PRECISION)
    rows = grp * M_G + m
    if COMPUTE_W:
        out = (dw_ptr + (rows * sw_m)[:, None]
               + (c * sw_c + k0 * sw0 + k1 * sw1 + k2 * sw2)[None, :])
        mask = m_mask[:, None] & j_mask[None, :]
        if ATOMIC:
            tl.atomic_add(out, acc, mask=mask)
        else:
            tl.store(out, acc.to(dw_ptr.dtype.element_ty), mask=mask)
    if FUSE_BIAS:
        if pid_n == 0:
            if ATOMIC:
                tl.atomic_add(db_ptr + rows * s_b, bacc, mask=m_mask)
            else:
                tl.store(db_ptr + rows * s_b, bacc.to(db_ptr.dtype.element_ty), mask=m_mask)


@triton.jit
def _conv_cast_kernel(src_ptr, dst_ptr, total, BLOCK: tl.constexpr):
    """dst = src over the storage of two dense tensors of the same strides."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    tl.store(dst_ptr + offs, tl.load(src_ptr + offs, mask=mask).to(dst_ptr.dtype.element_ty),
             mask=mask)


def _conv_spatial(t):
    """(sizes, strides) of t's spatial dims, front-padded to 3 (size 1, stride 0)."""
    pad = 5 - t.dim()
    return [1] * pad + list(t.shape[2:]), [0] * pad + list(t.stride()[2:])


def _conv_3(values, fill):
    return [fill] * (3 - len(values)) + list(values)


def _conv_huge(t):
    """Whether an offset into t's storage (a view's too) can reach 2**31 elements (less a
    tile's worth that a last tile reaches past the end)."""
    return t.untyped_storage().nbytes() >= t.element_size() * (2**31 - 2**20)


def _conv_meta(t, *tensors):
    """Launch options: TF32 where PyTorch's convs use it; the interpreter's bfloat16 dot
    done in fp32; int64 indices where a tensor nears 2**31 elements, and in the
    interpreter (its int32 overflow checks cost more than the kernels); an fp64
    accumulator for fp64, fp32 otherwise."""
    tf32 = t.dtype == torch.float32 and not INTERPRET and allows_tf32("conv")
    return dict(DOT_PRECISION="tf32" if tf32 else "ieee",
                UPCAST=INTERPRET and t.dtype == torch.bfloat16,
                WIDE=INTERPRET or any(_conv_huge(u) for u in tensors),
                ACC=tl.float64 if t.dtype == torch.float64 else tl.float32,
                num_warps=4, num_stages=1 if INTERPRET else 3)


def _conv_accumulator(like, atomic):
    """Where a kernel writes: `like`'s own new tensor, or a zeroed fp32 one for atomics."""
    if not atomic:
        return torch.empty_like(like)
    wide = torch.float64 if like.dtype == torch.float64 else torch.float32
    return torch.zeros_like(like, dtype=wide)


def _conv_finish(buffer, like):
    """The gradient in `like`'s dtype: the buffer itself, or a cast of it (one launch)."""
    if buffer.dtype == like.dtype:
        return buffer
    out = torch.empty_like(like)
    total = out.numel()
    block = tile(total, 16384 if INTERPRET else 1024)
    _conv_cast_kernel[(ceil_div(total, block),)](buffer, out, total, BLOCK=block)
    return out


def _conv_data(a, w, out_like, *, w_strides, groups, c_g, r_g, kernel, stride, dilation,
               pads, mode, transposed):
    """Launch _conv_dx_kernel; returns the gradient shaped like out_like."""
    a_sizes, a_strides = _conv_spatial(a)
    t_sizes, _ = _conv_spatial(out_like)
    K, S, D = _conv_3(kernel, 1), _conv_3(stride, 1), _conv_3(dilation, 1)
    P = _conv_3([left for left, _ in pads], 0)
    if transposed:
        right = _conv_3([r for _, r in pads], 0)
        if mode == "zeros":  # only the real input's rows
            lo, hi = P, [p + t for p, t in zip(P, t_sizes)]
        else:  # every padded row, each added onto the position it read
            lo, hi = [0, 0, 0], [p + t + q for p, t, q in zip(P, t_sizes, right)]
        Q = [-(-(h - low) // s) for low, h, s in zip(lo, hi, S)]
        phases = S[0] * S[1] * S[2]
    else:
        lo, hi, Q, phases = [0, 0, 0], [0, 0, 0], t_sizes, 1
    atomic = transposed and mode != "zeros"
    out = _conv_accumulator(out_like, atomic)
    if out.numel() == 0:
        return out
    if a.numel() == 0:
        out.zero_()
        return _conv_finish(out, out_like)
    _, o_strides = _conv_spatial(out)
    N = a.shape[0]
    rows = N * Q[0] * Q[1] * Q[2]
    if INTERPRET:
        bm, bk = tile(rows, 1024), tile(r_g, 512)
    else:
        bm, bk = tile(rows, 64), tile(r_g, 32)
    depthwise = c_g == 1  # columns: the groups, one channel each
    columns, programs = (groups, 1) if depthwise else (c_g, groups)
    bn = tile(columns, 512 if INTERPRET else 64)
    grid = (ceil_div(rows, bm), ceil_div(columns, bn), programs * phases)
    _conv_dx_kernel[grid](
        a, w, out, N, *a_sizes, *t_sizes, *Q, *lo, *hi,
        a.stride(0), a.stride(1), *a_strides, *w_strides,
        out.stride(0), out.stride(1), *o_strides,
        C_G=columns, R_G=r_g, K0=K[0], K1=K[1], K2=K[2], S0=S[0], S1=S[1], S2=S[2],
        D0=D[0], D1=D[1], D2=D[2], P0=P[0], P1=P[1], P2=P[2],
        TRANSPOSED=transposed, MODE=_CONV_MODES[mode], ATOMIC=atomic, DEPTHWISE=depthwise,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, **_conv_meta(a, a, w, out))
    return _conv_finish(out, out_like)


def _conv_splits(tiles, total, block_k, device):
    """How many programs share one output tile's reduction: enough for two waves of the
    GPU's multiprocessors, each with at least four reduction steps; one in the
    interpreter."""
    if _CONV_FORCE_SPLITS is not None:
        return _CONV_FORCE_SPLITS
    if INTERPRET or device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(-(-2 * sms // max(tiles, 1)), total // (4 * block_k)))


def _conv_weight(g, x, w, *, groups, m_g, c_g, kernel, stride, dilation, pads, mode,
                 compute_w, bias_like):
    """Launch _conv_dw_kernel; returns (dw or None, db or None)."""
    g_sizes, g_strides = _conv_spatial(g)
    x_sizes, x_strides = _conv_spatial(x)
    K, S, D = _conv_3(kernel, 1), _conv_3(stride, 1), _conv_3(dilation, 1)
    P = _conv_3([left for left, _ in pads], 0)
    if not compute_w:  # a plain reduction: one column
        K, c_g = [1, 1, 1], 1
    N = g.shape[0]
    total = N * g_sizes[0] * g_sizes[1] * g_sizes[2]
    columns = K[0] * K[1] * K[2] * c_g
    depthwise = compute_w and c_g == 1 and groups > 1
    per_x, programs = m_g, groups
    if depthwise:  # rows: every output channel, one program axis
        m_g, programs = m_g * groups, 1
        bm, bn, bk = (tile(m_g, 64), tile(columns, 32), tile(total, 256)) if INTERPRET else (
            tile(m_g, 32), tile(columns, 16), 16)
    elif INTERPRET:
        bm, bn, bk = tile(m_g, 256), tile(columns, 256), tile(total, 2048)
    else:
        bm, bn, bk = tile(m_g, 64), tile(columns, 64), tile(total, 32)
    tiles = ceil_div(m_g, bm) * ceil_div(columns, bn)
    splits = _conv_splits(tiles * programs, total, bk, g.device)
    chunk = max(bk, ceil_div(ceil_div(total, splits), bk) * bk)
    splits = max(1, ceil_div(total, chunk))
    atomic = splits > 1
    dw = _conv_accumulator(w, atomic) if compute_w else None
    db = _conv_accumulator(bias_like, atomic) if bias_like is not None else None
    if total == 0:
        for t in (dw, db):
            if t is not None:
                t.zero_()
    else:
        w_strides = dw.stride() if compute_w else (0, 0, 0, 0, 0)  # dw's: w may be sparse
        _, w_sp = _conv_spatial(dw) if compute_w else (None, [0, 0, 0])
        _conv_dw_kernel[(tiles, programs, splits)](
            g, x, dw if compute_w else g,
            db if db is not None else g, N, chunk, *g_sizes, *x_sizes,
            g.stride(0), g.stride(1), *g_strides, x.stride(0), x.stride(1), *x_strides,
            w_strides[0], w_strides[1], *w_sp, db.stride(0) if db is not None else 0,
            M_G=m_g, C_G=c_g, K0=K[0], K1=K[1], K2=K[2], S0=S[0], S1=S[1], S2=S[2],
            D0=D[0], D1=D[1], D2=D[2], P0=P[0], P1=P[1], P2=P[2],
            MODE=_CONV_MODES[mode], COMPUTE_W=compute_w, FUSE_BIAS=db is not None,
            ATOMIC=atomic, DEPTHWISE=depthwise, M_PER_X=per_x, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
            **_conv_meta(g, g, x, w))
    if dw is not None:
        dw = _conv_finish(dw, w)
    if db is not None:
        db = _conv_finish(db, bias_like)
    return dw, db


def grad_conv(dy, x, w, *, stride, pads, dilation, groups, padding_mode,
              needs=(True, True, True), has_bias=True):
    """Gradients of y = conv{1,2,3}d(pad(x, pads, padding_mode), w, bias, stride, dilation,
    groups). dims = w.dim() - 2. stride, dilation: tuples of `dims` ints. pads: `dims`
    (left, right) pairs (cnnc.ops.conv.conv_pads; "same" may be asymmetric). padding_mode:
    "zeros" | "reflect" | "replicate" | "circular". needs = (input, weight, bias).
    -> (dx, dw, db), None where not needed (db None also when has_bias is False).
    Two launches at most (data; weight with the bias fused), plus a cast where an fp32
    atomic buffer serves a bf16/fp16 gradient. Reflect, replicate and circular padding
    add the border's gradient with fp32 atomic adds (summation order may vary)."""
    need_x, need_w, need_b = needs
    need_b = need_b and has_bias
    c_out, c_in_g = w.shape[0], w.shape[1]
    geometry = dict(kernel=tuple(w.shape[2:]), stride=tuple(stride),
                    dilation=tuple(dilation), pads=tuple(tuple(p) for p in pads))
    dx = dw = db = None
    if need_x:
        ws = w.stride()
        w_strides = (c_out // groups * ws[0], ws[0], ws[1], *_conv_3(ws[2:], 0))
        dx = _conv_data(dy, w, x, w_strides=w_strides, groups=groups, c_g=c_in_g,
                        r_g=c_out // groups, mode=padding_mode, transposed=True, **geometry)
    if need_w or need_b:
        bias_like = torch.empty(c_out, dtype=w.dtype, device=w.device) if need_b else None
        dw, db = _conv_weight(dy, x, w, groups=groups, m_g=c_out // groups, c_g=c_in_g,
                              mode=padding_mode, compute_w=need_w, bias_like=bias_like,
                              **geometry)
    return dx, dw, db


def grad_conv_transpose(dy, x, w, *, stride, padding, output_padding, dilation, groups,
                        needs=(True, True, True), has_bias=True):
    """Gradients of F.conv_transpose{1,2,3}d(x, w, bias, stride, padding, output_padding,
    groups, dilation); w is [C_in, C_out / groups, k...]. The data gradient is a conv of dy
    with w; the weight gradient correlates x with dy; the bias gradient sums dy (its own
    launch: the weight kernel's uniform operand is x here). output_padding only sized y."""
    need_x, need_w, need_b = needs
    need_b = need_b and has_bias
    c_in, c_out_g = w.shape[0], w.shape[1]
    c_in_g = c_in // groups
    pads = tuple((p, p) for p in padding)
    geometry = dict(kernel=tuple(w.shape[2:]), stride=tuple(stride),
                    dilation=tuple(dilation), pads=pads)
    dx = dw = db = None
    if need_x:
        ws = w.stride()
        w_strides = (c_in_g * ws[0], ws[1], ws[0], *_conv_3(ws[2:], 0))
        dx = _conv_data(dy, w, x, w_strides=w_strides, groups=groups, c_g=c_in_g,
                        r_g=c_out_g, mode="zeros", transposed=False, **geometry)
    if need_w:
        dw, _ = _conv_weight(x, dy, w, groups=groups, m_g=c_in_g, c_g=c_out_g, mode="zeros",
                             compute_w=True, bias_like=None, **geometry)
    if need_b:
        bias_like = torch.empty(c_out_g * groups, dtype=w.dtype, device=w.device)
        _, db = _conv_weight(dy, dy, w, groups=1, m_g=c_out_g * groups, c_g=1, mode="zeros",
                             compute_w=False, bias_like=bias_like, **geometry)
    return dx, dw, db
