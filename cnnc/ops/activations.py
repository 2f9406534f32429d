"""Elementwise activations: the output has the input's shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F

from ..ir.shapes import Shape
from .common import NoAttrs
from .registry import Op, TensorInfo, register
from .signature import FLOAT32_MAX, Arg, Choice, Float, Tensor


@dataclass(frozen=True)
class LeakyReluAttrs:
    negative_slope: float


@dataclass(frozen=True)
class EluAttrs:
    alpha: float


@dataclass(frozen=True)
class GeluAttrs:
    approximate: str


def _num(value: float) -> str:
    return repr(float(value))


def _tanh(x: str) -> str:
    return f"_cnnc_tanh({x})"  # a helper every generated file defines (codegen/helpers.py)


def _clamp(x: str, lo: float, hi: float | None = None) -> str:
    """Clamp keeping NaN, as PyTorch does (Triton's min/max drop NaN by default)."""
    nan = "propagate_nan=tl.PropagateNan.ALL"
    if hi is None:
        return f"tl.maximum({x}, {_num(lo)}, {nan})"
    return f"tl.clamp({x}, {_num(lo)}, {_num(hi)}, {nan})"


class Activation(Op):
    fusion = "epilogue"

    def __init__(self, name: str, fn: Callable, expr: Callable[[str, object], str],
                 attrs_type: type = NoAttrs, *args: Arg):
        self.name = name
        self.attrs_type = attrs_type
        self.signature = (Arg("input", Tensor()), *args)
        self._fn = fn
        self._expr = expr

    def triton_expr(self, attrs, x: str) -> str:
        return self._expr(x, attrs)

    def infer(self, attrs, inputs: list[TensorInfo]) -> Shape:
        return inputs[0].shape

    def reference(self, attrs, xs, p, training):
        return self._fn(xs[0], attrs)


class Identity(Activation):
    pass_through = "always"  # simplify removes it


register(
    Activation("relu", lambda x, a: F.relu(x), lambda x, a: _clamp(x, 0.0)),
    Activation("relu6", lambda x, a: F.relu6(x), lambda x, a: _clamp(x, 0.0, 6.0)),
    Activation("sigmoid", lambda x, a: x.sigmoid(), lambda x, a: f"tl.sigmoid({x})"),
    Activation("tanh", lambda x, a: x.tanh(), lambda x, a: _tanh(x)),
    Activation("silu", lambda x, a: F.silu(x), lambda x, a: f"({x} * tl.sigmoid({x}))"),
    Activation("hardsigmoid", lambda x, a: F.hardsigmoid(x),
               lambda x, a: f"({_clamp(f'{x} + 3.0', 0.0, 6.0)} / 6.0)"),
    Activation("hardswish", lambda x, a: F.hardswish(x),
               lambda x, a: f"({x} * {_clamp(f'{x} + 3.0', 0.0, 6.0)} / 6.0)"),
    Activation(
        "leaky_relu", lambda x, a: F.leaky_relu(x, a.negative_slope),
        lambda x, a: f"tl.where({x} > 0, {x}, {x} * {_num(a.negative_slope)})",
        LeakyReluAttrs, Arg("negative_slope", Float(max_magnitude=FLOAT32_MAX), 0.01),
    ),
    Activation(
        "elu", lambda x, a: F.elu(x, a.alpha),
        lambda x, a: f"tl.where({x} > 0, {x}, {_num(a.alpha)} * (tl.exp({x}) - 1.0))",
        EluAttrs, Arg("alpha", Float(max_magnitude=FLOAT32_MAX), 1.0),
    ),
    Activation(
        "gelu", lambda x, a: F.gelu(x, approximate=a.approximate), lambda x, a: (
            f"(0.5 * {x} * (1.0 + tl.erf({x} * 0.7071067811865476)))"
            if a.approximate == "none" else
            f"(0.5 * {x} * (1.0 + "
            f"{_tanh(f'0.7978845608028654 * ({x} + 0.044715 * {x} * {x} * {x})')}))"
        ),
        GeluAttrs, Arg("approximate", Choice("none", "tanh"), "none"),
    ),
    Identity("identity", lambda x, a: x, lambda x, a: x),
)
