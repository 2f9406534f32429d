"""Backward kernels of the pools (cnnc/runtime/grad/pool.py) against torch.autograd of
the ops' own reference (PyTorch's pooling), over every option, 1/2/3-d, contiguous and
channels-last, ties and NaN for the arg-max."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import cnnc  # noqa: F401  (sets TRITON_INTERPRET before triton is imported)
from cnnc.ops import OPS
from cnnc.ops.adaptive_pool import AdaptivePoolAttrs
from cnnc.ops.arithmetic import pool_output_size
from cnnc.ops.pool import AvgPoolAttrs, MaxPoolAttrs
from cnnc.runtime.grad.pool import (
    grad_adaptive_avg_pool,
    grad_adaptive_max_pool,
    grad_avg_pool,
    grad_max_pool,
)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, on NaN

EXAMPLES = settings(max_examples=15, deadline=None)
# ATen compute a backward kernel must not call (allocation, views and Triton only).
BANNED = re.compile(r"conv|mm|matmul|pool|batch_norm|softmax|upsample|interp|dropout|sum|mean"
                    r"|index|scatter|gather|where|mul|add|div")


def _layout(x: torch.Tensor, how: str) -> torch.Tensor:
    if how == "channels_last":
        fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
        if fmt is not None:
            return x.to(memory_format=fmt)
        return x.transpose(1, 2).contiguous().transpose(1, 2)  # 1-d: channels innermost
    if how == "strided":
        return torch.cat([x, x], dim=-1)[..., ::2]  # a non-contiguous view
    return x.contiguous()


def _values(draw, shape, kind, minus_inf=True):
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    if kind == "ties":  # few distinct values: ties inside windows
        return torch.randint(-1, 2, shape, generator=g).float()
    x = torch.randn(shape, generator=g)
    if kind == "special":
        flat = x.view(-1)
        specials = (math.nan, math.nan, math.inf) + (-math.inf, -math.inf) * minus_inf
        for value in specials:
            flat[int(torch.randint(0, flat.numel(), (1,), generator=g))] = value
    return x


def _compare(op_name, attrs, x, launcher, tol=dict(rtol=1e-4, atol=1e-5), **kw):
    xr = x.detach().clone().requires_grad_()
    y = OPS[op_name].reference(attrs, [xr], {}, True)
    g = torch.Generator().manual_seed(1)
    dy = torch.randn(y.shape, generator=g).to(x.dtype)
    y.backward(dy)
    dx = launcher(dy, x, **kw)
    assert dx.shape == x.shape and dx.dtype == x.dtype
    assert dx.stride() == xr.grad.stride() or dx.stride() == torch.empty_like(x).stride()
    torch.testing.assert_close(dx.float(), xr.grad.float(), equal_nan=True, **tol)


@st.composite
def pools(draw, kind):
    dims = draw(st.integers(1, 3))
    k = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    s = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    p = tuple(draw(st.integers(0, kk // 2)) for kk in k)
    d = tuple(draw(st.integers(1, 2)) for _ in range(dims)) if kind == "max" else (1,) * dims
    ceil = draw(st.booleans())
    sizes = tuple(draw(st.integers(1, 6)) for _ in range(dims))
    for size, kk, ss, pp, dd in zip(sizes, k, s, p, d):
        assume(pool_output_size(size, kk, ss, pp, dd, ceil) >= 1)
        assume(kind == "max" or dims < 3 or size >= kk)  # avg_pool3d: window fits unpadded
        # Every window reaches the input (else PyTorch's arg-max points outside it).
        out = pool_output_size(size, kk, ss, pp, dd, ceil)
        assume(all(any(0 <= o * ss - pp + j * dd < size for j in range(kk)) for o in range(out)))
    shape = (2, draw(st.integers(1, 3)), *sizes)
    layout = draw(st.sampled_from(["contiguous", "channels_last", "strided"]))
    values = draw(st.sampled_from(["randn", "ties", "special"] if kind == "max"
                                  else ["randn", "special"]))
    # PyTorch's channels-last max_pool3d misroutes the gradient of a window of -inf (its
    # contiguous path gives it to the window's first element, as cnnc does).
    odd = kind == "max" and dims == 3 and layout == "channels_last"
    x = _layout(_values(draw, shape, values, minus_inf=not odd), layout)
    if kind == "max":
        return dims, MaxPoolAttrs(k, s, p, d, ceil), x
    include = draw(st.booleans())
    override = draw(st.one_of(st.none(), st.integers(1, 7)))
    return dims, AvgPoolAttrs(k, s, p, ceil, include, override), x


@EXAMPLES
@given(case=pools("max"))
def test_max_pool_backward_matches_autograd(case):
    dims, a, x = case
    _compare(f"max_pool{dims}d", a, x, grad_max_pool, kernel_size=a.kernel_size,
             stride=a.stride, padding=a.padding, dilation=a.dilation, ceil_mode=a.ceil_mode)


@EXAMPLES
@given(case=pools("avg"))
def test_avg_pool_backward_matches_autograd(case):
    dims, a, x = case
    _compare(f"avg_pool{dims}d", a, x, grad_avg_pool, kernel_size=a.kernel_size,
             stride=a.stride, padding=a.padding, ceil_mode=a.ceil_mode,
             count_include_pad=a.count_include_pad, divisor_override=a.divisor_override)


@st.composite
def adaptive(draw):
    dims = draw(st.integers(1, 3))
    sizes = tuple(draw(st.integers(1, 7)) for _ in range(dims))
    out = tuple(draw(st.one_of(st.none(), st.integers(1, 8))) for _ in range(dims))
    shape = (2, draw(st.integers(1, 3)), *sizes)
    layout = draw(st.sampled_from(["contiguous", "channels_last", "strided"]))
    values = draw(st.sampled_from(["randn", "ties", "special"]))
    return dims, AdaptivePoolAttrs(out), _layout(_values(draw, shape, values), layout)


@EXAMPLES
@given(case=adaptive(), kind=st.sampled_from(["avg", "max"]))
def test_adaptive_pool_backward_matches_autograd(case, kind):
    dims, a, x = case
    launcher = grad_adaptive_avg_pool if kind == "avg" else grad_adaptive_max_pool
    _compare(f"adaptive_{kind}_pool{dims}d", a, x, launcher, output_size=a.output_size)


def test_max_pool_picks_pytorchs_element_among_ties_nan_and_minus_inf():
    # One window each: ties (the first wins), two NaN (the last wins), all -inf (the first).
    x = torch.tensor([[[1.0, 3.0, 3.0, 2.0], [math.nan, 1.0, math.nan, 5.0],
                       [-math.inf, -math.inf, -math.inf, -math.inf]]])
    a = MaxPoolAttrs((4,), (4,), (0,), (1,), False)
    _compare("max_pool1d", a, x, grad_max_pool, kernel_size=(4,), stride=(4,), padding=(0,),
             dilation=(1,), ceil_mode=False)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_bfloat16_pools(kind):
    x = torch.randn(2, 3, 7, 6).to(torch.bfloat16).to(memory_format=torch.channels_last)
    loose = dict(rtol=2e-2, atol=2e-2)
    if kind == "max":
        _compare("max_pool2d", MaxPoolAttrs((3, 3), (2, 2), (1, 1), (1, 1), True), x,
                 grad_max_pool, loose, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1),
                 dilation=(1, 1), ceil_mode=True)
    else:
        _compare("avg_pool2d", AvgPoolAttrs((3, 2), (2, 1), (1, 1), True, False, None), x,
                 grad_avg_pool, loose, kernel_size=(3, 2), stride=(2, 1), padding=(1, 1),
                 ceil_mode=True, count_include_pad=False, divisor_override=None)


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append(str(func))
        return func(*args, **(kwargs or {}))


def test_no_aten_compute_in_pool_backward():
    x = torch.randn(2, 3, 6, 5).to(memory_format=torch.channels_last)
    dy = torch.randn(2, 3, 3, 3)
    with _Recorder() as rec:
        grad_max_pool(dy, x, kernel_size=(2, 2), stride=(2, 2), padding=(1, 1),
                      dilation=(1, 1), ceil_mode=True)
        grad_avg_pool(dy, x, kernel_size=(2, 2), stride=(2, 2), padding=(1, 1), ceil_mode=True,
                      count_include_pad=True, divisor_override=None)
        grad_adaptive_avg_pool(dy, x, output_size=(3, 3))
        grad_adaptive_max_pool(dy, x, output_size=(3, 3))
    assert rec.calls, "the recorder saw nothing"
    assert not [c for c in rec.calls if BANNED.search(c)], rec.calls


def _function(forward, backward):
    """forward (PyTorch's, the numerical reference) with cnnc's backward, for gradcheck."""

    class Pool(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return forward(x)

        @staticmethod
        def backward(ctx, dy):
            return backward(dy, ctx.saved_tensors[0])

    return Pool.apply


@pytest.mark.parametrize("kind", ["max", "avg", "adaptive_avg", "adaptive_max"])
def test_float64_gradcheck(kind):
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64).to(memory_format=torch.channels_last)
    F = torch.nn.functional
    cases = {
        "max": (lambda t: F.max_pool2d(t, 3, 2, 1, 2, ceil_mode=True),
                lambda dy, t: grad_max_pool(dy, t, kernel_size=(3, 3), stride=(2, 2),
                                            padding=(1, 1), dilation=(2, 2), ceil_mode=True)),
        "avg": (lambda t: F.avg_pool2d(t, 3, 2, 1, True, False, None),
                lambda dy, t: grad_avg_pool(dy, t, kernel_size=(3, 3), stride=(2, 2),
                                            padding=(1, 1), ceil_mode=True,
                                            count_include_pad=False, divisor_override=None)),
        "adaptive_avg": (lambda t: F.adaptive_avg_pool2d(t, (3, 3)),
                         lambda dy, t: grad_adaptive_avg_pool(dy, t, output_size=(3, 3))),
        "adaptive_max": (lambda t: F.adaptive_max_pool2d(t, (3, 3)),
                         lambda dy, t: grad_adaptive_max_pool(dy, t, output_size=(3, 3))),
    }
    fn = _function(*cases[kind])
    assert torch.autograd.gradcheck(fn, (x.requires_grad_(),), fast_mode=True)
