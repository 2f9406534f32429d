"""More activations: softplus, mish and hardtanh (elementwise, fused as epilogues), and
prelu, whose learned slopes make it an operator with a parameter.

Their Triton expressions use tl.where, never tl.maximum / tl.minimum, which drop NaN:
PyTorch propagates it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ..errors import ShapeError
from ..ir.graph import ParamSpec
from ..ir.shapes import Shape
from .activations import Activation, _num, _tanh
from .common import NoAttrs, channels_of
from .registry import Op, TensorInfo, register
from .signature import FLOAT32_MAX, Arg, Float, Int, Tensor


@dataclass(frozen=True)
class SoftplusAttrs:
    beta: float
    threshold: float


@dataclass(frozen=True)
class HardtanhAttrs:
    min_val: float
    max_val: float


@dataclass(frozen=True)
class PReLUAttrs:
    num_parameters: int
    init: float


FLOAT32 = Float(max_magnitude=FLOAT32_MAX)  # PyTorch takes these as float32 scalars


def _softplus_expr(x: str, beta: str) -> str:
    """log(1 + exp(beta*x)) / beta, computed as max(z, 0) + log(1 + exp(-|z|)) so that
    exp cannot overflow (z = beta*x)."""
    z = f"({x} * {beta})"
    return f"((tl.where({z} > 0.0, {z}, 0.0) + tl.log(1.0 + tl.exp(-tl.abs({z})))) / {beta})"


def softplus_expr(x: str, a: SoftplusAttrs) -> str:
    # PyTorch: x where beta*x > threshold (NaN there takes the log branch, giving NaN).
    beta = _num(a.beta)
    return f"tl.where({x} * {beta} > {_num(a.threshold)}, {x}, {_softplus_expr(x, beta)})"


def mish_expr(x: str, a: NoAttrs) -> str:
    # PyTorch: x * tanh(log1p(exp(x))), with no threshold (mish(-inf) is NaN there too).
    return f"({x} * {_tanh(_softplus_expr(x, '1.0'))})"


def hardtanh_expr(x: str, a: HardtanhAttrs) -> str:
    lo, hi = _num(a.min_val), _num(a.max_val)
    return f"tl.where({x} < {lo}, {lo}, tl.where({x} > {hi}, {hi}, {x}))"


class Hardtanh(Activation):
    def infer(self, attrs: HardtanhAttrs, inputs: list[TensorInfo]) -> Shape:
        if attrs.min_val > attrs.max_val:
            raise ShapeError(
                f"hardtanh() min_val={attrs.min_val:g} is greater than "
                f"max_val={attrs.max_val:g}",
                arg="min_val",
            )
        return inputs[0].shape


class PReLU(Op):
    """nn.PReLU: max(0, x) + weight * min(0, x), one slope or one per channel (dim 1)."""

    name = "prelu"
    attrs_type = PReLUAttrs
    fusion = "epilogue"  # fused like an activation; the epilogue loads its slope
    channel_slope = "weight"  # the parameter the epilogue reads at the channel index
    signature = (
        Arg("input", Tensor()),
        Arg("num_parameters", Int(1), 1),
        Arg("init", FLOAT32, 0.25),
    )

    def infer(self, attrs: PReLUAttrs, inputs: list[TensorInfo]) -> Shape:
        (x,) = inputs
        if attrs.num_parameters != 1:
            c = channels_of(self.name, x) if len(x.shape) >= 2 else 1
            if attrs.num_parameters != c:
                raise ShapeError(
                    f"prelu() num_parameters={attrs.num_parameters} must be 1 or the "
                    f"channel count (dim 1) of {x}"
                    + ("" if len(x.shape) >= 2 else ", which has no channel dim"),
                    arg="num_parameters",
                )
        return x.shape

    def params(self, attrs: PReLUAttrs, inputs) -> tuple[ParamSpec, ...]:
        return (ParamSpec("weight", (attrs.num_parameters,), init=("fill", attrs.init)),)

    def triton_expr(self, attrs: PReLUAttrs, x: str, slope: str = "slope") -> str:
        # ATen's x > 0 ? x : w * x (NaN takes the product and stays NaN).
        return f"tl.where({x} > 0.0, {x}, {slope} * {x})"

    def slope_derivatives(self, attrs: PReLUAttrs, g: str, x: str, slope: str) -> tuple:
        """(dL/dx, dL/dslope per element) as Triton expressions: PyTorch's, x = 0 on the
        slope's side (its gradient takes x there, which is 0)."""
        return (f"tl.where({x} > 0, {g}, {slope} * {g})",
                f"tl.where({x} > 0, 0.0, {x} * {g})")

    def reference(self, attrs: PReLUAttrs, xs, p, training):
        return F.prelu(xs[0], p["weight"])

    def explain(self, attrs: PReLUAttrs, inputs, out) -> list[str]:
        n = attrs.num_parameters
        return [f"params: {'one slope' if n == 1 else f'{n} slopes, one per channel'} "
                f"for x < 0, starting at {attrs.init:g}"]


def softplus_grad(g: str, x: str, y: str, a: SoftplusAttrs) -> str:
    # PyTorch's softplus_backward: g where beta*x > threshold, else g * z / (z + 1) with
    # z = exp(beta*x) (which overflows to NaN past float32's range, as PyTorch's does).
    z = f"tl.exp({x} * {_num(a.beta)})"
    return f"tl.where({x} * {_num(a.beta)} > {_num(a.threshold)}, {g}, {g} * {z} / ({z} + 1.0))"


def mish_grad(g: str, x: str, y: str, a: NoAttrs) -> str:
    # PyTorch's mish_backward: g * (t + x * sigmoid(x) * (1 - t*t)), t = tanh(softplus(x)).
    t = _tanh(_softplus_expr(x, "1.0"))
    return f"({g} * ({t} + {x} * (1.0 / (1.0 + tl.exp(-{x}))) * (1.0 - {t} * {t})))"


def hardtanh_grad(g: str, x: str, y: str, a: HardtanhAttrs) -> str:
    # PyTorch's hardtanh_backward: 0 at and beyond both bounds, which y shows as well as x.
    lo, hi = _num(a.min_val), _num(a.max_val)
    return f"tl.where(({y} <= {lo}) | ({y} >= {hi}), 0.0, {g})"


register(
    Activation(
        "softplus", lambda x, a: F.softplus(x, a.beta, a.threshold), softplus_expr,
        SoftplusAttrs, Arg("beta", FLOAT32, 1), Arg("threshold", FLOAT32, 20),
        grad=softplus_grad,
    ),
    Activation("mish", lambda x, a: F.mish(x), mish_expr, grad=mish_grad),
    Hardtanh(
        "hardtanh", lambda x, a: F.hardtanh(x, a.min_val, a.max_val), hardtanh_expr,
        HardtanhAttrs, Arg("min_val", FLOAT32, -1), Arg("max_val", FLOAT32, 1),
        grad=hardtanh_grad, uses="output", window=lambda a: (a.min_val, a.max_val),
    ),
    PReLU(),
)
