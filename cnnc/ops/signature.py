"""Operator signatures: named arguments, each with a kind that checks and normalises a value.

A kind's `convert` turns a compile-time value into what the attribute record holds
(an int into a per-dimension tuple, say) or raises ArgError with what it expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..ir.values import Array, TensorValue, describe


class ArgError(Exception):
    """A value of the wrong kind; `expected` completes 'expects ...'.

    `problem`, when given, says instead what is wrong with a value of the right kind: it
    completes "argument `stride` ..." ("is 2147483648, more than ...").
    """

    def __init__(self, expected: str, problem: str | None = None):
        super().__init__(problem or expected)
        self.expected = expected
        self.problem = problem


REQUIRED = object()

# PyTorch's limits: ints reach its C++ code as int64 (pooling windows as int32), floats
# given to elementwise activations as float32.
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
FLOAT32_MAX = 3.4028234663852886e38
_INT_LIMIT_TEXT = {INT64_MAX: "a 64-bit int", INT32_MAX: "a 32-bit int"}


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
    """An int of at least `min`, within what PyTorch's C++ side can hold (`max`)."""

    def __init__(self, min: int | None = None, max: int = INT64_MAX):
        self.min, self.max = min, max
        self.description = {None: "an int", 0: "a non-negative int", 1: "a positive int"}.get(
            min, f"an int of at least {min}"
        )

    def convert(self, value):
        if not _is_int(value) or (self.min is not None and value < self.min):
            raise ArgError(self.description)
        limit = _INT_LIMIT_TEXT.get(self.max, f"{self.max}")
        if value > self.max:
            raise ArgError(self.description, f"is {value}, more than PyTorch takes here: "
                           f"{self.max} ({limit})")
        if value < -self.max - 1:
            raise ArgError(self.description, f"is {value}, less than PyTorch takes here: "
                           f"{-self.max - 1} ({limit})")
        return value


class Float(Kind):
    """A number, as a float; `max_magnitude` bounds what a float32 argument can hold."""

    def __init__(self, min: float | None = None, max: float | None = None, strict_min=False,
                 max_magnitude: float | None = None):
        self.min, self.max, self.strict_min = min, max, strict_min
        self.max_magnitude = max_magnitude
        if min is not None and max is not None:
            self.description = f"a number from {min:g} to {max:g}"
        elif min is not None:
            self.description = f"a number {'above' if strict_min else 'of at least'} {min:g}"
        else:
            self.description = "a number"

    def convert(self, value):
        if not _is_number(value):
            raise ArgError(self.description)
        try:
            value = float(value)
        except OverflowError:
            raise ArgError(self.description, "is too large for a float") from None
        if self.min is not None and (value < self.min or (self.strict_min and value == self.min)):
            raise ArgError(self.description)
        if self.max is not None and value > self.max:
            raise ArgError(self.description)
        if self.max_magnitude is not None and abs(value) > self.max_magnitude:
            raise ArgError(self.description, f"is {value!r}, beyond the range of a 32-bit "
                           f"float (at most {self.max_magnitude:.7g} either way)")
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

    def __init__(self, n: int, min: int = 1, max: int = INT64_MAX):
        self.n, self.min = n, min
        each = Int(min).description
        self.description = each if n == 1 else f"{each} or a tuple of {n} of them"
        self.each = Int(min, max)

    def convert(self, value):
        if isinstance(value, tuple):
            if len(value) != self.n:
                raise ArgError(self.description)
            return tuple(self._one(v) for v in value)
        return (self._one(value),) * self.n

    def _one(self, value):
        try:
            return self.each.convert(value)
        except ArgError as e:
            raise ArgError(self.description, e.problem) from None


class Scale(Kind):
    """upsample's scale_factor: a positive number for every spatial dim, or a tuple of one
    per spatial dim (the shape rule checks its length against the input)."""

    description = "a positive number or a tuple of one per spatial dim"
    each = Float(0, strict_min=True)

    def convert(self, value):
        if isinstance(value, tuple):
            if not value:
                raise ArgError(self.description)
            return tuple(self._one(v) for v in value)
        return self._one(value)

    def _one(self, value):
        try:
            converted = self.each.convert(value)
        except ArgError as e:
            raise ArgError(self.description, e.problem) from None
        # Keep ints as ints (and modest whole floats as ints): PyTorch computes the same
        # indices for 2 and 2.0, and the generated code reads better.
        if _is_int(value):
            return value
        return int(converted) if converted.is_integer() and converted < 2**53 else converted


class SizesOrNone(Kind):
    """adaptive pooling's output_size: an int, or a tuple of ints where none keeps the dim
    (none alone is not a size: PyTorch refuses it)."""

    def __init__(self, n: int):
        self.n = n
        self.each = Int(1)
        self.description = (
            "a positive int" if n == 1 else f"a positive int or a tuple of {n} (int or none)"
        )

    def convert(self, value):
        if value is None:
            raise ArgError(self.description)
        items = value if isinstance(value, tuple) else (value,) * self.n
        if len(items) != self.n or (self.n == 1 and items[0] is None):
            raise ArgError(self.description)
        return tuple(None if v is None else self._one(v) for v in items)

    def _one(self, value):
        try:
            return self.each.convert(value)
        except ArgError as e:
            raise ArgError(self.description, e.problem) from None


class Either(Kind):
    def __init__(self, *kinds: Kind):
        self.kinds = kinds
        self.description = " or ".join(k.description for k in kinds)

    def convert(self, value):
        problem = None
        for kind in self.kinds:
            try:
                return kind.convert(value)
            except ArgError as e:
                problem = problem or e.problem
        raise ArgError(self.description, problem)


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
    role: str | None = None  # a variadic argument's job: "joins tensors" (for diagnostics)


def describe_found(value: Any) -> str:
    return describe(value)
