"""Backward kernels of layer_norm and group_norm (cnnc/runtime/grad/group_norm.py) against
torch.autograd of F.layer_norm and F.group_norm."""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import cnnc  # noqa: F401  (sets TRITON_INTERPRET before triton is imported)
from cnnc.runtime import support
from cnnc.runtime.grad import FAMILIES, GRAD_MARKER, group_norm, tensor
from cnnc.runtime.grad.group_norm import grad_group_norm, grad_layer_norm

EXAMPLES = settings(max_examples=12, deadline=None)
BANNED = re.compile(r"conv|mm|matmul|pool|norm|softmax|upsample|sum|mean|var|sqrt|mul"
                    r"|add|sub|div")


@st.composite
def inputs(draw, ranks):
    rank = draw(st.sampled_from(ranks))
    shape = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    return shape, g


def _layout(draw, x):
    layout = draw(st.sampled_from(["contiguous", "channels_last", "strided"]))
    if layout == "channels_last" and x.dim() in (4, 5):
        return x.to(memory_format={4: torch.channels_last, 5: torch.channels_last_3d}[x.dim()])
    if layout == "strided":
        return torch.stack([x, x], dim=-1)[..., 0]  # the same values, every stride doubled
    return x


@st.composite
def options(draw, weight_shape):
    affine = draw(st.booleans())
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    w = torch.rand(weight_shape, generator=g) + 0.5 if affine else None
    b = torch.randn(weight_shape, generator=g) if affine else None
    needs = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.1]))
    return w, b, needs, eps


def _random(shape, g, shift):
    return torch.randn(shape, generator=g) * 2 + shift  # a shift: a mean far from 0


def _autograd(forward, x, w, b):
    """dy, and autograd's gradients for it, in float64 (the fp32 kernels' error is then
    theirs alone: ATen's fp32 CPU backward is off by ~1e-4 of |dy| where a row's values
    are all equal)."""
    def leaf(t):
        return None if t is None else t.detach().double().requires_grad_()

    xr, wr, br = leaf(x), leaf(w), leaf(b)
    y = forward(xr, wr, br)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(3)).to(x.dtype)
    y.backward(dy.double())
    return dy, tuple(None if t is None else t.grad for t in (xr, wr, br))


def _same(got, expected, needs, x, affine, rtol=1e-4, atol=1e-5):
    for flag, a, e, name in zip(needs, got, expected, ("dx", "dweight", "dbias")):
        if not flag or (name != "dx" and not affine):
            assert a is None, name
            continue
        assert a.dtype == x.dtype and a.shape == e.shape, name
        scale = max(float(e.abs().max()), 1.0) if e.numel() else 1.0
        torch.testing.assert_close(a, e.to(a.dtype), rtol=rtol, atol=atol * scale, msg=name,
                                   check_dtype=False)
    if needs[0]:
        assert got[0].stride() == torch.empty_like(x).stride()  # the input's layout


@contextmanager
def _tiling(small):
    """The interpreter's tiles (all of a row in one), or with `small` a GPU's: rows split
    into chunks, a row's weights over several tiles (partials through the buffer and the
    finish kernel)."""
    saved = group_norm._GROUP_NORM_TILE, group_norm._group_norm_chunks
    if small:
        group_norm._GROUP_NORM_TILE = 4
        group_norm._group_norm_chunks = lambda rows, block_r, groups: 2
    try:
        yield
    finally:
        group_norm._GROUP_NORM_TILE, group_norm._group_norm_chunks = saved


@pytest.mark.parametrize("small", [False, True])
@EXAMPLES
@given(case=inputs(ranks=[1, 2, 3, 4, 5]), k=st.integers(1, 3), shift=st.sampled_from([0, 5]),
       data=st.data())
