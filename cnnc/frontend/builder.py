"""AST -> graph IR: expands blocks and repeats, binds arguments, infers every shape, names
every parameter.

Shapes are inferred as each node is created, because the language needs them while
building: `channels(t)`, and every layer's in_channels taken from its input.

Parameter names follow LANGUAGE.md: a statement whose chain holds one parametrised op
or block names it `NAME.<param>`; with several, each is `NAME.<i>.<param>` where i counts
every op of the chain from 0; inside a block instance names continue below it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from ..errors import CompileError, Frame, Location, ShapeError, quote
from ..ir.graph import Graph, InputAttrs, Layer
from ..ir.shapes import Sym, format_shape, per_sample_numel
from ..ir.values import Callable, TensorValue, describe
from ..ops import OPS, Op, TensorInfo
from ..ops.signature import Tensor as TensorKind
from ..ops.signature import TensorSlot
from . import ast
from .arguments import Given, bind_arguments, count, int_division_help
from .evaluate import evaluate
from .loader import Program

MAX_NODES = 100_000
MAX_ELEMENTS = 1 << 32  # per tensor and per parameter, for one item of the batch
MAX_BLOCK_DEPTH = 100
PARAM_KINDS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "tensor": lambda v: isinstance(v, TensorValue),
}
PARAM_KIND_TEXT = {"int": "an int", "float": "a number", "bool": "true or false",
                   "str": "a string", "tensor": "a tensor"}


@dataclass
class Scope:
    """The names bound in a network or in one block instance, over the program's consts."""

    builder: Builder
    names: dict[str, tuple[Any, Location]] = field(default_factory=dict)
    params: set[str] = field(default_factory=set)  # block parameters (never rebound)

    def lookup(self, name: ast.Name) -> Any:
        if name.name in self.names:
            return self.names[name.name][0]
        if name.name in self.builder.program.consts:
            return self.builder.const(name.name)
        if name.name in OPS:
            return Callable(name.name, "operator")
        if name.name in self.builder.program.blocks:
            return Callable(name.name, "block")
        visible = list(self.names) + list(self.builder.program.consts)
        close = difflib.get_close_matches(name.name, visible, n=1)
        raise CompileError(
            f"`{name.name}` is not defined",
            name.loc,
            help=f"did you mean `{close[0]}`?" if close else None,
        )

    def bind(self, name: str, value: Any, loc: Location) -> None:
        if name in self.params:
            raise CompileError(
                f"`{name}` is a parameter of this block and cannot be rebound", loc,
                notes=[f"the parameter is declared at {self.names[name][1]}"],
                help="choose another name",
            )
        if name in self.names:
            raise CompileError(
                f"`{name}` is already bound", loc,
                notes=[f"first bound at {self.names[name][1]}"],
                help="each name is bound once; choose another name",
            )
        if name in self.builder.program.consts:
            raise CompileError(
                f"`{name}` is already a const", loc,
                notes=[f"the const is defined at {self.builder.program.consts[name].name_loc}"],
                help="choose another name",
            )
        self.names[name] = (value, loc)


@dataclass(frozen=True)
class Context:
    """Where the builder is: the layer (network statement), block trail, statement."""

    layer: str
    trail: tuple[Frame, ...]
    statement: Location
    active_blocks: tuple[str, ...] = ()


@dataclass
class Unit:
    """One op of a chain (a stage or its repeat) and every node it created."""

    prefix: str
    nodes: list[int] = field(default_factory=list)


