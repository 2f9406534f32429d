"""The tiles of conv1d/2d/3d's and conv_transpose1d/2d/3d's backward, as @triton.jit
helpers that cnnc/runtime/grad/conv.py's one kernel (`_conv_grad_kernel`) calls: its
first programs run `_conv_tile_dx`, the rest `_conv_tile_dw` (horizontal fusion, each
with its own tiles). Every tile is written once for 3 spatial dims; lower ranks pad the
front dims with size 1 (stride 0). Both read dy through `_conv_tile_dy`: `_conv_tile_live`
applies a relu / relu6 derivative from the activation's output y as tiles load (MASKED),
then (AFFINE) a training batch norm's input gradient A*dy + B*(z - mean) + K per channel
turns the batch norm's output gradient into the conv's (z: the conv's output).

Conv data gradient (`_conv_tile_dx`, TRANSPOSED): an implicit GEMM over dy. Rows are
positions p of the *padded* input, columns a group's input channels, the reduction runs
over taps (outside) and the group's output channels (inside): dx_pad[n, c, p] = sum over
k, co with p = o * stride + k * dilation of dy[n, co, o] * w[co, c, k]. Stride is handled
by phases, not inserted zeros or masked taps: the program index enumerates the
stride**dims residues r of p, a program holds rows p = lo + r + q * stride of one
residue, and a tap k reaches them only when stride divides lo + r - k * dilation, a test
on scalars, so every other tap is skipped (no load, no dot) and o = (p - k * dilation) /
stride is exact. Zero padding takes only the real input's rows (lo = the left pad) and
stores dx. Reflect, replicate and circular padding take every padded row and add it onto
the input position it read: several rows land on one position, so they use fp32 atomic
adds into a zeroed fp32 buffer (cast to the input's dtype by conv.py's `_conv_cast_kernel`
when that is not fp32). Depthwise (one input channel per group), the columns are the
groups and each tap is a multiply-accumulate, not a dot padded to 16 columns.

Conv_transpose data gradient (the same tile, not TRANSPOSED): a plain conv of dy with
the transpose's weight, rows at x's positions (output_padding only lengthened y).

Weight gradient (`_conv_tile_dw`): an implicit GEMM dw[co, c, k] = sum over (n, o) of
dy[n, co, o] * x_pad[n, c, o * stride + k * dilation]; rows are a group's output channels,
columns the weight's flattened (tap, channel) pairs, the reduction runs over batch x
output positions. On a GPU that reduction is split across programs so that a long one
(a large batch, a small weight) fills the machine, the splits adding partial sums with
fp32 atomics into a zeroed buffer (one split, stored directly, under the interpreter).
The bias gradient, a sum of dy, rides in the programs of the first column tile (the same
dy tiles); without a weight gradient the tile runs with COMPUTE_W off as a reduction.
For conv_transpose x and dy swap roles (dw[ci, co, k] = sum over (n, i) of x[n, ci, i] *
dy[n, co, i * stride + k * dilation - pad]), so its bias gradient is a second launch.
Depthwise, rows are every output channel and a 3-d tile is summed instead of a dot.

Accumulation is fp32 (ACC); float64 accumulates in fp64: it runs in the interpreter
(gradcheck) and compiles for sm_90 (fp64 dots), untested on a GPU.
"""

import triton
import triton.language as tl


# ---- cnnc backward kernels (copied into generated files) ----
@triton.jit
def _conv_tile_remap(i, size, MODE: tl.constexpr):
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
def _conv_tile_aligned(v, ALIGN: tl.constexpr):
    """v (a size or stride the launcher found a multiple of ALIGN: conv's
    `_conv_alignment`), rewritten so that the compiler knows it too. Triton only sees
    divisibility by 16, so a row of 1000 bf16 values, 16-byte aligned, would be read
    element by element, synchronously, where 16-byte async copies keep a dot loop
    pipelined; the rewrite keeps the value (the interpreter's tests check that it holds)."""
    if ALIGN > 1:
        v = v // ALIGN * ALIGN
    return v


