"""Backward of conv1d/2d/3d (every padding mode) and conv_transpose1d/2d/3d, in Triton:
the launchers, and the one kernel (`_conv_grad_kernel`) whose first programs compute
data-gradient tiles and the rest weight(+bias)-gradient tiles (horizontal fusion; the
tiles and their math are in conv_tile.py). A conv's backward is one launch, dy optionally
masked by a relu / relu6 derivative (`mask`) and taken through a training batch norm's
backward (`affine`) as it loads, plus a cast where an fp32
atomic buffer serves a bf16/fp16 gradient; conv_transpose's bias gradient is a second.
With `bn_input` the data-gradient tiles also give the coefficients of the training batch
norm (and activation) whose output is the conv's input (conv_bn.py), in the same launch.
Gradients come back in the dtype and memory format of their tensor.
"""

import os

import torch
import triton
import triton.language as tl

from ..support import allows_tf32, ceil_div, tile
from .conv_bn import _conv_bn_check, _conv_bn_finish, _conv_bn_prepare, _conv_bn_sums
from .conv_tile import _conv_tile_aligned, _conv_tile_dw, _conv_tile_dx

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# ---- cnnc backward kernels (copied into generated files) ----
_CONV_MODES = {"zeros": 0, "reflect": 1, "replicate": 2, "circular": 3}
_CONV_FORCE_SPLITS = None  # tests set a split count to check the atomic path