class Builder:
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
            ctx = Context(layer=stmt.name, trail=(), statement=stmt.loc)
            value = self._chain(stmt.chain, scope, ctx, base=stmt.name)
            scope.bind(stmt.name, self._relabel(value, stmt.name), stmt.name_loc)
            graph.layers.append(Layer(stmt.name, _chain_text(stmt.chain), value.node, stmt.loc))
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

    # ------------------------------------------------------------ chains
    def _chain(self, chain: ast.Chain, scope: Scope, ctx: Context, base: str) -> Any:
        """Expand a chain; its parametrised units are named below `base`."""
        units: list[Unit] = []

        def run(target, left):
            unit = Unit(f"{base}.{len(units)}" if base else str(len(units)))
            units.append(unit)
            self._units.append(unit)
            try:
                return self._apply(target, left, scope, ctx, unit.prefix)
            finally:
                self._units.pop()
                if self._units:
                    self._units[-1].nodes.extend(unit.nodes)

        head = chain.head
        if isinstance(head, ast.Name):
            value = scope.lookup(head)
            if not isinstance(value, TensorValue):
                raise CompileError(
                    f"a chain starts with a tensor or a call; `{head.name}` is {describe(value)}",
                    head.loc,
                    help=f"apply it to a tensor: `x -> {head.name}`"
                    if isinstance(value, Callable) else None,
                )
        else:
            value = run(head, None)
        for stage in chain.stages:
            count = 1
            if stage.repeat is not None:
                count = evaluate(stage.repeat, scope.lookup)
                if not (isinstance(count, int) and not isinstance(count, bool) and count >= 1):
                    raise CompileError(
                        f"a repeat count must be a positive int, found {describe(count)}",
                        stage.repeat.loc,
                    )
                if count > MAX_NODES:
                    raise CompileError(
                        f"repeating {count:,} times would exceed cnnc's limit of "
                        f"{MAX_NODES:,} operators in a network",
                        stage.repeat.loc,
                    )
            for _ in range(count):
                value = run(stage.target, value)
        self._name_units(units, base)
        return value

    def _name_units(self, units: list[Unit], base: str) -> None:
        with_params = [u for u in units if any(self.graph.node(n).params for n in u.nodes)]
        if len(with_params) != 1:
            return
        unit = with_params[0]
        for n in unit.nodes:
            node = self.graph.node(n)
            if node.scope == unit.prefix or node.scope.startswith(unit.prefix + "."):
                node.scope = base + node.scope[len(unit.prefix):]
                if node.scope.startswith("."):
                    node.scope = node.scope[1:]

    def _apply(self, target, left, scope: Scope, ctx: Context, prefix: str) -> TensorValue:
        name = target.name
        if isinstance(target, ast.Name) and name in scope.names:
            raise CompileError(
                f"a stage must be an operator or a block; `{name}` is "
                f"{describe(scope.names[name][0])}",
                target.loc,
                help=f"to combine tensors use add({name}), mul({name}) or concat({name})",
            )
        call = target if isinstance(target, ast.Call) else None
        if name in self.program.blocks:
            return self._block(self.program.blocks[name], target, call, left, scope, ctx, prefix)
        op = OPS.get(name)
        if op is None:
            candidates = list(OPS) + list(self.program.blocks)
            close = difflib.get_close_matches(name, candidates, n=1)
            raise CompileError(
                f"unknown operator `{name}`",
                call.name_loc if call else target.loc,
                help=f"did you mean `{close[0]}`?" if close else "see the operator table in "
                "docs/operators.md",
            )
        return self._op(op, target, call, left, scope, ctx, prefix)

    # ------------------------------------------------------------ operators
    def _op(self, op: Op, target, call, left, scope, ctx: Context, prefix: str) -> TensorValue:
        loc = target.loc
        positional: list[Given] = [] if left is None else [Given(left, loc)]
        keywords: list[tuple[str, Given, Location]] = []
        if call is not None:
            positional += [Given(evaluate(a, scope.lookup), a.loc, a) for a in call.args]
            keywords = [(k.name, Given(evaluate(k.value, scope.lookup), k.value.loc, k.value),
                         k.name_loc) for k in call.kwargs]
            if left is None:
                self._check_chain_head(op, call, positional, scope)
        args, arg_locs = bind_arguments(op, positional, keywords, loc, from_chain=left is not None)
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
        try:
            attrs = op.make_attrs(args)
            shape = op.infer(attrs, infos)
            params = op.params(attrs, infos)
        except ShapeError as e:
            where = arg_locs.get(e.arg, loc) if e.arg else loc
            raise CompileError(e.message, where, trail=ctx.trail, help=e.help) from None
        self._check_size(shape, f"the output of {op.name}()", loc, ctx.trail)
        for spec in params:
            if spec.numel() > MAX_ELEMENTS:
                raise CompileError(
                    f"{op.name}() {spec.name} would have {spec.numel():,} elements "
                    f"{format_shape(spec.shape)}; cnnc's limit is {MAX_ELEMENTS:,}",
                    loc, trail=ctx.trail,
                )
        if len(self.graph) >= MAX_NODES:
            raise CompileError(
                f"the network has more than {MAX_NODES:,} operators", loc, trail=ctx.trail
            )
        text = loc.text()
        node = self.graph.add(
            op.name, attrs, tuple(v.node for v in inputs), shape, loc=loc, trail=ctx.trail,
            layer=ctx.layer, scope=prefix if params else "", params=params,
            label=text if len(text) <= 32 else f"{op.name}()",
        )
        self._units[-1].nodes.append(node.id)
        return TensorValue(node.id, shape, node.label)

    @staticmethod
    def _check_chain_head(op: Op, call: ast.Call, positional: list[Given], scope: Scope) -> None:
        """A call heading a chain gets no tensor from a left side: its first argument must
        be one. `c1 = conv2d(3, 3) -> relu` forgot the tensor the chain starts from."""
        first = op.signature[0]
        if first.variadic or not isinstance(first.kind, TensorKind):
            return
        if positional and isinstance(positional[0].value, TensorValue):
            return
        hint = _chain_start_hint(call, f"{op.name}()", scope)
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

    # ------------------------------------------------------------ blocks
    def _block(self, block: ast.BlockDef, target, call, left, scope: Scope, ctx: Context,
               prefix: str) -> TensorValue:
        loc = target.loc
        if block.name in ctx.active_blocks:
            cycle = " -> ".join(ctx.active_blocks[ctx.active_blocks.index(block.name):]
                                + (block.name,))
            raise CompileError(f"block {block.name} uses itself ({cycle})", loc,
                               trail=ctx.trail, help="blocks may not be recursive")
        if len(ctx.active_blocks) >= MAX_BLOCK_DEPTH:
            raise CompileError(f"blocks nest more than {MAX_BLOCK_DEPTH} deep", loc,
                               trail=ctx.trail)
        inner = Scope(self)
        bound = self._bind_block(block, call, left, scope, inner, loc, ctx)
        for param in block.params:
            # Inside the block a tensor is called by its parameter's name (`x`), whatever
            # the caller calls it.
            inner.names[param.name] = (self._relabel(bound[param.name], param.name), param.loc)
            inner.params.add(param.name)
        frame = Frame(block.name, loc, ctx.statement)
        trail = ctx.trail + (frame,)
        try:
            for stmt in block.statements:
                inner_ctx = Context(ctx.layer, trail, stmt.loc, ctx.active_blocks + (block.name,))
                value = self._chain(stmt.chain, inner, inner_ctx, base=f"{prefix}.{stmt.name}")
                inner.bind(stmt.name, self._relabel(value, stmt.name), stmt.name_loc)
            ret_ctx = Context(ctx.layer, trail, block.result.loc,
                              ctx.active_blocks + (block.name,))
            result = self._chain(block.result.chain, inner, ret_ctx, base=prefix)
        except CompileError as e:
            raise e.with_trail(trail) from None
        if not isinstance(result, TensorValue):
            raise CompileError(f"block {block.name} returns {describe(result)}, not a tensor",
                               block.result.loc, trail=trail)
        return TensorValue(result.node, result.shape, f"{block.name}()")

    def _bind_block(self, block: ast.BlockDef, call, left, scope: Scope, inner: Scope,
                    loc: Location, ctx: Context) -> dict[str, Any]:
        params = list(block.params)
        values: dict[str, Any] = {}
        locs: dict[str, Location] = {}
        if left is not None:
            first = next((p for p in params if p.type == "tensor"), None)
            if first is None:
                raise CompileError(
                    f"block {block.name} has no tensor parameter to take the chain's left side",
                    loc, trail=ctx.trail,
                )
            values[first.name], locs[first.name] = left, loc
            params.remove(first)
        args = call.args if call else ()
        exprs: dict[str, ast.Expr] = {}
        # At the head of a chain the block's first tensor has no left side to come from.
        head = next((p for p in block.params if p.type == "tensor"), None) \
            if left is None and call is not None else None
        if len(args) > len(params):
            takes = "no arguments" if not params else \
                f"at most {count(len(params), 'argument')} by position"
            besides = " besides the chain's tensor" if left is not None else ""
            raise CompileError(
                f"block {block.name} takes {takes}{besides}; found another: "
                f"{quote(args[len(params)].loc.text(), 80)}",
                args[len(params)].loc, trail=ctx.trail, help=_block_help(block),
            )
        for param, expr in zip(params, args):
            values[param.name], locs[param.name] = evaluate(expr, scope.lookup), expr.loc
            exprs[param.name] = expr
        for kw in call.kwargs if call else ():
            known = [p.name for p in block.params]
            if kw.name not in known:
                close = difflib.get_close_matches(kw.name, known, n=1)
                raise CompileError(
                    f"block {block.name} has no parameter `{kw.name}`", kw.name_loc,
                    trail=ctx.trail,
                    help=f"did you mean `{close[0]}`?" if close else _block_help(block),
                )
            if kw.name in values:
                raise CompileError(f"block {block.name} parameter `{kw.name}` is given twice",
                                   kw.name_loc, trail=ctx.trail)
            values[kw.name], locs[kw.name] = evaluate(kw.value, scope.lookup), kw.value.loc
            exprs[kw.name] = kw.value
        for param in block.params:
            if param.name not in values:
                if param.default is None:
                    raise CompileError(
                        f"block {block.name} needs an argument `{param.name}`", loc,
                        trail=ctx.trail,
                        help=_chain_start_hint(call, f"block {block.name}", scope)
                        if param is head else _block_help(block),
                    )
                # Defaults may use earlier parameters.
                partial = Scope(self, {k: (v, param.loc) for k, v in values.items()})
                values[param.name] = evaluate(param.default, partial.lookup)
                locs[param.name] = param.default.loc
            value = values[param.name]
            if not PARAM_KINDS[param.type](value):
                given = Given(value, locs[param.name], exprs.get(param.name, param.default))
                hint = None
                if param.type == "int":
                    hint = int_division_help(_int_param, given)
                elif param is head:
                    hint = _chain_start_hint(call, f"block {block.name}", scope)
                raise CompileError(
                    f"block {block.name} parameter `{param.name}` expects "
                    f"{PARAM_KIND_TEXT[param.type]}, found {describe(value)}",
                    locs[param.name], trail=ctx.trail, help=hint,
                )
            if param.type == "float":
                values[param.name] = float(value)
        return values