@triton.jit
def _conv_tile_live(v, y_ptr, y_offs, mask, lo, hi, MASKED: tl.constexpr):
    """v, zeroed where the activation's output y lies at or beyond its bounds: relu's (lo 0,
    hi inf) and relu6's (0, 6) derivative applied as dy loads (NaN in y passes v, as
    PyTorch's threshold_backward does; an unbounded window has no upper test, so relu
    passes v at y = +inf as PyTorch does)."""
    if MASKED:
        y = tl.load(y_ptr + y_offs, mask=mask, other=0.0)
        v = tl.where((y <= lo) | ((y >= hi) & (hi < float("inf"))), 0.0, v).to(v.dtype)
    return v


@triton.jit
def _conv_tile_coef(coef_ptr, ch, coef_c, AFFINE: tl.constexpr):
    """(A, B, K, mean) of channels ch (a row or column of them, broadcasting as dy's tile),
    read in coef_ptr's rows of coef_c channels (norm.py's grad_batch_norm_coefficients)."""
    if AFFINE:
        live = ch < coef_c
        a = tl.load(coef_ptr + ch, mask=live, other=0.0)
        b = tl.load(coef_ptr + coef_c + ch, mask=live, other=0.0)
        k = tl.load(coef_ptr + 2 * coef_c + ch, mask=live, other=0.0)
        mean = tl.load(coef_ptr + 3 * coef_c + ch, mask=live, other=0.0)
    else:
        a = 0.0
        b = 0.0
        k = 0.0
        mean = 0.0
    return a, b, k, mean


@triton.jit
def _conv_tile_dy(v, y_ptr, z_ptr, y_offs, mask, lo, hi, a, b, k, mean,
                  MASKED: tl.constexpr, AFFINE: tl.constexpr):
    """A dy tile as the gradient uses it: _conv_tile_live's v, then with AFFINE the input
    gradient of a training batch norm that read the conv's output z (z at y's offsets):
    A*v + B*(z - mean) + K per channel (_conv_tile_coef's), 0 outside the tile's mask."""
    v = _conv_tile_live(v, y_ptr, y_offs, mask, lo, hi, MASKED)
    if AFFINE:
        z = tl.load(z_ptr + y_offs, mask=mask, other=0.0).to(a.dtype)
        v = tl.where(mask, a * v.to(a.dtype) + b * (z - mean) + k, 0.0).to(v.dtype)
    return v


@triton.jit
def _conv_tile_store(ptrs, acc, mask, ATOMIC: tl.constexpr):
    """acc into ptrs: an fp32 atomic add (a split reduction's partial sum, or several
    padded rows landing on one position), or a store in ptrs' dtype."""
    if ATOMIC:
        tl.atomic_add(ptrs, acc, mask=mask)
    else:
        tl.store(ptrs, acc.to(ptrs.dtype.element_ty), mask=mask)


