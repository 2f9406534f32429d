"""Operators of several tensors: add and mul (broadcasting), concat (torch.cat)."""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

import torch

from ..errors import ShapeError
from ..ir.shapes import Shape, Sym, add_dims, format_shape
from .common import normalize_dim
from .registry import Op, TensorInfo, register
from .signature import Arg, Int, Tensor, TensorOrNumber, TensorSlot


@dataclass(frozen=True)
class ArithmeticAttrs:
    others: tuple  # TensorSlot or a number, in argument order after the input


@dataclass(frozen=True)
class ConcatAttrs:
    others: tuple[TensorSlot, ...]
    dim: int


def broadcast(a: Shape, b: Shape) -> Shape | None:
    """PyTorch's broadcasting of two shapes, or None where a dim pair cannot agree."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            return None
    return tuple(reversed(out))


class Arithmetic(Op):
    fusion = "epilogue"
    attrs_type = ArithmeticAttrs

    def __init__(self, name: str, fn):
        self.name = name
        self.combine = {"add": "+", "mul": "*"}[name]
        self._fn = fn
        self.signature = (
            Arg("input", Tensor()),
            Arg("others", TensorOrNumber(), variadic=True,
                role=f"{'adds' if name == 'add' else 'multiplies by'} tensors or numbers"),
        )

    def make_attrs(self, args):
        if not args.get("others"):
            raise ShapeError(f"{self.name}() needs at least one more tensor or number")
        return ArithmeticAttrs(tuple(args["others"]))

    def infer(self, attrs, inputs: list[TensorInfo]) -> Shape:
        shape = inputs[0].shape
        for i, other in enumerate(inputs[1:]):
            result = broadcast(shape, other.shape)
            if result is None:
                raise ShapeError(
                    f"{self.name}() cannot broadcast {_describe(inputs, i, shape)} with {other}",
                    help=_broadcast_help(shape, other),
                )
            shape = result
        return shape

    def reference(self, attrs, xs, p, training):
        operands = [xs[0]] + [xs[o.index] if isinstance(o, TensorSlot) else o
                              for o in attrs.others]
        return functools.reduce(self._fn, operands)


def _describe(inputs, i, shape) -> str:
    first = inputs[0]
    return str(first) if i == 0 else f"the result {format_shape(shape)}"


def _broadcast_help(a: Shape, b: TensorInfo) -> str:
    if len(a) == len(b.shape) == 4 and a[1] != b.shape[1] and a[2:] != b.shape[2:]:
        return f"a strided 1x1 conv2d on {b.label} makes the shapes agree"
    return "sizes must be equal or 1 in each dim, aligned from the right"


class Concat(Op):
    name = "concat"
    fusion = "view"
    view = "concat"  # producers write into slices of its output
    attrs_type = ConcatAttrs
    signature = (
        Arg("input", Tensor()),
        Arg("others", Tensor(), variadic=True, role="joins tensors"),
        Arg("dim", Int(), 1),
    )

    def make_attrs(self, args):
        return ConcatAttrs(tuple(args.get("others", ())), args["dim"])

    def infer(self, attrs: ConcatAttrs, inputs: list[TensorInfo]) -> Shape:
        first = inputs[0]
        rank = len(first.shape)
        dim = normalize_dim(self.name, attrs.dim, rank, "dim")
        for other in inputs[1:]:
            if len(other.shape) != rank:
                raise ShapeError(f"concat() joins tensors of one rank: {first} and {other}")
            for d in range(rank):
                if d != dim and other.shape[d] != first.shape[d]:
                    raise ShapeError(
                        f"concat() along dim {attrs.dim} needs equal sizes in every other dim: "
                        f"{first} and {other} differ in dim {d}",
                    )
        sizes = tuple(t.shape[dim] for t in inputs)
        total = add_dims(sizes)
        if total is None:
            raise ShapeError(_mixed_sizes_message(attrs.dim, inputs, dim))
        return (*first.shape[:dim], total, *first.shape[dim + 1:])

    def reference(self, attrs: ConcatAttrs, xs, p, training):
        return torch.cat(xs, dim=attrs.dim)


def _mixed_sizes_message(dim_arg: int, inputs: list[TensorInfo], dim: int) -> str:
    """Why the sizes along the concat dim cannot be added: two batch sizes, or the batch
    and a fixed size."""
    batches = {t.shape[dim].name: t for t in inputs if isinstance(t.shape[dim], Sym)}
    if len(batches) > 1:
        a, b = list(batches.values())[:2]
        return (f"concat() along dim {dim_arg} cannot join different batch sizes: {a} and {b} "
                f"(`{a.shape[dim].name}` and `{b.shape[dim].name}` are chosen separately at "
                "run time)")
    fixed = next(t for t in inputs if not isinstance(t.shape[dim], Sym))
    batch = next(iter(batches.values()))
    return (f"concat() along dim {dim_arg} cannot add the batch dim of {batch} to the fixed "
            f"size of {fixed}")


register(Arithmetic("add", operator.add), Arithmetic("mul", operator.mul), Concat())

