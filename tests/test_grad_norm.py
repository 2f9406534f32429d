"""Backward kernels of batch norm (cnnc/runtime/grad/norm.py) against torch.autograd of
F.batch_norm, in training mode (batch statistics, given or recomputed) and eval mode."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import cnnc  # noqa: F401  (sets TRITON_INTERPRET before triton is imported)
from cnnc.runtime.grad import norm
from cnnc.runtime.grad.norm import grad_batch_norm, grad_batch_norm_eval

EXAMPLES = settings(max_examples=15, deadline=None)
BANNED = re.compile(r"conv|mm|matmul|pool|batch_norm|softmax|upsample|sum|mean|var|sqrt|mul"
                    r"|add|sub|div")


@st.composite
def cases(draw):
    rank = draw(st.integers(2, 5))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 5)),
             *(draw(st.integers(1, 4)) for _ in range(rank - 2)))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    shift = draw(st.sampled_from([0.0, 5.0]))  # a mean far from 0
    x = torch.randn(shape, generator=g) * 2 + shift
    layout = draw(st.sampled_from(["contiguous", "channels_last", "strided"]))
    if layout == "channels_last" and rank in (4, 5):
        x = x.to(memory_format={4: torch.channels_last, 5: torch.channels_last_3d}[rank])
    elif layout == "strided":
        x = torch.cat([x, x], dim=0)[::2]
    affine = draw(st.booleans())
    w = torch.rand(shape[1], generator=g) + 0.5 if affine else None
    b = torch.randn(shape[1], generator=g) if affine else None
    needs = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.1]))
    return x, w, b, needs, eps, g


def _autograd(x, w, b, eps, training, running=None):
    xr = x.detach().clone().requires_grad_()
    wr = None if w is None else w.detach().clone().requires_grad_()
    br = None if b is None else b.detach().clone().requires_grad_()
    rm, rv = running if running is not None else (None, None)
    y = F.batch_norm(xr, rm, rv, wr, br, training=training, eps=eps)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
    y.backward(dy)
    return dy, (xr.grad, None if wr is None else wr.grad, None if br is None else br.grad)


def _same(got, expected, needs, x, affine, tol=dict(rtol=1e-4, atol=1e-5)):
    for flag, a, e, name in zip(needs, got, expected, ("dx", "dweight", "dbias")):
        if not flag or (name != "dx" and not affine):
            assert a is None, name
            continue
        assert a.dtype == e.dtype
        scale = max(float(e.abs().max()), 1.0) if e.numel() else 1.0
        torch.testing.assert_close(a, e, rtol=tol["rtol"], atol=tol["atol"] * scale, msg=name)
    if needs[0]:
        assert got[0].stride() == torch.empty_like(x).stride()  # the input's layout


@EXAMPLES
@given(case=cases(), given_stats=st.booleans(), chunks=st.sampled_from([None, 3]))
def test_training_batch_norm_backward_matches_autograd(case, given_stats, chunks):
    x, w, b, needs, eps, _ = case
    assume(x.numel() > x.shape[1])  # PyTorch wants more than one value per channel
    dy, expected = _autograd(x, w, b, eps, training=True)
    stats = {}
    if given_stats:
        dims = [d for d in range(x.dim()) if d != 1]
        var = x.var(dim=dims, unbiased=False)
        stats = dict(stats=torch.stack([x.mean(dim=dims), 1 / torch.sqrt(var + eps)]))
    original = norm._norm_chunks
    if chunks:  # the GPU's split of the rows into chunks, under the interpreter
        norm._norm_chunks = lambda rows, block_r, c_blocks: chunks
    try:
        got = grad_batch_norm(dy, x, w, eps=eps, needs=needs, **stats)
    finally:
        norm._norm_chunks = original
    _same(got, expected, needs, x, w is not None)


@EXAMPLES
@given(case=cases())
def test_eval_batch_norm_backward_matches_autograd(case):
    x, w, b, needs, eps, g = case
    running = (torch.randn(x.shape[1], generator=g), torch.rand(x.shape[1], generator=g) + 0.2)
    dy, expected = _autograd(x, w, b, eps, training=False, running=running)
    got = grad_batch_norm_eval(dy, x, w, *running, eps=eps, needs=needs)
    _same(got, expected, needs, x, w is not None)


def test_bfloat16_training_batch_norm():
    x = (torch.randn(4, 6, 5, 5) * 3 + 2).to(torch.bfloat16).to(memory_format=torch.channels_last)
    w, b = torch.rand(6).bfloat16() + 0.5, torch.randn(6).bfloat16()
    dy, expected = _autograd(x, w, b, 1e-5, training=True)
    got = grad_batch_norm(dy.bfloat16(), x, w, eps=1e-5)
    _same(got, expected, (True, True, True), x, True, dict(rtol=3e-2, atol=3e-2))


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_no_aten_compute_in_batch_norm_backward(mode):
    x = torch.randn(2, 4, 3, 3).to(memory_format=torch.channels_last)
    dy, w, rm, rv = torch.randn(2, 4, 3, 3), torch.rand(4), torch.randn(4), torch.rand(4) + 1
    with _Recorder() as rec:
        if mode == "train":
            grad_batch_norm(dy, x, w, eps=1e-5)
        else:
            grad_batch_norm_eval(dy, x, w, rm, rv, eps=1e-5)
    assert rec.calls, "the recorder saw nothing"
    assert not [c for c in rec.calls if BANNED.search(c)], rec.calls


def test_float64_gradcheck():
    x = torch.randn(3, 2, 2, 3, dtype=torch.float64).to(memory_format=torch.channels_last)
    w = torch.rand(2, dtype=torch.float64) + 0.5
    b = torch.randn(2, dtype=torch.float64)

    class BatchNorm(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, b):  # PyTorch's forward: the numerical reference
            ctx.save_for_backward(x, w)
            return F.batch_norm(x, None, None, w, b, training=True, eps=1e-5)

        @staticmethod
        def backward(ctx, dy):
            x, w = ctx.saved_tensors
            return grad_batch_norm(dy, x, w, eps=1e-5)

    args = tuple(t.requires_grad_() for t in (x, w, b))
    assert torch.autograd.gradcheck(BatchNorm.apply, args, fast_mode=True)


def _folded_reference(x, w, b, r, window, eps, dtype):
    """PyTorch autograd of activation(batch_norm(x) [+ r]) in `dtype`: dy at the
    activation's output, and the gradients of x, weight, bias and r."""
    leaves = [t.detach().to(dtype).requires_grad_() for t in (x, w, b, r)]
    xr, wr, br, rr = leaves
    z = F.batch_norm(xr, None, None, wr, br, training=True, eps=eps) + rr
    lo, hi = window
    y = torch.relu(z) if hi == float("inf") else F.hardtanh(z, lo, hi)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(5), dtype=dtype)
    y.backward(dy)
    return y.detach(), dy, [t.grad for t in leaves]


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), window=st.sampled_from([(0.0, float("inf")), (0.0, 6.0),
                                                           (-1.0, 1.0)]),
       channels_last=st.booleans(), chunks=st.sampled_from([None, 2]),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_kept_statistics_and_a_folded_activation_match_float64_autograd(
        seed, window, channels_last, chunks, dtype):
    """grad_batch_norm(stats=, mask=, masked_out=) against float64 autograd of
    activation(batch_norm(x) + r): dx, dweight, dbias and r's gradient (masked_out)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, 4, 3, generator=g, dtype=torch.float64) * 2 + 1
    w = torch.rand(5, generator=g, dtype=torch.float64) + 0.5
    b = torch.randn(5, generator=g, dtype=torch.float64)
    r = torch.randn(3, 5, 4, 3, generator=g, dtype=torch.float64)
    y, dy, truth = _folded_reference(x, w, b, r, window, 1e-5, torch.float64)
    var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
    stats = torch.stack([mean, 1 / torch.sqrt(var + 1e-5)]).to(dtype)
    if channels_last:  # the forward's layout for y, another for dy
        x, y = (t.to(memory_format=torch.channels_last) for t in (x, y))
    x, w, y, dy = (t.to(dtype) for t in (x, w, y, dy))
    masked = torch.empty_like(dy)
    original = norm._norm_chunks
    if chunks:
        norm._norm_chunks = lambda rows, block_r, c_blocks: chunks
    try:
        got = grad_batch_norm(dy, x, w, eps=1e-5, stats=stats, mask=(y, *window),
                              masked_out=masked)
    finally:
        norm._norm_chunks = original
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for name, a, e in zip(("dx", "dweight", "dbias", "dr"), (*got, masked), truth):
        assert a.dtype == dtype, name
        err = (a.double() - e).abs().max() / e.abs().max().clamp_min(1e-12)
        assert err <= tol, (name, float(err))


def test_kept_statistics_take_two_launches_and_recomputed_ones_three():
    from cnnc.report.training import triton_launches

    x = torch.randn(2, 4, 3, 3)
    dy, w = torch.randn(2, 4, 3, 3), torch.rand(4)
    var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
    stats = torch.stack([mean, 1 / torch.sqrt(var + 1e-5)])
    y = torch.relu(torch.randn(2, 4, 3, 3))
    with triton_launches() as kept:
        grad_batch_norm(dy, x, w, eps=1e-5, stats=stats, mask=(y, 0.0, float("inf")),
                        masked_out=torch.empty_like(dy))
    with triton_launches() as recomputed:
        grad_batch_norm(dy, x, w, eps=1e-5)
    assert kept == ["_norm_sum_kernel", "_norm_apply_kernel"]
    assert recomputed == ["_norm_sum_kernel", "_norm_sum_kernel", "_norm_apply_kernel"]


def test_masked_out_alone_is_written():
    """No parameter or input gradient wanted, only the residual's: dz still comes back."""
    x, dy = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    y = torch.randn(2, 3, 4)
    masked = torch.full_like(dy, float("nan"))
    got = grad_batch_norm(dy, x, torch.rand(3), eps=1e-5, needs=(False, False, False),
                          mask=(y, 0.0, 6.0), masked_out=masked)
    assert got == (None, None, None)
    torch.testing.assert_close(masked, torch.where((y <= 0) | (y >= 6), 0.0, dy))


