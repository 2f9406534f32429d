"""Elementwise activations: the output has the input's shape."""

from __future__ import annotations

import math
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


Grad = Callable[[str, str, str, object], str]  # (g, x, y, attrs) -> dL/dx, a Triton expression


class Activation(Op):
    """An elementwise activation. `grad` gives its derivative times g (PyTorch autograd's
    formula and its values at kinks), reading only what `uses` names: "output", or
    "input", or a function of the attrs choosing one of them. `window`: where `grad` is
    g strictly inside (lo, hi) of the output and 0 elsewhere, a function of the attrs
    giving (lo, hi) (see Op.output_window)."""

    fusion = "epilogue"

    def __init__(self, name: str, fn: Callable, expr: Callable[[str, object], str],
                 attrs_type: type = NoAttrs, *args: Arg, grad: Grad | None = None,
                 uses: str | Callable[[object], str] = "input",
                 window: Callable[[object], tuple[float, float]] | None = None):
        self.name = name
        self.attrs_type = attrs_type
        self.signature = (Arg("input", Tensor()), *args)
        self._fn = fn
        self._expr = expr
        self._grad = grad
        self._uses = uses
        self._window = window

    def triton_expr(self, attrs, x: str) -> str:
        return self._expr(x, attrs)

    def derivative(self, attrs, g: str, x: str, y: str) -> str | None:
        return None if self._grad is None else self._grad(g, x, y, attrs)

    def derivative_uses(self, attrs) -> str:
        return self._uses(attrs) if callable(self._uses) else self._uses

    def output_window(self, attrs) -> tuple[float, float] | None:
        return None if self._window is None else self._window(attrs)

    def infer(self, attrs, inputs: list[TensorInfo]) -> Shape:
        return inputs[0].shape

    def reference(self, attrs, xs, p, training):
        return self._fn(xs[0], attrs)


class Identity(Activation):
    pass_through = "always"  # simplify removes it


def _sigmoid(x: str) -> str:
    return f"(1.0 / (1.0 + tl.exp(-{x})))"  # ATen's silu/mish backward write it so


def _gelu_grad(g: str, x: str, a: GeluAttrs) -> str:
    """ATen's gelu_backward, for approximate none and tanh."""
    if a.approximate == "none":
        cdf = f"0.5 * (1.0 + tl.erf({x} * 0.7071067811865476))"
        pdf = f"0.3989422804014327 * tl.exp({x} * {x} * -0.5)"
        return f"({g} * ({cdf} + {x} * {pdf}))"
    t = _tanh(f"0.7978845608028654 * ({x} + 0.044715 * {x} * {x} * {x})")
    right = (f"0.5 * {x} * (1.0 - {t} * {t}) * 0.7978845608028654 "
             f"* (1.0 + 3.0 * 0.044715 * {x} * {x})")
    return f"({g} * (0.5 * (1.0 + {t}) + {right}))"


def _where_positive(g: str, v: str, negative: str) -> str:
    return f"tl.where({v} > 0.0, {g}, {negative})"


