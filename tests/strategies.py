"""Shared pieces of the property tests: writing .cnn source text, and Hypothesis strategies.

A test draws a configuration (shapes and every argument of one operator), renders it as
the source of a one-op network and as the equivalent PyTorch call, and compares the two
(see test_shape_properties.py). Values are Python values; `fmt` spells them in .cnn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import strategies as st

BATCH = 2  # the batch size every comparison runs at
SYM = "N"  # how a shape tuple marks the symbolic batch dim

OMIT = object()  # an optional argument that is not spelled in the source (its default applies)


@dataclass(frozen=True)
class Raw:
    """Source text spelled as is: a tensor name, an operator name."""

    text: str


def fmt(value: Any) -> str:
    """A Python value spelled as a .cnn expression."""
    if isinstance(value, Raw):
        return value.text
    if value is None:
        return "none"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        assert math.isfinite(value), value
        text = repr(value)  # shortest round trip; the grammar reads 1e-05, 2.5, -0.5
        return text
    if isinstance(value, tuple):
        if len(value) == 1:
            return f"({fmt(value[0])},)"
        return "(" + ", ".join(fmt(v) for v in value) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    raise TypeError(f"cannot spell {value!r}")


def dims_text(shape: Sequence) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def concrete(shape: Sequence) -> tuple[int, ...]:
    """A declared shape at batch BATCH."""
    return tuple(BATCH if d == SYM else d for d in shape)


def network(inputs: Sequence[tuple[str, Sequence]], statement: str, *, consts: str = "",
            output: str = "y") -> str:
    """The source of a network with the given inputs, one statement and one output."""
    lines = [consts] if consts else []
    lines.append("network T {")
    lines += [f"    input {name}: {dims_text(shape)}" for name, shape in inputs]
    lines.append(f"    {statement}")
    lines.append(f"    output {output}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def tensors(shapes: Sequence[Sequence], seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(concrete(s), generator=g) for s in shapes]


# ---------------------------------------------------------------- calls


@st.composite
def call_text(draw, op: str, args: Sequence[tuple[str, Any]], on: str | None = "x") -> str:
    """`op(...)` applied to the tensor `on`, as a chain stage (`x -> op(...)`) or as a call
    (`op(x, ...)`); the spelled arguments (OMIT: left out) come some by position, the rest
    by name in a random order; a stage without arguments is `op` or `op()`."""
    first_omitted = next((i for i, (_, v) in enumerate(args) if v is OMIT), len(args))
    n_positional = draw(st.integers(0, first_omitted))
    parts = [fmt(v) for _, v in args[:n_positional]]
    keywords = [f"{k}={fmt(v)}" for k, v in args[n_positional:] if v is not OMIT]
    parts += draw(st.permutations(keywords))
    if on is not None and draw(st.integers(0, 3)) == 0:
        return f"{op}({', '.join([on, *parts])})"
    stage = f"{op}({', '.join(parts)})" if parts else draw(st.sampled_from([op, f"{op}()"]))
    return stage if on is None else f"{on} -> {stage}"


@st.composite
def optional(draw, values: st.SearchStrategy, default: Any, spell_default: bool = True):
    """(spelled, effective): an optional argument either left out (its default applies) or
    spelled with a drawn value."""
    if draw(st.booleans()):
        value = draw(values)
        return value, value
    if spell_default and draw(st.integers(0, 3)) == 0:
        return default, default  # spelled, with the default value
    return OMIT, default


def int_or_tuple(n: int, lo: int, hi: int) -> st.SearchStrategy:
    """An int, or a tuple of n ints (the two spellings every per-dim argument accepts)."""
    return st.one_of(st.integers(lo, hi), st.tuples(*[st.integers(lo, hi)] * n))


def spatial(n: int, lo: int = 1, hi: int | None = None) -> st.SearchStrategy:
    """Spatial sizes for n dims, kept small (≤ 12; ≤ 6 for 3-d)."""
    if hi is None:
        hi = {1: 12, 2: 10, 3: 5}[n]
    return st.tuples(*[st.integers(lo, hi)] * n)


def batch_dim() -> st.SearchStrategy:
    """Dim 0 of an input: mostly the symbolic batch, sometimes a fixed size."""
    return st.one_of(st.just(SYM), st.just(SYM), st.integers(1, 3))


@st.composite
def shapes(draw, min_rank: int = 1, max_rank: int = 4, hi: int = 4, dim0=None):
    rank = draw(st.integers(min_rank, max_rank))
    first = draw(dim0 if dim0 is not None else st.just(SYM))
    return (first, *draw(st.tuples(*[st.integers(1, hi)] * (rank - 1))))


seeds = st.integers(0, 2**31 - 1)

SPECIAL_VALUES = (math.nan, math.inf, -math.inf)


@st.composite
def special_values(draw, most: int = 3,
                   values: Sequence[float] = SPECIAL_VALUES) -> list[tuple[float, float]]:
    """NaN, +inf and -inf to plant in an input (half the time none): (where, value) pairs,
    `where` a fraction of the tensor's length. See `plant`."""
    if draw(st.booleans()):
        return []
    return [(draw(st.floats(0, 1, exclude_max=True)), draw(st.sampled_from(values)))
            for _ in range(draw(st.integers(1, most)))]


def plant(x: torch.Tensor, planted: Sequence[tuple[float, float]]) -> torch.Tensor:
    """A contiguous copy of x holding the planted values (positions in its logical order)."""
    flat = x.reshape(-1).clone()
    for where, value in planted:
        if flat.numel():
            flat[int(where * flat.numel())] = value
    return flat.reshape(x.shape)

nice_floats = st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, -0.5, -1.0, 1e-3, 3.0])


def numbers(lo: float = -3.0, hi: float = 3.0) -> st.SearchStrategy:
    return st.one_of(
        nice_floats.filter(lambda v: lo <= v <= hi),
        st.integers(int(math.ceil(lo)), int(math.floor(hi))),
        st.floats(lo, hi, allow_nan=False, allow_infinity=False),
    )


@dataclass
class Case:
    """One drawn configuration: its source, its inputs, and the PyTorch computation.

    `torch_fn()` returns (output, module whose state_dict the cnnc parameters mirror, or
    None); it may raise, which means PyTorch rejects the configuration. `stricter` names a
    deliberate difference: cnnc must reject the configuration whatever PyTorch does.
    """

    src: str
    inputs: list[torch.Tensor]
    torch_fn: Callable[[], tuple[torch.Tensor, torch.nn.Module | None]]
    stricter: str | None = None
    prefix: str = "y"
    info: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        shapes = [tuple(t.shape) for t in self.inputs]
        extra = f"\nstricter: {self.stricter}" if self.stricter else ""
        return f"Case(inputs at batch {BATCH}: {shapes}){extra}\n{self.src}"

    def _repr_pretty_(self, printer, cycle) -> None:  # how Hypothesis shows a failing case
        printer.text(repr(self))
