"""NaN and infinities flow through every generated kernel as they do through PyTorch.

Triton's tl.maximum / tl.minimum drop NaN by default, so a relu written with them turns
NaN into 0. Each test feeds inputs holding NaN, +inf and -inf and compares with
torch.nn.functional (or cnnc.reference) position by position, NaN equal to NaN.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import cnnc

from strategies import SYM, network

NAN, INF = float("nan"), float("inf")
SPECIALS = [NAN, INF, -INF, -0.0, 0.0, 1.0, -1.0, 3.0, -3.0, 6.5, -6.5, 1e30, -1e30]
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5, "equal_nan": True}
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's inf - inf


def specials(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Random values with every special value planted at least once."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 4
    flat = x.view(-1)
    where = torch.randperm(flat.numel(), generator=g)
    for i, value in enumerate(SPECIALS * 2):
        flat[where[i % flat.numel()]] = value
    return x


ACTIVATIONS = {
    "relu": F.relu, "relu6": F.relu6, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
    "silu": F.silu, "hardsigmoid": F.hardsigmoid, "hardswish": F.hardswish,
    "leaky_relu(0.2)": lambda x: F.leaky_relu(x, 0.2), "leaky_relu(0.0)":
    lambda x: F.leaky_relu(x, 0.0), "elu(0.7)": lambda x: F.elu(x, 0.7),
    # PyTorch's vectorised float32 erf gives gelu(+inf) = nan; its scalar path, its float64
    # kernel and CUDA give +inf, as cnnc does: compare with the float64 kernel.
    "gelu": lambda x: F.gelu(x.double()).float(),
    'gelu(approximate="tanh")': lambda x: F.gelu(x, approximate="tanh"),
}


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_activations_keep_nan_and_infinities(activation):
    """Alone (a pointwise kernel) and in a conv's epilogue (a depthwise 1x1 conv with weight
    1 passes its input through exactly)."""
    src = network([("x", (SYM, 3, 5, 6))],
                  f"y = x -> {activation}\n    z = x -> conv2d(3, 1, groups=3, bias=false) -> "
                  f"{activation}", output="y, z")
    net = cnnc.compile(source=src).eval()
    net.get_submodule("z").weight.data.fill_(1.0)
    assert len(net.plan) == 2
    x = specials((2, 3, 5, 6))
    expected = ACTIVATIONS[activation](x)
    y, z = net(x)
    torch.testing.assert_close(y, expected, **TOLERANCE)
    torch.testing.assert_close(z, expected, **TOLERANCE)


def passthrough_conv(src: str) -> torch.nn.Module:
    net = cnnc.compile(source=src).eval()
    for name, value in net.named_parameters():
        value.data.fill_(1.0 if name.endswith("weight") else 0.0)
    return net


POOLS = {
    "max_pool2d(2)": lambda x: F.max_pool2d(x, 2),
    "max_pool2d(3, 2, 1)": lambda x: F.max_pool2d(x, 3, 2, 1),
    "avg_pool2d(2)": lambda x: F.avg_pool2d(x, 2),
    "adaptive_max_pool2d(2)": lambda x: F.adaptive_max_pool2d(x, 2),
    "adaptive_avg_pool2d((3, 2))": lambda x: F.adaptive_avg_pool2d(x, (3, 2)),
}


@pytest.mark.parametrize("pool", list(POOLS))
def test_relu_then_pool_keeps_nan(pool):
    """A NaN before the relu makes its pooling window NaN: as separate kernels, and as a
    depthwise conv + relu + pool in one kernel where the pool fuses."""
    src = network([("x", (SYM, 2, 6, 6))],
                  f"y = x -> relu -> {pool}\n"
                  f"    z = x -> conv2d(2, 1, groups=2) -> relu -> {pool}", output="y, z")
    net = passthrough_conv(src)
    x = specials((2, 2, 6, 6), seed=3)
    expected = POOLS[pool](F.relu(x))
    assert expected.isnan().any()
    y, z = net(x)
    torch.testing.assert_close(y, expected, **TOLERANCE)
    torch.testing.assert_close(z, expected, **TOLERANCE)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("width", [6, 4500])  # one tile, and the two-pass online softmax
def test_softmax_rows_with_nan_or_inf(op, width):
    """A row holding NaN or +inf is NaN throughout; -inf entries weigh nothing."""
    net = cnnc.compile(source=network([("x", (SYM, width))], f"y = x -> {op}(dim=1)"))
    x = torch.randn(5, width, generator=torch.Generator().manual_seed(0))
    x[0, 3] = NAN
    x[1, width - 1] = INF
    x[2, 1] = -INF
    x[3, 0], x[3, 2] = INF, -INF
    x[4, :] = -INF
    expected = getattr(F, op)(x, dim=1)
    torch.testing.assert_close(net(x), expected, **TOLERANCE)
    assert expected[0].isnan().all() and expected[1].isnan().all()


def test_batch_norm_and_linear_keep_nan():
    """Eval batch norm joined to a conv or a linear and alone, linear + relu after an
    adaptive pool (one kernel), and in training batch norm with batch statistics."""
    src = """network T {
    input x: [N, 2, 4, 4]
    a = x -> conv2d(2, 1, groups=2) -> batch_norm -> relu
    b = x -> max_pool2d(1) -> batch_norm -> relu6
    c = x -> flatten -> linear(3) -> batch_norm -> relu
    d = x -> adaptive_avg_pool2d(2) -> flatten -> linear(3) -> relu
    output a, b, c, d
}"""
    net = passthrough_conv(src)
    ref = cnnc.reference(source=src).eval()
    ref.load_state_dict(net.state_dict())
    x = specials((2, 2, 4, 4), seed=5)
    for mode in ("eval", "train"):
        getattr(net, mode)()
        getattr(ref, mode)()
        for got, expected in zip(net(x), ref(x)):
            assert expected.isnan().any()
            torch.testing.assert_close(got, expected, **TOLERANCE)


@pytest.mark.parametrize("p", [1.0, 0.5])
def test_dropout_in_training_keeps_nan(p):
    """PyTorch multiplies by the mask: a dropped NaN or inf is NaN, a kept one stays."""
    src = network([("x", (SYM, 64))], f"y = x -> dropout({p})")
    net = cnnc.compile(source=src).train()
    x = specials((4, 64), seed=7)
    got = net(x)
    if p == 1.0:
        torch.testing.assert_close(got, F.dropout(x, p, True), **TOLERANCE)
    kept = got.isfinite() & (got != 0)
    assert got[x.isnan()].isnan().all()
    assert (got[x.isinf()].isnan() | (got[x.isinf()] == x[x.isinf()])).all()
    finite = x.isfinite() & (x != 0)
    torch.testing.assert_close(got[finite & kept], x[finite & kept] / (1 - p) if p < 1 else
                               got[finite & kept])
    assert ((got[finite] == 0) | kept[finite]).all()
