"""Backward kernels of the pools (cnnc/runtime/grad/pool.py) against torch.autograd of
the ops' own reference (PyTorch's pooling), over every option, 1/2/3-d, contiguous and
channels-last, ties and NaN for the arg-max; a max pool's backward both ways (one launch
that recomputes the arg-max, two that store it), exactly; the kernels compiled for sm_90."""

from __future__ import annotations

import math
import re
from unittest import mock

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import cnnc  # noqa: F401  (sets TRITON_INTERPRET before triton is imported)
import cnnc.runtime.grad.pool as pool_module
from cnnc.ops import OPS
from cnnc.ops.adaptive_pool import AdaptivePoolAttrs
from cnnc.ops.arithmetic import pool_output_size
from cnnc.ops.pool import AvgPoolAttrs, MaxPoolAttrs
from cnnc.report.training import triton_launches
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


EXACT = dict(rtol=0, atol=0)


def _compare(op_name, attrs, x, launcher, tol=dict(rtol=1e-4, atol=1e-5), **kw):
    """cnnc's dx against autograd's; with tol EXACT, dy holds small integers, so that any
    order of summation gives the same bits and only the arg-max choices can differ."""
    xr = x.detach().clone().requires_grad_()
    y = OPS[op_name].reference(attrs, [xr], {}, True)
    g = torch.Generator().manual_seed(1)
    if tol is EXACT:
        dy = torch.randint(-8, 9, y.shape, generator=g).to(x.dtype)
    else:
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


def _max_path(two_kernels: bool):
    """A max pool's backward forced one way: two launches (the arg-maxes stored, then
    gathered) or one (the gather recomputes them), whatever the window."""
    return mock.patch.object(pool_module, "_POOL_RECOMPUTE_LOADS", -1 if two_kernels else 10**9)


@EXAMPLES
@given(case=pools("max"), two_kernels=st.booleans())
def test_max_pool_backward_matches_autograd(case, two_kernels):
    dims, a, x = case
    with _max_path(two_kernels):
        _compare(f"max_pool{dims}d", a, x, grad_max_pool, EXACT, kernel_size=a.kernel_size,
                 stride=a.stride, padding=a.padding, dilation=a.dilation,
                 ceil_mode=a.ceil_mode)


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
@given(case=adaptive(), kind=st.sampled_from(["avg", "max"]), two_kernels=st.booleans())
def test_adaptive_pool_backward_matches_autograd(case, kind, two_kernels):
    dims, a, x = case
    if kind == "avg":
        _compare(f"adaptive_avg_pool{dims}d", a, x, grad_adaptive_avg_pool,
                 output_size=a.output_size)
    else:
        with _max_path(two_kernels):
            _compare(f"adaptive_max_pool{dims}d", a, x, grad_adaptive_max_pool, EXACT,
                     output_size=a.output_size)


@pytest.mark.parametrize("two_kernels", [False, True])
def test_max_pool_picks_pytorchs_element_among_ties_nan_and_minus_inf(two_kernels):
    # One window each: ties (the first wins), two NaN (the last wins), all -inf (the first).
    x = torch.tensor([[[1.0, 3.0, 3.0, 2.0], [math.nan, 1.0, math.nan, 5.0],
                       [-math.inf, -math.inf, -math.inf, -math.inf]]])
    a = MaxPoolAttrs((4,), (4,), (0,), (1,), False)
    with _max_path(two_kernels):
        _compare("max_pool1d", a, x, grad_max_pool, EXACT, kernel_size=(4,), stride=(4,),
                 padding=(0,), dilation=(1,), ceil_mode=False)


@pytest.mark.parametrize("two_kernels", [False, True])
@pytest.mark.parametrize("values", ["ties", "nan", "minus_inf"])
def test_overlapping_dilated_ceil_mode_windows_pick_as_pytorch(values, two_kernels):
    """Windows that overlap (3 taps, dilation 2, stride 2), padding, and a last window that
    only ceil_mode makes; an element is the arg-max of some windows and not of others."""
    g = torch.Generator().manual_seed(3)
    x = torch.randint(-1, 2, (2, 3, 8, 9), generator=g).float()
    if values == "nan":  # two NaN in shared windows: the later one wins where both are
        x[:, :, 3, 3] = x[:, :, 3, 5] = x[:, :, 7, 1] = math.nan
    elif values == "minus_inf":
        x[:, 1] = -math.inf
    a = MaxPoolAttrs((3, 3), (2, 2), (1, 1), (2, 2), True)
    with _max_path(two_kernels):
        _compare("max_pool2d", a, x, grad_max_pool, EXACT, kernel_size=(3, 3),
                 stride=(2, 2), padding=(1, 1), dilation=(2, 2), ceil_mode=True)


ONE_LAUNCH = [  # (dims, kernel, stride, padding, dilation, ceil_mode, sizes)
    (2, 2, 2, 0, 1, False, (12, 12)),  # LeNet-5's
    (2, 3, 2, 1, 1, False, (9, 8)),  # ResNet's stem pool
    (3, 3, 2, 1, 1, True, (6, 5, 7)),  # 8 windows x 27 taps: 216 loads an element
    (1, 4, 1, 2, 3, True, (11,)),
]


