"""Operators that rearrange a tensor without computing: reshape, permute and transpose.

Dim 0 is the batch in every cnnc tensor, and it stays first: reshape's first entry is the
batch name or -1 (a multiple of the batch), permute and transpose leave dim 0 in place.

None of them launches a kernel. reshape is a free view of its input, which the module
allocates contiguous (as for flatten); permute and transpose are strided views (`view =
"strided"`, their `view_expr` the torch call), which every template reads through strides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ShapeError
from ..ir.shapes import Dim, Shape, Sym, per_sample_numel
from .common import normalize_dim
from .registry import Op, TensorInfo, register
from .signature import Arg, Int, Tensor
from .size_kinds import Dims, NewShape


@dataclass(frozen=True)
class ReshapeAttrs:
    shape: tuple[Sym | int, ...]  # the first entry a Sym (the batch) or -1; one -1 at most


@dataclass(frozen=True)
class PermuteAttrs:
    dims: tuple[int, ...]


@dataclass(frozen=True)
class TransposeAttrs:
    dim0: int
    dim1: int


def _sym_of(shape: Shape) -> Sym | None:
    return next((d for d in shape if isinstance(d, Sym)), None)


def _entries_text(shape: tuple[Sym | int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


class Reshape(Op):
    name = "reshape"
    fusion = "view"
    view = "reshape"
    attrs_type = ReshapeAttrs
    signature = (Arg("input", Tensor()), Arg("shape", NewShape()))

    def infer(self, attrs: ReshapeAttrs, inputs: list[TensorInfo]) -> Shape:
        (x,) = inputs
        first, rest = attrs.shape[0], attrs.shape[1:]
        given = _entries_text(attrs.shape)
        if first != -1 and not isinstance(first, Sym):
            raise ShapeError(
                f"reshape() keeps the batch dim first: the first entry of {given} must be "
                f"the batch name or -1, not {first}",
                arg="shape", help="write the batch name (the first dim of the input "
                "declaration) or -1 for a multiple of the batch",
            )
        if list(attrs.shape).count(-1) > 1:
            raise ShapeError(f"reshape() {given}: only one entry may be -1", arg="shape")
        sym = _sym_of(x.shape)
        known = math.prod(d for d in rest if d != -1)
        per_sample = per_sample_numel(x.shape)  # values per batch item (all, if no batch)
        if isinstance(first, Sym):
            return self._batch_first(x, attrs, first, sym, known, per_sample)
        # The first entry is -1: a multiple of the batch, which must be one for every batch.
        if per_sample % known:
            what = f"{per_sample:,} values per batch item" if sym else \
                f"{per_sample:,} values"
            raise ShapeError(
                f"reshape() sizes {given} do not multiply out: {x} holds {what}, "
                f"not a multiple of {_product_text(rest, known)}",
                arg="shape",
            )
        lead: Dim = Sym(sym.name, per_sample // known) if sym else per_sample // known
        return (lead, *rest)

    def _batch_first(self, x: TensorInfo, attrs: ReshapeAttrs, first: Sym, sym: Sym | None,
                     known: int, per_sample: int) -> Shape:
        rest = attrs.shape[1:]
        given = _entries_text(attrs.shape)
        if sym is None or sym.name != first.name:
            raise ShapeError(
                f"reshape() {given} names the batch `{first.name}`, but {x} has "
                + ("a fixed batch dim: write -1 first" if sym is None
                   else f"the batch `{sym.name}`"),
                arg="shape",
            )
        want, leftover = divmod(per_sample, first.coeff)
        if -1 in rest and x.shape[0] != first:
            # The reference resolves -1 from the input's dim 0 at run time.
            raise ShapeError(
                f"reshape() {given}: with the batch first, -1 needs the input's dim 0 to be "
                f"{first}; {x} has {x.shape[0]}",
                arg="shape", help="write the other sizes out instead of -1",
            )
        if leftover or (want % known if -1 in rest else want != known):
            needs = f"a multiple of {known:,}" if -1 in rest else f"{known:,}"
            raise ShapeError(
                f"reshape() sizes {given} do not multiply out: {x} holds "
                f"{per_sample:,} values per batch item; {given} needs {needs}"
                + (f" per {first}" if first.coeff != 1 else ""),
                arg="shape",
            )
        sizes = tuple(want // known if d == -1 else d for d in rest)
        return (first, *sizes)

    def reference(self, attrs: ReshapeAttrs, xs, p, training):
        x = xs[0]
        first, rest = attrs.shape[0], attrs.shape[1:]
        if isinstance(first, Sym) and -1 in rest:
            return x.reshape(x.shape[0], *rest)  # the shape rule made dim 0 the batch
        return x.reshape(-1, *rest)

    def explain(self, attrs: ReshapeAttrs, inputs, out) -> list[str]:
        if -1 not in attrs.shape:
            return []
        i = attrs.shape.index(-1)
        x = inputs[0]
        sym = _sym_of(x.shape)
        per_sample = per_sample_numel(x.shape)
        others = [d for d in attrs.shape[1:] if d != -1]
        if i == 0:  # a multiple of the batch: every value over the other sizes
            total = f"{sym.name}*{per_sample:,}" if sym else f"{per_sample:,}"
            return [f"-1 = {total} / ({_product_text(others)}) = {out[0]}"]
        per_batch = per_sample // out[0].coeff
        return [f"-1 = {per_batch:,} / ({_product_text(others)}) = {out[i]} "
                f"({per_batch:,} values per {out[0]})"]


def _product_text(dims, value: int | None = None) -> str:
    """4*4 (or 4*4 = 16, given the value); a single factor alone."""
    text = "*".join(str(d) for d in dims) if dims else "1"
    return f"{text} = {value:,}" if value is not None and len(dims) > 1 else text


class Permute(Op):
    name = "permute"
    fusion = "view"
    view = "strided"
    attrs_type = PermuteAttrs
    signature = (Arg("input", Tensor()), Arg("dims", Dims()))

    def normalized(self, attrs: PermuteAttrs, rank: int) -> tuple[int, ...]:
        return tuple(normalize_dim(self.name, d, rank, "dims") for d in attrs.dims)

    def infer(self, attrs: PermuteAttrs, inputs: list[TensorInfo]) -> Shape:
        (x,) = inputs
        rank = len(x.shape)
        if len(attrs.dims) != rank:
            raise ShapeError(
                f"permute() dims {_entries_text(attrs.dims)} has {len(attrs.dims)} entries "
                f"for the {rank} dims of {x}",
                arg="dims", help="give every dim once, in its new order",
            )
        dims = self.normalized(attrs, rank)
        if len(set(dims)) != rank:
            raise ShapeError(f"permute() dims {_entries_text(attrs.dims)} repeat a dim",
                             arg="dims", help="give every dim once, in its new order")
        if dims[0] != 0:
            raise ShapeError(
                f"permute() dims {_entries_text(attrs.dims)} would move the batch dim: "
                "the first entry must be 0",
                arg="dims", help="the batch dim stays first; permute the others",
            )
        return tuple(x.shape[d] for d in dims)

    def reference(self, attrs: PermuteAttrs, xs, p, training):
        return xs[0].permute(attrs.dims)

    def view_expr(self, attrs: PermuteAttrs, x: str, shape: Shape) -> str:
        """The generated forward's expression of the view of `x` (of `shape`)."""
        return f"{x}.permute({', '.join(map(str, self.normalized(attrs, len(shape))))})"


