"""softplus, mish and hardtanh against torch.nn.functional, on inputs holding NaN and ±Inf:
the shape property (test_shape_properties.py) for the reference, and their Triton
expressions compiled by cnnc (as a pointwise kernel, and fused into a conv's epilogue).
Every new operator compiles (issue 9), here after a conv, as the reference computes it.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from new_op_harness import check_values, with_specials
from shape_harness import PROFILE

import cnnc

from strategies import (
    SYM,
    Case,
    batch_dim,
    call_text,
    network,
    numbers,
    optional,
    seeds,
    shapes,
    tensors,
)

# Triton's interpreter computes with numpy, which warns at inf - inf, 0 * inf and x / 0:
# those are the special values under test.
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")

EXAMPLES = int(os.environ.get("CNNC_CODEGEN_EXAMPLES", "25"))
COMPILED = settings(max_examples=EXAMPLES, deadline=None)


@st.composite
def activation_calls(draw):
    """(op, call text without input, the PyTorch function)."""
    op = draw(st.sampled_from(["softplus", "mish", "hardtanh"]))
    if op == "softplus":
        beta_s, beta = draw(optional(st.one_of(numbers(), st.just(0)), 1))
        thr_s, thr = draw(optional(numbers(-30, 30), 20))
        args = [("beta", beta_s), ("threshold", thr_s)]

        def fn(x):
            return F.softplus(x, beta, thr)
    elif op == "hardtanh":
        lo_s, lo = draw(optional(numbers(), -1))
        hi_s, hi = draw(optional(numbers(), 1))
        args = [("min_val", lo_s), ("max_val", hi_s)]

        def fn(x):
            return F.hardtanh(x, lo, hi)
    else:
        args, fn = [], F.mish
    return op, draw(call_text(op, args, on=None)), fn


@st.composite
def activation_cases(draw):
    op, stage, fn = draw(activation_calls())
    shape = draw(shapes(1, 4, hi=4, dim0=batch_dim()))
    (x,) = tensors([shape], draw(seeds))
    x = draw(with_specials(x * 8))  # reach softplus's threshold and hardtanh's kinks
    return Case(network([("x", shape)], f"y = x -> {stage}"), [x], lambda: (fn(x), None))


@PROFILE
@given(activation_cases())
def test_activation(case):
    check_values(case)


# ================================================================ compiled


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))


def accepted(fn, x) -> bool:
    try:
        fn(x)
    except (RuntimeError, ValueError):
        return False
    return True


@COMPILED
@given(activation_calls(), seeds, st.data())
def test_compiled_pointwise_matches_pytorch_with_nan_and_inf(call, seed, data):
    """On a network input the op is a pointwise kernel of its own: the Triton expression
    alone, applied to every special value."""
    op, stage, fn = call
    x = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(seed)) * 8
    x = data.draw(with_specials(x))
    x.view(-1)[:8] = torch.tensor([float("nan"), float("inf"), float("-inf"), 0.0, -0.0,
                                   1e30, -1e30, 20.0])
    src = network([("x", (SYM, 4, 5))], f"y = x -> {stage}")
    if not accepted(fn, x):  # hardtanh with min_val > max_val: see test_activation
        with pytest.raises(cnnc.CompileError):
            cnnc.compile(source=src)
    else:
        net = cnnc.compile(source=src)
        assert [row["ops"] for row in net.plan] == [[op]]
        torch.testing.assert_close(net(x), fn(x), equal_nan=True, msg=lambda m: f"{m}\n{src}")


@COMPILED
@given(activation_calls(), seeds)
def test_compiled_in_a_conv_epilogue_matches_the_reference(call, seed):
    op, stage, fn = call
    src = network([("x", (SYM, 3, 5, 5))], f"y = x -> conv2d(4, 3, padding=1) -> {stage}")
    probe = torch.linspace(-30, 30, 61)
    if not accepted(fn, probe):
        with pytest.raises(cnnc.CompileError):
            cnnc.load(source=src)
    else:
        net, ref = cnnc.compile(source=src).eval(), cnnc.reference(source=src).eval()
        net.load_state_dict(ref.state_dict())
        x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(seed)) * 6
        assert [row["ops"] for row in net.plan] == [["conv2d", op]]  # fused, one kernel
        with torch.no_grad():
            torch.testing.assert_close(net(x), ref(x), rtol=1e-4, atol=1e-4,
                                       msg=lambda m: f"{m}\n{src}")


# ================================================================ every one compiles

AFTER_A_CONV = [
    "prelu",
    "prelu(3, init=0.1)",
    "layer_norm((5, 5))",
    "group_norm(3)",
    "reshape((-1, 75))",
    "permute((0, 2, 3, 1))",
    "transpose(1, 3)",
    "channel_shuffle(3)",
    'upsample(mode="bilinear")',
    "upsample(size=7)",
]


@pytest.mark.parametrize("stage", AFTER_A_CONV)
def test_a_new_operator_compiles_after_a_conv(stage, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    src = network([("x", (SYM, 3, 5, 5))], f"y = x -> conv2d(3, 1) -> {stage}")
    net, ref = cnnc.compile(source=src).eval(), cnnc.reference(source=src).eval()
    net.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), msg=lambda m: f"{m}\n{src}")


def test_nearest_upsampling_by_scale_factor_still_compiles():
    src = network([("x", (SYM, 3, 4, 4))], "y = x -> upsample(scale_factor=2)")
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(cnnc.compile(source=src)(x), F.interpolate(x, scale_factor=2))
