"""Derivative traits of the elementwise activations (Op.derivative, Op.derivative_uses)
against torch.autograd: each expression is compiled into a tiny Triton kernel and run on
values at the kinks, large and infinite values and NaN, and on random values."""

from __future__ import annotations

import importlib.util
import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnc  # noqa: F401  (sets TRITON_INTERPRET before triton is imported)
from cnnc.codegen.helpers import JIT
from cnnc.ops import OPS
from cnnc.ops.activations import Activation, EluAttrs, GeluAttrs, LeakyReluAttrs
from cnnc.ops.activations_extra import HardtanhAttrs, SoftplusAttrs
from cnnc.ops.common import NoAttrs

KERNEL = '''
import triton
import triton.language as tl

{helpers}

@triton.jit
def derivative(g_ptr, x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    gq = tl.load(g_ptr + offs, mask=mask, other=0.0)
    xq = tl.load(x_ptr + offs, mask=mask, other=0.0)
    yq = tl.load(y_ptr + offs, mask=mask, other=0.0)
    tl.store(out_ptr + offs, {expr}, mask=mask)
'''

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, on inf and NaN

_loaded: dict[str, object] = {}


def _kernel(expr: str, tmp_path_factory):
    """The jit kernel computing expr (Triton reads a kernel's source from its file)."""
    if expr not in _loaded:
        path = tmp_path_factory.mktemp("derivative") / "kernel.py"
        path.write_text(KERNEL.format(helpers=JIT["tanh"], expr=expr))
        spec = importlib.util.spec_from_file_location(f"derivative_{len(_loaded)}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _loaded[expr] = module.derivative
    return _loaded[expr]


# Every activation, with attribute values that reach each of its branches.
CASES = {
    "relu": [NoAttrs()],
    "relu6": [NoAttrs()],
    "sigmoid": [NoAttrs()],
    "tanh": [NoAttrs()],
    "silu": [NoAttrs()],
    "hardsigmoid": [NoAttrs()],
    "hardswish": [NoAttrs()],
    "leaky_relu": [LeakyReluAttrs(0.01), LeakyReluAttrs(0.0), LeakyReluAttrs(-0.5),
                   LeakyReluAttrs(3.0)],
    "elu": [EluAttrs(1.0), EluAttrs(0.3), EluAttrs(0.0), EluAttrs(-1.5)],
    "gelu": [GeluAttrs("none"), GeluAttrs("tanh")],
    "identity": [NoAttrs()],
    "softplus": [SoftplusAttrs(1.0, 20.0), SoftplusAttrs(2.0, 1.0), SoftplusAttrs(0.5, -1.0)],
    "mish": [NoAttrs()],
    "hardtanh": [HardtanhAttrs(-1.0, 1.0), HardtanhAttrs(0.5, 2.0), HardtanhAttrs(1.0, 1.0)],
}
PAIRS = [(name, a) for name, attrs in CASES.items() for a in attrs]

KINKS = [0.0, -0.0, 1e-3, 0.5, 1.0, 2.9999998, 3.0, 3.0000002, 5.9999995, 6.0, 6.0000005,
         0.25, 0.5000001, 2.0, 10.0, 20.0, 88.0, 89.0, 1e4, 3e38, math.inf]
EDGES = sorted({v for k in KINKS for v in (k, -k)}) + [math.nan]


def _check(name: str, attrs, x: torch.Tensor, tmp_path_factory) -> None:
    op = OPS[name]
    x = x.float()
    g = torch.linspace(-2.0, 3.0, x.numel()).reshape(x.shape)
    xr = x.clone().requires_grad_()
    y = op.reference(attrs, [xr], {}, True)
    y.backward(g)
    expected = xr.grad
    expr = op.derivative(attrs, "gq", "xq", "yq")
    assert expr is not None, f"{name} has no derivative"
    uses = op.derivative_uses(attrs)
    assert uses in ("input", "output")
    # What the expression must not read is NaN: a read would show in the result.
    nan = torch.full_like(x, math.nan)
    xs, ys = (x, nan) if uses == "input" else (nan, y.detach())
    out = torch.empty_like(x)
    _kernel(expr, tmp_path_factory)[(1,)](g, xs, ys, out, x.numel(), BLOCK=256)
    scale = float(expected[expected.isfinite()].abs().max()) if expected.isfinite().any() else 1
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6 * max(scale, 1.0),
                               equal_nan=True, msg=lambda m: f"{name} {attrs} ({uses}): {m}")


@pytest.mark.parametrize("name, attrs", PAIRS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(PAIRS)])
def test_derivative_matches_autograd_at_kinks_extremes_and_nan(name, attrs, tmp_path_factory):
    values = list(EDGES)
    if isinstance(attrs, HardtanhAttrs):
        values += [attrs.min_val, attrs.max_val, math.nextafter(attrs.min_val, 9),
                   math.nextafter(attrs.max_val, -9)]
    if isinstance(attrs, SoftplusAttrs):
        edge = attrs.threshold / attrs.beta
        values += [edge, math.nextafter(edge, 99), math.nextafter(edge, -99)]
    _check(name, attrs, torch.tensor(values), tmp_path_factory)


@settings(max_examples=15, deadline=None)
@given(
    pair=st.sampled_from(PAIRS),
    values=st.lists(st.floats(-12, 12, width=32), min_size=1, max_size=40),
    scale=st.sampled_from([1.0, 0.01, 100.0]),
)
def test_derivative_matches_autograd_on_random_values(pair, values, scale, tmp_path_factory):
    name, attrs = pair
    _check(name, attrs, torch.tensor(values) * scale, tmp_path_factory)


def test_every_activation_has_a_derivative_and_a_case():
    activations = {name for name, op in OPS.items() if isinstance(op, Activation)}
    assert activations == set(CASES)
    for name, attrs in itertools.chain.from_iterable(
            [(n, a) for a in CASES[n]] for n in activations):
        assert OPS[name].derivative(attrs, "g", "x", "y") is not None


def test_output_derivatives_are_those_the_issue_names():
    """relu, sigmoid, tanh (and the clamps) save their output, not their input too."""
    for name in ("relu", "relu6", "sigmoid", "tanh", "hardtanh"):
        assert OPS[name].derivative_uses(CASES[name][0]) == "output"
    assert OPS["leaky_relu"].derivative_uses(LeakyReluAttrs(0.01)) == "output"
    assert OPS["leaky_relu"].derivative_uses(LeakyReluAttrs(-0.5)) == "input"
    assert OPS["elu"].derivative_uses(EluAttrs(1.0)) == "output"
    assert OPS["gelu"].derivative_uses(GeluAttrs("none")) == "input"


def test_ops_without_a_rule_have_none():
    for name in ("add", "conv2d", "max_pool2d"):
        op = OPS[name]
        assert op.derivative(None, "g", "x", "y") is None
