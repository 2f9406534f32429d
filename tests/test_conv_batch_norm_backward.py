"""A conv and the training batch norm reading its output are one autograd unit whose
backward is two launches: the batch norm's sums, turned into per-channel coefficients by
the same launch (grad_batch_norm_coefficients), then the conv's gradient reading dy
through them (grad_conv's affine=(z, coef)), no input gradient of the batch norm written.
Kernels against float64 autograd; compiled networks (ResNet-style blocks, no affine,
momentum none, channels-last, the GPU's chunked launch shape) against cnnc.reference and
autograd."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

import cnnc
from cnnc.report.training import triton_launches
from cnnc.runtime.grad import norm as N
from cnnc.runtime.grad.conv import grad_conv

from compile_helpers import assert_close_to_scale
from launch_recording import Recording, grids_into

INF = float("inf")


def _autograd(x, cw, cb, w, b, *, groups, stride, window, residual):
    """PyTorch's conv -> batch norm (batch statistics) -> (add residual) -> activation."""
    z = F.conv2d(x, cw, cb, stride=stride, padding=1, groups=groups)
    y = F.batch_norm(z, None, None, w, b, training=True, eps=1e-5)
    if residual is not None:
        y = y + residual
    if window is not None:
        y = torch.clamp(y, window[0], window[1]) if window[1] != INF else torch.relu(y)
    return z, y


def _stats(z, eps=1e-5):
    mean = z.mean((0, 2, 3))
    return torch.stack([mean, 1 / torch.sqrt(z.var((0, 2, 3), unbiased=False) + eps)])


def _check_pair(*, groups=1, window=(0.0, INF), residual=False, affine=True,
                channels_last=False, shape=(2, 4, 5, 6), c_out=8, stride=2):
    g = torch.Generator().manual_seed(groups + 7 * residual + 3 * affine)
    dt = torch.float64
    n, c_in = shape[:2]
    x = torch.randn(shape, generator=g, dtype=dt)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    cw = torch.randn(c_out, c_in // groups, 3, 3, generator=g, dtype=dt, requires_grad=True)
    cb = torch.randn(c_out, generator=g, dtype=dt, requires_grad=True)
    w = (torch.rand(c_out, generator=g, dtype=dt) + 0.5).requires_grad_(affine)
    b = torch.randn(c_out, generator=g, dtype=dt).requires_grad_(affine)
    z0 = F.conv2d(x.detach(), cw.detach(), stride=stride, padding=1, groups=groups)
    r = torch.randn(z0.shape, generator=g, dtype=dt, requires_grad=True) if residual else None
    z, y = _autograd(x, cw, cb, w if affine else None, b if affine else None, groups=groups,
                     stride=stride, window=window, residual=r)
    dy = torch.randn(y.shape, generator=g, dtype=dt)
    y.backward(dy)
    mask = (y.detach(), *window) if window is not None else None
    masked = torch.full_like(dy, float("nan")) if residual else None
    coef, dw, db = N.grad_batch_norm_coefficients(
        dy, z.detach(), w.detach() if affine else None, _stats(z.detach()), mask=mask,
        masked_out=masked)
    dx, dcw, dcb = grad_conv(dy, x.detach(), cw.detach(), stride=(stride, stride),
                             pads=((1, 1), (1, 1)), dilation=(1, 1), groups=groups,
                             padding_mode="zeros", mask=mask, affine=(z.detach(), coef))
    pairs = [(dx, x.grad), (dcw, cw.grad), (dcb, cb.grad)]
    pairs += [(dw, w.grad), (db, b.grad)] if affine else [(dw, None), (db, None)]
    if residual:
        pairs.append((masked, r.grad))
    for mine, theirs in pairs:
        if theirs is None:
            assert mine is None
        else:
            torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-9)
    return coef


@pytest.mark.parametrize("groups", [1, 2, 4])  # 4: one input channel per group (depthwise)
@pytest.mark.parametrize("window", [(0.0, INF), (0.0, 6.0), None])
def test_the_pair_backward_matches_autograd(groups, window):
    _check_pair(groups=groups, window=window)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_residual_and_no_affine_and_channels_last(affine, channels_last):
    _check_pair(residual=True, affine=affine, channels_last=channels_last)


class _Pair(torch.autograd.Function):
    """PyTorch's conv -> batch norm -> relu6 (+ residual before it) forward with the pair's
    two-launch backward, for gradcheck."""

    @staticmethod
    def forward(ctx, x, cw, cb, w, b, r):
        with torch.enable_grad():
            z = F.conv2d(x, cw, cb, padding=1)
        y = torch.clamp(F.batch_norm(z, None, None, w, b, training=True, eps=1e-5) + r, 0, 6)
        ctx.save_for_backward(x, cw, w, z.detach(), y)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, cw, w, z, y = ctx.saved_tensors
        masked = torch.empty_like(dy)
        mask = (y, 0.0, 6.0)
        coef, dw, db = N.grad_batch_norm_coefficients(dy, z, w, _stats(z), mask=mask,
                                                      masked_out=masked)
        dx, dcw, dcb = grad_conv(dy, x, cw, stride=(1, 1), pads=((1, 1), (1, 1)),
                                 dilation=(1, 1), groups=1, padding_mode="zeros", mask=mask,
                                 affine=(z, coef))
        return dx, dcw, dcb, dw, db, masked


