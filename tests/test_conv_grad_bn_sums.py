"""grad_conv's bn_input: the conv's data-gradient launch also gives the coefficients of the
training batch norm (and activation) that produced the conv's input, no launch of its own.
z -> batch_norm -> activation -> x -> conv -> y against PyTorch's autograd: the batch
norm's input gradient rebuilt from the coefficients, its weight and bias gradients, the
conv's own gradients, and the coefficients against grad_batch_norm_coefficients' on the
same dx; the atomic (reflect) data gradient's fallback, the GPU launch shape (many chunks,
the counter) and an sm_90 compilation without spills."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnc.report.training import triton_launches
from cnnc.runtime.grad import conv as C
from cnnc.runtime.grad import conv_bn
from cnnc.runtime.grad.norm import grad_batch_norm_coefficients

from launch_recording import Recording, grids_into

INF = float("inf")
EPS = 1e-5
CONVS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _activate(t, window):
    if window is None:
        return t
    return torch.relu(t) if window[1] == INF else F.hardtanh(t, *window)


def _close(actual, expected, what, tol):
    scale = expected.abs().max().clamp_min(1.0)
    err = ((actual.double() - expected.double()).abs().max() / scale).item()
    assert err <= tol, f"{what}: relative error {err:.2e}"


def _check(*, spatial=(6, 5), c_in=4, c_out=6, groups=1, stride=1, dilation=1,
           window=(0.0, INF), affine=True, channels_last=False, dtype=torch.float32,
           padding_mode="zeros", batch=2, needs=(True, True, True), z_strided=False):
    """Autograd (float64) against grad_conv(..., bn_input=...) in `dtype`; returns the
    launches of grad_conv. z_strided: z given in other strides than x's."""
    dims = len(spatial)
    gen = torch.Generator().manual_seed(c_in + 3 * groups + 5 * stride + dims)
    f64 = torch.float64
    z = torch.randn(batch, c_in, *spatial, generator=gen, dtype=f64) * 2 + 0.5
    gamma = torch.rand(c_in, generator=gen, dtype=f64) * 3 + 0.5  # relu6's top is reached
    beta = torch.randn(c_in, generator=gen, dtype=f64)
    w = torch.randn(c_out, c_in // groups, *(3,) * dims, generator=gen, dtype=f64)
    bias = torch.randn(c_out, generator=gen, dtype=f64)
    if channels_last:
        layout = {3: torch.channels_last, 4: torch.channels_last_3d}.get(dims + 1)
        z = z.to(memory_format=layout) if layout else z
    # the inputs rounded to dtype, then the reference in float64 from them
    z, gamma, beta, w, bias = (t.to(dtype).to(f64) for t in (z, gamma, beta, w, bias))
    leaves = [t.clone().requires_grad_(True) for t in (z, gamma, beta, w, bias)]
    zr, gr, br, wr, biasr = leaves
    xr = _activate(F.batch_norm(zr, None, None, gr if affine else None,
                                br if affine else None, training=True, eps=EPS), window)
    xr.retain_grad()
    pad = dilation  # a 3-tap kernel's "same" padding
    if padding_mode == "zeros":
        y = CONVS[dims](xr, wr, biasr, stride, pad, dilation, groups)
    else:
        y = CONVS[dims](F.pad(xr, (pad,) * 2 * dims, mode=padding_mode), wr, biasr, stride,
                        0, dilation, groups)
    r = torch.randn(y.shape, generator=gen, dtype=f64).to(dtype).to(f64)
    (y * r).sum().backward()

    # cnnc: the forward's statistics, then one launch
    dims_all = [0, *range(2, dims + 2)]
    mean = z.mean(dims_all)
    invstd = 1 / torch.sqrt(z.var(dims_all, unbiased=False) + EPS)
    work = f64 if dtype == f64 else torch.float32
    stats = torch.stack([mean, invstd]).to(work)
    x = xr.detach().to(dtype)
    zc = z.to(dtype)
    if z_strided:
        zc = zc.transpose(0, -1).contiguous().transpose(0, -1)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last) if dims == 2 else x
    weight = gamma.to(dtype) if affine else None
    with triton_launches() as launched:
        dx, dw, db, coef, dweight, dbias = C.grad_conv(
            r.to(dtype), x, w.to(dtype), stride=(stride,) * dims, pads=((pad, pad),) * dims,
            dilation=(dilation,) * dims, groups=groups, padding_mode=padding_mode,
            needs=needs, bn_input=(zc, weight, stats, window, (True, True)))
    tol, same = {f64: (1e-10, 1e-12), torch.float32: (1e-4, 1e-6),
                 torch.bfloat16: (3e-2, 1e-2)}[dtype]
    shape = (1, c_in) + (1,) * dims
    a, b, k, m = (row.view(shape).double() for row in coef)
    g = dx.double()
    if window is not None:
        g = torch.where((x.double() > window[0]) & (x.double() < window[1]), g, 0.0)
    _close(dx, xr.grad, "dx", tol)
    _close(a * g + b * (z - m) + k, zr.grad, "dz", tol)
    if needs[1]:
        _close(dw, wr.grad, "dw", tol)
        _close(db, biasr.grad, "db", tol)
    if affine:
        _close(dweight, gr.grad, "dweight", tol)
        _close(dbias, br.grad, "dbias", tol)
    else:
        assert dweight is None and dbias is None
    # the same as the batch norm's own coefficients launch on this dx (summation order)
    mask = (x, *window) if window is not None else None
    theirs = grad_batch_norm_coefficients(dx, zc, weight, stats, mask=mask)
    _close(coef, theirs[0], "coef", same)
    if affine:
        _close(dweight, theirs[1], "dweight (coefficients)", same)
        _close(dbias, theirs[2], "dbias (coefficients)", same)
    return launched