@pytest.mark.parametrize("dims, kernel, stride, padding, dilation, ceil, sizes", ONE_LAUNCH)
def test_max_pool_backward_is_one_launch(dims, kernel, stride, padding, dilation, ceil,
                                         sizes):
    x = torch.randint(-2, 3, (2, 3, *sizes)).float()
    kw = dict(kernel_size=(kernel,) * dims, stride=(stride,) * dims,
              padding=(padding,) * dims, dilation=(dilation,) * dims, ceil_mode=ceil)

    def counted(dy, x, **kw):
        with triton_launches() as launched:
            dx = grad_max_pool(dy, x, **kw)
        assert launched == ["_pool_gather_kernel"]
        return dx

    a = MaxPoolAttrs(*(kw[k] for k in ("kernel_size", "stride", "padding", "dilation")), ceil)
    _compare(f"max_pool{dims}d", a, x, counted, EXACT, **kw)


@pytest.mark.parametrize("size, out, launches", [
    ((7, 7), (1, 1), ["_pool_gather_kernel"]),  # a global pool of 49: 49 loads an element
    ((5, 9), (3, 4), ["_pool_gather_kernel"]),
    ((300,), (1,), ["_pool_argmax_kernel", "_pool_gather_kernel"]),  # 300 loads: stored
    ((40, 40), (3, 3), ["_pool_argmax_kernel", "_pool_gather_kernel"]),  # 4 x 196 loads
])
def test_adaptive_max_pool_backward_launches(size, out, launches):
    x = torch.randint(-2, 3, (1, 2, *size)).float()

    def counted(dy, x, **kw):
        with triton_launches() as launched:
            dx = grad_adaptive_max_pool(dy, x, **kw)
        assert launched == launches
        return dx

    _compare(f"adaptive_max_pool{len(size)}d", AdaptivePoolAttrs(out), x, counted, EXACT,
             output_size=out)


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


# ---------------------------------------------------------------- compiled for sm_90
SM90_SCRIPT = r'''
import json, os
os.environ["TRITON_INTERPRET"] = "0"
import torch
import cnnc  # noqa: F401
import cnnc.runtime.grad.pool as P
from cnnc.runtime.aot import Launch, _compiling_for, _describe

cl = torch.channels_last
with _compiling_for(90) as jit_function:
    pending = []  # launches, compiled after every launcher ran
    jit_function.__getitem__ = lambda fn, grid: (
        lambda *args, **kwargs: pending.append((fn, grid, args, kwargs)))
    for dtype in (torch.float32, torch.bfloat16):  # ResNet's stem pool: one launch
        x = torch.empty(8, 64, 112, 112, dtype=dtype).to(memory_format=cl)
        dy = torch.empty(8, 64, 56, 56, dtype=dtype).to(memory_format=cl)
        P.grad_max_pool(dy, x, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1),
                        dilation=(1, 1), ceil_mode=False)
    P.grad_avg_pool(dy, x, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1),
                    ceil_mode=False, count_include_pad=False, divisor_override=None)
    x3 = torch.empty(2, 16, 16, 28, 28, dtype=dtype)
    P.grad_max_pool(torch.empty(2, 16, 8, 14, 14, dtype=dtype), x3, kernel_size=(3, 3, 3),
                    stride=(2, 2, 2), padding=(1, 1, 1), dilation=(1, 1, 1), ceil_mode=False)
    for size, out in ((7, (1, 1)), (112, (3, 3))):  # a 7x7 window: one launch; 38x38: two
        xa = torch.empty(8, 512, size, size, dtype=dtype)
        dya = torch.empty(8, 512, *out, dtype=dtype)
        P.grad_adaptive_max_pool(dya, xa, output_size=out)
    P.grad_adaptive_avg_pool(dya, xa, output_size=out)
    for fn, grid, args, kwargs in pending:
        entry = Launch(fn.__name__, fn.__name__, tuple(grid), 0)
        try:
            _describe(entry, fn.warmup(*args, grid=grid, **kwargs))
        except Exception as e:
            entry.error = f"{type(e).__name__}: {e}"[-300:]
        recompute = kwargs.get("RECOMPUTE", False)
        print(json.dumps(dict(vars(entry), dtype=str(args[0].dtype), recompute=recompute)))
'''


def test_backward_kernels_compile_for_sm90():
    """Both max-pool backwards (one launch recomputing the arg-max, two storing it), avg
    and adaptive pools, in bf16 (training's dtype; float32 too for the common one), with
    their GPU tiles, compiled for sm_90 without a GPU: Triton's compiler accepts each, and
    none spills registers."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, TRITON_INTERPRET="0")
    done = subprocess.run([sys.executable, "-c", SM90_SCRIPT], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    launches = [json.loads(line) for line in done.stdout.splitlines()]
    assert {entry["function"] for entry in launches} == {"_pool_gather_kernel",
                                                         "_pool_argmax_kernel"}
    assert sum(entry["recompute"] for entry in launches) == 4  # 2-d (f32, bf16), 3-d, 7x7
    assert not [entry for entry in launches if entry["error"]]
    assert not [entry for entry in launches if entry["spill_bytes"]]