class Transpose(Op):
    name = "transpose"
    fusion = "view"
    view = "strided"
    attrs_type = TransposeAttrs
    signature = (Arg("input", Tensor()), Arg("dim0", Int()), Arg("dim1", Int()))

    def infer(self, attrs: TransposeAttrs, inputs: list[TensorInfo]) -> Shape:
        (x,) = inputs
        rank = len(x.shape)
        a = normalize_dim(self.name, attrs.dim0, rank, "dim0")
        b = normalize_dim(self.name, attrs.dim1, rank, "dim1")
        if (a == 0) != (b == 0):
            raise ShapeError(
                f"transpose({attrs.dim0}, {attrs.dim1}) would move the batch dim of {x}",
                arg="dim0" if a == 0 else "dim1",
                help="the batch dim (0) stays first; swap two other dims",
            )
        shape = list(x.shape)
        shape[a], shape[b] = shape[b], shape[a]
        return tuple(shape)

    def reference(self, attrs: TransposeAttrs, xs, p, training):
        return xs[0].transpose(attrs.dim0, attrs.dim1)

    def view_expr(self, attrs: TransposeAttrs, x: str, shape: Shape) -> str:
        a = normalize_dim(self.name, attrs.dim0, len(shape), "dim0")
        b = normalize_dim(self.name, attrs.dim1, len(shape), "dim1")
        return f"{x}.transpose({a}, {b})"


register(Reshape(), Permute(), Transpose())
