"""Blocks: their arguments (of every parameter type, `op` included) and their expansion.

A block instance is expanded where it is used; inside it, names continue below the
instance's name (rule 3) and its `return` chain is named like a statement whose name is
the instance's (rule 5). An `op` argument (`act=leaky_relu(0.2)`) is evaluated where it is
written; applying it later (`-> act`) may still find a mistake in its arguments, which is
then shown where they were written.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from ..errors import CompileError, Frame, Location, quote
from ..ir.values import TensorValue, describe
from ..ops import OPS
from . import ast
from .arguments import Given, count, int_division_help
from .evaluate import evaluate
from .scope import (
    BUILTIN_CALLS,
    Context,
    OpValue,
    PlacedError,
    Scope,
    chain_start_hint,
    op_called,
    placed,
)

if TYPE_CHECKING:
    from .builder import Builder

    _Base = Builder
else:
    _Base = object

MAX_BLOCK_DEPTH = 100
PARAM_KINDS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "tensor": lambda v: isinstance(v, TensorValue),
    "op": lambda v: isinstance(v, OpValue),
}
PARAM_KIND_TEXT = {"int": "an int", "float": "a number", "bool": "true or false",
                   "str": "a string", "tensor": "a tensor",
                   "op": "an op (an operator or a block, e.g. `relu` or `leaky_relu(0.2)`)"}

Keywords = list[tuple[str, Given, Location]]


class BlockBuilder(_Base):
    """The part of the Builder that binds and expands blocks (mixed into Builder)."""

    # ------------------------------------------------------------ arguments
    def _block_arguments(self, block: ast.BlockDef, call: ast.Call | None, scope: Scope,
                         ctx: Context, from_chain: bool) -> tuple[list[Given], Keywords]:
        """Evaluate a call's arguments, each as the parameter it goes to wants: an `op`
        parameter takes a stage value, every other one an expression's value."""
        params = list(block.params)
        if from_chain:
            first = next((p for p in params if p.type == "tensor"), None)
            if first is not None:
                params.remove(first)
        by_name = {p.name: p for p in block.params}
        positional = [
            Given(self._argument(params[i] if i < len(params) else None, a, scope, ctx), a.loc, a)
            for i, a in enumerate(call.args if call else ())
        ]
        keywords = [(k.name, Given(self._argument(by_name.get(k.name), k.value, scope, ctx),
                                   k.value.loc, k.value), k.name_loc)
                    for k in (call.kwargs if call else ())]
        return positional, keywords

    def _argument(self, param: ast.Param | None, expr: ast.Expr, scope: Scope,
                  ctx: Context) -> Any:
        if param is not None and param.type == "op":
            return self._op_value(expr, scope, ctx)
        return evaluate(expr, scope.lookup)

    def _op_value(self, expr: ast.Expr, scope: Scope, ctx: Context) -> Any:
        """`relu`, `leaky_relu(0.2)`, `se(8, act=act)`, an op parameter passed on, or
        none. Anything else is evaluated as a value, which the binder then refuses."""
        if isinstance(expr, ast.Literal) and expr.value is None:
            return OpValue(None, expr.loc, ctx.trail)
        if isinstance(expr, ast.Name):
            if expr.name in scope.names:
                return scope.names[expr.name][0]  # an op parameter passed on, or a tensor
            if expr.name not in self.program.consts and (
                    expr.name in OPS or expr.name in self.program.blocks):
                self._check_not_recursive(expr.name, expr.loc, ctx)
                return OpValue(expr.name, expr.loc, ctx.trail)
        if not isinstance(expr, ast.Call) or expr.name in BUILTIN_CALLS:
            return evaluate(expr, scope.lookup)
        if scope.op_param(expr.name) is not None:
            raise op_called(expr.name, expr.name_loc)
        if expr.name in self.program.blocks:
            self._check_not_recursive(expr.name, expr.loc, ctx)
            args, kwargs = self._block_arguments(self.program.blocks[expr.name], expr, scope,
                                                 ctx, from_chain=True)
        else:
            self._operator(expr.name, expr)
            args = [Given(evaluate(a, scope.lookup), a.loc, a) for a in expr.args]
            kwargs = [(k.name, Given(evaluate(k.value, scope.lookup), k.value.loc, k.value),
                       k.name_loc) for k in expr.kwargs]
        return OpValue(expr.name, expr.loc, ctx.trail, tuple(args), tuple(kwargs))

    @staticmethod
    def _check_not_recursive(name: str, loc: Location, ctx: Context) -> None:
        """A block used inside itself, as a stage or as an op argument written there."""
        if name in ctx.active_blocks:
            cycle = " -> ".join(ctx.active_blocks[ctx.active_blocks.index(name):] + (name,))
            raise CompileError(f"block {name} uses itself ({cycle})", loc,
                               trail=ctx.trail, help="blocks may not be recursive")

    # ------------------------------------------------------------ expansion
    def _expand_block(self, block: ast.BlockDef, positional: list[Given], keywords: Keywords,
                      left: TensorValue | None, loc: Location, ctx: Context, prefix: str, *,
                      call: ast.Call | None = None, scope: Scope | None = None,
                      origin: OpValue | None = None) -> TensorValue:
        """Expand a use of `block` at `loc`. `origin`: the op argument it comes from, whose
        arguments are checked where they were written."""
        # A block given as an op argument may be applied inside itself (`scale(2.0,
        # then=scale(0.5))`): the argument is finite. Written inside the block, it was
        # refused where it was written.
        if origin is None:
            self._check_not_recursive(block.name, loc, ctx)
        if len(ctx.active_blocks) >= MAX_BLOCK_DEPTH:
            raise CompileError(f"blocks nest more than {MAX_BLOCK_DEPTH} deep", loc,
                               trail=ctx.trail)
        frame = Frame(block.name, loc, ctx.statement)
        trail = ctx.trail + (frame,)
        active = ctx.active_blocks + (block.name,)
        inside = Context(ctx.layer, trail, block.loc, active)  # where defaults are evaluated
        inner = Scope(self)
        if origin is None:
            bound = self._bind_block(block, positional, keywords, left, loc, ctx.trail, inside,
                                     call, scope)
        else:
            try:
                bound = self._bind_block(block, positional, keywords, left, origin.loc,
                                         origin.trail, inside, None, None)
            except PlacedError:
                raise
            except CompileError as e:
                raise placed(e, origin.trail) from None
        for param in block.params:
            # Inside the block a tensor is called by its parameter's name (`x`), whatever
            # the caller calls it.
            inner.names[param.name] = (self._relabel(bound[param.name], param.name), param.loc)
            inner.params.add(param.name)
        try:
            for stmt in block.statements:
                inner_ctx = Context(ctx.layer, trail, stmt.loc, active)
                self._statement(stmt, inner, inner_ctx, prefix)
            ret_ctx = Context(ctx.layer, trail, block.result.loc, active)
            result = self._chain(block.result.chain, inner, ret_ctx, base=prefix)
        except CompileError as e:
            raise e.with_trail(trail) from None
        if not isinstance(result, TensorValue):
            raise CompileError(f"block {block.name} returns {describe(result)}, not a tensor",
                               block.result.loc, trail=trail)
        return TensorValue(result.node, result.shape, f"{block.name}()")

    def _bind_block(self, block: ast.BlockDef, positional: list[Given], keywords: Keywords,
                    left: TensorValue | None, loc: Location, trail, inside: Context,
                    call: ast.Call | None, scope: Scope | None) -> dict[str, Any]:
        """Match the arguments to the block's parameters, fill in defaults, check types.
        `trail`: where the arguments were written; `inside`: the instance."""
        params = list(block.params)
        values: dict[str, Any] = {}
        locs: dict[str, Location] = {}
        exprs: dict[str, ast.Expr | None] = {}
        if left is not None:
            first = next((p for p in params if p.type == "tensor"), None)
            if first is None:
                raise CompileError(
                    f"block {block.name} has no tensor parameter to take the chain's left side",
                    loc, trail=trail,
                )
            values[first.name], locs[first.name] = left, loc
            params.remove(first)
        # At the head of a chain the block's first tensor has no left side to come from.
        head = next((p for p in block.params if p.type == "tensor"), None) \
            if left is None and call is not None else None
        if len(positional) > len(params):
            takes = "no arguments" if not params else \
                f"at most {count(len(params), 'argument')} by position"
            besides = " besides the chain's tensor" if left is not None else ""
            extra = positional[len(params)]
            raise CompileError(
                f"block {block.name} takes {takes}{besides}; found another: "
                f"{quote(extra.loc.text(), 80)}",
                extra.loc, trail=trail, help=_block_help(block),
            )
        for param, given in zip(params, positional):
            values[param.name], locs[param.name], exprs[param.name] = \
                given.value, given.loc, given.expr
        known = [p.name for p in block.params]
        for name, given, name_loc in keywords:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                raise CompileError(
                    f"block {block.name} has no parameter `{name}`", name_loc, trail=trail,
                    help=f"did you mean `{close[0]}`?" if close else _block_help(block),
                )
            if name in values:
                raise CompileError(f"block {block.name} parameter `{name}` is given twice",
                                   name_loc, trail=trail)
            values[name], locs[name], exprs[name] = given.value, given.loc, given.expr
        for param in block.params:
            if param.name not in values:
                if param.default is None:
                    raise CompileError(
                        f"block {block.name} needs an argument `{param.name}`", loc,
                        trail=trail,
                        help=chain_start_hint(call, f"block {block.name}", scope)
                        if param is head else _block_help(block),
                    )
                values[param.name] = self._default(param, values, inside)
                locs[param.name] = param.default.loc
            value = values[param.name]
            if not PARAM_KINDS[param.type](value):
                given = Given(value, locs[param.name], exprs.get(param.name, param.default))
                hint = None
                if param.type == "int":
                    hint = int_division_help(_int_param, given)
                elif param is head:
                    hint = chain_start_hint(call, f"block {block.name}", scope)
                raise CompileError(
                    f"block {block.name} parameter `{param.name}` expects "
                    f"{PARAM_KIND_TEXT[param.type]}, found {_describe(value)}",
                    locs[param.name], trail=trail, help=hint,
                )
            if param.type == "float":
                values[param.name] = float(value)
        return values

    def _default(self, param: ast.Param, values: dict[str, Any], inside: Context) -> Any:
        """A parameter's default, evaluated inside the instance; it may use the parameters
        before it."""
        partial = Scope(self, {k: (v, param.loc) for k, v in values.items()})
        try:
            if param.type == "op":
                return self._op_value(param.default, partial, inside)
            return evaluate(param.default, partial.lookup)
        except CompileError as e:  # in the block's text: seen from the instance
            raise placed(e, e.trail or inside.trail) from None


def _describe(value: Any) -> str:
    if isinstance(value, OpValue):
        return f"the op {value.text()}" if value.name else "none"
    return describe(value)


def _int_param(value: Any) -> int:
    if not PARAM_KINDS["int"](value):
        raise ValueError(value)
    return value


def _block_help(block: ast.BlockDef) -> str:
    parts = [quote(p.loc.text(), 40) for p in block.params]
    return f"block {block.name}({', '.join(parts)})"
