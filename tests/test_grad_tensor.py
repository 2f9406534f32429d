"""Backward kernels of softmax, log_softmax, dropout, upsample and broadcast sums
(cnnc/runtime/grad/tensor.py) against torch.autograd; the dropout mask against the
compiled forward's; and the copied text of every grad family, standing alone."""

from __future__ import annotations

import importlib.util
import inspect
import re

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import cnnc
from cnnc.ops import OPS
from cnnc.ops.tensor_ops import MODE_DIMS, UpsampleAttrs
from cnnc.runtime import grad, support
from cnnc.runtime.grad.tensor import (
    grad_dropout,
    grad_log_softmax,
    grad_softmax,
    grad_sum_to,
    grad_upsample,
)

EXAMPLES = settings(max_examples=15, deadline=None)
BANNED = re.compile(r"conv|mm|matmul|pool|batch_norm|softmax|upsample|interp|dropout|bernoulli"
                    r"|sum|exp|mul|add|sub|index|scatter")


def _layout(x: torch.Tensor, how: str) -> torch.Tensor:
    if how == "channels_last" and x.dim() in (4, 5):
        return x.to(memory_format={4: torch.channels_last, 5: torch.channels_last_3d}[x.dim()])
    if how == "strided" and x.dim() >= 1:
        return torch.cat([x, x], dim=0)[::2]  # a non-contiguous view
    if how == "transposed" and x.dim() >= 2:
        return x.transpose(0, -1).contiguous().transpose(0, -1)
    return x.contiguous()


LAYOUTS = st.sampled_from(["contiguous", "channels_last", "strided", "transposed"])


def _seeded(draw):
    return torch.Generator().manual_seed(draw(st.integers(0, 2**16)))


# ------------------------------------------------------------------ softmax
@EXAMPLES
@given(data=st.data(), log=st.booleans(), layout=LAYOUTS)
def test_softmax_backward_matches_autograd(data, log, layout):
    rank = data.draw(st.integers(1, 5))
    shape = tuple(data.draw(st.integers(1, 5)) for _ in range(rank))
    dim = data.draw(st.integers(-rank, rank - 1))
    g = _seeded(data.draw)
    x = _layout(torch.randn(shape, generator=g) * 3, layout).requires_grad_()
    op = "log_softmax" if log else "softmax"
    y = OPS[op].reference(OPS[op].attrs_type(dim), [x], {}, True)
    dy = _layout(torch.randn(shape, generator=g), data.draw(LAYOUTS))
    y.backward(dy)
    launcher = grad_log_softmax if log else grad_softmax
    dx = launcher(dy, y.detach(), dim=dim)
    torch.testing.assert_close(dx, x.grad, rtol=1e-4, atol=1e-5)


def test_bfloat16_softmax():
    x = torch.randn(3, 7, 5).bfloat16().requires_grad_()
    y = torch.softmax(x, 1)
    dy = torch.randn_like(y)
    y.backward(dy)
    torch.testing.assert_close(grad_softmax(dy, y.detach(), dim=1).float(), x.grad.float(),
                               rtol=3e-2, atol=3e-2)


# ------------------------------------------------------------------ upsample
SCALES = st.sampled_from([0.5, 0.7, 1.0, 1.1, 1.5, 2, 2.5, 3])


@st.composite
def upsamples(draw):
    mode = draw(st.sampled_from(["nearest", "linear", "bilinear", "bicubic", "trilinear"]))
    dims = MODE_DIMS.get(mode) or draw(st.integers(1, 3))
    sizes = tuple(draw(st.integers(1, 5)) for _ in range(dims))
    scale = size = None
    if draw(st.booleans()):
        size = tuple(draw(st.integers(1, 8)) for _ in range(dims))
        size = size[0] if dims == 1 and draw(st.booleans()) else size
    else:
        scale = draw(st.one_of(SCALES, st.tuples(*[SCALES] * dims)))
        per_dim = scale if isinstance(scale, tuple) else (scale,) * dims
        assume(all(int(s * f) >= 1 for s, f in zip(sizes, per_dim)))
    align = None if mode == "nearest" else draw(st.booleans())
    x = torch.randn((2, draw(st.integers(1, 3)), *sizes), generator=_seeded(draw))
    return UpsampleAttrs(scale, size, mode, align), _layout(x, draw(LAYOUTS))


