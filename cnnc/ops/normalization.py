"""layer_norm and group_norm: per-sample statistics, as nn.LayerNorm and nn.GroupNorm.

Unlike batch_norm they never mix batch items, so they compute the same in training and
evaluation, and have no running buffers. Both run as the "norm" kernel (one program per
row of statistics), with the following elementwise chain in its epilogue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F

from ..errors import ShapeError
from ..ir.graph import ParamSpec
from ..ir.shapes import Shape, Sym, format_shape
from ..ir.values import tuple_text
from .common import channels_of
from .registry import GradRule, Op, TensorInfo, register
from .signature import Arg, Bool, Float, Int, Tensor
from .size_kinds import Sizes


@dataclass(frozen=True)
class LayerNormAttrs:
    normalized_shape: tuple[int, ...]
    eps: float
    elementwise_affine: bool


@dataclass(frozen=True)
class GroupNormAttrs:
    num_groups: int
    eps: float
    affine: bool


# PyTorch takes any eps; a negative one can make the variance negative (NaN), so cnnc
# wants eps >= 0.
EPS = Float(0)


def _affine_params(shape: tuple[int, ...]) -> tuple[ParamSpec, ...]:
    return (ParamSpec("weight", shape, init=("fill", 1)), ParamSpec("bias", shape))


class LayerNorm(Op):
    name = "layer_norm"
    fusion = "anchor"
    template = "norm"
    epilogue_slot = True
    attrs_type = LayerNormAttrs
    signature = (
        Arg("input", Tensor()),
        Arg("normalized_shape", Sizes()),
        Arg("eps", EPS, 1e-5),
        Arg("elementwise_affine", Bool(), True),
    )

    def make_attrs(self, args) -> LayerNormAttrs:
        shape = args["normalized_shape"]
        return LayerNormAttrs(shape if isinstance(shape, tuple) else (shape,), args["eps"],
                              args["elementwise_affine"])

    def infer(self, attrs: LayerNormAttrs, inputs: list[TensorInfo]) -> Shape:
        (x,) = inputs
        k = len(attrs.normalized_shape)
        shown = tuple_text(attrs.normalized_shape)
        if k >= len(x.shape):
            raise ShapeError(
                f"layer_norm() normalized_shape {shown} covers every dim of {x}, the "
                "batch dim too; it normalises each batch item over its last dims",
                arg="normalized_shape",
            )
        if tuple(x.shape[-k:]) != attrs.normalized_shape:
            raise ShapeError(
                f"layer_norm() normalized_shape {shown} must match the last {k} "
                f"{'dim' if k == 1 else 'dims'} of {x}",
                arg="normalized_shape",
                help=f"normalise over the last dims: {tuple_text(x.shape[-k:])}"
                if not any(isinstance(d, Sym) for d in x.shape[-k:]) else None,
            )
        return x.shape

    def params(self, attrs: LayerNormAttrs, inputs) -> tuple[ParamSpec, ...]:
        return _affine_params(attrs.normalized_shape) if attrs.elementwise_affine else ()

    def grad_rule(self, attrs: LayerNormAttrs) -> GradRule:
        return GradRule("grad_layer_norm", ("x", "weight"), ("x", "weight", "bias"), (
            ("normalized_shape", attrs.normalized_shape), ("eps", attrs.eps)), needs=True)

    def reference(self, attrs: LayerNormAttrs, xs, p, training):
        return F.layer_norm(xs[0], attrs.normalized_shape, p.get("weight"), p.get("bias"),
                            attrs.eps)

    def explain(self, attrs: LayerNormAttrs, inputs, out) -> list[str]:
        dims = attrs.normalized_shape
        n = math.prod(dims)
        lines = [f"mean and variance of each batch item over its last {len(dims)} "
                 f"{'dim' if len(dims) == 1 else 'dims'}: "
                 + ("*".join(map(str, dims)) + f" = {n:,}" if len(dims) > 1 else f"{n:,}")
                 + " values"]
        if attrs.elementwise_affine:
            lines.append(f"params: weight and bias of {format_shape(dims)}: 2*{n:,} = "
                         f"{2 * n:,}")
        return lines


class GroupNorm(Op):
    name = "group_norm"
    fusion = "anchor"
    template = "norm"
    epilogue_slot = True
    attrs_type = GroupNormAttrs
    signature = (
        Arg("input", Tensor()),
        Arg("num_groups", Int(1)),
        Arg("eps", EPS, 1e-5),
        Arg("affine", Bool(), True),
    )

    def infer(self, attrs: GroupNormAttrs, inputs: list[TensorInfo]) -> Shape:
        (x,) = inputs
        if len(x.shape) < 2:
            raise ShapeError(f"group_norm() expects an input of 2 or more dims [N, C, ...], "
                             f"found {x}")
        c = channels_of(self.name, x)
        if c % attrs.num_groups:
            raise ShapeError(
                f"group_norm() num_groups={attrs.num_groups} does not divide the {c} "
                f"channels of {x}",
                arg="num_groups",
            )
        if self._group_values(attrs, x) == 1:
            # Each group's value is its own mean: the result is the bias whatever the input
            # (PyTorch refuses it at batch size 1, "Expected more than 1 value per channel").
            raise ShapeError(
                f"group_norm() num_groups={attrs.num_groups} leaves one value per group of "
                f"{x}: normalising a single value gives 0",
                arg="num_groups", help="use fewer groups",
            )
        return x.shape

    @staticmethod
    def _group_values(attrs: GroupNormAttrs, x: TensorInfo) -> int:
        return x.shape[1] // attrs.num_groups * math.prod(x.shape[2:])

    def params(self, attrs: GroupNormAttrs, inputs) -> tuple[ParamSpec, ...]:
        return _affine_params((inputs[0].shape[1],)) if attrs.affine else ()

    def grad_rule(self, attrs: GroupNormAttrs) -> GradRule:
        return GradRule("grad_group_norm", ("x", "weight"), ("x", "weight", "bias"), (
            ("num_groups", attrs.num_groups), ("eps", attrs.eps)), needs=True)

    def reference(self, attrs: GroupNormAttrs, xs, p, training):
        return F.group_norm(xs[0], attrs.num_groups, p.get("weight"), p.get("bias"), attrs.eps)

    def explain(self, attrs: GroupNormAttrs, inputs, out) -> list[str]:
        x = inputs[0]
        c, g = x.shape[1], attrs.num_groups
        per = c // g
        factors = "*".join(map(str, (per, *x.shape[2:])))
        n = self._group_values(attrs, x)
        lines = [f"{c} channels in {g} groups of {c}/{g} = {per}: mean and variance over "
                 + (f"{factors} = {n:,}" if len(x.shape) > 2 else f"{n:,}")
                 + " values per group"]
        if attrs.affine:
            lines.append(f"params: weight and bias per channel: 2*{c} = {2 * c:,}")
        return lines


register(LayerNorm(), GroupNorm())
