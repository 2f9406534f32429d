"""Checks shared by many operators' shape rules."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ShapeError
from ..ir.shapes import Sym
from .registry import TensorInfo

LAYOUT = {1: "[N, C, L]", 2: "[N, C, H, W]", 3: "[N, C, D, H, W]"}


@dataclass(frozen=True)
class NoAttrs:
    """The record of an operator without arguments."""


def check_rank(op: str, x: TensorInfo, spatial: int) -> None:
    if len(x.shape) != spatial + 2:
        raise ShapeError(
            f"{op}() expects a {spatial + 2}-d input {LAYOUT[spatial]}, found {x}",
            help=_rank_help(len(x.shape), spatial),
        )


def _rank_help(rank: int, spatial: int) -> str | None:
    if rank == spatial + 1:
        return "inputs carry a batch dim first: declare it as `input x: [N, ...]`"
    if rank > spatial + 2:
        return f"use the {rank - 2}-d version of the operator, or flatten first"
    return None


def channels_of(op: str, x: TensorInfo) -> int:
    c = x.shape[1]
    if isinstance(c, Sym):
        raise ShapeError(f"{op}() needs a fixed channel count (dim 1), found {x}")
    return c


def spatial_of(op: str, x: TensorInfo) -> tuple[int, ...]:
    sizes = x.shape[2:]
    if any(isinstance(d, Sym) for d in sizes):
        raise ShapeError(f"{op}() needs fixed spatial sizes, found {x}")
    return tuple(sizes)


def normalize_dim(op: str, dim: int, rank: int, arg: str) -> int:
    if not -rank <= dim < rank:
        raise ShapeError(
            f"{op}() {arg}={dim} is out of range for a {rank}-d tensor "
            f"(expected {-rank} to {rank - 1})",
            arg=arg,
        )
    return dim % rank
