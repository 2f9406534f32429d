"""The syntax tree of a .cnn file: plain dataclasses, each carrying its Location."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ..errors import Location

# ------------------------------------------------------------------ expressions


@dataclass(frozen=True)
class Number:
    value: int | float
    loc: Location


@dataclass(frozen=True)
class String:
    value: str
    loc: Location


@dataclass(frozen=True)
class Literal:
    """true, false or none."""

    value: bool | None
    loc: Location


@dataclass(frozen=True)
class Name:
    name: str
    loc: Location


@dataclass(frozen=True)
class Negate:
    operand: Expr
    loc: Location


@dataclass(frozen=True)
class Binary:
    op: str  # + - * / //
    left: Expr
    right: Expr
    loc: Location


@dataclass(frozen=True)
class TupleExpr:
    items: tuple[Expr, ...]
    loc: Location


@dataclass(frozen=True)
class ListExpr:
    items: tuple[Expr, ...]
    loc: Location


@dataclass(frozen=True)
class KeywordArg:
    name: str
    value: Expr
    loc: Location  # the whole `name=value`
    name_loc: Location


@dataclass(frozen=True)
class Call:
    """`op(args)`: an operator, a block, or `channels(t)` inside an expression."""

    name: str
    args: tuple[Expr, ...]
    kwargs: tuple[KeywordArg, ...]
    loc: Location
    name_loc: Location


Expr = Union[Number, String, Literal, Name, Negate, Binary, TupleExpr, ListExpr, Call]

# ------------------------------------------------------------------ chains and statements


@dataclass(frozen=True)
class Stage:
    target: Call | Name
    repeat: Expr | None
    loc: Location


@dataclass(frozen=True)
class Chain:
    head: Call | Name
    stages: tuple[Stage, ...]
    loc: Location


@dataclass(frozen=True)
class InputStmt:
    name: str
    dims: tuple[Expr, ...]
    loc: Location
    name_loc: Location


@dataclass(frozen=True)
class BindStmt:
    name: str
    chain: Chain
    loc: Location
    name_loc: Location


@dataclass(frozen=True)
class OutputStmt:
    names: tuple[Name, ...]
    loc: Location


@dataclass(frozen=True)
class ReturnStmt:
    chain: Chain
    loc: Location


Statement = Union[InputStmt, BindStmt, OutputStmt, ReturnStmt]

# ------------------------------------------------------------------ file items


@dataclass(frozen=True)
class Import:
    path: str
    loc: Location


@dataclass(frozen=True)
class ConstDef:
    name: str
    value: Expr
    loc: Location
    name_loc: Location


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # tensor int float bool str
    default: Expr | None
    loc: Location


@dataclass(frozen=True)
class BlockDef:
    name: str
    params: tuple[Param, ...]
    statements: tuple[BindStmt, ...]
    result: ReturnStmt
    loc: Location
    name_loc: Location


@dataclass(frozen=True)
class NetworkDef:
    name: str
    inputs: tuple[InputStmt, ...]
    statements: tuple[BindStmt, ...]
    output: OutputStmt
    loc: Location
    name_loc: Location


@dataclass(frozen=True)
class Module:
    """One parsed file."""

    imports: tuple[Import, ...]
    consts: tuple[ConstDef, ...]
    blocks: tuple[BlockDef, ...]
    networks: tuple[NetworkDef, ...]
