"""Compile-time evaluation of expressions: numbers, strings, tuples, const lists,
comparisons and `and or not`, channels(t) and size(t, d).

Every expression is evaluated when the network is built; names are looked up through
the caller's `lookup` (block parameters, bound tensors, consts).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..errors import CompileError
from ..ir.shapes import Sym
from ..ir.values import Array, TensorValue, describe
from . import ast

MAX_DEPTH = 200  # nesting of an expression; a flat `1 + 1 + ... + 1` does not nest
MAX_ARRAY_ELEMENTS = 1 << 20

Lookup = Callable[[ast.Name], Any]


class _TooDeep(Exception):
    """Raised deep inside an expression; reported at the outermost one (see evaluate)."""


def evaluate(expr: ast.Expr, lookup: Lookup) -> Any:
    """The value of an expression. Names are resolved by `lookup`."""
    try:
        return _evaluate(expr, lookup, 0)
    except _TooDeep:
        raise CompileError(
            f"expression nested more than {MAX_DEPTH} deep", expr.loc,
            help="simplify the expression",
        ) from None


def _evaluate(expr: ast.Expr, lookup: Lookup, depth: int) -> Any:
    # `depth` counts what recurses here: the operand of a unary minus, the items of a
    # tuple or list, the argument of a call, and the right operand of a binary operator
    # (deep only through parentheses, as `+ - * / //` associate to the left). A flat
    # `1 + 1 + ... + 1` is a chain down the left operands, which is walked in a loop.
    if depth > MAX_DEPTH:
        raise _TooDeep
    kind = type(expr)
    if kind is ast.Number or kind is ast.String or kind is ast.Literal:
        return expr.value
    if kind is ast.Name:
        return lookup(expr)
    if kind is ast.TupleExpr:
        return tuple(_evaluate(e, lookup, depth + 1) for e in expr.items)
    if kind is ast.ListExpr:
        return _array(expr, lookup, depth)
    if kind is ast.Not:
        value = _evaluate(expr.operand, lookup, depth + 1)
        return not _bool_operand("not", value, expr.operand)
    if kind is ast.Negate:
        value = _evaluate(expr.operand, lookup, depth + 1)
        if isinstance(value, Array):
            return Array(tuple(-x for x in value.values), value.shape)
        if not _is_number(value):
            raise CompileError(
                f"cannot negate {describe(value)}", expr.loc, help="`-` applies to numbers"
            )
        return -value
    if kind is ast.Binary:
        spine = []  # the left-leaning chain of binary operators, outermost first
        while type(expr) is ast.Binary:
            spine.append(expr)
            expr = expr.left
        value = _evaluate(expr, lookup, depth)
        for node in reversed(spine):
            right = _evaluate(node.right, lookup, depth + 1)
            if node.op in COMPARISONS:
                value = _compare(node.op, value, right, node)
            elif node.op in ("and", "or"):
                # Both sides are evaluated and must be bools: a mistake on the right is
                # reported even where the left decides.
                a = _bool_operand(node.op, value, node.left)
                b = _bool_operand(node.op, right, node.right)
                value = (a and b) if node.op == "and" else (a or b)
            else:
                value = _arith(node.op, value, right, node)
        return value
    if kind is ast.Call:
        return _call(expr, lookup, depth)
    raise AssertionError(f"unknown expression {expr!r}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


COMPARISONS = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


def _bool_operand(op: str, value: Any, expr: ast.Expr) -> bool:
    if not isinstance(value, bool):
        raise CompileError(
            f"`{op}` takes true or false, found {describe(value)}", expr.loc,
            help="compare it to get a bool, e.g. `stride != 1`",
        )
    return value


def _kind(value: Any) -> str | None:
    """What may be compared with what: numbers with numbers, strings with strings, ..."""
    if _is_number(value):
        return "number"
    for kind, name in ((bool, "bool"), (str, "string"), (tuple, "tuple")):
        if isinstance(value, kind):
            return name
    return None


def _compare(op: str, a: Any, b: Any, expr: ast.Binary) -> bool:
    for value, side in ((a, expr.left), (b, expr.right)):
        if isinstance(value, TensorValue):
            raise CompileError(
                f"cannot compare {describe(value)}: conditions are decided at compile time",
                side.loc, help=f"compare its sizes: channels({value.label}) or "
                f"size({value.label}, 2)",
            )
    if op in ("==", "!=") and (a is None or b is None):
        same = a is None and b is None
        return same if op == "==" else not same
    kind_a, kind_b = _kind(a), _kind(b)
    ordered = op not in ("==", "!=")
    if kind_a is None or kind_a != kind_b or (ordered and kind_a != "number"):
        what = "numbers" if ordered else "two numbers, two strings, two bools or two tuples"
        raise CompileError(
            f"cannot compare {describe(a)} {op} {describe(b)}", expr.loc,
            help=f"`{op}` compares {what}",
        )
    return COMPARISONS[op](a, b)


def _arith(op: str, a: Any, b: Any, expr) -> Any:
    if isinstance(a, Array) and _is_number(b) and op in ("*", "/"):
        return Array(tuple(_number_op(op, x, b, expr) for x in a.values), a.shape)
    if isinstance(b, Array) and _is_number(a) and op == "*":
        return Array(tuple(_number_op(op, a, x, expr) for x in b.values), b.shape)
    if _is_number(a) and _is_number(b):
        return _number_op(op, a, b, expr)
    raise CompileError(
        f"cannot compute {describe(a)} {op} {describe(b)}",
        expr.loc,
        help="arithmetic works on numbers; a const list can be multiplied or divided by a number",
    )


def _number_op(op: str, a, b, expr) -> int | float:
    if op in ("/", "//") and b == 0:
        raise CompileError("division by zero", expr.loc)
    if op == "+":
        result = a + b
    elif op == "-":
        result = a - b
    elif op == "*":
        result = a * b
    elif op == "/":
        result = a / b
    else:
        result = a // b
    if isinstance(result, float) and not math.isfinite(result):
        raise CompileError("the result is too large for a number", expr.loc)
    if isinstance(result, int) and result.bit_length() > 256:
        raise CompileError("the result is too large for a number", expr.loc)
    return result


def _array(expr: ast.ListExpr, lookup: Lookup, depth: int) -> Array:
    if not expr.items:
        raise CompileError(
            "an empty list is not a value", expr.loc, help="a const list needs numbers"
        )
    _check_array_size(expr)
    values, shape = [], None
    for item in expr.items:
        v = _evaluate(item, lookup, depth + 1)
        if _is_number(v):
            item_values, item_shape = (v,), ()
        elif isinstance(v, Array):
            item_values, item_shape = v.values, v.shape
        else:
            raise CompileError(
                f"a const list holds numbers or lists of numbers, found {describe(v)}", item.loc
            )
        if shape is None:
            shape = item_shape
        elif item_shape != shape:
            raise CompileError(
                "a const list must be rectangular: this item's shape "
                f"{list(item_shape)} differs from the first item's {list(shape)}",
                item.loc,
            )
        values.extend(item_values)
        if len(values) > MAX_ARRAY_ELEMENTS:
            raise CompileError(
                f"a const list of more than {MAX_ARRAY_ELEMENTS:,} numbers", expr.loc
            )
    return Array(tuple(values), (len(expr.items), *shape))


def _check_array_size(expr: ast.ListExpr) -> None:
    """Refuses a list that is too large before evaluating any of it: the product of the
    lengths of its first items, nested (the shape it has if it is rectangular)."""
    count, item, levels = 1, expr, 0
    while type(item) is ast.ListExpr and item.items and levels <= MAX_DEPTH:
        count *= len(item.items)
        item, levels = item.items[0], levels + 1
        if count > MAX_ARRAY_ELEMENTS:
            raise CompileError(
                f"a const list of more than {MAX_ARRAY_ELEMENTS:,} numbers", expr.loc
            )


def _call(expr: ast.Call, lookup: Lookup, depth: int) -> Any:
    if expr.name == "size":
        return _size(expr, lookup, depth)
    if expr.name != "channels":
        raise CompileError(
            f"a call to {expr.name}() cannot stand inside an expression",
            expr.loc,
            help="bind its result to a name first (`y = x -> op(...)`) and pass the name; "
            "the only calls allowed in an expression are channels(t) and size(t, d)",
        )
    if len(expr.args) != 1 or expr.kwargs:
        raise CompileError("channels() takes exactly one tensor: channels(t)", expr.loc)
    value = _evaluate(expr.args[0], lookup, depth + 1)
    if not isinstance(value, TensorValue):
        raise CompileError(
            f"channels() takes a tensor, found {describe(value)}", expr.args[0].loc
        )
    if len(value.shape) < 2 or isinstance(value.shape[1], Sym):
        raise CompileError(f"channels() needs a tensor with a fixed dim 1, found {value}", expr.loc)
    return value.shape[1]


def _size(expr: ast.Call, lookup: Lookup, depth: int) -> int:
    """size(t, d): the static size of dim d >= 1 of tensor t (dim 0 is the batch)."""
    if len(expr.args) != 2 or expr.kwargs:
        raise CompileError("size() takes a tensor and a dim: size(t, 2)", expr.loc)
    value, dim = (_evaluate(a, lookup, depth + 1) for a in expr.args)
    if not isinstance(value, TensorValue):
        raise CompileError(f"size() takes a tensor, found {describe(value)}", expr.args[0].loc)
    rank = len(value.shape)
    if not (isinstance(dim, int) and not isinstance(dim, bool)) or not -rank < dim < rank \
            or dim % rank == 0:
        raise CompileError(
            f"size() dim must be an int from 1 to {rank - 1} (or -{rank - 1} to -1) for "
            f"{value}, found {describe(dim)}",
            expr.args[1].loc, help="dim 0 is the batch size, chosen at run time",
        )
    size = value.shape[dim % rank]
    if isinstance(size, Sym):
        raise CompileError(f"size() needs a fixed dim {dim}, found {value}", expr.loc)
    return size
