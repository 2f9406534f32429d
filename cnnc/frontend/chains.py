"""Chains and their stages: repeats, `sequential`, compile-time conditions, `op` arguments
used as stages, and the several results of `a, b = x -> chunk(2)`.

Every op a stage applies is one numbered Unit of its chain or sequential (naming.py); a
stage that adds no op (`s * 0`, a conditional that picks `none`, an `op` argument that is
`none`) takes no number. Only the branch a condition picks is built; the names of the
other must still be bound (branches.py checks them).
"""

from __future__ import annotations

from collections.abc import Callable as Build
from typing import TYPE_CHECKING, Any

from ..errors import CompileError, quote
from ..ir.values import Callable, TensorValue, describe
from . import ast
from .arguments import Given
from .branches import check_unbuilt
from .evaluate import evaluate
from .naming import Numbering, name_chain
from .scope import Context, OpValue, Scope, op_called

if TYPE_CHECKING:
    from .builder import Builder

    _Base = Builder
else:
    _Base = object

MAX_NODES = 100_000


class ChainBuilder(_Base):
    """The part of the Builder that expands chains (mixed into Builder)."""

    # ------------------------------------------------------------ conditions
    def _condition(self, expr: ast.Expr, scope: Scope) -> bool:
        value = evaluate(expr, scope.lookup)
        if not isinstance(value, bool):
            raise CompileError(
                f"a condition must be a compile-time bool (true or false), found "
                f"{describe(value)}",
                expr.loc, help="compare it to get a bool, e.g. `stride != 1`",
            )
        return value

    def _pick(self, node: ast.CondChain | ast.CondStage, scope: Scope):
        """The branch the condition picks; the other is checked for unbound names only."""
        if self._condition(node.cond, scope):
            chosen, other = node.then, node.other
        else:
            chosen, other = node.other, node.then
        check_unbuilt(other, scope)
        return chosen

    def _choose(self, chain: ast.AnyChain, scope: Scope) -> ast.Chain:
        while isinstance(chain, ast.CondChain):
            chain = self._pick(chain, scope)
        return chain

    # ------------------------------------------------------------ chains
    def _chain(self, chain: ast.AnyChain, scope: Scope, ctx: Context, base: str,
               left: TensorValue | None = None) -> Any:
        """Expand a chain (a headless one from `left`); its ops are named below `base`."""
        chain = self._choose(chain, scope)
        numbering = Numbering(base)
        value = self._flow(chain, scope, ctx, numbering, left)
        name_chain(self.graph, numbering)
        return value

    def _flow(self, chain: ast.Chain, scope: Scope, ctx: Context, numbering: Numbering,
              left: TensorValue | None) -> Any:
        value = left if chain.head is None else self._head(chain.head, scope, ctx, numbering)
        for stage in chain.stages:
            value = self._stage(stage, value, numbering, scope, ctx)
        return value

    def _head(self, head, scope: Scope, ctx: Context, numbering: Numbering) -> Any:
        if isinstance(head, ast.Sequential):
            raise CompileError(
                "sequential() has no tensor to act on", head.loc,
                help="a sequential is a stage: `y = x -> sequential(...)`",
            )
        if isinstance(head, ast.Call):
            return self._in_unit(numbering, head.loc,
                                 lambda prefix: self._apply(head, None, scope, ctx, prefix))
        value = scope.lookup(head)
        if not isinstance(value, TensorValue):
            raise CompileError(
                f"a chain starts with a tensor or a call; `{head.name}` is {describe(value)}",
                head.loc,
                help=f"apply it to a tensor: `x -> {head.name}`"
                if isinstance(value, Callable) else None,
            )
        return value

    def _in_unit(self, numbering: Numbering, loc, build: Build[[str], Any]) -> Any:
        """Build one numbered op; its nodes also belong to every unit around it."""
        unit = numbering.next(loc)
        self._units.append(unit)
        try:
            return build(unit.prefix)
        finally:
            self._units.pop()
            if self._units:
                self._units[-1].nodes.extend(unit.nodes)

    # ------------------------------------------------------------ stages
    def _stage(self, stage: ast.Stage, value: Any, numbering: Numbering, scope: Scope,
               ctx: Context) -> Any:
        for _ in range(self._repeat_count(stage, scope)):
            value = self._target(stage.target, value, numbering, scope, ctx)
        return value

    def _repeat_count(self, stage: ast.Stage, scope: Scope) -> int:
        if stage.repeat is None:
            return 1
        count = evaluate(stage.repeat, scope.lookup)
        if not (isinstance(count, int) and not isinstance(count, bool) and count >= 0):
            raise CompileError(
                f"a repeat count must be a non-negative int, found {describe(count)}",
                stage.repeat.loc, help="`* 0` applies the stage no time (the identity)",
            )
        if count > MAX_NODES:
            raise CompileError(
                f"repeating {count:,} times would exceed cnnc's limit of "
                f"{MAX_NODES:,} operators in a network",
                stage.repeat.loc,
            )
        return count

    def _target(self, target, value: Any, numbering: Numbering, scope: Scope,
                ctx: Context) -> Any:
        if isinstance(target, ast.NoStage):
            return value
        if isinstance(target, ast.Stage):  # `(s)` or a picked branch
            return self._stage(target, value, numbering, scope, ctx)
        if isinstance(target, ast.CondStage):
            return self._target(self._pick(target, scope), value, numbering, scope, ctx)
        if isinstance(target, ast.Name):
            op_value = scope.op_param(target.name)
            if op_value is not None and op_value.name is None:
                return value  # an op argument that is none: no stage, no number
        if isinstance(target, ast.Sequential):
            return self._in_unit(numbering, target.loc, lambda prefix: self._sequential(
                target, value, scope, ctx, prefix))
        return self._in_unit(numbering, target.loc,
                             lambda prefix: self._apply(target, value, scope, ctx, prefix))

    # ------------------------------------------------------------ sequential
    def _sequential(self, seq: ast.Sequential, left: TensorValue, scope: Scope, ctx: Context,
                    prefix: str) -> TensorValue:
        """Rule 4: item i is named `<prefix>.<i>`; `s * n` takes n numbers, a headless
        chain one (named like a statement called `<prefix>.<i>`)."""
        numbering = Numbering(prefix)
        value = left
        for item in seq.items:
            chain = self._choose(item, scope)
            if len(chain.stages) == 1:
                value = self._stage(chain.stages[0], value, numbering, scope, ctx)
            else:
                value = self._in_unit(numbering, chain.loc, lambda base, chain=chain, v=value:
                                      self._chain(chain, scope, ctx, base, left=v))
        return value

    # ------------------------------------------------------------ several results
    def _unpack(self, stmt: ast.UnpackStmt, scope: Scope, ctx: Context,
                base: str) -> list[TensorValue]:
        """`a, b = chain`: the last stage is an op with several results; the chain holds
        no op with parameters (they could be named after none of the names)."""
        chain = self._choose(stmt.chain, scope)
        names = ", ".join(n.name for n in stmt.names)
        numbering = Numbering(base)
        if chain.stages:
            value = self._flow(ast.Chain(chain.head, chain.stages[:-1], chain.loc), scope,
                               ctx, numbering, None)
            last = chain.stages[-1]
            target, fits = last.target, last.repeat is None
        else:  # `a, b = chunk(x, 2)`
            value, last = None, chain.head
            target, fits = last, isinstance(last, ast.Call)
        if not (fits and isinstance(target, (ast.Call, ast.Name))):
            raise CompileError(
                f"`{quote(names)} = ...` binds the results of an op with several (chunk, "
                f"split), which must end its chain; found {quote(last.loc.text())}",
                last.loc, help=f"end the chain with it: `{quote(names)} = x -> chunk(2)`",
            )
        results = self._in_unit(numbering, target.loc, lambda prefix: self._apply(
            target, value, scope, ctx, prefix, several=True))
        with_params = numbering.with_params(self.graph)
        if with_params:
            unit = with_params[0]
            raise CompileError(
                f"`{quote(names)} = ...` binds several results, so its chain may hold no op "
                f"with parameters; {quote(unit.loc.text())} has some",
                unit.loc, trail=ctx.trail,
                help=f"bind that part first: `y = ... -> {quote(unit.loc.text())}`, then "
                f"`{quote(names)} = y -> ...`",
            )
        if len(results) != len(stmt.names):
            given = "name is" if len(stmt.names) == 1 else "names are"
            raise CompileError(
                f"{quote(target.loc.text())} gives {len(results)} results here, but "
                f"{len(stmt.names)} {given} bound to them",
                target.loc, trail=ctx.trail,
                help=f"bind {len(results)} names, as torch returns them",
            )
        return results

    # ------------------------------------------------------------ applying one stage
    def _apply(self, target, left, scope: Scope, ctx: Context, prefix: str,
               several: bool = False) -> Any:
        name = target.name
        op_value = scope.op_param(name)
        if op_value is not None:
            if isinstance(target, ast.Call):
                raise op_called(name, target.name_loc)
            return self._apply_op_value(op_value, target, left, ctx, prefix, several)
        if isinstance(target, ast.Name) and name in scope.names:
            raise CompileError(
                f"a stage must be an operator or a block; `{name}` is "
                f"{describe(scope.names[name][0])}",
                target.loc,
                help=f"to combine tensors use add({name}), mul({name}) or concat({name})",
            )
        call = target if isinstance(target, ast.Call) else None
        if name in self.program.blocks:
            block = self.program.blocks[name]
            if several:
                raise self._one_result(f"block {name}", target.loc)
            positional, keywords = self._block_arguments(block, call, scope, ctx,
                                                         from_chain=left is not None)
            return self._expand_block(block, positional, keywords, left, target.loc, ctx,
                                      prefix, call=call, scope=scope)
        return self._op_call(self._operator(name, call or target), target, call, left, scope,
                             ctx, prefix, several)

    def _apply_op_value(self, value: OpValue, target, left, ctx: Context, prefix: str,
                        several: bool) -> Any:
        """`-> act`: the op argument applied to the left side, numbered where `act` is."""
        if value.name is None:  # `a, b = x -> act` with act none
            raise self._one_result(f"`{target.name}` (none)", target.loc)
        if value.name in self.program.blocks:
            if several:
                raise self._one_result(f"block {value.name}", target.loc)
            return self._expand_block(self.program.blocks[value.name], list(value.args),
                                      list(value.kwargs), left, target.loc, ctx, prefix,
                                      origin=value)
        positional = [Given(left, target.loc), *value.args]
        return self._make_op(self._operator(value.name, target), positional,
                             list(value.kwargs), target.loc, ctx, prefix, from_chain=True,
                             origin=value, several=several)

    @staticmethod
    def _one_result(what: str, loc) -> CompileError:
        return CompileError(
            f"{what} gives one result; `a, b = ...` binds the results of an op with several "
            "(chunk, split)", loc, help="bind one name: `y = ...`",
        )
