"""Signature kinds for arguments that are lists of sizes or dims (split, reshape, permute,
layer_norm, upsample's size), whose length only the shape rule can check."""

from __future__ import annotations

from typing import Any

from ..ir.shapes import Sym
from .signature import INT64_MAX, ArgError, Int, Kind


def _ints(kind: Kind, values: tuple, each: Int) -> tuple[int, ...]:
    out = []
    for v in values:
        try:
            out.append(each.convert(v))
        except ArgError as e:
            raise ArgError(kind.description, e.problem) from None
    return tuple(out)


class Sizes(Kind):
    """A positive int, or a non-empty tuple of positive ints (an int stays an int)."""

    description = "a positive int or a tuple of positive ints"
    each = Int(1)

    def convert(self, value: Any) -> int | tuple[int, ...]:
        if isinstance(value, tuple):
            if not value:
                raise ArgError(self.description)
            return _ints(self, value, self.each)
        return _ints(self, (value,), self.each)[0]


class Dims(Kind):
    """A non-empty tuple of dim indices (negative ones count from the end)."""

    description = "a tuple of dims"
    each = Int()

    def convert(self, value: Any) -> tuple[int, ...]:
        if not isinstance(value, tuple) or not value:
            raise ArgError(self.description)
        return _ints(self, value, self.each)


class NewShape(Kind):
    """reshape's shape: the batch name (a Sym) or -1 first, then positive ints or -1.

    Only the kinds of the entries are checked here; which combinations multiply out is
    the shape rule's business (it knows the input)."""

    description = "a tuple of sizes whose first entry is the batch name or -1"
    each = Int(-1, INT64_MAX)

    def convert(self, value: Any) -> tuple[Sym | int, ...]:
        if not isinstance(value, tuple) or not value:
            raise ArgError(self.description)
        first, rest = value[0], value[1:]
        if not isinstance(first, Sym):
            first = self._size(first)
        return (first, *(self._size(v) for v in rest))

    def _size(self, value: Any) -> int:
        if isinstance(value, Sym):
            raise ArgError(self.description, "names the batch after its first entry; "
                           "only the first entry may be the batch name")
        size = _ints(self, (value,), self.each)[0]
        if size == 0:
            raise ArgError(self.description, "has a size 0; cnnc has no empty tensors")
        return size
