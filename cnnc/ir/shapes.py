"""Tensor shapes with a symbolic batch dimension.

A dim is an int or a Sym: a multiple of the batch size named at the input
(`input x: [N, 3, 32, 32]`). Only dim 0 of an input is symbolic; `flatten` over it
and `concat` along it give multiples such as `2*N` or `N*96`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Sym:
    name: str
    coeff: int = 1

    def __str__(self) -> str:
        return self.name if self.coeff == 1 else f"{self.name}*{self.coeff}"

    def scaled(self, factor: int) -> Sym:
        return Sym(self.name, self.coeff * factor)


Dim = Union[int, Sym]
Shape = tuple[Dim, ...]


def format_shape(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def is_static(dim: Dim) -> bool:
    return isinstance(dim, int)


def per_sample_numel(shape: Shape) -> int:
    """Elements per unit of the batch symbol (the whole tensor if no dim is symbolic)."""
    n = 1
    for d in shape:
        n *= d.coeff if isinstance(d, Sym) else d
    return n


def concrete(shape: Shape, batch: int) -> tuple[int, ...]:
    """The shape at a given batch size."""
    return tuple(d.coeff * batch if isinstance(d, Sym) else d for d in shape)


def numel(shape: Shape, batch: int) -> int:
    return math.prod(concrete(shape, batch))


def multiply_dims(dims: Shape) -> Dim | None:
    """The product of dims (flatten), or None when two symbolic dims would multiply."""
    sym, factor = None, 1
    for d in dims:
        if isinstance(d, Sym):
            if sym is not None:
                return None
            sym = d
        else:
            factor *= d
    return sym.scaled(factor) if sym is not None else factor


def add_dims(dims: Shape) -> Dim | None:
    """The sum of dims (concat), or None when it mixes symbolic and static dims."""
    if all(isinstance(d, int) for d in dims):
        return sum(dims)
    if all(isinstance(d, Sym) for d in dims) and len({d.name for d in dims}) == 1:
        return Sym(dims[0].name, sum(d.coeff for d in dims))
    return None
