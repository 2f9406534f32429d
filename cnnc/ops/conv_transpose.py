"""conv_transpose1/2/3d: nn.ConvTransposeNd's arguments, shape rules and initialisation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F

from ..errors import ShapeError
from ..ir.graph import ParamSpec
from ..ir.shapes import Shape
from . import arithmetic
from .common import channels_of, check_rank, spatial_of
from .registry import GradRule, Op, TensorInfo, register
from .signature import Arg, Bool, Int, Ints, Tensor


@dataclass(frozen=True)
class ConvTransposeAttrs:
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    output_padding: tuple[int, ...]
    groups: int
    bias: bool
    dilation: tuple[int, ...]


class ConvTranspose(Op):
    fusion = "anchor"
    template = "conv_transpose"
    epilogue_slot = True
    attrs_type = ConvTransposeAttrs

    def __init__(self, dims: int):
        self.dims = dims
        self.name = f"conv_transpose{dims}d"
        self.signature = (
            Arg("input", Tensor()),
            Arg("out_channels", Int(1)),
            Arg("kernel_size", Ints(dims)),
            Arg("stride", Ints(dims), 1),
            Arg("padding", Ints(dims, min=0), 0),
            Arg("output_padding", Ints(dims, min=0), 0),
            Arg("groups", Int(1), 1),
            Arg("bias", Bool(), True),
            Arg("dilation", Ints(dims), 1),
        )
        self._fn = getattr(F, self.name)

    def infer(self, attrs: ConvTransposeAttrs, inputs: list[TensorInfo]) -> Shape:
        (x,) = inputs
        check_rank(self.name, x, self.dims)
        in_channels = channels_of(self.name, x)
        for what, count in (("input channels of " + str(x), in_channels),
                            ("out_channels", attrs.out_channels)):
            if count % attrs.groups:
                raise ShapeError(
                    f"{self.name}() groups={attrs.groups} does not divide the {count} {what}",
                    arg="groups",
                )
        for op, s, d in zip(attrs.output_padding, attrs.stride, attrs.dilation):
            if op >= s and op >= d:
                raise ShapeError(
                    f"{self.name}() output_padding {op} must be smaller than the stride ({s}) "
                    f"or the dilation ({d})",
                    arg="output_padding",
                )
        out = []
        for size, k, s, p, d, op in zip(
            spatial_of(self.name, x), attrs.kernel_size, attrs.stride, attrs.padding,
            attrs.dilation, attrs.output_padding,
        ):
            n = arithmetic.transposed_output_size(size, k, s, p, d, op)
            if n < 1:
                raise ShapeError(
                    f"{self.name}() padding {p} leaves no output from {x} "
                    f"(({size} - 1)*{s} - 2*{p} + {d}*({k} - 1) + {op} + 1 = {n})",
                    arg="padding",
                )
            out.append(n)
        return (x.shape[0], attrs.out_channels, *out)

    def params(self, attrs: ConvTransposeAttrs, inputs) -> tuple[ParamSpec, ...]:
        in_channels = inputs[0].shape[1]
        weight = (in_channels, attrs.out_channels // attrs.groups, *attrs.kernel_size)
        specs = [ParamSpec("weight", weight, init=("kaiming_uniform",))]
        if attrs.bias:
            fan_in = math.prod(weight[1:])  # PyTorch takes weight.size(1) * kernel for fan_in
            specs.append(ParamSpec("bias", (attrs.out_channels,), init=("uniform", fan_in ** -0.5)))
        return tuple(specs)

    def grad_rule(self, attrs: ConvTransposeAttrs) -> GradRule:
        return GradRule("grad_conv_transpose", ("x", "weight"), ("x", "weight", "bias"), (
            ("stride", attrs.stride), ("padding", attrs.padding),
            ("output_padding", attrs.output_padding), ("dilation", attrs.dilation),
            ("groups", attrs.groups), ("has_bias", attrs.bias)), needs=True)

    def reference(self, attrs: ConvTransposeAttrs, xs, p, training):
        return self._fn(
            xs[0], p["weight"], p.get("bias"), attrs.stride, attrs.padding,
            attrs.output_padding, attrs.groups, attrs.dilation,
        )

    def macs(self, attrs, inputs, out) -> int:
        x = inputs[0].shape
        per_input = (attrs.out_channels // attrs.groups) * math.prod(attrs.kernel_size)
        return math.prod(x[1:]) * per_input

    def explain(self, attrs: ConvTransposeAttrs, inputs, out) -> list[str]:
        lines = []
        names = arithmetic.SPATIAL_NAMES[self.dims]
        for name, size, k, s, p, d, op, n in zip(
            names, inputs[0].shape[2:], attrs.kernel_size, attrs.stride, attrs.padding,
            attrs.dilation, attrs.output_padding, out[2:],
        ):
            lines.append(f"{name}: ({size} - 1)*{s} - 2*{p} + {d}*({k} - 1) + {op} + 1 = {n}")
        return lines


register(*(ConvTranspose(d) for d in (1, 2, 3)))
