"""Reshaping and whole-tensor operators: flatten, softmax, log_softmax, dropout, upsample."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F

from ..errors import ShapeError
from ..ir.shapes import Shape, Sym, multiply_dims
from .common import normalize_dim
from .registry import Op, TensorInfo, register
from .signature import INT64_MAX, Arg, Float, Int, Scale, Tensor


@dataclass(frozen=True)
class FlattenAttrs:
    start_dim: int
    end_dim: int


@dataclass(frozen=True)
class SoftmaxAttrs:
    dim: int


@dataclass(frozen=True)
class DropoutAttrs:
    p: float


@dataclass(frozen=True)
class UpsampleAttrs:
    scale_factor: int | float | tuple  # one number for every spatial dim, or one per dim


class Flatten(Op):
    name = "flatten"
    fusion = "view"
    view = "reshape"
    attrs_type = FlattenAttrs
    signature = (Arg("input", Tensor()), Arg("start_dim", Int(), 1), Arg("end_dim", Int(), -1))

    def infer(self, attrs: FlattenAttrs, inputs: list[TensorInfo]) -> Shape:
        (x,) = inputs
        rank = len(x.shape)
        start = normalize_dim(self.name, attrs.start_dim, rank, "start_dim")
        end = normalize_dim(self.name, attrs.end_dim, rank, "end_dim")
        if start > end:
            raise ShapeError(
                f"flatten() start_dim={attrs.start_dim} comes after end_dim={attrs.end_dim} "
                f"for {x}",
                arg="start_dim",
            )
        merged = multiply_dims(x.shape[start:end + 1])
        return (*x.shape[:start], merged, *x.shape[end + 1:])

    def reference(self, attrs, xs, p, training):
        return xs[0].flatten(attrs.start_dim, attrs.end_dim)


class Softmax(Op):
    fusion = "anchor"
    template = "softmax"
    attrs_type = SoftmaxAttrs

    def __init__(self, name: str, fn):
        self.name = name
        self._fn = fn
        self.signature = (Arg("input", Tensor()), Arg("dim", Int(), 1))

    def infer(self, attrs, inputs):
        normalize_dim(self.name, attrs.dim, len(inputs[0].shape), "dim")
        return inputs[0].shape

    def reference(self, attrs, xs, p, training):
        return self._fn(xs[0], dim=attrs.dim)


class Dropout(Op):
    name = "dropout"
    fusion = "epilogue"
    draws_random = True
    pass_through = "eval"
    attrs_type = DropoutAttrs
    signature = (Arg("input", Tensor()), Arg("p", Float(0, 1), 0.5))

    def infer(self, attrs, inputs):
        return inputs[0].shape

    def reference(self, attrs, xs, p, training):
        return F.dropout(xs[0], attrs.p, training)


class Upsample(Op):
    """Nearest-neighbour upsampling of every spatial dim (F.interpolate, mode="nearest")."""
    fusion = "anchor"
    template = "upsample"

    name = "upsample"
    attrs_type = UpsampleAttrs
    signature = (
        Arg("input", Tensor()),
        Arg("scale_factor", Scale(), 2),
    )

    def scales(self, attrs: UpsampleAttrs, spatial: int) -> tuple:
        """One factor per spatial dim."""
        scale = attrs.scale_factor
        return scale if isinstance(scale, tuple) else (scale,) * spatial

    def infer(self, attrs: UpsampleAttrs, inputs):
        (x,) = inputs
        spatial = len(x.shape) - 2
        if not 1 <= spatial <= 3:
            raise ShapeError(f"upsample() expects a 3- to 5-d input [N, C, ...], found {x}")
        scales = self.scales(attrs, spatial)
        if len(scales) != spatial:
            raise ShapeError(
                f"upsample() argument `scale_factor` has {len(scales)} "
                f"{'value' if len(scales) == 1 else 'values'} for the {spatial} spatial "
                f"{'dim' if spatial == 1 else 'dims'} of {x}",
                arg="scale_factor",
                help="give one number for every dim, or a tuple of one per spatial dim",
            )
        out = []
        for size, s in zip(x.shape[2:], scales):
            if isinstance(size, Sym):
                raise ShapeError(f"upsample() needs fixed spatial sizes, found {x}")
            grown = size * s  # in double precision, as ATen computes it
            if grown > INT64_MAX or not math.isfinite(grown):
                raise ShapeError(
                    f"upsample() scale_factor {s!r} is too large: it would make a size of "
                    f"{x} larger than PyTorch can count (2**63 - 1)",
                    arg="scale_factor",
                )
            n = math.floor(grown)
            if n < 1:
                raise ShapeError(
                    f"upsample() scale_factor {s!r} leaves no output from {x}",
                    arg="scale_factor",
                )
            out.append(n)
        return (*x.shape[:2], *out)

    def reference(self, attrs, xs, p, training):
        scales = self.scales(attrs, xs[0].dim() - 2)
        return F.interpolate(xs[0], scale_factor=scales, mode="nearest")


register(
    Flatten(),
    Softmax("softmax", F.softmax),
    Softmax("log_softmax", F.log_softmax),
    Dropout(),
    Upsample(),
)