NORM_SM90_CALLS = r'''
    import cnnc.runtime.grad.norm as N
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.empty(8, 64, 28, 28, dtype=dtype).to(memory_format=torch.channels_last)
        dy, w, stats = torch.empty_like(x), torch.empty(64, dtype=dtype), torch.empty(2, 64)
        N.grad_batch_norm(dy, x, w, eps=1e-5)
        N.grad_batch_norm(dy, x, w, eps=1e-5, stats=stats, mask=(x, 0.0, float("inf")))
        N.grad_batch_norm(dy, x, w, eps=1e-5, stats=stats, mask=(x, 0.0, 6.0),
                          masked_out=torch.empty_like(x))
        N.grad_batch_norm_eval(dy, x, w, stats[0], stats[1], eps=1e-5)
'''


def test_backward_kernels_compile_for_sm90():
    """Every variant (statistics recomputed or kept, a folded activation with one or two
    bounds, masked_out, eval) with its GPU launch shape compiles for sm_90 without a GPU,
    and the bf16 ones (training's dtype) do not spill."""

    from test_grad_conv import sm90_launches

    # test_grad_conv's harness (sm_90 JIT, one JSON line per launch), then these calls
    launches = sm90_launches(NORM_SM90_CALLS, cut="    C._CONV_FORCE_SPLITS")
    assert {entry["function"] for entry in launches} == {"_norm_sum_kernel",
                                                          "_norm_apply_kernel"}
    assert len(launches) == 2 * (3 + 2 + 2 + 2)
    assert not [entry for entry in launches if entry["error"]]
    assert not [entry for entry in launches
                if entry["dtype"] == "torch.bfloat16" and entry["spill_bytes"]]
