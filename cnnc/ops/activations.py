"""Elementwise activations: the output has the input's shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F

from ..ir.shapes import Shape
from .common import NoAttrs
from .registry import Op, TensorInfo, register
from .signature import Arg, Choice, Float, Tensor


@dataclass(frozen=True)
class LeakyReluAttrs:
    negative_slope: float


@dataclass(frozen=True)
class EluAttrs:
    alpha: float


@dataclass(frozen=True)
class GeluAttrs:
    approximate: str


class Activation(Op):
    def __init__(self, name: str, fn: Callable, attrs_type: type = NoAttrs, *args: Arg):
        self.name = name
        self.attrs_type = attrs_type
        self.signature = (Arg("input", Tensor()), *args)
        self._fn = fn

    def infer(self, attrs, inputs: list[TensorInfo]) -> Shape:
        return inputs[0].shape

    def reference(self, attrs, xs, p, training):
        return self._fn(xs[0], attrs)


register(
    Activation("relu", lambda x, a: F.relu(x)),
    Activation("relu6", lambda x, a: F.relu6(x)),
    Activation("sigmoid", lambda x, a: x.sigmoid()),
    Activation("tanh", lambda x, a: x.tanh()),
    Activation("silu", lambda x, a: F.silu(x)),
    Activation("hardsigmoid", lambda x, a: F.hardsigmoid(x)),
    Activation("hardswish", lambda x, a: F.hardswish(x)),
    Activation(
        "leaky_relu", lambda x, a: F.leaky_relu(x, a.negative_slope), LeakyReluAttrs,
        Arg("negative_slope", Float(), 0.01),
    ),
    Activation("elu", lambda x, a: F.elu(x, a.alpha), EluAttrs, Arg("alpha", Float(), 1.0)),
    Activation(
        "gelu", lambda x, a: F.gelu(x, approximate=a.approximate), GeluAttrs,
        Arg("approximate", Choice("none", "tanh"), "none"),
    ),
    Activation("identity", lambda x, a: x),
)