register(
    # relu: PyTorch's threshold_backward(g, y, 0) passes g unless y <= 0 (NaN passes it).
    Activation("relu", lambda x, a: F.relu(x), lambda x, a: _clamp(x, 0.0),
               grad=lambda g, x, y, a: f"tl.where({y} <= 0.0, 0.0, {g})", uses="output",
               window=lambda a: (0.0, math.inf)),
    # relu6 is hardtanh(0, 6): zero at and beyond both bounds.
    Activation("relu6", lambda x, a: F.relu6(x), lambda x, a: _clamp(x, 0.0, 6.0),
               grad=lambda g, x, y, a: f"tl.where(({y} <= 0.0) | ({y} >= 6.0), 0.0, {g})",
               uses="output", window=lambda a: (0.0, 6.0)),
    Activation("sigmoid", lambda x, a: x.sigmoid(), lambda x, a: f"tl.sigmoid({x})",
               grad=lambda g, x, y, a: f"({g} * (1.0 - {y}) * {y})", uses="output"),
    Activation("tanh", lambda x, a: x.tanh(), lambda x, a: _tanh(x),
               grad=lambda g, x, y, a: f"({g} * (1.0 - {y} * {y}))", uses="output"),
    Activation("silu", lambda x, a: F.silu(x), lambda x, a: f"({x} * tl.sigmoid({x}))",
               grad=lambda g, x, y, a: (f"({g} * {_sigmoid(x)} * "
                                        f"(1.0 + {x} * (1.0 - {_sigmoid(x)})))")),
    # hardsigmoid and hardswish read the input: x + 3 rounds to 6 for x just below 3, so
    # the output cannot tell where the slope ends.
    Activation("hardsigmoid", lambda x, a: F.hardsigmoid(x),
               lambda x, a: f"({_clamp(f'{x} + 3.0', 0.0, 6.0)} / 6.0)",
               grad=lambda g, x, y, a: f"tl.where(({x} > -3.0) & ({x} < 3.0), {g} / 6.0, 0.0)"),
    Activation("hardswish", lambda x, a: F.hardswish(x),
               lambda x, a: f"({x} * {_clamp(f'{x} + 3.0', 0.0, 6.0)} / 6.0)",
               grad=lambda g, x, y, a: (f"tl.where({x} <= -3.0, 0.0, tl.where({x} < 3.0, "
                                        f"{g} * ({x} / 3.0 + 0.5), {g}))")),
    # leaky_relu: with a slope >= 0, y > 0 exactly where x > 0 (NaN in neither).
    Activation(
        "leaky_relu", lambda x, a: F.leaky_relu(x, a.negative_slope),
        lambda x, a: f"tl.where({x} > 0, {x}, {x} * {_num(a.negative_slope)})",
        LeakyReluAttrs, Arg("negative_slope", Float(max_magnitude=FLOAT32_MAX), 0.01),
        grad=lambda g, x, y, a: _where_positive(
            g, y if a.negative_slope >= 0 else x, f"{g} * {_num(a.negative_slope)}"),
        uses=lambda a: "output" if a.negative_slope >= 0 else "input",
    ),
    # elu: PyTorch's elu_backward; from the output (y + alpha = alpha * exp(x)) when
    # alpha > 0, where y <= 0 exactly where x <= 0.
    Activation(
        "elu", lambda x, a: F.elu(x, a.alpha),
        lambda x, a: f"tl.where({x} > 0, {x}, {_num(a.alpha)} * (tl.exp({x}) - 1.0))",
        EluAttrs, Arg("alpha", Float(max_magnitude=FLOAT32_MAX), 1.0),
        grad=lambda g, x, y, a: (
            f"tl.where({y} <= 0.0, {g} * ({y} + {_num(a.alpha)}), {g})" if a.alpha > 0 else
            f"tl.where({x} <= 0.0, {g} * {_num(a.alpha)} * tl.exp({x}), {g})"),
        uses=lambda a: "output" if a.alpha > 0 else "input",
    ),
    Activation(
        "gelu", lambda x, a: F.gelu(x, approximate=a.approximate), lambda x, a: (
            f"(0.5 * {x} * (1.0 + tl.erf({x} * 0.7071067811865476)))"
            if a.approximate == "none" else
            f"(0.5 * {x} * (1.0 + "
            f"{_tanh(f'0.7978845608028654 * ({x} + 0.044715 * {x} * {x} * {x})')}))"
        ),
        GeluAttrs, Arg("approximate", Choice("none", "tanh"), "none"),
        grad=lambda g, x, y, a: _gelu_grad(g, x, a),
    ),
    Identity("identity", lambda x, a: x, lambda x, a: x, grad=lambda g, x, y, a: g,
             uses="output"),
)
