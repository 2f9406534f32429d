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
    op: str  # + - * / // == != < <= > >= and or
    left: Expr
    right: Expr
    loc: Location


@dataclass(frozen=True)
class Not:
    operand: Expr
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


Expr = Union[Number, String, Literal, Name, Negate, Not, Binary, TupleExpr, ListExpr, Call]

# ------------------------------------------------------------------ chains and statements


@dataclass(frozen=True)
class NoStage:
    """`none` written as a stage: it adds nothing (a branch of a conditional stage)."""

    loc: Location


@dataclass(frozen=True)
class Stage:
    target: Call | Name | Sequential | CondStage | NoStage | Stage  # Stage: `(s)`
    repeat: Expr | None
    loc: Location


@dataclass(frozen=True)
class CondStage:
    """`(then if cond else other)`: one stage picked at compile time."""

    then: Stage
    cond: Expr
    other: Stage | CondStage
    loc: Location


@dataclass(frozen=True)
class Chain:
    """`head -> stage -> ...`; inside `sequential(...)` a chain has no head (None): the
    sequential's current tensor flows into its first stage."""

    head: Call | Name | Sequential | None
    stages: tuple[Stage, ...]
    loc: Location


@dataclass(frozen=True)
class CondChain:
    """`then if cond else other`: one chain picked at compile time."""

    then: Chain
    cond: Expr
    other: Chain | CondChain
    loc: Location


@dataclass(frozen=True)
class Sequential:
    """`sequential(item, ...)`: one stage numbering what it holds like nn.Sequential."""

    items: tuple[Chain | CondChain, ...]  # headless chains
    loc: Location


AnyChain = Union[Chain, CondChain]


@dataclass(frozen=True)
class InputStmt:
    name: str
    dims: tuple[Expr, ...]
    loc: Location
    name_loc: Location


@dataclass(frozen=True)
class BindStmt:
    name: str
    chain: AnyChain
    loc: Location
    name_loc: Location


@dataclass(frozen=True)
class UnpackStmt:
    """`a, b = chain`: the results of an op with several (chunk, split)."""

    names: tuple[Name, ...]
    chain: AnyChain
    loc: Location


@dataclass(frozen=True)
class OutputStmt:
    names: tuple[Name, ...]
    loc: Location


@dataclass(frozen=True)
class ReturnStmt:
    chain: AnyChain
    loc: Location


Binding = Union[BindStmt, UnpackStmt]
Statement = Union[InputStmt, BindStmt, UnpackStmt, OutputStmt, ReturnStmt]

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
    type: str  # tensor int float bool str op
    default: Expr | None
    loc: Location


@dataclass(frozen=True)
class BlockDef:
    name: str
    params: tuple[Param, ...]
    statements: tuple[Binding, ...]
    result: ReturnStmt
    loc: Location
    name_loc: Location


@dataclass(frozen=True)
class NetworkDef:
    name: str
    inputs: tuple[InputStmt, ...]
    statements: tuple[Binding, ...]
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