@EXAMPLES
@given(case=upsamples())
def test_upsample_backward_matches_autograd(case):
    a, x = case
    xr = x.clone().requires_grad_()
    y = OPS["upsample"].reference(a, [xr], {}, True)
    dy = torch.randn(y.shape)
    y.backward(dy)
    dx = grad_upsample(dy, x, scale_factor=a.scale_factor, size=a.size, mode=a.mode,
                       align_corners=a.align_corners)
    assert dx.dtype == x.dtype and dx.stride() == torch.empty_like(x).stride()
    torch.testing.assert_close(dx, xr.grad, rtol=1e-4, atol=1e-5)


def test_bfloat16_upsample():
    x = torch.randn(2, 3, 4, 5).bfloat16().to(memory_format=torch.channels_last)
    xr = x.clone().requires_grad_()
    y = torch.nn.functional.interpolate(xr, scale_factor=1.5, mode="bilinear")
    dy = torch.randn_like(y)
    y.backward(dy)
    dx = grad_upsample(dy, x, scale_factor=1.5, size=None, mode="bilinear", align_corners=None)
    assert dx.dtype == torch.bfloat16
    torch.testing.assert_close(dx.float(), xr.grad.float(), rtol=3e-2, atol=3e-2)


# ------------------------------------------------------------------ broadcast sums
@EXAMPLES
@given(data=st.data(), dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_sum_to_matches_autograd_of_broadcasting(data, dtype):
    rank = data.draw(st.integers(1, 5))
    shape = tuple(data.draw(st.integers(1, 4)) for _ in range(rank))
    lead = data.draw(st.integers(0, rank))
    target = tuple(s if data.draw(st.booleans()) else 1 for s in shape[lead:])
    g = _layout(torch.randn(shape, generator=_seeded(data.draw)).to(dtype), data.draw(LAYOUTS))
    operand = torch.zeros(target, dtype=dtype, requires_grad=True)
    (operand + torch.zeros(shape, dtype=dtype)).backward(g)
    got = grad_sum_to(g, target)
    assert got.shape == target and got.dtype == dtype
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=5e-2)
    torch.testing.assert_close(got.float(), operand.grad.float(), **tol)
    if target == shape:
        assert got is g  # no copy


# ------------------------------------------------------------------ dropout
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_dropout_backward_regenerates_the_forward_mask(layout, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    source = "network T { input x: [N, 3, 4, 5] y = x -> dropout(0.3) output y }"
    net = cnnc.compile(source=source).train()
    seeds = []
    randint = torch.randint

    def recording(*args, **kwargs):  # the forward's launcher draws its seed here
        seeds.append(randint(*args, **kwargs))
        return seeds[-1]

    monkeypatch.setattr(torch, "randint", recording)
    x = _layout(torch.rand(2, 3, 4, 5) + 0.5, layout)
    y = net(x)
    assert len(seeds) == 1
    kept = y != 0
    assert 0.1 < 1 - kept.float().mean().item() < 0.5
    dy = _layout(torch.rand(2, 3, 4, 5) + 0.5, layout)
    dx = grad_dropout(dy, p=0.3, seed=int(seeds[0].item()))
    assert torch.equal(dx != 0, kept)
    torch.testing.assert_close(dx, dy * (kept / 0.7), rtol=1e-6, atol=0)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_dropout_backward_extremes(p):
    dy = torch.randn(3, 64)
    dy[0, 0] = float("inf")
    dx = grad_dropout(dy, p=p, seed=7)
    if p == 0.0:
        assert torch.equal(dx, dy)
    else:  # PyTorch: the gradient of x * 0 (inf * 0 is NaN)
        x = torch.zeros(3, 64, requires_grad=True)
        torch.nn.functional.dropout(x, 1.0, True).backward(dy)
        torch.testing.assert_close(dx, x.grad, equal_nan=True)


# ------------------------------------------------------------------ no ATen compute
class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append(str(func))
        return func(*args, **(kwargs or {}))


def test_no_aten_compute_in_tensor_backward():
    x = torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)
    dy, big = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 8, 10)
    with _Recorder() as rec:
        grad_softmax(dy, x, dim=1)
        grad_log_softmax(dy, x, dim=-1)
        grad_dropout(dy, p=0.5, seed=3)
        grad_sum_to(dy, (3, 1, 1))
        for mode in ("nearest", "bilinear", "bicubic"):
            grad_upsample(big, x, scale_factor=2, size=None, mode=mode,
                          align_corners=None if mode == "nearest" else False)
        grad_upsample(big.bfloat16(), x.bfloat16(), scale_factor=2, size=None,
                      mode="bilinear", align_corners=True)
    assert rec.calls, "the recorder saw nothing"
    assert not [c for c in rec.calls if BANNED.search(c)], rec.calls