def test_float64_gradcheck():
    g = torch.Generator().manual_seed(4)
    t = dict(dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64).requires_grad_()
    args = (x, torch.randn(3, 2, 3, 3, generator=g, **t), torch.randn(3, generator=g, **t),
            (torch.rand(3, generator=g, dtype=torch.float64) + 0.5).requires_grad_(),
            torch.randn(3, generator=g, **t), torch.randn(2, 3, 3, 3, generator=g, **t))
    assert torch.autograd.gradcheck(_Pair.apply, args, eps=1e-6, atol=1e-5)


def test_coefficients_alone_and_their_needs():
    """needs=(False, True): dweight not returned; an empty batch gives zero sums."""
    z, dy = torch.randn(3, 5, 4, dtype=torch.float64), torch.randn(3, 5, 4, dtype=torch.float64)
    w = torch.rand(5, dtype=torch.float64) + 0.5
    stats = torch.stack([z.mean((0, 2)), 1 / torch.sqrt(z.var((0, 2), unbiased=False) + 1e-5)])
    coef, dw, db = N.grad_batch_norm_coefficients(dy, z, w, stats, needs=(False, True))
    assert dw is None
    torch.testing.assert_close(db, dy.sum((0, 2)))
    torch.testing.assert_close(coef[0], w * stats[1])
    torch.testing.assert_close(coef[3], stats[0])
    empty = torch.empty(0, 5, 4, dtype=torch.float64)
    coef, dw, db = N.grad_batch_norm_coefficients(empty, empty, w, stats)
    assert not coef.any() and not dw.any() and not db.any()
    with pytest.raises(ValueError):
        N.grad_batch_norm_coefficients(dy, z[:, :4], w, stats)


def test_split_chunks_reduce_in_the_last_program(monkeypatch):
    """The GPU launch shape: several chunks of rows and channel blocks; the last chunk of
    each block to arrive (a counter) adds the chunks' partials and writes the block's
    coefficients."""
    monkeypatch.setattr(N, "INTERPRET", False)
    monkeypatch.setattr(N, "_NORM_TILE", 64)
    monkeypatch.setattr(N, "_NORM_CHANNELS", 4)
    grids = []
    monkeypatch.setattr(N, "_norm_sum_kernel", Recording(N._norm_sum_kernel, grids_into(grids)))
    _check_pair(shape=(8, 4, 10, 12), c_out=8, residual=True)
    assert grids == [(2, 2)]  # 2 channel blocks of 4; 240 rows (16 a tile): 2 chunks


# ------------------------------------------------------------------ compiled networks

BLOCKS = """
network Blocks {
    input x: [N, 4, 8, 8]
    a = x -> conv2d(8, 3, padding=1, bias=false) -> batch_norm -> relu
    b = a -> conv2d(8, 3, padding=1, bias=false) -> batch_norm -> add(a) -> relu
    c = b -> conv2d(16, 3, stride=2, padding=1, bias=false) -> batch_norm -> relu
    c2 = c -> conv2d(16, 3, padding=1, bias=false) -> batch_norm
    down = b -> conv2d(16, 1, stride=2, bias=false) -> batch_norm
    d = c2 -> add(down) -> relu
    e = d -> conv2d(8, 1) -> batch_norm(affine=false, momentum=none) -> relu6
    f = e -> conv2d(8, 1) -> batch_norm
    output f
}
"""


def _pair(source, **kwargs):
    net = cnnc.compile(source=source, **kwargs).train()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.is_floating_point() and t.dim() == 1:
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if "weight" in name or "var"
                        in name else torch.randn(t.shape, generator=g))
    ref = cnnc.reference(source=source).train()
    ref.load_state_dict(net.state_dict())
    return net, ref


def _close(actual, expected, what, tol=2e-4):
    assert_close_to_scale(actual, expected, what, tol)


def _step(net, ref, x, steps=2):
    g = torch.Generator().manual_seed(5)
    for step in range(steps):
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya, yb = net(xa), ref(xb)
        _close(ya.detach(), yb.detach(), "output")
        weight = torch.randn(yb.shape, generator=g)
        with triton_launches() as launched:
            (ya * weight).sum().backward()
        (yb * weight).sum().backward()
        _close(xa.grad, xb.grad, "input gradient")
        mine = dict(net.named_parameters())
        for name, p in ref.named_parameters():
            _close(mine[name].grad, p.grad, f"{name} gradient")
            mine[name].grad = p.grad = None
        theirs = ref.state_dict()
        for name, t in net.state_dict().items():
            if t.is_floating_point():
                _close(t, theirs[name], f"{name} after step {step}")
    return launched