@triton.jit
def _conv_grad_kernel(
        # the activation's output whose derivative masks dy (DX_MASKED / DW_MASKED); with
        # AFFINE a batch norm's input z (y's strides) and coefficients (conv_tile's _dy)
        y_ptr, mask_lo, mask_hi, sy_n, sy_c, sy0, sy1, sy2, z_ptr, coef_ptr, coef_c,
        # data gradient: programs [0, dx_programs), tiles_m x tiles_n x (groups * phases)
        dx_programs, dx_tiles_m, dx_tiles_n, dx_a_ptr, dx_w_ptr, dx_out_ptr, dx_N,
        dx_A0, dx_A1, dx_A2, dx_T0, dx_T1, dx_T2, dx_Q0, dx_Q1, dx_Q2,
        dx_LO0, dx_LO1, dx_LO2, dx_HI0, dx_HI1, dx_HI2,
        dx_sa_n, dx_sa_c, dx_sa0, dx_sa1, dx_sa2,
        dx_sw_g, dx_sw_r, dx_sw_c, dx_sw0, dx_sw1, dx_sw2,
        dx_so_n, dx_so_c, dx_so0, dx_so1, dx_so2,
        # weight and bias gradients: the programs after, tiles x groups x splits
        dw_tiles, dw_groups, dw_g_ptr, dw_x_ptr, dw_w_ptr, dw_b_ptr, dw_N, dw_CHUNK,
        dw_G0, dw_G1, dw_G2, dw_X0, dw_X1, dw_X2,
        dw_sg_n, dw_sg_c, dw_sg0, dw_sg1, dw_sg2, dw_sx_n, dw_sx_c, dw_sx0, dw_sx1, dw_sx2,
        dw_sw_m, dw_sw_c, dw_sw0, dw_sw1, dw_sw2, dw_s_b,
        # with DX_BN_SUMS, the batch norm whose activated output x is the conv's input
        # (conv_bn.py's _conv_bn_sums: x, z in dx's layout, its stats, weight and outputs)
        bn_x_ptr, bn_z_ptr, bn_stats_ptr, bn_w_ptr, bn_coef_ptr, bn_dw_ptr, bn_db_ptr,
        bn_part_ptr, bn_count_ptr, bn_lo, bn_hi, bn_C, bn_M,
        # the conv's geometry, shared
        K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr,
        S0: tl.constexpr, S1: tl.constexpr, S2: tl.constexpr,
        D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr,
        P0: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr, MODE: tl.constexpr,
        # each part's own switches and tiles
        HAS_DX: tl.constexpr, DX_C_G: tl.constexpr, DX_R_G: tl.constexpr,
        DX_TRANSPOSED: tl.constexpr, DX_ATOMIC: tl.constexpr, DX_DEPTHWISE: tl.constexpr,
        DX_MASKED: tl.constexpr, DX_BN_SUMS: tl.constexpr, DX_BN_MASKED: tl.constexpr,
        DX_BN_AFFINE: tl.constexpr, DX_BN_ROWS: tl.constexpr,
        DX_BLOCK_M: tl.constexpr, DX_BLOCK_N: tl.constexpr, DX_BLOCK_K: tl.constexpr,
        HAS_DW: tl.constexpr, DW_M_G: tl.constexpr, DW_C_G: tl.constexpr,
        DW_COMPUTE_W: tl.constexpr, DW_FUSE_BIAS: tl.constexpr, DW_ATOMIC: tl.constexpr,
        DW_DEPTHWISE: tl.constexpr, DW_M_PER_X: tl.constexpr, DW_MASKED: tl.constexpr,
        DW_BLOCK_M: tl.constexpr, DW_BLOCK_N: tl.constexpr, DW_BLOCK_K: tl.constexpr,
        AFFINE: tl.constexpr, ALIGN: tl.constexpr, DW_X_ALIGN: tl.constexpr,
        DOT_PRECISION: tl.constexpr,
        UPCAST: tl.constexpr, WIDE: tl.constexpr, ACC: tl.constexpr):
    """A conv's backward in one launch (horizontal fusion): the first dx_programs programs
    compute data-gradient tiles, the rest weight(+bias)-gradient tiles. A part without
    programs (HAS_* off) is not compiled. ALIGN divides the strides of _CONV_ALIGNED (the
    batch and spatial strides of channels-last tensors, the weight's but its channels'),
    DW_X_ALIGN those of the weight gradient's x."""
    sy_n = _conv_tile_aligned(sy_n, ALIGN)
    sy0 = _conv_tile_aligned(sy0, ALIGN)
    sy1 = _conv_tile_aligned(sy1, ALIGN)
    sy2 = _conv_tile_aligned(sy2, ALIGN)
    # (an absent part's placeholders, 1, may become 0: its branch is not compiled)
    dx_sa_n = _conv_tile_aligned(dx_sa_n, ALIGN)
    dx_sa0 = _conv_tile_aligned(dx_sa0, ALIGN)
    dx_sa1 = _conv_tile_aligned(dx_sa1, ALIGN)
    dx_sa2 = _conv_tile_aligned(dx_sa2, ALIGN)
    dx_so_n = _conv_tile_aligned(dx_so_n, ALIGN)
    dx_so0 = _conv_tile_aligned(dx_so0, ALIGN)
    dx_so1 = _conv_tile_aligned(dx_so1, ALIGN)
    dx_so2 = _conv_tile_aligned(dx_so2, ALIGN)
    dx_sw_g = _conv_tile_aligned(dx_sw_g, ALIGN)
    dx_sw0 = _conv_tile_aligned(dx_sw0, ALIGN)
    dx_sw1 = _conv_tile_aligned(dx_sw1, ALIGN)
    dx_sw2 = _conv_tile_aligned(dx_sw2, ALIGN)
    if DX_TRANSPOSED:  # the weight's dim 0 (its channels, dim 1, are unit-strided)
        dx_sw_r = _conv_tile_aligned(dx_sw_r, ALIGN)
    else:
        dx_sw_c = _conv_tile_aligned(dx_sw_c, ALIGN)
    dw_sg_n = _conv_tile_aligned(dw_sg_n, ALIGN)
    dw_sg0 = _conv_tile_aligned(dw_sg0, ALIGN)
    dw_sg1 = _conv_tile_aligned(dw_sg1, ALIGN)
    dw_sg2 = _conv_tile_aligned(dw_sg2, ALIGN)
    # x's own (a 1- or 3-channel image's strides cannot be aligned; dy's still can)
    dw_sx_n = _conv_tile_aligned(dw_sx_n, DW_X_ALIGN)
    dw_sx0 = _conv_tile_aligned(dw_sx0, DW_X_ALIGN)
    dw_sx1 = _conv_tile_aligned(dw_sx1, DW_X_ALIGN)
    dw_sx2 = _conv_tile_aligned(dw_sx2, DW_X_ALIGN)
    pid = tl.program_id(0)
    if pid < dx_programs:
        if HAS_DX:
            pid_m = pid % dx_tiles_m
            pid_n = (pid // dx_tiles_m) % dx_tiles_n
            pid_g = pid // (dx_tiles_m * dx_tiles_n)
            acc, offs, mask = _conv_tile_dx(
                pid_m, pid_n, pid_g, dx_a_ptr, dx_w_ptr, dx_out_ptr, y_ptr,
                z_ptr, coef_ptr, coef_c, mask_lo, mask_hi, dx_N, dx_A0, dx_A1, dx_A2,
                dx_T0, dx_T1, dx_T2,
                dx_Q0, dx_Q1, dx_Q2, dx_LO0, dx_LO1, dx_LO2, dx_HI0, dx_HI1, dx_HI2,
                dx_sa_n, dx_sa_c, dx_sa0, dx_sa1, dx_sa2, sy_n, sy_c, sy0, sy1, sy2,
                dx_sw_g, dx_sw_r, dx_sw_c, dx_sw0, dx_sw1, dx_sw2,
                dx_so_n, dx_so_c, dx_so0, dx_so1, dx_so2, DX_C_G, DX_R_G,
                K0, K1, K2, S0, S1, S2, D0, D1, D2, P0, P1, P2,
                DX_TRANSPOSED, MODE, DX_ATOMIC, DX_DEPTHWISE, DX_MASKED, AFFINE,
                DX_BLOCK_M, DX_BLOCK_N, DX_BLOCK_K, DOT_PRECISION, UPCAST, WIDE, ACC)
            if DX_BN_SUMS:
                _conv_bn_sums(
                    acc, offs, mask, pid_m, pid_n, pid_g, dx_tiles_m, dx_tiles_n,
                    bn_x_ptr, bn_z_ptr, bn_stats_ptr, bn_w_ptr, bn_coef_ptr, bn_dw_ptr,
                    bn_db_ptr, bn_part_ptr, bn_count_ptr, bn_lo, bn_hi, bn_C, bn_M,
                    DX_C_G, DX_BLOCK_N, S0, S1, S2, DX_BN_MASKED, DX_BN_AFFINE, DX_BN_ROWS,
                    ACC)
    else:
        if HAS_DW:
            q = pid - dx_programs
            _conv_tile_dw(
                q % dw_tiles, (q // dw_tiles) % dw_groups, q // (dw_tiles * dw_groups),
                dw_g_ptr, dw_x_ptr, dw_w_ptr, dw_b_ptr, y_ptr, z_ptr, coef_ptr, coef_c,
                mask_lo, mask_hi,
                dw_N, dw_CHUNK, dw_G0, dw_G1, dw_G2, dw_X0, dw_X1, dw_X2,
                dw_sg_n, dw_sg_c, dw_sg0, dw_sg1, dw_sg2,
                dw_sx_n, dw_sx_c, dw_sx0, dw_sx1, dw_sx2, sy_n, sy_c, sy0, sy1, sy2,
                dw_sw_m, dw_sw_c, dw_sw0, dw_sw1, dw_sw2, dw_s_b, DW_M_G, DW_C_G,
                K0, K1, K2, S0, S1, S2, D0, D1, D2, P0, P1, P2,
                MODE, DW_COMPUTE_W, DW_FUSE_BIAS, DW_ATOMIC, DW_DEPTHWISE, DW_M_PER_X,
                DW_MASKED, AFFINE, DW_BLOCK_M, DW_BLOCK_N, DW_BLOCK_K, DOT_PRECISION, UPCAST,
                WIDE, ACC)


@triton.jit
def _conv_cast_kernel(src_ptr, dst_ptr, total, BLOCK: tl.constexpr):
    """dst = src over the storage of two dense tensors of the same strides."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    tl.store(dst_ptr + offs, tl.load(src_ptr + offs, mask=mask).to(dst_ptr.dtype.element_ty),
             mask=mask)


# The arguments _conv_grad_kernel rewrites as multiples of ALIGN (when their part runs).
_CONV_ALIGNED = {
    "": ("sy_n", "sy0", "sy1", "sy2"),
    "dx_": ("dx_sa_n", "dx_sa0", "dx_sa1", "dx_sa2", "dx_so_n", "dx_so0", "dx_so1",
            "dx_so2", "dx_sw_g", "dx_sw0", "dx_sw1", "dx_sw2"),
    "dw_": ("dw_sg_n", "dw_sg0", "dw_sg1", "dw_sg2"),
}
_CONV_X_ALIGNED = ("dw_sx_n", "dw_sx0", "dw_sx1", "dw_sx2")  # by DW_X_ALIGN


def _conv_alignment(values, element_size):
    """The largest power of two up to 16 bytes' worth of elements dividing every value
    (sizes and strides; zero, a padded dim's stride, is divided by anything): the ALIGN
    of the gradient kernels' `_conv_tile_aligned`. 1 (no rewrite) where every value is a
    multiple of 16: Triton's own specialisation sees those."""
    if all(v % 16 == 0 for v in values):
        return 1
    align = 16 // element_size
    while align > 1 and any(v % align for v in values):
        align //= 2
    return align


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
    if total:
        _conv_cast_kernel[(ceil_div(total, block),)](buffer, out, total, BLOCK=block)
    return out


def _conv_xyz(name, values):
    """{name0: values[0], name1: ..., name2: ...}: a 3-vector as the kernel's arguments."""
    return {f"{name}{i}": v for i, v in enumerate(values)}


def _conv_dims(kernel, stride, dilation, pads):
    """(K, S, D, left pads), each front-padded to 3 dims."""
    return (_conv_3(kernel, 1), _conv_3(stride, 1), _conv_3(dilation, 1),
            _conv_3([left for left, _ in pads], 0))


def _conv_data(a, w, out_like, *, w_strides, groups, c_g, r_g, kernel, stride, dilation,
               pads, mode, transposed, masked):
    """The data gradient's share of _conv_grad_kernel: (its buffer, its programs, its
    arguments); no programs where nothing is left to compute."""
    a_sizes, a_strides = _conv_spatial(a)
    t_sizes, _ = _conv_spatial(out_like)
    K, S, _, P = _conv_dims(kernel, stride, dilation, pads)
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
    if out.numel() == 0 or a.numel() == 0:
        return out.zero_(), 0, {}
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
    tiles_m, tiles_n = ceil_div(rows, bm), ceil_div(columns, bn)
    return out, tiles_m * tiles_n * programs * phases, dict(
        dx_tiles_m=tiles_m, dx_tiles_n=tiles_n, dx_a_ptr=a, dx_w_ptr=w, dx_out_ptr=out,
        dx_N=N, **_conv_xyz("dx_A", a_sizes), **_conv_xyz("dx_T", t_sizes),
        **_conv_xyz("dx_Q", Q), **_conv_xyz("dx_LO", lo), **_conv_xyz("dx_HI", hi),
        dx_sa_n=a.stride(0), dx_sa_c=a.stride(1), **_conv_xyz("dx_sa", a_strides),
        dx_sw_g=w_strides[0], dx_sw_r=w_strides[1], dx_sw_c=w_strides[2],
        **_conv_xyz("dx_sw", w_strides[3:]), dx_so_n=out.stride(0), dx_so_c=out.stride(1),
        **_conv_xyz("dx_so", o_strides), DX_C_G=columns, DX_R_G=r_g,
        DX_TRANSPOSED=transposed, DX_ATOMIC=atomic, DX_DEPTHWISE=depthwise,
        DX_MASKED=masked, DX_BN_SUMS=False, DX_BN_MASKED=False, DX_BN_AFFINE=False,
        DX_BN_ROWS=1, DX_BLOCK_M=bm, DX_BLOCK_N=bn, DX_BLOCK_K=bk)


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


def _conv_weight(g, x, w, *, groups, m_g, c_g, kernel, compute_w, bias_like, masked):
    """The weight(+bias) gradient's share of _conv_grad_kernel: (dw or None, db or None,
    its programs, its arguments). masked: 0, or which operand dy is (1: g, 2: x)."""
    g_sizes, g_strides = _conv_spatial(g)
    x_sizes, x_strides = _conv_spatial(x)
    N = g.shape[0]
    total = N * g_sizes[0] * g_sizes[1] * g_sizes[2]
    columns = (kernel[0] * kernel[1] * kernel[2] * c_g) if compute_w else 1
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
    if total == 0 or (dw is None and db.numel() == 0):
        return (dw.zero_() if dw is not None else None,
                db.zero_() if db is not None else None, 0, {})
    w_strides = dw.stride() if compute_w else (0, 0, 0, 0, 0)  # dw's: w may be sparse
    _, w_sp = _conv_spatial(dw) if compute_w else (None, [0, 0, 0])
    return dw, db, tiles * programs * splits, dict(
        dw_tiles=tiles, dw_groups=programs, dw_g_ptr=g, dw_x_ptr=x,
        dw_w_ptr=dw if compute_w else g, dw_b_ptr=db if db is not None else g, dw_N=N,
        dw_CHUNK=chunk, **_conv_xyz("dw_G", g_sizes), **_conv_xyz("dw_X", x_sizes),
        dw_sg_n=g.stride(0), dw_sg_c=g.stride(1), **_conv_xyz("dw_sg", g_strides),
        dw_sx_n=x.stride(0), dw_sx_c=x.stride(1), **_conv_xyz("dw_sx", x_strides),
        dw_sw_m=w_strides[0], dw_sw_c=w_strides[1], **_conv_xyz("dw_sw", w_sp),
        dw_s_b=db.stride(0) if db is not None else 0, DW_M_G=m_g, DW_C_G=c_g,
        DW_COMPUTE_W=compute_w, DW_FUSE_BIAS=db is not None, DW_ATOMIC=atomic,
        DW_DEPTHWISE=depthwise, DW_M_PER_X=per_x, DW_MASKED=masked,
        DW_BLOCK_M=bm, DW_BLOCK_N=bn, DW_BLOCK_K=bk)


def _conv_launch(data, weight, *, kernel, stride, dilation, pads, mode, mask, dtype_of,
                 tensors, affine=None, bn_sums=None):
    """One launch of _conv_grad_kernel for the parts' (programs, arguments): the data
    gradient's programs first. An absent part gets placeholders for its arguments (its
    branch is not compiled); y's strides are dy's shape's (a placeholder without mask).
    affine: None or (z, coef) (grad_conv's), z read at y's offsets; bn_sums: the bn_*
    arguments and DX_BN_* switches of conv_bn.py's _conv_bn_prepare, or None."""
    (dx_programs, dx_args), (dw_programs, dw_args) = data, weight
    if dx_programs + dw_programs == 0:
        return
    K, S, D, P = _conv_dims(kernel, stride, dilation, pads)
    y, lo, hi = mask if mask is not None else (dtype_of, 0.0, 0.0)
    z, coef = affine if affine is not None else (y, y)
    if affine is not None and mask is None:
        y = z
    elif z.stride() != y.stride():  # z is read at y's offsets: in y's layout
        z = torch.empty_like(y, dtype=z.dtype).copy_(z)
    _, y_strides = _conv_spatial(y)
    args = dict(y_ptr=y, mask_lo=float(lo), mask_hi=float(hi), sy_n=y.stride(0),
                sy_c=y.stride(1), **_conv_xyz("sy", y_strides), z_ptr=z, coef_ptr=coef,
                coef_c=coef.shape[-1] if affine is not None else 0, AFFINE=affine is not None,
                dx_programs=dx_programs,
                **_conv_xyz("K", K), **_conv_xyz("S", S), **_conv_xyz("D", D),
                **_conv_xyz("P", P), MODE=_CONV_MODES[mode], HAS_DX=dx_programs > 0,
                HAS_DW=dw_programs > 0, **dx_args, **dw_args)
    args.update(bn_sums or {})
    absent = tuple(part for part, n in (("dx_", dx_programs), ("dw_", dw_programs),
                                        ("bn_", bool(bn_sums))) if not n)
    aligned = [args[name] for part, names in _CONV_ALIGNED.items() if part not in absent
               for name in names]
    if dx_programs:  # the weight's dim 0 stride (as _conv_grad_kernel picks it)
        aligned.append(args["dx_sw_r" if args["DX_TRANSPOSED"] else "dx_sw_c"])
    size = dtype_of.element_size()
    if dw_programs:
        args["DW_X_ALIGN"] = _conv_alignment([args[n] for n in _CONV_X_ALIGNED], size)
    depthwise = (dx_programs and args["DX_DEPTHWISE"]) or (dw_programs and args["DW_DEPTHWISE"])
    for name in _conv_grad_kernel.arg_names:
        if name not in args and name.lower().startswith(absent):
            args[name] = dtype_of if name.endswith("_ptr") else 1
    align = _conv_alignment(aligned, size)
    meta = _conv_meta(dtype_of, y, *(t for t in tensors if t is not None))
    if depthwise and y.shape[1] % 16 and y.shape[1] > 32:  # 64-wide tiles of channels not
        meta["num_warps"] = 8  # a multiple of 16 (ShuffleNet's 58, 116): 4 warps spill
    _conv_grad_kernel[(dx_programs + dw_programs,)](**args, ALIGN=align, **meta)


def _conv_check_mask(mask, dy, affine=None):
    """mask: None or (y, lo, hi), y of dy's shape (any strides); affine: None or (z, coef),
    z of dy's shape, coef [4, C_out] contiguous."""
    if mask is not None and tuple(mask[0].shape) != tuple(dy.shape):
        raise ValueError(f"mask's y has shape {tuple(mask[0].shape)}, dy {tuple(dy.shape)}")
    if affine is not None:
        z, coef = affine
        if tuple(z.shape) != tuple(dy.shape) or tuple(coef.shape) != (4, dy.shape[1]) \
                or not coef.is_contiguous():
            raise ValueError(f"affine's z {tuple(z.shape)} and coef {tuple(coef.shape)} "
                             f"must be dy's shape {tuple(dy.shape)} and [4, C]")


def grad_conv(dy, x, w, *, stride, pads, dilation, groups, padding_mode,
              needs=(True, True, True), has_bias=True, mask=None, affine=None, bn_input=None):
    """Gradients of y = conv{1,2,3}d(pad(x, pads, padding_mode), w, bias, stride, dilation,
    groups). dims = w.dim() - 2. stride, dilation: tuples of `dims` ints. pads: `dims`
    (left, right) pairs (cnnc.ops.conv.conv_pads; "same" may be asymmetric). padding_mode:
    "zeros" | "reflect" | "replicate" | "circular". needs = (input, weight, bias).
    mask: None, or (y, lo, hi): the gradient used is dy where lo < y < hi, else 0 (y of
    dy's shape, any strides; relu: (y, 0.0, inf), relu6: (y, 0.0, 6.0)), applied as dy
    loads. -> (dx, dw, db), None where not needed (db None also when has_bias is False).
    One launch (data, weight and bias), plus a cast where an fp32 atomic buffer serves a
    bf16/fp16 gradient. Reflect, replicate and circular padding add the border's
    gradient with fp32 atomic adds (summation order may vary). affine: None, or (z, coef)
    where y (the conv's output) is z and a training batch norm read it: dy is then the
    batch norm's output gradient (masked first), and each tile of it loads as z's gradient
    A*dy + B*(z - mean) + K per channel (coef from grad_batch_norm_coefficients).
    bn_input: None, or (z, weight, stats, window, bn_needs) where x = act(batch_norm(z)) in
    training mode (z of x's shape, weight [C_in] or None, stats the forward's [2, C_in]
    (mean, invstd), window the activation's (lo, hi) or None, bn_needs (dweight, dbias)):
    then -> (dx, dw, db, coef, dweight, dbias), the last three what
    grad_batch_norm_coefficients(dx, z, weight, stats, mask=(x, lo, hi)) returns, taken
    by the data-gradient tiles in the same launch (conv_bn.py); a second launch where
    padding makes the data gradient atomic. Needs the data gradient."""
    _conv_check_mask(mask, dy, affine)
    if bn_input is not None:
        _conv_bn_check(bn_input, x, needs)
    need_x, need_w, need_b = needs
    need_b = need_b and has_bias
    c_out, c_in_g = w.shape[0], w.shape[1]
    geometry = dict(kernel=tuple(w.shape[2:]), stride=tuple(stride),
                    dilation=tuple(dilation), pads=tuple(tuple(p) for p in pads))
    K = _conv_3(geometry["kernel"], 1)
    dx_buffer = dw = db = None
    data = weight = (0, {})
    if need_x:
        ws = w.stride()
        w_strides = (c_out // groups * ws[0], ws[0], ws[1], *_conv_3(ws[2:], 0))
        dx_buffer, *data = _conv_data(dy, w, x, w_strides=w_strides, groups=groups,
                                      c_g=c_in_g, r_g=c_out // groups, mode=padding_mode,
                                      transposed=True, masked=mask is not None, **geometry)
    if need_w or need_b:
        bias_like = torch.empty(c_out, dtype=w.dtype, device=w.device) if need_b else None
        dw, db, *weight = _conv_weight(dy, x, w, groups=groups, m_g=c_out // groups,
                                       c_g=c_in_g, kernel=K, compute_w=need_w,
                                       bias_like=bias_like, masked=int(mask is not None))
    bn_sums, taken = {}, None
    if bn_input is not None:
        S = _conv_3(tuple(stride), 1)
        bn_sums, taken = _conv_bn_prepare(bn_input, x, dx_buffer, data, S[0] * S[1] * S[2])
    _conv_launch(data, weight, mode=padding_mode, mask=mask, dtype_of=dy, affine=affine,
                 bn_sums=bn_sums, tensors=(dy, x, w, dx_buffer, dw, db), **geometry)
    dx = _conv_finish(dx_buffer, x) if need_x else None
    dw = _conv_finish(dw, w) if dw is not None else None
    db = _conv_finish(db, bias_like) if db is not None else None
    if bn_input is not None:
        return dx, dw, db, *_conv_bn_finish(bn_input, x, dx, taken)
    return dx, dw, db


def grad_conv_transpose(dy, x, w, *, stride, padding, output_padding, dilation, groups,
                        needs=(True, True, True), has_bias=True, mask=None):
    """Gradients of F.conv_transpose{1,2,3}d(x, w, bias, stride, padding, output_padding,
    groups, dilation); w is [C_in, C_out / groups, k...]. The data gradient is a conv of dy
    with w and the weight gradient correlates x with dy, one launch; the bias gradient
    sums dy (a second launch: the weight part's uniform operand is x here). output_padding
    only sized y. mask: as grad_conv's."""
    _conv_check_mask(mask, dy)
    need_x, need_w, need_b = needs
    need_b = need_b and has_bias
    c_in, c_out_g = w.shape[0], w.shape[1]
    c_in_g = c_in // groups
    geometry = dict(kernel=tuple(w.shape[2:]), stride=tuple(stride),
                    dilation=tuple(dilation), pads=tuple((p, p) for p in padding))
    K = _conv_3(geometry["kernel"], 1)
    launch = dict(mode="zeros", mask=mask, dtype_of=dy, **geometry)
    dx = dw = db = None
    data = weight = (0, {})
    if need_x:
        ws = w.stride()
        w_strides = (c_in_g * ws[0], ws[1], ws[0], *_conv_3(ws[2:], 0))
        dx, *data = _conv_data(dy, w, x, w_strides=w_strides, groups=groups, c_g=c_in_g,
                               r_g=c_out_g, mode="zeros", transposed=False,
                               masked=mask is not None, **geometry)
    if need_w:
        dw, _, *weight = _conv_weight(x, dy, w, groups=groups, m_g=c_in_g, c_g=c_out_g,
                                      kernel=K, compute_w=True, bias_like=None,
                                      masked=2 * (mask is not None))
    _conv_launch(data, weight, tensors=(dy, x, w, dx, dw), **launch)
    if dw is not None:
        dw = _conv_finish(dw, w)
    if need_b:
        bias_like = torch.empty(c_out_g * groups, dtype=w.dtype, device=w.device)
        _, db, *weight = _conv_weight(dy, dy, w, groups=1, m_g=c_out_g * groups, c_g=1,
                                      kernel=K, compute_w=False, bias_like=bias_like,
                                      masked=int(mask is not None))
        _conv_launch((0, {}), weight, tensors=(dy, w, db), **launch)
        db = _conv_finish(db, bias_like)
    return dx, dw, db
