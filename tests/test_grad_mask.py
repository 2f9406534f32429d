"""The backward of conv / conv_transpose / linear followed by relu or relu6 in one launch
(cnnc/runtime/grad/conv.py, linear.py): the activation's derivative, read from its output
y (`mask=(y, lo, hi)`), is applied as dy loads, and the data, weight and bias gradients
share one Triton launch. Against torch.autograd through PyTorch's own F.relu / F.relu6
(y from the real forward: relu's exact zeros, relu6's exact sixes), in channels-last and
other layouts, each subset of the gradients, and a float64 gradcheck."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_grad_conv import check_grads, laid_out

import cnnc  # noqa: F401  (sets TRITON_INTERPRET before triton is imported)
from cnnc.ops.conv import pad_arg_for_F
from cnnc.report.training import triton_launches
from cnnc.runtime.grad.conv import grad_conv, grad_conv_transpose
from cnnc.runtime.grad.linear import grad_linear


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


ACTIVATIONS = {"relu": (F.relu, 0.0, float("inf")), "relu6": (F.relu6, 0.0, 6.0)}


def activated(z, act):
    """y = act(z), the inputs drawn wide enough that relu6's both flat ends are reached."""
    fn, lo, hi = ACTIVATIONS[act]
    y = fn(z)
    assert (y.detach() == lo).any() and (act == "relu" or (y.detach() == hi).any())
    return y, lo, hi


def refs_through(y, leaves, dy):
    """autograd's gradients of y for each leaf (None where the leaf is None)."""
    grads = iter(torch.autograd.grad(y, [t for t in leaves if t is not None], dy))
    return tuple(next(grads) if t is not None else None for t in leaves)


def leaves(*tensors):
    return [t.detach().clone().requires_grad_() if t is not None else None for t in tensors]


# ---------------------------------------------------------------- conv
CONV_CASES = [  # (groups, c_in, c_out, mode, act, needs, y layout)
    (1, 3, 5, "zeros", "relu", (True, True, True), "channels_last"),
    (4, 4, 8, "reflect", "relu6", (True, False, False), "contiguous"),  # depthwise, atomics
    (2, 4, 6, "circular", "relu6", (False, True, True), "channels_last"),
    (1, 3, 4, "replicate", "relu", (False, False, True), "strided"),
]


