"""Operator signatures: named arguments, each with a kind that checks and normalises a value.

A kind's `convert` turns a compile-time value into what the attribute record holds
(an int into a per-dimension tuple, say) or raises ArgError with what it expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..frontend.values import Array, TensorValue, describe


class ArgError(Exception):
    """A value of the wrong kind; `expected` completes 'expects ...'."""

    def __init__(self, expected: str):
        super().__init__(expected)
        self.expected = expected


REQUIRED = object()


@dataclass(frozen=True)
class TensorSlot:
    """Stands in an attribute record for the node's `index`-th tensor input."""

    index: int


class Kind:
    description = "a value"

    def convert(self, value: Any) -> Any:
        raise NotImplementedError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Int(Kind):
    def __init__(self, min: int | None = None):
        self.min = min
        self.description = {None: "an int", 0: "a non-negative int", 1: "a positive int"}.get(
            min, f"an int of at least {min}"
        )

    def convert(self, value):
        if not _is_int(value) or (self.min is not None and value < self.min):
            raise ArgError(self.description)
        return value


class Float(Kind):
    def __init__(self, min: float | None = None, max: float | None = None, strict_min=False):
        self.min, self.max, self.strict_min = min, max, strict_min
        if min is not None and max is not None:
            self.description = f"a number from {min:g} to {max:g}"
        elif min is not None:
            self.description = f"a number {'above' if strict_min else 'of at least'} {min:g}"
        else:
            self.description = "a number"

    def convert(self, value):
        if not _is_number(value):
            raise ArgError(self.description)
        value = float(value)
        if self.min is not None and (value < self.min or (self.strict_min and value == self.min)):
            raise ArgError(self.description)
        if self.max is not None and value > self.max:
            raise ArgError(self.description)
        return value


class Bool(Kind):
    description = "true or false"

    def convert(self, value):
        if not isinstance(value, bool):
            raise ArgError(self.description)
        return value


class Choice(Kind):
    def __init__(self, *options: str):
        self.options = options
        self.description = "one of " + ", ".join(f'"{o}"' for o in options)

    def convert(self, value):
        if value not in self.options or not isinstance(value, str):
            raise ArgError(self.description)
        return value


class Ints(Kind):
    """An int for every spatial dim, or a tuple of exactly `n` ints."""

    def __init__(self, n: int, min: int = 1):
        self.n, self.min = n, min
        each = Int(min).description
        self.description = each if n == 1 else f"{each} or a tuple of {n} of them"
        self.each = Int(min)

    def convert(self, value):
        if isinstance(value, tuple):
            if len(value) != self.n:
                raise ArgError(self.description)
            try:
                return tuple(self.each.convert(v) for v in value)
            except ArgError:
                raise ArgError(self.description) from None
        try:
            return (self.each.convert(value),) * self.n
        except ArgError:
            raise ArgError(self.description) from None


class Numbers(Kind):
    """A positive number for every spatial dim, or a tuple of exactly `n` of them."""

    def __init__(self, n: int):
        self.n = n
        self.each = Float(0, strict_min=True)
        self.description = f"a positive number or a tuple of {n} of them"

    def convert(self, value):
        items = value if isinstance(value, tuple) else (value,) * self.n
        if len(items) != self.n:
            raise ArgError(self.description)
        try:
            converted = tuple(self.each.convert(v) for v in items)
        except ArgError:
            raise ArgError(self.description) from None
        # Keep ints as ints: PyTorch computes the nearest-neighbour index the same way.
        return tuple(int(v) if _is_int(o) else v for v, o in zip(converted, items))


class SizesOrNone(Kind):
    """adaptive pooling's output_size: an int, or a tuple of ints where none keeps the dim."""

    def __init__(self, n: int):
        self.n = n
        self.description = (
            "a positive int" if n == 1 else f"a positive int or a tuple of {n} (int or none)"
        )

    def convert(self, value):
        items = value if isinstance(value, tuple) else (value,) * self.n
        ok = len(items) == self.n and all(
            v is None or (_is_int(v) and v >= 1) for v in items
        )
        if not ok or (self.n == 1 and items[0] is None):
            raise ArgError(self.description)
        return tuple(items)


class Either(Kind):
    def __init__(self, *kinds: Kind):
        self.kinds = kinds
        self.description = " or ".join(k.description for k in kinds)

    def convert(self, value):
        for kind in self.kinds:
            try:
                return kind.convert(value)
            except ArgError:
                continue
        raise ArgError(self.description)


class Optional(Kind):
    def __init__(self, kind: Kind):
        self.kind = kind
        self.description = f"{kind.description} or none"

    def convert(self, value):
        return None if value is None else self.kind.convert(value)


class Tensor(Kind):
    description = "a tensor"

    def convert(self, value):
        if not isinstance(value, TensorValue):
            raise ArgError(self.description)
        return value


class TensorOrNumber(Kind):
    description = "a tensor or a number"

    def convert(self, value):
        if isinstance(value, TensorValue) or _is_number(value):
            return value
        raise ArgError(self.description)


class Filter(Kind):
    description = "a const list of numbers (a fixed filter)"

    def convert(self, value):
        if not isinstance(value, Array):
            raise ArgError(self.description)
        return value


@dataclass(frozen=True)
class Arg:
    name: str
    kind: Kind
    default: Any = REQUIRED
    variadic: bool = False  # takes every further positional argument


def describe_found(value: Any) -> str:
    return describe(value)
