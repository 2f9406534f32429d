"""Reshaping and whole-tensor operators: flatten, softmax, log_softmax, dropout, upsample."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F

from ..errors import ShapeError
from ..ir.shapes import Shape, multiply_dims, per_sample_numel
from .common import LAYOUT, normalize_dim, spatial_of
from .registry import GradRule, Op, TensorInfo, register
from .signature import (
    INT64_MAX,
    Arg,
    Bool,
    Choice,
    Float,
    Int,
    Kind,
    Optional,
    Scale,
    Tensor,
)
from .size_kinds import Sizes


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
    scale_factor: int | float | tuple | None  # one number for every spatial dim, or one per dim
    size: int | tuple[int, ...] | None = None  # likewise, the output's spatial sizes
    mode: str = "nearest"
    align_corners: bool | None = None


@dataclass(frozen=True)
class DefaultScale:
    """upsample's scale_factor left out: 2 when `size` is none too, else none."""

    def __str__(self) -> str:  # how signatures show the default
        return "2"


class ScaleOrDefault(Kind):
    kind = Optional(Scale())
    description = kind.description

    def convert(self, value):
        return value if isinstance(value, DefaultScale) else self.kind.convert(value)


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

    def grad_rule(self, attrs: SoftmaxAttrs) -> GradRule:
        return GradRule(f"grad_{self.name}", ("y",), ("x",), (("dim", attrs.dim),))

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


# The spatial dims each interpolating mode takes, and the inputs one output mixes.
MODE_DIMS = {"linear": 1, "bilinear": 2, "bicubic": 2, "trilinear": 3}
MODE_TAPS = {"nearest": 0, "linear": 2, "bilinear": 4, "bicubic": 16, "trilinear": 8}


