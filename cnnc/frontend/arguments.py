"""Matching an operator call's arguments to its signature, with diagnostics that count and
name the arguments as the user wrote them.

`bind_arguments` takes the positional and keyword arguments of one call (each a Given: value,
location, expression), fills in defaults, converts every value to its signature kind and
raises a CompileError pointing at the culprit where one does not fit.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from ..errors import CompileError, Location, quote
from ..ir.values import describe
from ..ops import Op
from ..ops.signature import REQUIRED, Arg, ArgError
from . import ast


@dataclass(frozen=True)
class Given:
    """An argument as given: its value, where it is, and its expression (None for the
    chain's left side, which has none)."""

    value: Any
    loc: Location
    expr: ast.Expr | None = None


def bind_arguments(
    op: Op, positional: list[Given], keywords: list[tuple[str, Given, Location]],
    loc: Location, *, from_chain: bool,
) -> tuple[dict[str, Any], dict[str, Location]]:
    """Match arguments to the signature, convert each to its kind; errors point at them.

    `from_chain`: the first positional argument is the chain's left side, which the
    user did not write between the parentheses (and is not counted in messages)."""
    signature = {a.name: a for a in op.signature}
    values: dict[str, Any] = {}
    locs: dict[str, Location] = {}
    queue = list(positional)
    for arg in op.signature:
        if arg.variadic:
            values[arg.name], locs[arg.name] = [g.value for g in queue], loc
            for given in queue:
                _convert_variadic(op, arg, given)
            queue = []
            continue
        if queue:
            given = queue.pop(0)
            values[arg.name], locs[arg.name] = given, given.loc
    if queue:
        raise _too_many(op, queue[0], from_chain)
    for name, given, name_loc in keywords:
        arg = signature.get(name)
        if arg is None or arg.variadic or name == "input":
            names = [a.name for a in op.signature if not a.variadic and a.name != "input"]
            close = difflib.get_close_matches(name, names, n=1)
            raise CompileError(
                f"{op.name}() has no argument `{name}`", name_loc,
                help=f"did you mean `{close[0]}`?" if close else signature_help(op),
            )
        if name in values:
            raise CompileError(
                f"{op.name}() argument `{name}` is given twice (by position and by name)",
                name_loc,
            )
        values[name], locs[name] = given, given.loc
    for arg in op.signature:
        if arg.name not in values:
            if arg.default is REQUIRED:
                raise CompileError(
                    f"{op.name}() needs an argument `{arg.name}`", loc,
                    help=signature_help(op),
                )
            values[arg.name] = arg.kind.convert(arg.default)  # per-dim tuples
            continue
        if not arg.variadic:
            values[arg.name] = _convert(op, arg, values[arg.name])
    return values, locs


def _too_many(op: Op, extra: Given, from_chain: bool) -> CompileError:
    """One positional argument too many, counted as the user wrote them."""
    takes = sum(1 for a in op.signature if not a.variadic) - (1 if from_chain else 0)
    found = describe(extra.value)
    if takes == 0 and len(op.signature) == 1:
        return CompileError(f"{op.name}() takes no arguments; found {found}", extra.loc)
    return CompileError(
        f"{op.name}() takes at most {count(takes, 'argument')} by position; "
        f"found another: {found}",
        extra.loc, help=signature_help(op),
    )


def _convert(op: Op, arg: Arg, given: Given) -> Any:
    try:
        return arg.kind.convert(given.value)
    except ArgError as e:
        if e.problem:
            raise CompileError(
                f"{op.name}() argument `{arg.name}` {e.problem}", given.loc
            ) from None
        raise CompileError(
            f"{op.name}() argument `{arg.name}` expects {e.expected}, found "
            f"{describe(given.value)}",
            given.loc, help=int_division_help(arg.kind.convert, given),
        ) from None


def _convert_variadic(op: Op, arg: Arg, given: Given) -> None:
    """Each further positional argument of add/mul/concat; the user never wrote the
    variadic argument's name, so the message says what the operator does instead."""
    try:
        arg.kind.convert(given.value)
        return
    except ArgError as e:
        expected = e.expected
    role = arg.role or f"takes {expected} after its input"
    hint = None
    later = op.signature[op.signature.index(arg) + 1:]
    for other in later:  # a value meant for an argument that follows the tensors
        try:
            other.kind.convert(given.value)
        except ArgError:
            continue
        hint = f"give the {other.name} by name: `{other.name}={quote(given.loc.text(), 60)}`"
        break
    raise CompileError(f"{op.name}() {role}; found {describe(given.value)}", given.loc,
                       help=hint)


def signature_help(op: Op) -> str:
    """`conv2d(out_channels, kernel_size, stride=1, ...)`: what an operator takes."""
    parts = []
    for a in op.signature[1:]:
        if a.variadic:
            parts.append(f"{a.name}...")
        elif a.default is REQUIRED:
            parts.append(a.name)
        else:
            parts.append(f"{a.name}={default_text(a.default)}")
    return f"{op.name}({', '.join(parts)})"


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def uses_true_division(expr: ast.Expr | None) -> bool:
    """Whether a `/` appears in the expression (walked without recursion)."""
    stack = [expr] if expr is not None else []
    while stack:
        e = stack.pop()
        if isinstance(e, ast.Binary):
            if e.op == "/":
                return True
            stack += [e.left, e.right]
        elif isinstance(e, ast.Negate):
            stack.append(e.operand)
        elif isinstance(e, (ast.TupleExpr, ast.ListExpr)):
            stack += list(e.items)
    return False


def int_division_help(accepts, given: Given) -> str | None:
    """`width / 2` gives a float even when it divides evenly; where an int was expected
    (one that `accepts` takes), point at `//`."""
    value = given.value
    if not isinstance(value, float) or not uses_true_division(given.expr):
        return None
    try:
        accepts(int(value))
    except (ArgError, ValueError, OverflowError):
        return None
    return "`/` always gives a float; `//` divides ints (`64 // 2` is 32)"


def default_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)