@pytest.mark.parametrize("case", [
    dict(z_strided=True),  # conv2d, stride 1, relu
    dict(stride=2, window=(0.0, 6.0), groups=2, dilation=2),
    dict(spatial=(9,), stride=2, window=None, affine=False),
    dict(spatial=(4, 5, 3), stride=2, window=(-0.5, 1.5), c_in=2, c_out=3),
    dict(stride=2, groups=4, c_out=8, channels_last=True),  # depthwise
    dict(spatial=(5, 4), stride=2, dtype=torch.float64, window=(0.0, 6.0)),
    dict(stride=2, dtype=torch.bfloat16, channels_last=True),
], ids=["2d-z-strided", "2d-stride-groups-relu6-dilated", "1d-plain-no-affine",
        "3d-hardtanh", "depthwise-channels-last", "float64", "bfloat16"])
def test_one_launch_matches_autograd(case):
    assert _check(**case) == ["_conv_grad_kernel"]


def _stats(t):
    dims = [0, *range(2, t.dim())]
    mean = t.mean(dims)
    return torch.stack([mean, 1 / torch.sqrt(t.var(dims, unbiased=False) + EPS)])


def test_a_chain_link_reads_one_batch_norm_and_sums_the_other():
    """z1 -> bn1 -> relu -> x -> conv -> z2 -> bn2 -> relu -> y, float64: one grad_conv
    launch reads dy through bn2's coefficients (mask, affine) and gives bn1's."""
    gen = torch.Generator().manual_seed(11)
    z1, w = torch.randn(2, 4, 6, 5, generator=gen), torch.randn(6, 4, 3, 3, generator=gen)
    g1, b1, g2, b2 = (torch.rand(n, generator=gen) + 0.5 for n in (4, 4, 6, 6))
    leaves = [t.double().requires_grad_(True) for t in (z1, w, g1, b1, g2, b2)]
    z1, w, g1, b1, g2, b2 = leaves
    x = torch.relu(F.batch_norm(z1, None, None, g1, b1 - 0.5, training=True, eps=EPS))
    z2 = F.conv2d(x, w, None, 2, 1)
    y = torch.relu(F.batch_norm(z2, None, None, g2, b2 - 0.5, training=True, eps=EPS))
    for t in (x, z2):
        t.retain_grad()
    r = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    (y * r).sum().backward()
    xd, z1d, z2d, yd, wd = (t.detach() for t in (x, z1, z2, y, w))
    coef2, _, _ = grad_batch_norm_coefficients(r, z2d, g2.detach(), _stats(z2d),
                                               mask=(yd, 0.0, INF))
    stats1 = _stats(z1d)
    with triton_launches() as launched:
        dx, dw, db, coef1, dg1, db1 = C.grad_conv(
            r, xd, wd, stride=(2, 2), pads=((1, 1), (1, 1)), dilation=(1, 1), groups=1,
            padding_mode="zeros", has_bias=False, mask=(yd, 0.0, INF), affine=(z2d, coef2),
            bn_input=(z1d, g1.detach(), stats1, (0.0, INF), (True, False)))
    assert launched == ["_conv_grad_kernel"] and db is None and db1 is None
    a, b, k, m = (row.view(1, 4, 1, 1) for row in coef1)
    for mine, theirs, what in ((dx, x.grad, "dx"), (dw, w.grad, "dw"), (dg1, g1.grad, "dg1"),
                               (a * torch.where(xd > 0, dx, 0.0) + b * (z1d - m) + k,
                                z1.grad, "dz1")):
        _close(mine, theirs, what, 1e-10)


def test_weight_gradient_not_needed():
    assert _check(stride=2, needs=(True, False, False)) == ["_conv_grad_kernel"]


def test_atomic_data_gradient_falls_back_to_a_second_launch():
    """Reflect padding adds border rows with atomics: the coefficients are then
    grad_batch_norm_coefficients' own launch after the conv's."""
    assert _check(stride=2, padding_mode="reflect") == ["_conv_grad_kernel",
                                                        "_norm_sum_kernel"]


