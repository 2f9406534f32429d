"""Backward of linear (y = x @ w.T + b, x of shape (..., in)) in Triton: two GEMMs in
one launch (`_linear_grad_kernel`: its first programs run dx tiles, the rest dw(+db)
tiles, each with its own tile sizes).

Rows are the leading dims of x and dy taken together (read through their strides,
merged where the strides allow, up to three of them; more that cannot merge are
reshaped, a documented copy). `_linear_dx_tile`: dx = dy @ w, rows x in-features, a
reduction over out-features. `_linear_dw_tile`: dw = dy^T @ x, out- x in-features, a
reduction over the rows; on a GPU that reduction is split across programs so that a
long one (a large batch, a small layer) fills the machine, the splits adding their
partial sums with fp32 atomics into a zeroed buffer (one split, stored directly, under
the interpreter). The bias gradient, the sum of dy over the rows, rides in the programs
of the first column tile (the same dy tiles); without a weight gradient the tile runs
with COMPUTE_W off as a plain reduction. Both read dy through conv_tile's
`_conv_tile_live` (a relu / relu6 derivative from the activation's output, `mask`). One
launch, plus a cast where an fp32 atomic buffer serves a bf16/fp16 gradient.
Accumulation is fp32 (fp64 for fp64 tensors: they run in the interpreter, gradcheck,
and compile for sm_90, untested on a GPU).
"""

import os

import torch
import triton
import triton.language as tl

from ..support import allows_tf32, ceil_div, tile
from .conv import _conv_accumulator, _conv_alignment, _conv_check_mask, _conv_finish, _conv_huge
from .conv_tile import _conv_tile_aligned, _conv_tile_live, _conv_tile_store

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# ---- cnnc backward kernels (copied into generated files) ----
_LINEAR_FORCE_SPLITS = None  # tests set a split count to check the atomic path