def _chain_start_hint(call: ast.Call, what: str, scope: Scope) -> str:
    """`image -> conv2d(3, 3)`: how a call at the head of a chain gets its tensor (the
    tensor named last in scope stands in for the one the user meant)."""
    tensors = [n for n, (v, _) in scope.names.items() if isinstance(v, TensorValue)]
    start = tensors[-1] if tensors else "x"
    call_text = quote(call.loc.text(), 80)
    return f"a chain starts from a tensor: `{start} -> {call_text}` applies {what} to {start}"


def _shape_text(shape) -> str:
    """A shape for a message; sizes of more than 15 digits shortened (1.0e+300)."""
    if all(isinstance(d, Sym) or d < 10**15 for d in shape):
        return format_shape(shape)
    return "[" + ", ".join(
        str(d) if isinstance(d, Sym) or d < 10**15 else f"{float(d):.1e}" for d in shape
    ) + "]"


def _int_param(value: Any) -> int:
    if not PARAM_KINDS["int"](value):
        raise ValueError(value)
    return value


def _chain_text(chain: ast.Chain) -> str:
    parts = [chain.head.loc.text()] if isinstance(chain.head, ast.Call) else []
    parts += [stage.loc.text() for stage in chain.stages]
    return quote(" -> ".join(parts) or chain.head.loc.text(), 100)


def _block_help(block: ast.BlockDef) -> str:
    parts = [quote(p.loc.text(), 40) for p in block.params]
    return f"block {block.name}({', '.join(parts)})"


def build_graph(program: Program, network: str | None = None) -> Graph:
    return Builder(program).build(program.network(network))
