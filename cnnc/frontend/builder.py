"""AST -> graph IR: expands blocks and repeats, binds arguments, infers every shape, names
every parameter.

Shapes are inferred as each node is created, because the language needs them while
building: `channels(t)`, and every layer's in_channels taken from its input. Chains and
their stages are expanded in chains.py, blocks in blocks.py; parameter names follow
LANGUAGE.md's rules (naming.py).
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from ..errors import CompileError, Location, ShapeError, quote
from ..ir.graph import Graph, InputAttrs, Layer
from ..ir.shapes import Sym, format_shape, per_sample_numel
from ..ir.values import TensorValue, describe
from ..ops import OPS, Op, TensorInfo
from ..ops.signature import Tensor as TensorKind
from ..ops.signature import TensorSlot
from . import ast
from .arguments import Given, bind_arguments
from .blocks import BlockBuilder
from .chains import MAX_NODES, ChainBuilder
from .evaluate import evaluate
from .loader import Program
from .naming import Unit
from .scope import Context, OpValue, Scope, chain_start_hint, placed

MAX_ELEMENTS = 1 << 32  # per tensor and per parameter, for one item of the batch


class Builder(ChainBuilder, BlockBuilder):
    def __init__(self, program: Program):
        self.program = program
        self.consts: dict[str, Any] = {}
        self._evaluating: list[str] = []
        self.graph: Graph | None = None
        self._units: list[Unit] = []  # units being expanded, innermost last

    # ------------------------------------------------------------ consts
    def const(self, name: str) -> Any:
        if name in self.consts:
            return self.consts[name]
        definition = self.program.consts[name]
        if name in self._evaluating:
            cycle = " -> ".join(self._evaluating[self._evaluating.index(name):] + [name])
            raise CompileError(f"const {name} depends on itself ({cycle})", definition.name_loc)
        self._evaluating.append(name)
        try:
            value = evaluate(definition.value, self._const_lookup)
        finally:
            self._evaluating.pop()
        self.consts[name] = value
        return value

    def _const_lookup(self, name: ast.Name) -> Any:
        if name.name in self.program.consts:
            return self.const(name.name)
        raise CompileError(
            f"`{name.name}` is not a const", name.loc,
            help="a const may use numbers and other consts only",
        )

    # ------------------------------------------------------------ network
    def build(self, net: ast.NetworkDef) -> Graph:
        for name in self.program.consts:  # every const is checked, used or not
            self.const(name)
        self.graph = graph = Graph(net.name)
        graph.location = net.loc
        scope = Scope(self)
        for stmt in net.inputs:
            self._input(stmt, scope)
        for stmt in net.statements:
            names = [stmt.name] if isinstance(stmt, ast.BindStmt) else \
                [n.name for n in stmt.names]
            ctx = Context(layer=names[0], trail=(), statement=stmt.loc)
            values = self._statement(stmt, scope, ctx, "")
            for name, value in zip(names, values):
                if len(values) > 1:  # each result is a row of its own
                    graph.node(value.node).layer = name
                graph.layers.append(Layer(name, _chain_text(stmt.chain), value.node, stmt.loc))
        for name in net.output.names:
            value = scope.lookup(name)
            if not isinstance(value, TensorValue):
                raise CompileError(f"output `{name.name}` is {describe(value)}, not a tensor",
                                   name.loc)
            graph.outputs.append(value.node)
            graph.output_names.append(name.name)
        for stmt, node_id in zip(net.inputs, graph.inputs):
            if not graph.consumers(node_id) and node_id not in graph.outputs:
                raise CompileError(
                    f"input `{stmt.name}` is never used", stmt.name_loc,
                    help="remove it, or feed it into the network",
                )
        return graph

    def _statement(self, stmt: ast.Binding, scope: Scope, ctx: Context,
                   prefix: str) -> list[Any]:
        """Build a statement and bind its names; its parameters go below `prefix.NAME`."""
        def below(name: str) -> str:
            return f"{prefix}.{name}" if prefix else name

        if isinstance(stmt, ast.BindStmt):
            value = self._chain(stmt.chain, scope, ctx, base=below(stmt.name))
            scope.bind(stmt.name, self._relabel(value, stmt.name), stmt.name_loc)
            return [value]
        values = self._unpack(stmt, scope, ctx, below(stmt.names[0].name))
        for name, value in zip(stmt.names, values):
            scope.bind(name.name, self._relabel(value, name.name), name.loc)
        return values

    def _input(self, stmt: ast.InputStmt, scope: Scope) -> None:
        dims: list[Any] = []
        for i, expr in enumerate(stmt.dims):
            if isinstance(expr, ast.Name) and expr.name not in self.program.consts:
                if i == 0:
                    dims.append(Sym(expr.name))
                    continue
                if expr.name not in scope.names:
                    raise CompileError(
                        f"only dim 0 of an input may be a name; dim {i} of input "
                        f"`{stmt.name}` is `{expr.name}`",
                        expr.loc,
                        help="dim 0 is the batch size, chosen at run time; give the other "
                        f"dims as numbers (or define `const {expr.name} = ...`)",
                    )
            value = evaluate(expr, scope.lookup)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                where = "the batch dim" if i == 0 else f"dim {i}"
                raise CompileError(
                    f"{where} of input `{stmt.name}` must be a positive int, found "
                    f"{describe(value)}",
                    expr.loc,
                    help="only dim 0 may be a name (a batch size chosen at run time)"
                    if isinstance(value, TensorValue) or i > 0 else None,
                )
            dims.append(value)
        shape = tuple(dims)
        self._check_size(shape, f"input `{stmt.name}`", stmt.loc, ())
        node = self.graph.add("input", InputAttrs(stmt.name), (), shape, loc=stmt.name_loc,
                              layer=stmt.name, label=stmt.name)
        scope.bind(stmt.name, TensorValue(node.id, shape, stmt.name), stmt.name_loc)
        self.graph.layers.append(Layer(stmt.name, "input", node.id, stmt.loc))

    @staticmethod
    def _relabel(value: Any, label: str) -> Any:
        if isinstance(value, TensorValue):
            return TensorValue(value.node, value.shape, label)
        return value

    # ------------------------------------------------------------ operators
    def _operator(self, name: str, where) -> Op:
        op = OPS.get(name)
        if op is None and name == "sequential":
            raise CompileError(
                "sequential takes the stages it holds in parentheses", where.loc,
                help="e.g. `x -> sequential(conv2d(8, 3), relu)`",
            )
        if op is None:
            candidates = list(OPS) + list(self.program.blocks)
            close = difflib.get_close_matches(name, candidates, n=1)
            raise CompileError(
                f"unknown operator `{name}`",
                where.name_loc if isinstance(where, ast.Call) else where.loc,
                help=f"did you mean `{close[0]}`?" if close else "see the operator table in "
                "docs/operators.md",
            )
        return op

    def _op_call(self, op: Op, target, call, left, scope: Scope, ctx: Context, prefix: str,
                 several: bool = False) -> Any:
        positional: list[Given] = [] if left is None else [Given(left, target.loc)]
        keywords: list[tuple[str, Given, Location]] = []
        if call is not None:
            positional += [Given(evaluate(a, scope.lookup), a.loc, a) for a in call.args]
            keywords = [(k.name, Given(evaluate(k.value, scope.lookup), k.value.loc, k.value),
                         k.name_loc) for k in call.kwargs]
            if left is None:
                self._check_chain_head(op, call, positional, scope)
        return self._make_op(op, positional, keywords, target.loc, ctx, prefix,
                             from_chain=left is not None, several=several)

    def _make_op(self, op: Op, positional: list[Given], keywords, loc: Location, ctx: Context,
                 prefix: str, *, from_chain: bool, origin: OpValue | None = None,
                 several: bool = False) -> Any:
        """One node (or one per result, `several`) for `op` applied at `loc`. `origin`: the
        op argument it comes from, whose arguments are checked where they were written."""
        try:
            args, arg_locs = bind_arguments(op, positional, keywords,
                                            origin.loc if origin else loc,
                                            from_chain=from_chain)
        except CompileError as e:
            raise placed(e, origin.trail) if origin else e from None
        inputs: list[TensorValue] = []

        def slot(value):
            if isinstance(value, TensorValue):
                inputs.append(value)
                return TensorSlot(len(inputs) - 1)
            if isinstance(value, list):
                return tuple(slot(v) for v in value)
            return value

        args = {k: slot(v) for k, v in args.items()}
        args.pop("input")
        infos = [TensorInfo(v.shape, v.label) for v in inputs]
        text = origin.text() if origin else loc.text()
        try:
            attrs = op.make_attrs(args)
            results = op.results(attrs, infos)
            shapes = results if results is not None else [op.infer(attrs, infos)]
            params = op.params(attrs, infos)
        except ShapeError as e:
            where = loc if origin else arg_locs.get(e.arg, loc)
            notes = [f"this stage is {quote(text)}, given at {origin.loc}"] if origin else None
            raise CompileError(e.message, where, trail=ctx.trail, help=e.help,
                               notes=notes) from None
        if several != (results is not None):
            raise self._results_error(op, text, len(shapes), several, loc, ctx)
        for shape in shapes:
            self._check_size(shape, f"the output of {op.name}()", loc, ctx.trail)
        for spec in params:
            if spec.numel() > MAX_ELEMENTS:
                raise CompileError(
                    f"{op.name}() {spec.name} would have {spec.numel():,} elements "
                    f"{format_shape(spec.shape)}; cnnc's limit is {MAX_ELEMENTS:,}",
                    loc, trail=ctx.trail,
                )
        if len(self.graph) + len(shapes) > MAX_NODES:
            raise CompileError(
                f"the network has more than {MAX_NODES:,} operators", loc, trail=ctx.trail
            )
        values = []
        for index, shape in enumerate(shapes):
            node = self.graph.add(
                op.name, dataclasses.replace(attrs, index=index) if several else attrs,
                tuple(v.node for v in inputs), shape, loc=loc, trail=ctx.trail,
                layer=ctx.layer, scope=prefix if params else "", params=params,
                label=text if len(text) <= 32 else f"{op.name}()",
            )
            self._units[-1].nodes.append(node.id)
            values.append(TensorValue(node.id, shape, node.label))
        return values if several else values[0]

    def _results_error(self, op: Op, text: str, count: int, several: bool, loc: Location,
                       ctx: Context) -> CompileError:
        if several:
            return self._one_result(quote(text), loc)
        return CompileError(
            f"{quote(text)} gives several results ({count} here); bind them to names: "
            f"`a, b = x -> {quote(text)}`", loc, trail=ctx.trail,
            help="an op with several results ends its chain",
        )

    @staticmethod
    def _check_chain_head(op: Op, call: ast.Call, positional: list[Given], scope: Scope) -> None:
        """A call heading a chain gets no tensor from a left side: its first argument must
        be one. `c1 = conv2d(3, 3) -> relu` forgot the tensor the chain starts from."""
        first = op.signature[0]
        if first.variadic or not isinstance(first.kind, TensorKind):
            return
        if positional and isinstance(positional[0].value, TensorValue):
            return
        hint = chain_start_hint(call, f"{op.name}()", scope)
        if not positional:
            raise CompileError(f"{op.name}() has no tensor to act on", call.loc, help=hint)
        raise CompileError(
            f"{op.name}() argument `{first.name}` expects a tensor, found "
            f"{describe(positional[0].value)}",
            positional[0].loc, help=hint,
        )

    def _check_size(self, shape, what: str, loc: Location, trail) -> None:
        n = per_sample_numel(shape)
        if n > MAX_ELEMENTS:
            count = f"{n:,}" if n < 10**18 else f"about {float(n):.1e}"
            raise CompileError(
                f"{what} {_shape_text(shape)} would hold {count} elements per batch item; "
                f"cnnc's limit is {MAX_ELEMENTS:,}",
                loc, trail=trail,
            )


def _shape_text(shape) -> str:
    """A shape for a message; sizes of more than 15 digits shortened (1.0e+300)."""
    if all(isinstance(d, Sym) or d < 10**15 for d in shape):
        return format_shape(shape)
    return "[" + ", ".join(
        str(d) if isinstance(d, Sym) or d < 10**15 else f"{float(d):.1e}" for d in shape
    ) + "]"


def _chain_text(chain: ast.AnyChain) -> str:
    """The ops of a statement as a summary shows them: `conv2d(6, 5) -> relu`."""
    if isinstance(chain, ast.Chain) and chain.head is not None:
        parts = [chain.head.loc.text()] if not isinstance(chain.head, ast.Name) else []
        parts += [stage.loc.text() for stage in chain.stages]
        if parts:
            return quote(" -> ".join(parts), 100)
    return quote(chain.loc.text(), 100)


def build_graph(program: Program, network: str | None = None) -> Graph:
    return Builder(program).build(program.network(network))
