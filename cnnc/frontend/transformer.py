"""Lark parse tree -> AST dataclasses, checking what the permissive grammar lets through.

The grammar accepts any statement in any body and keyword arguments in any order, so
that this pass can name the culprit precisely ("output inside a block", "positional
argument after a keyword argument") instead of Lark reporting an unexpected token.
"""

from __future__ import annotations

import dataclasses
import math

from lark import Token, Transformer_NonRecursive

from ..errors import CompileError, Location, Source
from . import ast

# Reserved words (LANGUAGE.md, "Lexical rules"). The grammar makes keywords of those it
# uses; the rest are still NAME tokens and are rejected wherever they would name something.
RESERVED = frozenset(
    "network block input output return const import true false none "
    "tensor int float bool str op if else and or not sequential".split()
)
PARAM_TYPES = ("tensor", "int", "float", "bool", "str")


def _span(source: Source, first, last) -> Location:
    """Location from the start of `first` to the end of `last` (tokens, AST nodes or
    locations)."""
    a, b = _where(source, first), _where(source, last)
    return Location(source, a.line, a.col, b.end_line, b.end_col)


def _where(source: Source, item) -> Location:
    if isinstance(item, Location):
        return item
    if isinstance(item, Token):
        return _token_loc(source, item)
    return item.loc


def _token_loc(source: Source, token: Token) -> Location:
    return Location(source, token.line, token.column, token.end_line, token.end_column)


def check_name(name: str, loc: Location, what: str) -> None:
    if name in RESERVED:
        raise CompileError(
            f"`{name}` is a reserved word and cannot name {what}",
            loc,
            help="choose another name",
        )