@triton.jit
def _conv_tile_dx(
        pid_m, pid_n, pid_g, a_ptr, w_ptr, out_ptr, y_ptr, z_ptr, coef_ptr, coef_c, lo, hi,
        N,
        A0, A1, A2, T0, T1, T2, Q0, Q1, Q2, LO0, LO1, LO2, HI0, HI1, HI2,
        sa_n, sa_c, sa0, sa1, sa2, sy_n, sy_c, sy0, sy1, sy2,
        sw_g, sw_r, sw_c, sw0, sw1, sw2, so_n, so_c, so0, so1, so2,
        C_G: tl.constexpr, R_G: tl.constexpr,
        K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr,
        S0: tl.constexpr, S1: tl.constexpr, S2: tl.constexpr,
        D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr,
        P0: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr,
        TRANSPOSED: tl.constexpr, MODE: tl.constexpr, ATOMIC: tl.constexpr,
        DEPTHWISE: tl.constexpr, MASKED: tl.constexpr, AFFINE: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr, WIDE: tl.constexpr,
        ACC: tl.constexpr):
    """out[n, g*C_G + c, pos] = sum over taps and r < R_G of a[n, g*R_G + r, .] * w[.]:
    a conv's data gradient (TRANSPOSED, one stride phase per program) or a plain conv; a
    read through _conv_tile_dy (y has a's shape). DEPTHWISE (one output channel per group):
    columns are the groups (C_G of them), each a multiply-accumulate over its R_G
    channels, not a dot padded to 16 columns. Returns (the fp32 accumulator, out's offsets
    of it, their mask), for an epilogue of the caller's (conv_bn.py's batch-norm sums)."""
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
            y_tap = n * sy_n + o0 * sy0 + o1 * sy1 + o2 * sy2
            w_tap = k0 * sw0 + k1 * sw1 + k2 * sw2
            if DEPTHWISE:
                for r in range(0, R_G):
                    a_mask = valid[:, None] & c_mask[None, :]
                    a = tl.load(a_ptr + a_tap[:, None] + ((cols * R_G + r) * sa_c)[None, :],
                                mask=a_mask, other=0.0)
                    y_offs = y_tap[:, None] + ((cols * R_G + r) * sy_c)[None, :]
                    ca, cb, ck, cm = _conv_tile_coef(coef_ptr, (cols * R_G + r)[None, :],
                                                     coef_c, AFFINE)
                    a = _conv_tile_dy(a, y_ptr, z_ptr, y_offs, a_mask, lo, hi, ca, cb, ck, cm,
                                      MASKED, AFFINE)
                    wv = tl.load(w_ptr + cols * sw_g + r * sw_r + w_tap, mask=c_mask, other=0.0)
                    acc += a.to(ACC) * wv.to(ACC)[None, :]
            else:
                for c0 in range(0, R_G, BLOCK_K):
                    rr = c0 + tl.arange(0, BLOCK_K)
                    if WIDE:
                        rr = rr.to(tl.int64)
                    r_mask = rr < R_G
                    a_mask = valid[:, None] & r_mask[None, :]
                    a = tl.load(a_ptr + a_tap[:, None] + ((g * R_G + rr) * sa_c)[None, :],
                                mask=a_mask, other=0.0)
                    y_offs = y_tap[:, None] + ((g * R_G + rr) * sy_c)[None, :]
                    ca, cb, ck, cm = _conv_tile_coef(coef_ptr, (g * R_G + rr)[None, :],
                                                     coef_c, AFFINE)
                    a = _conv_tile_dy(a, y_ptr, z_ptr, y_offs, a_mask, lo, hi, ca, cb, ck, cm,
                                      MASKED, AFFINE)
                    b = tl.load(w_ptr + (w_col + w_tap)[None, :] + (rr * sw_r)[:, None],
                                mask=r_mask[:, None] & c_mask[None, :], other=0.0)
                    if UPCAST:  # the interpreter's bfloat16 dot is unreliable
                        a = a.to(tl.float32)
                        b = b.to(tl.float32)
                    acc += tl.dot(a, b, input_precision=DOT_PRECISION)
    if TRANSPOSED:
        i0, _ = _conv_tile_remap(p0 - P0, T0, MODE)
        i1, _ = _conv_tile_remap(p1 - P1, T1, MODE)
        i2, _ = _conv_tile_remap(p2 - P2, T2, MODE)
    else:
        i0 = p0
        i1 = p1
        i2 = p2
    offs = ((n * so_n + i0 * so0 + i1 * so1 + i2 * so2)[:, None]
            + ((g * C_G + cols) * so_c)[None, :])
    mask = m_mask[:, None] & c_mask[None, :]
    _conv_tile_store(out_ptr + offs, acc, mask, ATOMIC)
    return acc, offs, mask