def _blocks_step(source, shape, seed, channels_last):
    """(net, launches of its backward): two steps of `source` against the reference on a
    random input of `shape`, NCHW or channels-last."""
    net, ref = _pair(source)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return net, _step(net, ref, x)


@pytest.mark.parametrize("channels_last", [False, True])
def test_resnet_style_blocks_match_autograd(channels_last):
    net, launched = _blocks_step(BLOCKS, (2, 4, 8, 8), 1, channels_last)
    rows = net.backward_plan
    paired = [row for row in rows if row["kernels"][:1] == ["grad_batch_norm_coefficients"]]
    # every conv with its batch norm; c -> c2 and e -> f chained (test_conv_chain_backward)
    assert len(paired) == 5 and len(rows) == 5, rows
    assert sum(len(row["kernels"]) - 1 for row in rows) == 7
    assert launched.count("_norm_apply_kernel") == 0
    assert launched.count("_norm_sum_kernel") == 5
    assert launched.count("_conv_grad_kernel") == 7


def test_one_pair_backward_is_two_launches():
    source = ("network T { input x: [N, 3, 6, 5] "
              "y = x -> conv2d(8, 3, padding=1) -> batch_norm -> relu output y }")
    net, ref = _pair(source)
    launched = _step(net, ref, torch.randn(2, 3, 6, 5), steps=1)
    assert launched == ["_norm_sum_kernel", "_conv_grad_kernel"]
    assert [row["kernels"] for row in net.backward_plan] == [
        ["grad_batch_norm_coefficients", "grad_conv"]]


def test_the_gpu_launch_shape(monkeypatch):
    """As launched on a GPU (INTERPRET false, small tiles): the conv's partials in several
    tiles of rows, the batch norm's sums in several chunks per channel block."""
    net, ref = _pair(BLOCKS)
    module = sys.modules[type(net).__module__]
    monkeypatch.setattr(module, "INTERPRET", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # the interpreter's dot
    monkeypatch.setattr(module, "PLANS", {})
    monkeypatch.setattr(module, "_NORM_TILE", 64)
    monkeypatch.setattr(module, "_NORM_CHANNELS", 4)
    monkeypatch.setitem(module.CONFIGS, "batch_norm", [dict(BLOCK=32, num_warps=4,
                                                            num_stages=1)])
    monkeypatch.setitem(module.CONFIGS, "conv", [dict(BLOCK_M=16, BLOCK_N=16, K_BYTES=64,
                                                      SPLIT_K=1, num_warps=4, num_stages=1)])
    grids = []
    monkeypatch.setattr(module, "_norm_sum_kernel",
                        Recording(module._norm_sum_kernel, grids_into(grids)))
    _step(net, ref, torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(2)),
          steps=1)
    assert len(grids) == 5 and max(chunks for _, chunks in grids) > 1, grids


PAIR_SM90_CALLS = r'''
    import cnnc.runtime.grad.norm as N
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.empty(8, 64, 28, 28, dtype=dtype).to(memory_format=cl)
        z = torch.empty(8, 64, 14, 14, dtype=dtype).to(memory_format=cl)
        dy, w, stats = torch.empty_like(z), torch.empty(64, dtype=dtype), torch.empty(2, 64)
        coef, _, _ = N.grad_batch_norm_coefficients(dy, z, w, stats,
                                                    mask=(z, 0.0, float("inf")))
        N.grad_batch_norm_coefficients(dy, z, None, stats, mask=(z, 0.0, 6.0),
                                       masked_out=torch.empty_like(z))
        for groups in (1, 64):
            cw = torch.empty(64, 64 // groups, 3, 3, dtype=dtype).to(memory_format=cl)
            for mask in (None, (z, 0.0, float("inf"))):
                C.grad_conv(dy, x, cw, stride=(2, 2), pads=((1, 1), (1, 1)), dilation=(1, 1),
                            groups=groups, padding_mode="zeros", mask=mask, affine=(z, coef))
'''


def test_pair_kernels_compile_for_sm90():
    """The coefficients' sum kernel and the conv gradient reading through them, with their
    GPU launch shapes (split chunks, split weight gradient), compile for sm_90 without a
    GPU; the bf16 ones do not spill."""

    from test_grad_conv import sm90_launches

    launches = sm90_launches(PAIR_SM90_CALLS)
    assert {entry["function"] for entry in launches} == {
        "_norm_sum_kernel", "_conv_grad_kernel", "_conv_cast_kernel"}  # bf16 split sums
    assert len([e for e in launches if e["function"] == "_conv_grad_kernel"]) == 2 * 4
    assert not [entry for entry in launches if entry["error"]]
    assert not [entry for entry in launches
                if entry["dtype"] == "torch.bfloat16" and entry["spill_bytes"]]