def test_the_gpu_launch_shape(monkeypatch):
    """GPU tiles (64 rows, 64 columns) under the interpreter: several row tiles and stride
    phases (chunks) per channel tile and several channel tiles, so that the counter picks
    the last program of each and the chunks are added in blocks (of 8, the last partial);
    dense and depthwise."""
    monkeypatch.setattr(C, "INTERPRET", False)
    monkeypatch.setattr(conv_bn, "_CONV_BN_BLOCK", 8 * 64)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    grids = []
    monkeypatch.setattr(C, "_conv_grad_kernel", Recording(C._conv_grad_kernel, grids_into(grids)))
    for groups, c_in in ((1, 72), (72, 72)):
        grids.clear()
        _check(spatial=(12, 12), c_in=c_in, c_out=8 if groups == 1 else 72, groups=groups,
               stride=2, batch=4, needs=(True, False, False))
        # rows: 4 * 6 * 6 = 144 per phase, 3 tiles of 64 (12 chunks with the 4 phases); 72
        # channels, 2 tiles of 64
        assert grids == [(3 * 2 * 4,)], grids


SM90_CALLS = r'''
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.empty(8, 64, 28, 28, dtype=dtype).to(memory_format=cl)
        dy = torch.empty(8, 64, 14, 14, dtype=dtype).to(memory_format=cl)
        stats, gamma = torch.empty(2, 64), torch.empty(64, dtype=dtype)
        for groups in (1, 64):
            w = torch.empty(64, 64 // groups, 3, 3, dtype=dtype).to(memory_format=cl)
            relu = (torch.empty_like(x), gamma, stats, (0.0, float("inf")), (True, True))
            chain = dict(mask=(dy, 0.0, float("inf")), affine=(dy, torch.empty(4, 64)))
            for tag, bn, more in (("relu", relu, {}), ("chain", relu, chain),
                                  ("none", (torch.empty_like(x), None, stats, None,
                                            (True, True)), {})):
                tag = f"{tag} groups={groups}"
                C.grad_conv(dy, x, w, stride=(2, 2), pads=((1, 1), (1, 1)), dilation=(1, 1),
                            groups=groups, padding_mode="zeros", bn_input=bn, **more)
        # one chunk per channel tile (one row tile, stride 1): no counter, yet the kernel
        # that could take one compiles (a late layer at a small batch, UNet's bottleneck)
        tag = "one chunk"
        x1 = torch.empty(1, 64, 4, 4, dtype=dtype).to(memory_format=cl)
        w1 = torch.empty(64, 64, 3, 3, dtype=dtype).to(memory_format=cl)
        C.grad_conv(x1, x1, w1, stride=(1, 1), pads=((1, 1), (1, 1)), dilation=(1, 1),
                    groups=1, padding_mode="zeros",
                    bn_input=(torch.empty_like(x1), gamma, stats, (0.0, float("inf")),
                              (True, True)))
'''


def test_bn_sums_kernels_compile_for_sm90_without_spills():
    """The conv gradient with the batch-norm sums epilogue (alone, and in a chain link
    that also reads dy through its output's batch norm), GPU launch shape (split weight
    gradient, many chunks), compiles for sm_90 with no register spill. Without bn_input
    the kernels are today's (fp32 128 / 137 registers, bf16 93 / 124: dense / depthwise)."""
    from test_grad_conv import sm90_launches

    launches = sm90_launches(SM90_CALLS)
    grads = [e for e in launches if e["function"] == "_conv_grad_kernel"]
    assert len(grads) == 2 * (2 * 3 + 1)
    assert not [e for e in launches if e["error"]]
    assert not [e for e in launches if e["spill_bytes"]], launches
    for e in grads:  # registers per thread, with and without the epilogue (pytest -s)
        print(e["dtype"], e["tag"], e["registers"])


DEPTHWISE_CALLS = r'''
    for dtype in (torch.float32, torch.bfloat16):
        for c in (58, 116):  # ShuffleNetV2 x1.0's branch widths: channels-last rows of
            # 58 elements, loaded in narrow pieces
            x = torch.empty(2, c, 28, 28, dtype=dtype).to(memory_format=cl)
            dy = torch.empty(2, c, 14, 14, dtype=dtype).to(memory_format=cl)
            w = torch.empty(c, 1, 3, 3, dtype=dtype).to(memory_format=cl)
            relu = (torch.empty_like(x), torch.empty(c, dtype=dtype), torch.empty(2, c),
                    (0.0, float("inf")), (True, True))
            for tag, bn in (("bn", relu), ("plain", None)):
                tag = f"{tag} c={c}"
                C.grad_conv(dy, x, w, stride=(2, 2), pads=((1, 1), (1, 1)), dilation=(1, 1),
                            groups=c, padding_mode="zeros", bn_input=bn)
'''


def test_depthwise_gradients_of_unaligned_channels_compile_for_sm90_without_spills():
    """A depthwise conv gradient over a channel count that is not a multiple of 16 runs
    8 warps: with 4, its data and weight tiles took 255 registers and spilled 160 bytes
    (ShuffleNetV2_x1_0's training step, inspect --backward at sm_90)."""
    from test_grad_conv import sm90_launches

    grads = [e for e in sm90_launches(DEPTHWISE_CALLS) if e["function"] == "_conv_grad_kernel"]
    assert len(grads) == 2 * 2 * 2
    assert not [e for e in grads if e["error"] or e["spill_bytes"]], grads
    assert {e["num_warps"] for e in grads} == {8}