def test_layer_norm_backward_matches_autograd(small, case, k, shift, data):
    shape, g = case
    assume(k <= len(shape))
    x = _layout(data.draw, _random(shape, g, shift))
    ns = shape[len(shape) - k:]
    assume(torch.Size(ns).numel() != 2)  # two values: dx is rounding times 1/std (above)
    w, b, needs, eps = data.draw(options(ns))
    dy, expected = _autograd(lambda x, w, b: F.layer_norm(x, ns, w, b, eps), x, w, b)
    with _tiling(small):
        got = grad_layer_norm(dy, x, w, normalized_shape=ns, eps=eps, needs=needs)
    _same(got, expected, needs, x, w is not None)


@pytest.mark.parametrize("small", [False, True])
@EXAMPLES
@given(case=inputs(ranks=[2, 3, 4, 5]), groups=st.integers(1, 3), per=st.integers(1, 3),
       shift=st.sampled_from([0, 5]), data=st.data())
def test_group_norm_backward_matches_autograd(small, case, groups, per, shift, data):
    shape, g = case
    shape = (shape[0], groups * per, *shape[2:])
    # More than two values per group: with two, xhat is +-1 and dx is 0 but for eps, so
    # any float32 result is rounding times 1/std (PyTorch's own fp32 too).
    assume(per * torch.Size(shape[2:]).numel() > 2)
    x = _layout(data.draw, _random(shape, g, shift))
    w, b, needs, eps = data.draw(options(shape[1]))
    dy, expected = _autograd(lambda x, w, b: F.group_norm(x, groups, w, b, eps), x, w, b)
    dy = _layout(data.draw, dy)  # the gradient's layout need not be the input's
    with _tiling(small):
        got = grad_group_norm(dy, x, w, num_groups=groups, eps=eps, needs=needs)
    _same(got, expected, needs, x, w is not None)


@pytest.mark.parametrize("op", ["layer_norm", "group_norm"])
def test_bfloat16_backward(op):
    """bf16 in and out, fp32 inside: near autograd of the same bf16 values."""
    x = (torch.randn(3, 4, 5, 6) * 3 + 2).bfloat16().to(memory_format=torch.channels_last)
    shape = (5, 6) if op == "layer_norm" else (4,)
    w, b = (torch.rand(shape) + 0.5).bfloat16(), torch.randn(shape).bfloat16()
    if op == "layer_norm":
        def forward(x, w, b):
            return F.layer_norm(x, shape, w, b, 1e-5)
    else:
        def forward(x, w, b):
            return F.group_norm(x, 2, w, b, 1e-5)
    dy, expected = _autograd(forward, x, w, b)
    if op == "layer_norm":
        got = grad_layer_norm(dy, x, w, normalized_shape=shape, eps=1e-5)
    else:
        got = grad_group_norm(dy, x, w, num_groups=2, eps=1e-5)
    _same(got, expected, (True, True, True), x, True, rtol=3e-2, atol=3e-2)


def test_empty_batch_gives_zero_weight_gradients():
    x = torch.randn(0, 4, 3)
    dx, dw, db = grad_group_norm(x, x, torch.ones(4), num_groups=2, eps=1e-5)
    assert dx.shape == x.shape and torch.equal(dw, torch.zeros(4)) and torch.equal(db, dw)


def test_bad_arguments_are_named():
    x = torch.randn(2, 6, 3)
    with pytest.raises(ValueError, match="num_groups=4 must divide"):
        grad_group_norm(x, x, None, num_groups=4, eps=1e-5)
    with pytest.raises(ValueError, match=r"normalized_shape \(6,\) must be the last"):
        grad_layer_norm(x, x, None, normalized_shape=(6,), eps=1e-5)
    with pytest.raises(ValueError, match=r"weight \(3,\) must have the shape \(6,\)"):
        grad_group_norm(x, x, torch.ones(3), num_groups=2, eps=1e-5)


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append(str(func))
        return func(*args, **(kwargs or {}))