@triton.jit
def _conv_tile_dw(
        pid, grp, split, g_ptr, x_ptr, dw_ptr, db_ptr, y_ptr, z_ptr, coef_ptr, coef_c, lo, hi,
        N, CHUNK,
        G0, G1, G2, X0, X1, X2,
        sg_n, sg_c, sg0, sg1, sg2, sx_n, sx_c, sx0, sx1, sx2, sy_n, sy_c, sy0, sy1, sy2,
        sw_m, sw_c, sw0, sw1, sw2, s_b,
        M_G: tl.constexpr, C_G: tl.constexpr,
        K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr,
        S0: tl.constexpr, S1: tl.constexpr, S2: tl.constexpr,
        D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr,
        P0: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr,
        MODE: tl.constexpr, COMPUTE_W: tl.constexpr, FUSE_BIAS: tl.constexpr,
        ATOMIC: tl.constexpr, DEPTHWISE: tl.constexpr, M_PER_X: tl.constexpr,
        MASKED: tl.constexpr, AFFINE: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr, WIDE: tl.constexpr,
        ACC: tl.constexpr):
    """dw[g*M_G + m, c, k] = sum over (n, o) in this split's chunk of g[n, g*M_G + m, o] *
    x_pad[n, g*C_G + c, o * S + k * D - P]; db[g*M_G + m] = sum of g (column tile 0).
    MASKED 1 reads g, 2 reads x through _conv_tile_live (y has that operand's shape);
    AFFINE: g through _conv_tile_dy's batch-norm gradient.
    DEPTHWISE (C_G == 1): rows are every output channel, m reading x channel m // M_PER_X,
    so a row's products are summed (a 3-d tile), not a dot of a 16-row tile of one row.
    Without COMPUTE_W, one column: a reduction for the bias alone."""
    if COMPUTE_W:
        J = K0 * K1 * K2 * C_G
    else:
        J = 1
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
    # the batch norm's coefficients of this tile's rows (AFFINE): loaded once
    ca, cb, ck, cm = _conv_tile_coef(coef_ptr, (grp * M_G + m)[:, None], coef_c, AFFINE)
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
        a_mask = m_mask[:, None] & r_mask[None, :]
        a = tl.load(g_ptr + g_col[:, None] + (n * sg_n + o0 * sg0 + o1 * sg1 + o2 * sg2)[None, :],
                    mask=a_mask, other=0.0)
        y_offs = (((grp * M_G + m) * sy_c)[:, None]
                  + (n * sy_n + o0 * sy0 + o1 * sy1 + o2 * sy2)[None, :])
        a = _conv_tile_dy(a, y_ptr, z_ptr, y_offs, a_mask, lo, hi, ca, cb, ck, cm,
                          MASKED == 1, AFFINE)
        if FUSE_BIAS:
            bacc += tl.sum(a.to(ACC), axis=1)
        if COMPUTE_W:
            i0, v0 = _conv_tile_remap(o0[:, None] * S0 + (k0 * D0 - P0)[None, :], X0, MODE)
            i1, v1 = _conv_tile_remap(o1[:, None] * S1 + (k1 * D1 - P1)[None, :], X1, MODE)
            i2, v2 = _conv_tile_remap(o2[:, None] * S2 + (k2 * D2 - P2)[None, :], X2, MODE)
            inside = r_mask[:, None] & j_mask[None, :] & v0 & v1 & v2
            pos = (n * sx_n)[:, None] + i0 * sx0 + i1 * sx1 + i2 * sx2
            y_pos = (n * sy_n)[:, None] + i0 * sy0 + i1 * sy1 + i2 * sy2
            if DEPTHWISE:
                b_mask = m_mask[:, None, None] & inside[None, :, :]
                b = tl.load(x_ptr + x_ch[:, None, None] + pos[None, :, :], mask=b_mask,
                            other=0.0)
                y_offs = ((m // M_PER_X) * sy_c)[:, None, None] + y_pos[None, :, :]
                b = _conv_tile_live(b, y_ptr, y_offs, b_mask, lo, hi, MASKED == 2)
                acc += tl.sum(a.to(ACC)[:, :, None] * b.to(ACC), axis=1)
            else:
                # A gather (im2col). With few input channels in 16 bits it reads runs
                # shorter than cp.async's 4 aligned bytes (a 3-channel stem: 6-byte
                # pixels), so this load stays synchronous and the loop "some" pipelined;
                # fp32 (4-byte elements) and channel counts that are even go async.
                b = tl.load(x_ptr + x_col[None, :] + pos, mask=inside, other=0.0)
                y_offs = ((grp * C_G + c) * sy_c)[None, :] + y_pos
                b = _conv_tile_live(b, y_ptr, y_offs, inside, lo, hi, MASKED == 2)
                if UPCAST:  # the interpreter's bfloat16 dot is unreliable
                    a = a.to(tl.float32)
                    b = b.to(tl.float32)
                acc += tl.dot(a, b, input_precision=DOT_PRECISION)
    rows = grp * M_G + m
    if COMPUTE_W:
        out = (dw_ptr + (rows * sw_m)[:, None]
               + (c * sw_c + k0 * sw0 + k1 * sw1 + k2 * sw2)[None, :])
        _conv_tile_store(out, acc, m_mask[:, None] & j_mask[None, :], ATOMIC)
    if FUSE_BIAS:
        if pid_n == 0:
            _conv_tile_store(db_ptr + rows * s_b, bacc, m_mask, ATOMIC)