# ------------------------------------------------------------------ the copied text
def _copied(tmp_path):
    """A module of what generated files hold: support's copied part, then every family's
    text after GRAD_MARKER, and nothing else (Triton reads jit source from a file)."""
    parts = ["import os", "import torch", "import triton", "import triton.language as tl",
             'INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"']
    text = inspect.getsource(support)
    parts.append(text[text.index("# ---- cnnc runtime support"):])
    for family in grad.FAMILIES:
        text = inspect.getsource(importlib.import_module(f"cnnc.runtime.grad.{family}"))
        assert text.count(grad.GRAD_MARKER) == 1, family
        after = text[text.index(grad.GRAD_MARKER):]
        assert not re.search(r"^\s*(import|from)\s", after, re.M), f"{family} imports"
        parts.append(after)
    path = tmp_path / "copied.py"
    path.write_text("\n\n".join(parts))
    spec = importlib.util.spec_from_file_location("cnnc_copied_grads", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_copied_text_defines_and_runs_every_launcher(tmp_path):
    copied = _copied(tmp_path)
    for family in ("tensor", "pool", "norm"):
        assert family in grad.FAMILIES
        module = importlib.import_module(f"cnnc.runtime.grad.{family}")
        public = [n for n in vars(module) if n.startswith("grad_")]
        assert public, family
        for name in public:
            assert callable(getattr(copied, name)), name
        text = inspect.getsource(module)
        after = text[text.index(grad.GRAD_MARKER):]
        defined = re.findall(r"^(?:def )?([A-Za-z_]\w*)\s*[(=]", after, re.M)
        assert defined, family
        prefixes = ("grad_", f"_{family}_", f"_{family.upper()}_")
        assert [n for n in defined if not n.startswith(prefixes)] == [], family
    x = torch.randn(2, 3, 5, 4).to(memory_format=torch.channels_last)
    dy = torch.randn(2, 3, 3, 2)
    kw = dict(kernel_size=(2, 2), stride=(2, 2), padding=(1, 0), dilation=(1, 1),
              ceil_mode=True)
    from cnnc.runtime.grad import norm, pool

    assert torch.equal(copied.grad_max_pool(dy, x, **kw), pool.grad_max_pool(dy, x, **kw))
    got = copied.grad_batch_norm(x, x * 2, None, eps=1e-5)[0]
    assert torch.equal(got, norm.grad_batch_norm(x, x * 2, None, eps=1e-5)[0])
    assert torch.equal(copied.grad_sum_to(x, (3, 1, 1)), grad_sum_to(x, (3, 1, 1)))


def _function(forward, backward):
    """forward (PyTorch's, the numerical reference) with cnnc's backward, for gradcheck."""

    class Checked(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = forward(x)
            ctx.save_for_backward(x, y)
            return y

        @staticmethod
        def backward(ctx, dy):
            return backward(dy, *ctx.saved_tensors)

    return Checked.apply


@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "bicubic", "sum_to"])
def test_float64_gradcheck(kind):
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64)
    F = torch.nn.functional
    cases = {
        "softmax": (lambda t: F.softmax(t, 1), lambda dy, t, y: grad_softmax(dy, y, dim=1)),
        "log_softmax": (lambda t: F.log_softmax(t, -1),
                        lambda dy, t, y: grad_log_softmax(dy, y, dim=-1)),
        "bicubic": (lambda t: F.interpolate(t, scale_factor=1.5, mode="bicubic"),
                    lambda dy, t, y: grad_upsample(dy, t, scale_factor=1.5, size=None,
                                                   mode="bicubic", align_corners=None)),
        "sum_to": (lambda t: t.expand(2, 2, 3, 3, 4).clone(),
                   lambda dy, t, y: grad_sum_to(dy, t.shape)),
    }
    fn = _function(*cases[kind])
    assert torch.autograd.gradcheck(fn, (x.requires_grad_(),), fast_mode=True)
