"""Compile-time values: Python ints, floats, bools, strings, None and tuples, plus these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import quote
from .shapes import Shape, format_shape


@dataclass(frozen=True)
class Array:
    """A rectangular nested list of numbers (a fixed filter), stored flat, row-major."""

    values: tuple[float, ...]
    shape: tuple[int, ...]

    def nested(self) -> list:
        def build(offset: int, dims: tuple[int, ...]):
            if not dims:
                return self.values[offset]
            step = 1
            for d in dims[1:]:
                step *= d
            return [build(offset + i * step, dims[1:]) for i in range(dims[0])]

        return build(0, self.shape)


@dataclass(frozen=True)
class TensorValue:
    """A tensor flowing through the network: its producing node and how the source names it."""

    node: int
    shape: Shape
    label: str

    def __str__(self) -> str:
        return f"{self.label} {format_shape(self.shape)}"


@dataclass(frozen=True)
class Callable:
    """An operator or block name used where a value was expected."""

    name: str
    what: str  # "operator" or "block"


def describe(value: Any) -> str:
    """How a value is named in a diagnostic: 'the int 3', 'the tensor x [N, 3, 8, 8]'."""
    if isinstance(value, bool):
        return f"the bool {'true' if value else 'false'}"
    if value is None:
        return "none"
    if isinstance(value, int):
        return f"the int {value}"
    if isinstance(value, float):
        return f"the float {format_float(value)}"
    if isinstance(value, str):
        return f'the string "{quote(value)}"'
    if isinstance(value, tuple):
        return f"the tuple {tuple_text(value)}"
    if isinstance(value, Array):
        return "a const list of shape " + "x".join(map(str, value.shape))
    if isinstance(value, TensorValue):
        return f"the tensor {value}"
    if isinstance(value, Callable):
        return f"the {value.what} {value.name}"
    return repr(value)


def _brief(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        return tuple_text(value)
    if isinstance(value, str):
        return f'"{quote(value)}"'
    if isinstance(value, TensorValue):
        return value.label
    return describe(value)


def format_float(value: float) -> str:
    """A float as .cnn would read it back, always with a point or an exponent: 32.0
    (never 32, which reads as an int), 0.1, 1e+300."""
    return repr(value)


def tuple_text(value: tuple) -> str:
    """(2, 3); a 1-tuple keeps its comma, (2,), as in the source."""
    items = [_brief(v) for v in value]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