@pytest.mark.parametrize("groups, c_in, c_out, mode, act, needs, y_layout", CONV_CASES)
def test_conv_masked_gradients_in_one_launch(groups, c_in, c_out, mode, act, needs, y_layout):
    x = laid_out(3 * torch.randn(2, c_in, 6, 5), "channels_last")
    w = torch.randn(c_out, c_in // groups, 3, 2)
    b = torch.randn(c_out)
    pads, stride, dilation = ((1, 2), (0, 1)), (2, 1), (1, 2)
    xr, wr, br = leaves(x, w, b)
    padded = F.pad(xr, pad_arg_for_F(pads), mode="constant" if mode == "zeros" else mode)
    y, lo, hi = activated(F.conv2d(padded, wr, br, stride, 0, dilation, groups), act)
    dy = laid_out(torch.randn(y.shape), "channels_last")
    refs = refs_through(y, (xr, wr, br), dy)
    with triton_launches() as launched:
        ours = grad_conv(dy, x, w, stride=stride, pads=pads, dilation=dilation, groups=groups,
                         padding_mode=mode, needs=needs,
                         mask=(laid_out(y.detach(), y_layout), lo, hi))
    assert launched == ["_conv_grad_kernel"]
    check_grads(ours, refs, needs, True, (x, w, b))


@pytest.mark.parametrize("groups, c_out", [(2, 6), (4, 4)])  # grouped; depthwise weight
def test_conv_transpose_masked_gradients(groups, c_out):
    """Data and weight gradients in one launch (dy masked as the weight part's second
    operand), the bias a second."""
    x, w, b = 3 * torch.randn(2, 4, 3, 4), torch.randn(4, c_out // groups, 3, 2), torch.randn(c_out)
    xr, wr, br = leaves(x, w, b)
    y, lo, hi = activated(F.conv_transpose2d(xr, wr, br, (2, 1), (1, 0), (1, 0), groups, (1, 2)),
                          "relu6")
    dy = torch.randn(y.shape)
    refs = refs_through(y, (xr, wr, br), dy)
    with triton_launches() as launched:
        ours = grad_conv_transpose(dy, x, w, stride=(2, 1), padding=(1, 0),
                                   output_padding=(1, 0), dilation=(1, 2), groups=groups,
                                   mask=(laid_out(y.detach(), "channels_last"), lo, hi))
    assert launched == ["_conv_grad_kernel"] * 2
    check_grads(ours, refs, (True, True, True), True, (x, w, b))


def test_conv_unmasked_needs_in_one_launch():
    """Without a mask, each subset of the gradients is still one launch."""
    x, w, b = torch.randn(1, 4, 5, 5), torch.randn(6, 2, 3, 3), torch.randn(6)
    xr, wr, br = leaves(x, w, b)
    y = F.conv2d(xr, wr, br, 1, 1, 1, 2)
    dy = torch.randn(y.shape)
    refs = refs_through(y, (xr, wr, br), dy)
    for needs in [(True, False, True), (False, True, False)]:
        with triton_launches() as launched:
            ours = grad_conv(dy, x, w, stride=(1, 1), pads=((1, 1), (1, 1)), dilation=(1, 1),
                             groups=2, padding_mode="zeros", needs=needs)
        assert launched == ["_conv_grad_kernel"]
        check_grads(ours, refs, needs, True, (x, w, b))


class _ConvRelu6(torch.autograd.Function):
    """relu6(conv2d(x, w, b)) by PyTorch, its backward by one masked cnnc launch."""

    @staticmethod
    def forward(ctx, x, w, b):
        with torch.no_grad():
            y = F.relu6(F.conv2d(x, w, b, 1, 1))
        ctx.save_for_backward(x, w, y)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, y = ctx.saved_tensors
        return grad_conv(dy, x, w, stride=(1, 1), pads=((1, 1), (1, 1)), dilation=(1, 1),
                         groups=1, padding_mode="zeros", mask=(y, 0.0, 6.0))


def test_conv_masked_gradcheck_float64():
    torch.manual_seed(0)
    x, w, b = (torch.randn(*s, dtype=torch.float64) * 2 for s in ((1, 2, 4, 4), (3, 2, 3, 3),
                                                                   (3,)))
    inputs = [t.requires_grad_() for t in (x, w, b)]
    assert torch.autograd.gradcheck(_ConvRelu6.apply, inputs, fast_mode=True)


# ---------------------------------------------------------------- linear
@pytest.mark.parametrize("act, needs, y_perm", [
    ("relu", (True, True, True), (1, 0, 2)),
    ("relu6", (False, True, True), (0, 1, 2)),
    ("relu6", (True, False, False), (1, 0, 2)),
    ("relu", (False, False, True), (0, 1, 2)),
])
def test_linear_masked_gradients_in_one_launch(act, needs, y_perm):
    x, w, b = 3 * torch.randn(3, 5, 7), torch.randn(6, 7), torch.randn(6)
    xr, wr, br = leaves(x, w, b)
    y, lo, hi = activated(F.linear(xr, wr, br), act)
    dy = torch.randn(y.shape)
    refs = refs_through(y, (xr, wr, br), dy)
    y_other = y.detach().permute(y_perm).contiguous().permute(y_perm)  # another layout
    with triton_launches() as launched:
        ours = grad_linear(dy, x, w, needs=needs, mask=(y_other, lo, hi))
    assert launched == ["_linear_grad_kernel"]
    check_grads(ours, refs, needs, True, (x, w, b))


class _LinearRelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        with torch.no_grad():
            y = F.relu(F.linear(x, w, b))
        ctx.save_for_backward(x, w, y)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, y = ctx.saved_tensors
        return grad_linear(dy, x, w, mask=(y, 0.0, float("inf")))


def test_linear_masked_gradcheck_float64():
    torch.manual_seed(0)
    inputs = [torch.randn(*s, dtype=torch.float64).requires_grad_()
              for s in ((2, 3, 5), (4, 5), (4,))]
    assert torch.autograd.gradcheck(_LinearRelu.apply, inputs, fast_mode=True)


def test_relu_mask_passes_the_gradient_at_plus_inf_and_nan_as_pytorch_does():
    """relu's derivative is zero only where y <= 0: y = +inf or NaN passes the gradient
    (PyTorch's threshold_backward), relu6's is zero at and beyond 6 as well."""
    x, w = torch.randn(4, 3), torch.randn(5, 3)
    dy = torch.randn(4, 5)
    y = torch.tensor([[1.0, 0.0, float("inf"), float("nan"), -2.0]] * 4)
    live = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    dx, dw, db = grad_linear(dy, x, w, mask=(y, 0.0, float("inf")))
    torch.testing.assert_close(db, (dy * live).sum(0))
    torch.testing.assert_close(dx, (dy * live) @ w)
    y6 = torch.tensor([[1.0, 0.0, 6.0, float("nan"), 5.5]] * 4)
    _, _, db6 = grad_linear(dy, x, w, mask=(y6, 0.0, 6.0))
    torch.testing.assert_close(db6, (dy * torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0])).sum(0))
