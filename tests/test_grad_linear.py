"""Backward kernels of linear (cnnc/runtime/grad/linear.py) against torch.autograd of
F.linear: any leading dims and their layouts (merged, unmergeable, broadcast), bias on and
off, each subset of the gradients, fp32, bf16 and a float64 gradcheck; the split (atomic)
weight-gradient path; no ATen compute op inside; and the copy generated modules carry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_grad_conv import ComputeOps, assert_close, copied_namespace

import cnnc  # noqa: F401  (sets TRITON_INTERPRET before triton is imported)
import cnnc.runtime.grad.linear as grad_linear_module
from cnnc.runtime.grad.linear import grad_linear

NEEDS = st.tuples(st.booleans(), st.booleans(), st.booleans()).filter(any)


def arranged(t: torch.Tensor, order, strided: bool) -> torch.Tensor:
    """t's values in memory laid out in dim order `order` (a permutation of the leading
    dims; features last), optionally every other feature of a twice-as-wide tensor."""
    if strided:
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        t = wide[..., ::2]
    perm = list(order) + [t.dim() - 1]
    inverse = [perm.index(d) for d in range(t.dim())]
    return t.permute(perm).contiguous().permute(inverse) if not strided else t


@st.composite
def linear_cases(draw):
    lead = draw(st.lists(st.integers(1, 3), min_size=0, max_size=5))
    return dict(lead=lead, n_in=draw(st.integers(1, 9)), n_out=draw(st.integers(1, 9)),
                order=draw(st.permutations(range(len(lead)))), x_strided=draw(st.booleans()),
                dy_order=draw(st.permutations(range(len(lead)))), bias=draw(st.booleans()),
                needs=draw(NEEDS),
                w_layout=draw(st.sampled_from(["contiguous", "transposed", "strided"])))


def reference(x, w, b, dy):
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    br = b.clone().requires_grad_() if b is not None else None
    y = F.linear(xr, wr, br)
    refs = torch.autograd.grad(y, [xr, wr] + ([br] if br is not None else []), dy)
    return (*refs, None) if b is None else refs


def check(ours, refs, needs, has_bias, x, w, rtol=1e-4, atol=1e-5):
    for got, ref, need, name in zip(ours, refs, needs, ("input", "weight", "bias")):
        if not need or (name == "bias" and not has_bias):
            assert got is None, name
            continue
        assert_close(got, ref, rtol=rtol, atol=atol)
    if needs[0] and x.is_contiguous():
        assert ours[0].stride() == x.stride()


def tensors(case, dtype=torch.float32):
    x = torch.randn(*case["lead"], case["n_in"], dtype=dtype)
    x = arranged(x, case["order"], case["x_strided"])
    w = torch.randn(case["n_out"], case["n_in"], dtype=dtype)
    if case["w_layout"] == "transposed":
        w = w.t().contiguous().t()
    elif case["w_layout"] == "strided":
        w = arranged(w, (0,), True)
    b = torch.randn(case["n_out"], dtype=dtype) if case["bias"] else None
    dy = arranged(torch.randn(*case["lead"], case["n_out"], dtype=dtype), case["dy_order"],
                  False)
    return x, w, b, dy


@settings(max_examples=15, deadline=None)
@given(linear_cases())
def test_linear_gradients_match_autograd(case):
    x, w, b, dy = tensors(case)
    assume(x.numel() > 0)
    ours = grad_linear(dy, x, w, needs=case["needs"], has_bias=case["bias"])
    check(ours, reference(x, w, b, dy), case["needs"], case["bias"], x, w)


def test_linear_unmergeable_leading_dims_and_broadcast():
    """Four leading dims no stride merges (the reshape fallback), and a dy that is an
    expanded view (stride 0), as a broadcast loss gives."""
    x = torch.randn(2, 3, 2, 3, 5).permute(3, 1, 0, 2, 4)  # features stay innermost
    w, b = torch.randn(4, 5), torch.randn(4)
    dy = torch.randn(1, 3, 1, 1, 4).expand(3, 3, 2, 2, 4)
    ours = grad_linear(dy, x, w)
    check(ours, reference(x, w, b, dy), (True, True, True), True, x, w)
    assert ours[0].shape == x.shape


@pytest.mark.parametrize("splits", [1, 3])
def test_linear_bfloat16_and_split(monkeypatch, splits):
    """bf16 (fp32 accumulation) and fp32, with the GPU's split reduction forced: partial
    sums by fp32 atomics, cast back to bf16."""
    monkeypatch.setattr(grad_linear_module, "_LINEAR_FORCE_SPLITS", splits)
    case = dict(lead=[3, 7], n_in=20, n_out=18, order=(1, 0), x_strided=False,
                dy_order=(0, 1), bias=True, needs=(True, True, True), w_layout="contiguous")
    x, w, b, dy = tensors(case)
    check(grad_linear(dy, x, w), reference(x, w, b, dy), case["needs"], True, x, w)
    low = [t.bfloat16() for t in (x, w, b, dy)]
    refs = reference(*(t.float() for t in low))
    ours = grad_linear(low[3], low[0], low[1])
    assert all(g.dtype == torch.bfloat16 for g in ours)
    check([g.float() for g in ours], refs, case["needs"], True, x, w, rtol=2e-2, atol=2e-2)


def test_linear_alignment_hint_keeps_gradients(monkeypatch):
    """Widths that are multiples of 4, not 16 (as ResNet's fc: 1000): the kernel rewrites
    sizes and row strides as multiples of ALIGN, which lets Triton prove rows aligned
    (async copies on a GPU); the interpreter computes the rewrite, so a value wrongly
    counted as aligned shows here. dy masked by relu (y's strides are rewritten too)."""
    real, chosen = grad_linear_module._conv_alignment, []
    monkeypatch.setattr(grad_linear_module, "_conv_alignment",
                        lambda values, size: chosen.append(real(values, size)) or chosen[-1])
    x, w, b = torch.randn(3, 4, 12), torch.randn(20, 12), torch.randn(20)
    y = F.linear(x, w, b)
    dy = torch.randn(3, 4, 20)
    ours = grad_linear(dy, x, w, mask=(y, 0.0, float("inf")))
    check(ours, reference(x, w, b, dy * (y > 0)), (True, True, True), True, x, w)
    assert chosen == [4]


def test_linear_empty_batch():
    x, w, b, dy = torch.randn(0, 2, 5), torch.randn(4, 5), torch.randn(4), torch.randn(0, 2, 4)
    check(grad_linear(dy, x, w), reference(x, w, b, dy), (True, True, True), True, x, w)


class _LinearFn(torch.autograd.Function):
    """PyTorch's forward, cnnc's backward: what gradcheck differentiates numerically."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        with torch.no_grad():
            return F.linear(x, w, b)

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        return grad_linear(dy, x, w)


def test_linear_gradcheck_float64():
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_LinearFn.apply, (x, w, b), fast_mode=True)


def test_linear_backward_runs_no_aten_compute_op(monkeypatch):
    monkeypatch.setattr(grad_linear_module, "_LINEAR_FORCE_SPLITS", 2)  # the cast kernel too
    x, w, dy = torch.randn(4, 6), torch.randn(5, 6), torch.randn(4, 5)
    control = ComputeOps()
    with control:  # the detector sees PyTorch's own backward
        F.linear(x.requires_grad_(), w).sum().backward()
    assert control.found
    x = x.detach().bfloat16()
    with ComputeOps() as ops:
        ours = grad_linear(dy.bfloat16(), x, w.bfloat16())
    assert not ops.found, sorted(ops.found)
    assert all(g is not None for g in ours)


def test_linear_copy_after_marker_works(tmp_path):
    from cnnc.runtime.grad import conv, conv_tile  # copied before linear

    namespace = copied_namespace(grad_linear_module, tmp_path, after=(conv_tile, conv))
    x, w, b, dy = torch.randn(3, 5), torch.randn(4, 5), torch.randn(4), torch.randn(3, 4)
    check(namespace["grad_linear"](dy, x, w), reference(x, w, b, dy), (True, True, True), True,
          x, w)