class ToAst(Transformer_NonRecursive):
    """Builds an ast.Module from one file's parse tree."""

    def __init__(self, source: Source):
        super().__init__()
        self.source = source

    def _loc(self, item) -> Location:
        if isinstance(item, Token):
            return _token_loc(self.source, item)
        return item.loc

    # ------------------------------------------------------------ expressions
    def number(self, children):
        (tok,) = children
        text = str(tok)
        loc = self._loc(tok)
        if len(text) > 60:
            raise CompileError(f"number {text[:20]}... is too long", loc)
        if any(c in text for c in ".eE"):
            value = float(text)
            if math.isinf(value):
                raise CompileError(f"number {text} is too large", loc)
        else:
            value = int(text)
        return ast.Number(value, loc)

    def string(self, children):
        (tok,) = children
        raw = str(tok)[1:-1]
        out, i = [], 0
        while i < len(raw):
            c = raw[i]
            if c == "\\":
                nxt = raw[i + 1]
                if nxt not in "\"\\":
                    loc = self._loc(tok)
                    col = loc.col + 1 + i
                    raise CompileError(
                        f"unknown escape `\\{nxt}` in a string",
                        Location(self.source, loc.line, col, loc.line, col + 2),
                        help='only \\" and \\\\ are escapes in .cnn strings',
                    )
                out.append(nxt)
                i += 2
            else:
                out.append(c)
                i += 1
        return ast.String("".join(out), self._loc(tok))

    def true(self, children):
        return ast.Literal(True, self._loc(children[0]))

    def false(self, children):
        return ast.Literal(False, self._loc(children[0]))

    def none(self, children):
        return ast.Literal(None, self._loc(children[0]))

    def name(self, children):
        (tok,) = children
        return ast.Name(str(tok), self._loc(tok))

    def negate(self, children):
        minus, operand = children
        return ast.Negate(operand, _span(self.source, minus, operand))

    def binary(self, children):
        left, op, right = children
        return ast.Binary(str(op), left, right, _span(self.source, left, right))

    # Tuples, lists and parenthesized expressions span their brackets: an error about one
    # underlines `(3, 3, 3)` or `[1, -4]` whole.
    def tuple(self, children):
        opening, *items, closing = children
        items = tuple(c for c in items if c is not None)
        return ast.TupleExpr(items, _span(self.source, opening, closing))

    def list(self, children):
        opening, *items, closing = children
        items = tuple(c for c in items if c is not None)
        return ast.ListExpr(items, _span(self.source, opening, closing))

    def paren(self, children):
        # `(expr)` is the expression itself, spanning its parentheses: the outermost
        # expression of `(1 + (2 + ...))` starts at its `(`.
        opening, inner, closing = children
        return dataclasses.replace(inner, loc=_span(self.source, opening, closing))

    def keyword_arg(self, children):
        name, value = children
        check_name(str(name), self._loc(name), "an argument")
        return ast.KeywordArg(str(name), value, _span(self.source, name, value), self._loc(name))

    def call(self, children):
        name, _, *args, closing = children
        args = [a for a in args if a is not None]
        positional, keywords, seen = [], [], {}
        for a in args:
            if isinstance(a, ast.KeywordArg):
                if a.name in seen:
                    raise CompileError(
                        f"argument `{a.name}` is given twice in {name}()",
                        a.name_loc,
                        notes=[f"first given at {seen[a.name]}"],
                    )
                seen[a.name] = a.name_loc
                keywords.append(a)
            else:
                if keywords:
                    raise CompileError(
                        f"positional argument after keyword argument `{keywords[-1].name}` "
                        f"in {name}()",
                        a.loc,
                        help="arguments are positional first, then key=value",
                    )
                positional.append(a)
        loc = _span(self.source, name, closing)
        return ast.Call(str(name), tuple(positional), tuple(keywords), loc, self._loc(name))

    # ------------------------------------------------------------ chains
    def stage(self, children):
        target, star, repeat = children
        end = repeat if repeat is not None else target
        return ast.Stage(target, repeat, _span(self.source, target, end))

    def chain(self, children):
        head, *rest = children
        stages = tuple(c for c in rest if isinstance(c, ast.Stage))
        last = stages[-1] if stages else head
        return ast.Chain(head, stages, _span(self.source, head, last))

    # ------------------------------------------------------------ statements
    def input_stmt(self, children):
        kw, name, _, *dims, closing = children
        dims = tuple(d for d in dims if d is not None)
        check_name(str(name), self._loc(name), "an input")
        return ast.InputStmt(str(name), dims, _span(self.source, kw, closing), self._loc(name))

    def bind_stmt(self, children):
        name, chain = children
        check_name(str(name), self._loc(name), "a value")
        return ast.BindStmt(str(name), chain, _span(self.source, name, chain), self._loc(name))

    def output_stmt(self, children):
        kw, *names = children
        names = tuple(ast.Name(str(n), self._loc(n)) for n in names)
        return ast.OutputStmt(names, _span(self.source, kw, names[-1]))

    def return_stmt(self, children):
        kw, chain = children
        return ast.ReturnStmt(chain, _span(self.source, kw, chain))

    # ------------------------------------------------------------ items
    def import_def(self, children):
        kw, path = children
        s = self.string([path])
        return ast.Import(s.value, _span(self.source, kw, path))

    def const_def(self, children):
        kw, name, value = children
        check_name(str(name), self._loc(name), "a const")
        return ast.ConstDef(str(name), value, _span(self.source, kw, value), self._loc(name))

    def param(self, children):
        name, type_, default = children
        check_name(str(name), self._loc(name), "a block parameter")
        if str(type_) not in PARAM_TYPES:
            raise CompileError(
                f"unknown parameter type `{type_}`",
                self._loc(type_),
                help="a block parameter is one of: " + ", ".join(PARAM_TYPES),
            )
        end = default if default is not None else type_
        return ast.Param(str(name), str(type_), default, _span(self.source, name, end))

    def body(self, children):
        opening, *statements, closing = children
        return statements, _span(self.source, opening, closing)

    def block_def(self, children):
        kw, name, _, *params, _, (statements, body_loc) = children
        params = tuple(p for p in params if p is not None)
        check_name(str(name), self._loc(name), "a block")
        seen: dict[str, ast.Param] = {}
        defaults_started = None
        for p in params:
            if p.name in seen:
                raise CompileError(
                    f"block {name} has two parameters named `{p.name}`",
                    p.loc,
                    notes=[f"the first is at {seen[p.name].loc}"],
                )
            seen[p.name] = p
            if p.default is not None:
                defaults_started = p
            elif defaults_started is not None:
                raise CompileError(
                    f"parameter `{p.name}` has no default but follows `{defaults_started.name}`, "
                    "which has one",
                    p.loc,
                    help="parameters with defaults come after the ones without",
                )
        loc = _span(self.source, kw, body_loc)
        binds, result = [], None
        for st in statements:
            if isinstance(st, ast.InputStmt):
                raise CompileError(
                    "`input` is only for networks", st.loc,
                    help="a block receives tensors as parameters, e.g. `block b(x: tensor)`",
                )
            if isinstance(st, ast.OutputStmt):
                raise CompileError(
                    "`output` is only for networks", st.loc,
                    help="a block ends with `return chain`",
                )
            if result is not None:
                raise CompileError(
                    "`return` must be the last statement of a block", result.loc,
                    notes=[f"another statement follows at {st.loc}"],
                )
            if isinstance(st, ast.ReturnStmt):
                result = st
            else:
                binds.append(st)
        if result is None:
            raise CompileError(
                f"block {name} has no `return` statement", self._loc(name),
                help="end the block with `return <chain>`",
            )
        return ast.BlockDef(str(name), params, tuple(binds), result, loc, self._loc(name))

    def network_def(self, children):
        kw, name, (statements, body_loc) = children
        check_name(str(name), self._loc(name), "a network")
        loc = _span(self.source, kw, body_loc)
        inputs, binds, output = [], [], None
        for st in statements:
            if isinstance(st, ast.ReturnStmt):
                raise CompileError(
                    "`return` is only for blocks", st.loc,
                    help="a network names its results with `output NAME, ...`",
                )
            if isinstance(st, ast.OutputStmt):
                if output is not None:
                    raise CompileError(
                        f"network {name} has a second `output` statement", st.loc,
                        notes=[f"the first is at {output.loc}"],
                        help="list every result in one statement: `output a, b`",
                    )
                output = st
            elif isinstance(st, ast.InputStmt):
                inputs.append(st)
            else:
                binds.append(st)
        if output is None:
            raise CompileError(
                f"network {name} has no `output` statement", self._loc(name),
                help="name what the network returns, e.g. `output logits`",
            )
        return ast.NetworkDef(
            str(name), tuple(inputs), tuple(binds), output, loc, self._loc(name)
        )

    def start(self, children):
        return ast.Module(
            tuple(c for c in children if isinstance(c, ast.Import)),
            tuple(c for c in children if isinstance(c, ast.ConstDef)),
            tuple(c for c in children if isinstance(c, ast.BlockDef)),
            tuple(c for c in children if isinstance(c, ast.NetworkDef)),
        )