def test_no_aten_compute_in_backward():
    x = torch.randn(2, 4, 3, 3).to(memory_format=torch.channels_last)
    dy, w = torch.randn(2, 4, 3, 3), torch.rand(4)
    with _Recorder() as rec:
        grad_group_norm(dy, x, w, num_groups=2, eps=1e-5)
        grad_layer_norm(dy, x, torch.rand(3, 3), normalized_shape=(3, 3), eps=1e-5)
        with _tiling(small=True):
            grad_group_norm(dy, x, w, num_groups=2, eps=1e-5)  # the finish kernel too
    assert rec.calls, "the recorder saw nothing"
    assert not [c for c in rec.calls if BANNED.search(c)], rec.calls


def test_copied_text_defines_the_launchers(tmp_path):
    """The text after GRAD_MARKER, run where a generated module runs it: after support's
    copied part and the earlier families' copied text, with only torch, triton, tl and
    INTERPRET besides (from a file, so that triton.jit can read the kernels' source)."""
    import triton  # after cnnc, which sets TRITON_INTERPRET
    import triton.language as tl

    assert "group_norm" in FAMILIES and FAMILIES.index("group_norm") > FAMILIES.index("tensor")
    namespace: dict = {}
    text = Path(support.__file__).read_text()
    exec(compile(text, support.__file__, "exec"), namespace)
    namespace = {k: v for k, v in namespace.items() if not k.startswith("__")}
    namespace.update(torch=torch, triton=triton, tl=tl, INTERPRET=True, __name__="copied")
    for module in (tensor, group_norm):
        text = Path(module.__file__).read_text()
        assert text.count(GRAD_MARKER) == 1
        after = text.split(GRAD_MARKER, 1)[1]
        assert not re.search(r"^\s*(import|from)\s", after, re.M)
        copied = tmp_path / f"copied_{Path(module.__file__).stem}.py"
        copied.write_text(after)
        exec(compile(after, str(copied), "exec"), namespace)
    defined = re.findall(r"^(?:def )?([A-Za-z_]\w*)\s*[(=]", after, re.M)
    assert [n for n in defined if not n.startswith(("grad_", "_group_norm_", "_GROUP_NORM_"))] \
        == []
    x = torch.randn(2, 4, 3, 3).to(memory_format=torch.channels_last)
    dy, w = torch.randn(2, 4, 3, 3), torch.rand(4)
    for a, e in zip(namespace["grad_group_norm"](dy, x, w, num_groups=2, eps=1e-5),
                    grad_group_norm(dy, x, w, num_groups=2, eps=1e-5)):
        assert torch.equal(a, e)
    got = namespace["grad_layer_norm"](dy, x, None, normalized_shape=(3,), eps=1e-5)[0]
    assert torch.equal(got, grad_layer_norm(dy, x, None, normalized_shape=(3,), eps=1e-5)[0])


@pytest.mark.parametrize("op", ["layer_norm", "group_norm"])
def test_float64_gradcheck(op):
    x = torch.randn(3, 4, 2, 3, dtype=torch.float64).to(memory_format=torch.channels_last)
    shape = (2, 3) if op == "layer_norm" else (4,)
    w = torch.rand(shape, dtype=torch.float64) + 0.5
    b = torch.randn(shape, dtype=torch.float64)

    class Norm(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, b):  # PyTorch's forward: the numerical reference
            ctx.save_for_backward(x, w)
            if op == "layer_norm":
                return F.layer_norm(x, shape, w, b, 1e-5)
            return F.group_norm(x, 2, w, b, 1e-5)

        @staticmethod
        def backward(ctx, dy):
            x, w = ctx.saved_tensors
            if op == "layer_norm":
                return grad_layer_norm(dy, x, w, normalized_shape=shape, eps=1e-5)
            return grad_group_norm(dy, x, w, num_groups=2, eps=1e-5)

    args = tuple(t.requires_grad_() for t in (x, w, b))
    assert torch.autograd.gradcheck(Norm.apply, args, fast_mode=True)