class Upsample(Op):
    """F.interpolate: to a `size` or by a `scale_factor`, in nearest, linear, bilinear,
    bicubic or trilinear mode."""
    fusion = "anchor"
    template = "upsample"  # every mode, by size or scale_factor

    name = "upsample"
    attrs_type = UpsampleAttrs
    signature = (
        Arg("input", Tensor()),
        Arg("scale_factor", ScaleOrDefault(), DefaultScale()),
        Arg("size", Optional(Sizes()), None),
        Arg("mode", Choice("nearest", "linear", "bilinear", "bicubic", "trilinear"), "nearest"),
        Arg("align_corners", Optional(Bool()), None),
    )

    def make_attrs(self, args) -> UpsampleAttrs:
        scale = args["scale_factor"]
        if isinstance(scale, DefaultScale):
            scale = 2 if args["size"] is None else None
        return UpsampleAttrs(scale, args["size"], args["mode"], args["align_corners"])

    def scales(self, attrs: UpsampleAttrs, spatial: int) -> tuple:
        """One scale_factor per spatial dim, or one None per dim where `size` is given."""
        if attrs.scale_factor is None:
            return (None,) * spatial
        return self._scales(attrs, spatial)

    @staticmethod
    def _scales(attrs: UpsampleAttrs, spatial: int) -> tuple:
        scale = attrs.scale_factor
        return scale if isinstance(scale, tuple) else (scale,) * spatial

    def infer(self, attrs: UpsampleAttrs, inputs):
        (x,) = inputs
        if attrs.mode == "nearest" and attrs.align_corners is not None:
            raise ShapeError(
                "upsample() align_corners can only be set with the interpolating modes "
                '(linear, bilinear, bicubic, trilinear), not mode="nearest"',
                arg="align_corners",
            )
        spatial = len(x.shape) - 2
        if not 1 <= spatial <= 3:
            raise ShapeError(f"upsample() expects a 3- to 5-d input [N, C, ...], found {x}")
        if attrs.size is not None and attrs.scale_factor is not None:
            raise ShapeError("upsample() takes `size` or `scale_factor`, not both",
                             arg="size", help="give only one of them")
        if attrs.size is None and attrs.scale_factor is None:
            raise ShapeError("upsample() argument `scale_factor` is none and no `size` is "
                             "given: it needs one of them", arg="scale_factor")
        wanted = MODE_DIMS.get(attrs.mode)
        if wanted is not None and wanted != spatial:
            raise ShapeError(
                f'upsample() mode="{attrs.mode}" needs a {wanted + 2}-d input '
                f"{LAYOUT[wanted]}, found {x}", arg="mode",
            )
        if attrs.size is not None:
            out = self._per_dim(attrs.size, spatial, x, "size")
            spatial_of(self.name, x)
        else:
            scales = self._per_dim(attrs.scale_factor, spatial, x, "scale_factor")
            out = [self._grown(size, s, x) for size, s in zip(spatial_of(self.name, x), scales)]
        return (*x.shape[:2], *out)

    @staticmethod
    def _per_dim(value, spatial: int, x: TensorInfo, arg: str) -> tuple:
        values = value if isinstance(value, tuple) else (value,) * spatial
        if len(values) != spatial:
            raise ShapeError(
                f"upsample() argument `{arg}` has {len(values)} "
                f"{'value' if len(values) == 1 else 'values'} for the {spatial} spatial "
                f"{'dim' if spatial == 1 else 'dims'} of {x}",
                arg=arg,
                help="give one number for every dim, or a tuple of one per spatial dim",
            )
        return values

    @staticmethod
    def _grown(size: int, s, x: TensorInfo) -> int:
        grown = size * s  # in double precision, as ATen computes it
        if grown > INT64_MAX or not math.isfinite(grown):
            raise ShapeError(
                f"upsample() scale_factor {s!r} is too large: it would make a size of "
                f"{x} larger than PyTorch can count (2**63 - 1)",
                arg="scale_factor",
            )
        n = math.floor(grown)
        if n < 1:
            raise ShapeError(f"upsample() scale_factor {s!r} leaves no output from {x}",
                             arg="scale_factor")
        return n

    def grad_rule(self, attrs: UpsampleAttrs) -> GradRule:
        scale = attrs.scale_factor
        if isinstance(scale, DefaultScale):
            scale = 2 if attrs.size is None else None
        return GradRule("grad_upsample", ("x",), ("x",), (
            ("size", attrs.size), ("scale_factor", scale), ("mode", attrs.mode),
            ("align_corners", attrs.align_corners)))

    def reference(self, attrs: UpsampleAttrs, xs, p, training):
        x = xs[0]
        scales = None if attrs.scale_factor is None else self._scales(attrs, x.dim() - 2)
        return F.interpolate(x, size=attrs.size, scale_factor=scales, mode=attrs.mode,
                             align_corners=attrs.align_corners)

    def macs(self, attrs: UpsampleAttrs, inputs, out) -> int:
        return per_sample_numel(out) * MODE_TAPS[attrs.mode]

    def explain(self, attrs: UpsampleAttrs, inputs, out) -> list[str]:
        sizes = inputs[0].shape[2:]
        if attrs.size is not None:
            parts = [f"{s} -> {o}" for s, o in zip(sizes, out[2:])]
            lines = ["size given: " + ", ".join(parts)]
        else:
            scales = self._scales(attrs, len(sizes))
            parts = [f"floor({s}*{f}) = {o}" for s, f, o in zip(sizes, scales, out[2:])]
            lines = ["output size = floor(input * scale_factor): " + ", ".join(parts)]
        # The source coordinate of output index dst, as ATen computes it.
        ratio = "input / output" if attrs.scale_factor is None else "1 / scale_factor"
        if attrs.mode == "nearest":
            lines.append(f"nearest: each output copies one input, src = floor(dst * {ratio})")
        else:
            corners = bool(attrs.align_corners)
            where = ("src = dst * (input - 1) / (output - 1)" if corners
                     else f"src = (dst + 0.5) * {ratio} - 0.5")
            lines.append(f"{attrs.mode} (align_corners={'true' if corners else 'false'}): "
                         f"{where}; each output mixes {MODE_TAPS[attrs.mode]} inputs")
        return lines

register(
    Flatten(),
    Softmax("softmax", F.softmax),
    Softmax("log_softmax", F.log_softmax),
    Dropout(),
    Upsample(),
)
