"""The branch a compile-time condition does not pick is never built, but every name in it
must still be bound (LANGUAGE.md, "Chains"): a misspelt name is an error whichever way
the condition goes."""

from __future__ import annotations

from . import ast
from .scope import Scope


def check_unbuilt(node, scope: Scope) -> None:
    """Refuses the first unbound name in a chain, stage or expression (walked with a
    stack: an expression may nest thousands deep)."""
    stack = [node]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is ast.Name:
            scope.check_bound(item)
        elif kind is ast.Call:
            scope.check_bound(ast.Name(item.name, item.name_loc), call=True)
            stack += [*reversed(item.kwargs), *reversed(item.args)]
        elif kind is ast.KeywordArg:
            stack.append(item.value)
        elif kind is ast.Chain:
            stack += reversed(item.stages)
            if item.head is not None:
                stack.append(item.head)
        elif kind is ast.Stage:
            if item.repeat is not None:
                stack.append(item.repeat)
            stack.append(item.target)
        elif kind in (ast.CondChain, ast.CondStage):
            stack += [item.other, item.cond, item.then]
        elif kind is ast.Sequential:
            stack += reversed(item.items)
        elif kind is ast.Binary:
            stack += [item.right, item.left]
        elif kind in (ast.Negate, ast.Not):
            stack.append(item.operand)
        elif kind in (ast.TupleExpr, ast.ListExpr):
            stack += reversed(item.items)