@triton.jit
def _linear_row(m, L1, L2, s0, s1, s2):
    """The offset of flattened row m of leading dims (L0, L1, L2) with strides s."""
    l2 = m % L2
    rest = m // L2
    return (rest // L1) * s0 + (rest % L1) * s1 + l2 * s2


@triton.jit
def _linear_dx_tile(
        pid_m, pid_n, dy_ptr, w_ptr, dx_ptr, y_ptr, lo, hi, ROWS, L1, L2, OUT, IN,
        sy0, sy1, sy2, sy_f, sw_o, sw_i, sx0, sx1, sx2, sx_f, sm0, sm1, sm2, sm_f,
        MASKED: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr, WIDE: tl.constexpr,
        ACC: tl.constexpr):
    """dx[m, i] = sum over o of dy[m, o] * w[o, i] (dy read through _conv_tile_live; y's
    strides are sm*)."""
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    i = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if WIDE:
        m = m.to(tl.int64)
        i = i.to(tl.int64)
    m_mask = m < ROWS
    i_mask = i < IN
    dy_row = _linear_row(m, L1, L2, sy0, sy1, sy2)
    y_row = _linear_row(m, L1, L2, sm0, sm1, sm2)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for o0 in range(0, OUT, BLOCK_K):
        o = o0 + tl.arange(0, BLOCK_K)
        o_mask = o < OUT
        a_mask = m_mask[:, None] & o_mask[None, :]
        a = tl.load(dy_ptr + dy_row[:, None] + (o * sy_f)[None, :], mask=a_mask, other=0.0)
        y_offs = y_row[:, None] + (o * sm_f)[None, :]
        a = _conv_tile_live(a, y_ptr, y_offs, a_mask, lo, hi, MASKED)
        b = tl.load(w_ptr + (o * sw_o)[:, None] + (i * sw_i)[None, :],
                    mask=o_mask[:, None] & i_mask[None, :], other=0.0)
        if UPCAST:  # the interpreter's bfloat16 dot is unreliable
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc += tl.dot(a, b, input_precision=DOT_PRECISION)
    dx_row = _linear_row(m, L1, L2, sx0, sx1, sx2)
    tl.store(dx_ptr + dx_row[:, None] + (i * sx_f)[None, :], acc.to(dx_ptr.dtype.element_ty),
             mask=m_mask[:, None] & i_mask[None, :])


@triton.jit
def _linear_dw_tile(
        pid, split, dy_ptr, x_ptr, dw_ptr, db_ptr, y_ptr, lo, hi, ROWS, L1, L2, OUT, IN,
        CHUNK, sy0, sy1, sy2, sy_f, sx0, sx1, sx2, sx_f, sm0, sm1, sm2, sm_f, sw_o, sw_i,
        s_b, COMPUTE_W: tl.constexpr, FUSE_BIAS: tl.constexpr, ATOMIC: tl.constexpr,
        MASKED: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr, WIDE: tl.constexpr,
        ACC: tl.constexpr):
    """dw[o, i] = sum over this split's rows m of dy[m, o] * x[m, i]; db[o] = sum of dy
    (dy read through _conv_tile_live)."""
    tiles_n = tl.cdiv(IN, BLOCK_N)
    pid_n = pid % tiles_n
    o = (pid // tiles_n) * BLOCK_M + tl.arange(0, BLOCK_M)
    i = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    o_mask = o < OUT
    i_mask = i < IN
    start = split * CHUNK
    end = tl.minimum(start + CHUNK, ROWS)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    bacc = tl.zeros((BLOCK_M,), dtype=ACC)
    for r0 in range(start, end, BLOCK_K):
        m = r0 + tl.arange(0, BLOCK_K)
        if WIDE:
            m = m.to(tl.int64)
        m_mask = m < end
        a_mask = o_mask[:, None] & m_mask[None, :]
        a = tl.load(dy_ptr + (o * sy_f)[:, None]
                    + _linear_row(m, L1, L2, sy0, sy1, sy2)[None, :], mask=a_mask, other=0.0)
        y_offs = (o * sm_f)[:, None] + _linear_row(m, L1, L2, sm0, sm1, sm2)[None, :]
        a = _conv_tile_live(a, y_ptr, y_offs, a_mask, lo, hi, MASKED)
        if FUSE_BIAS:
            bacc += tl.sum(a.to(ACC), axis=1)
        if COMPUTE_W:
            b = tl.load(x_ptr + _linear_row(m, L1, L2, sx0, sx1, sx2)[:, None]
                        + (i * sx_f)[None, :],
                        mask=m_mask[:, None] & i_mask[None, :], other=0.0)
            if UPCAST:  # the interpreter's bfloat16 dot is unreliable
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc += tl.dot(a, b, input_precision=DOT_PRECISION)
    if COMPUTE_W:
        out = dw_ptr + (o * sw_o)[:, None] + (i * sw_i)[None, :]
        _conv_tile_store(out, acc, o_mask[:, None] & i_mask[None, :], ATOMIC)
    if FUSE_BIAS:
        if pid_n == 0:
            _conv_tile_store(db_ptr + o * s_b, bacc, o_mask, ATOMIC)


@triton.jit
def _linear_grad_kernel(
        dy_ptr, x_ptr, w_ptr, dx_ptr, dw_ptr, db_ptr, y_ptr, mask_lo, mask_hi,
        ROWS, L1, L2, OUT, IN, CHUNK, dx_programs, dx_tiles_m, dw_columns,
        sy0, sy1, sy2, sy_f, sx0, sx1, sx2, sx_f, sdx0, sdx1, sdx2, sdx_f,
        sm0, sm1, sm2, sm_f, sw_o, sw_i, sdw_o, sdw_i, s_b,
        HAS_DX: tl.constexpr, HAS_DW: tl.constexpr, COMPUTE_W: tl.constexpr,
        FUSE_BIAS: tl.constexpr, ATOMIC: tl.constexpr, MASKED: tl.constexpr,
        ALIGN: tl.constexpr,
        DX_BLOCK_M: tl.constexpr, DX_BLOCK_N: tl.constexpr, DX_BLOCK_K: tl.constexpr,
        DW_BLOCK_M: tl.constexpr, DW_BLOCK_N: tl.constexpr, DW_BLOCK_K: tl.constexpr,
        DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr, WIDE: tl.constexpr,
        ACC: tl.constexpr):
    """A linear's backward in one launch (horizontal fusion): the first dx_programs
    programs compute dx tiles (dx_tiles_m x column tiles), the rest dw(+db) tiles (tiles
    x splits of dw_columns columns: IN, or 1 for the bias alone). A part without programs
    (HAS_* off) is not compiled. ALIGN divides the sizes and row strides."""
    OUT = _conv_tile_aligned(OUT, ALIGN)
    IN = _conv_tile_aligned(IN, ALIGN)
    if COMPUTE_W:  # dw_columns is IN (else 1, the bias alone)
        dw_columns = IN
    sy0, sy1, sy2 = (_conv_tile_aligned(sy0, ALIGN), _conv_tile_aligned(sy1, ALIGN),
                     _conv_tile_aligned(sy2, ALIGN))
    sx0, sx1, sx2 = (_conv_tile_aligned(sx0, ALIGN), _conv_tile_aligned(sx1, ALIGN),
                     _conv_tile_aligned(sx2, ALIGN))
    sdx0, sdx1, sdx2 = (_conv_tile_aligned(sdx0, ALIGN), _conv_tile_aligned(sdx1, ALIGN),
                        _conv_tile_aligned(sdx2, ALIGN))
    sm0, sm1, sm2 = (_conv_tile_aligned(sm0, ALIGN), _conv_tile_aligned(sm1, ALIGN),
                     _conv_tile_aligned(sm2, ALIGN))
    sw_o = _conv_tile_aligned(sw_o, ALIGN)
    sdw_o = _conv_tile_aligned(sdw_o, ALIGN)
    pid = tl.program_id(0)
    if pid < dx_programs:
        if HAS_DX:
            _linear_dx_tile(
                pid % dx_tiles_m, pid // dx_tiles_m, dy_ptr, w_ptr, dx_ptr, y_ptr, mask_lo,
                mask_hi, ROWS, L1, L2, OUT, IN, sy0, sy1, sy2, sy_f, sw_o, sw_i,
                sdx0, sdx1, sdx2, sdx_f, sm0, sm1, sm2, sm_f, MASKED,
                DX_BLOCK_M, DX_BLOCK_N, DX_BLOCK_K, DOT_PRECISION, UPCAST, WIDE, ACC)
    else:
        if HAS_DW:
            q = pid - dx_programs
            tiles = tl.cdiv(OUT, DW_BLOCK_M) * tl.cdiv(dw_columns, DW_BLOCK_N)
            _linear_dw_tile(
                q % tiles, q // tiles, dy_ptr, x_ptr, dw_ptr, db_ptr, y_ptr, mask_lo,
                mask_hi, ROWS, L1, L2, OUT, dw_columns, CHUNK, sy0, sy1, sy2, sy_f,
                sx0, sx1, sx2, sx_f, sm0, sm1, sm2, sm_f, sdw_o, sdw_i, s_b, COMPUTE_W,
                FUSE_BIAS, ATOMIC, MASKED, DW_BLOCK_M, DW_BLOCK_N, DW_BLOCK_K,
                DOT_PRECISION, UPCAST, WIDE, ACC)


def _linear_rows(tensors):
    """(sizes, strides per tensor) of the tensors' common leading dims: a dim merged into
    the one before where every tensor's stride steps over it, front-padded to 3 (size 1,
    stride 0); None where more than three remain."""
    shape = tensors[0].shape[:-1]
    merged = []  # (size, [stride per tensor])
    for d, size in enumerate(shape):
        if size == 1:
            continue
        strides = [t.stride(d) for t in tensors]
        if merged and all(prev == st * size for prev, st in zip(merged[-1][1], strides)):
            merged[-1] = (merged[-1][0] * size, strides)
        else:
            merged.append((size, strides))
    if len(merged) > 3:
        return None
    merged = [(1, [0] * len(tensors))] * (3 - len(merged)) + merged
    return [s for s, _ in merged], [[st[k] for _, st in merged] for k in range(len(tensors))]


def _linear_precision(t):
    if t.dtype == torch.float32 and not INTERPRET and allows_tf32("matmul"):
        return "tf32"
    return "ieee"


def _linear_meta(t, *tensors):
    """Precision, bf16 upcast (interpreter), int64 indices (large tensors, and the
    interpreter, whose int32 overflow checks cost more than the kernels), accumulator."""
    wide = INTERPRET or any(_conv_huge(u) for u in tensors)
    return dict(DOT_PRECISION=_linear_precision(t),
                UPCAST=INTERPRET and t.dtype == torch.bfloat16, WIDE=wide,
                ACC=tl.float64 if t.dtype == torch.float64 else tl.float32,
                num_warps=4, num_stages=1 if INTERPRET else 3)


def _linear_splits(tiles, rows, block_k, device):
    """Programs per output tile's reduction: two waves of the GPU's multiprocessors, each
    with at least four reduction steps; one in the interpreter."""
    if _LINEAR_FORCE_SPLITS is not None:
        return _LINEAR_FORCE_SPLITS
    if INTERPRET or device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(-(-2 * sms // max(tiles, 1)), rows // (4 * block_k)))


def _linear_tiles(rows, n_in, n_out, columns):
    """(dx's BLOCK_M, N, K), (dw's BLOCK_M, N, K): GPU tiles, or the interpreter's large
    ones (fewer, larger numpy steps)."""
    if INTERPRET:
        return ((tile(rows, 1024), tile(n_in, 512), tile(n_out, 512)),
                (tile(n_out, 256), tile(columns, 256), tile(rows, 2048)))
    return ((tile(rows, 64), tile(n_in, 64), tile(n_out, 32)),
            (tile(n_out, 64), tile(columns, 64), tile(rows, 32)))


def grad_linear(dy, x, w, *, needs=(True, True, True), has_bias=True, mask=None):
    """y = x @ w.T + b with x of shape (..., in) (any leading dims). mask: None, or
    (y, lo, hi): the gradient used is dy where lo < y < hi, else 0 (y of dy's shape, any
    strides; relu: (y, 0.0, inf), relu6: (y, 0.0, 6.0)), applied as dy loads.
    -> (dx, dw, db), None where not needed (db None also when has_bias is False).
    One launch (dx, dw and db), plus a cast where an fp32 atomic buffer serves a
    bf16/fp16 gradient."""
    _conv_check_mask(mask, dy)
    need_x, need_w, need_b = needs
    need_b = need_b and has_bias
    n_out, n_in = w.shape
    x_shape = x.shape
    y = mask[0] if mask is not None else dy
    dx = torch.empty_like(x) if need_x else None
    layout = _linear_rows([dy, x, y] + ([dx] if need_x else []))
    if layout is None:  # more than three leading dims that no stride merges: copies
        dy, x, y = dy.reshape(-1, n_out), x.reshape(-1, n_in), y.reshape(-1, n_out)
        if need_x:
            dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        layout = _linear_rows([dy, x, y] + ([dx] if need_x else []))
    sizes, (y_strides, x_strides, m_strides, *dx_strides) = layout
    rows = sizes[0] * sizes[1] * sizes[2]
    columns = n_in if need_w else 1
    (xm, xn, xk), (wm, wn, wk) = _linear_tiles(rows, n_in, n_out, columns)
    dx_tiles_m = ceil_div(rows, xm)
    dx_programs = dx_tiles_m * ceil_div(n_in, xn) if need_x and dx.numel() else 0
    dw = db = None
    dw_programs, chunk, atomic = 0, 1, False
    if need_w or need_b:
        tiles = ceil_div(n_out, wm) * ceil_div(columns, wn)
        splits = _linear_splits(tiles, rows, wk, dy.device)
        chunk = max(wk, ceil_div(ceil_div(rows, splits), wk) * wk)
        splits = max(1, ceil_div(rows, chunk))
        atomic = splits > 1
        dw = _conv_accumulator(w, atomic) if need_w else None
        bias_like = torch.empty(n_out, dtype=w.dtype, device=w.device)
        db = _conv_accumulator(bias_like, atomic) if need_b else None
        if rows == 0:
            for t in (dw, db):
                if t is not None:
                    t.zero_()
        elif n_out:
            dw_programs = tiles * splits
    if dx_programs + dw_programs:
        lo, hi = (float(mask[1]), float(mask[2])) if mask is not None else (0.0, 0.0)
        aligned = [n_out, n_in, *y_strides, *x_strides, *m_strides, w.stride(0),
                   *(dx_strides[0] if need_x else ()), *(dw.stride()[:1] if need_w else ())]
        meta = _linear_meta(dy, *(t for t in (dy, x, w, y, dx, dw) if t is not None))
        _linear_grad_kernel[(dx_programs + dw_programs,)](
            dy, x, w, dx if dx_programs else dy, dw if need_w else dy,
            db if need_b else dy, y, lo, hi, rows, sizes[1], sizes[2], n_out, n_in, chunk,
            dx_programs, dx_tiles_m, columns, *y_strides, dy.stride(-1),
            *x_strides, x.stride(-1), *(dx_strides[0] if need_x else (0, 0, 0)),
            dx.stride(-1) if need_x else 0, *m_strides, y.stride(-1), w.stride(0),
            w.stride(1), *(dw.stride() if need_w else (0, 0)), 1,
            HAS_DX=dx_programs > 0, HAS_DW=dw_programs > 0, COMPUTE_W=need_w,
            FUSE_BIAS=need_b, ATOMIC=atomic, MASKED=mask is not None,
            ALIGN=_conv_alignment(aligned, dy.element_size()),
            DX_BLOCK_M=xm, DX_BLOCK_N=xn, DX_BLOCK_K=xk, DW_BLOCK_M=wm, DW_BLOCK_N=wn,
            DW_BLOCK_K=wk, **meta)
    if need_x and dx.shape != x_shape:  # the reshaped fallback
        dx = dx.view(x_shape)
    if dw is not None:
        dw = _conv_finish(dw, w)
    if db is not None:
        db = _conv_finish(db, bias_like)
    return dx, dw, db
