"""Lark parse tree -> AST dataclasses, checking what the permissive grammar lets through.

The grammar accepts any statement in any body and keyword arguments in any order, so
that this pass can name the culprit precisely ("output inside a block", "positional
argument after a keyword argument") instead of Lark reporting an unexpected token.
"""

from __future__ import annotations

import dataclasses
import math

from lark import Token, Transformer_NonRecursive

from ..errors import CompileError, Location, Source, quote
from . import ast

# Reserved words (LANGUAGE.md, "Lexical rules"). The grammar makes keywords of those it
# uses; the rest are still NAME tokens and are rejected wherever they would name something.
RESERVED = frozenset(
    "network block input output return const import true false none "
    "tensor int float bool str op if else and or not sequential".split()
)
RESERVED_HELP = "choose another name; a quoted name, between backticks, may be a reserved word"
PARAM_TYPES = ("tensor", "int", "float", "bool", "str", "op")


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
            help=RESERVED_HELP,
        )


def name_text(source: Source, token: Token, what: str | None = None) -> str:
    """The name a NAME token spells: a quoted name (`block1-0`) is the text inside its
    backticks, checked here; a plain one must not be a reserved word where it would name
    `what` (quoting one is how a PyTorch attribute such as `block` is spelled)."""
    text = str(token)
    if not text.startswith("`"):
        if what is not None:
            check_name(text, _token_loc(source, token), what)
        return text
    inner = text[1:-1]
    if not inner:
        raise CompileError(
            "a quoted name is empty", _token_loc(source, token),
            help="write the name between the backticks, e.g. `block1-0`",
        )
    dot = inner.find(".")
    if dot >= 0:
        col = token.column + 1 + dot
        raise CompileError(
            f"a quoted name cannot hold a `.`: {quote(text)}",
            Location(source, token.line, col, token.line, col + 1),
            help="parameter names are dotted paths (`layer1.0.weight`): a `.` would split "
            "this name in two; nest a sequential or a block instead",
        )
    return inner


class ToAst(Transformer_NonRecursive):
    """Builds an ast.Module from one file's parse tree."""

    def __init__(self, source: Source):
        super().__init__()
        self.source = source

    def _loc(self, item) -> Location:
        if isinstance(item, Token):
            return _token_loc(self.source, item)
        return item.loc

    def _name(self, token: Token, what: str | None = None) -> str:
        return name_text(self.source, token, what)

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
        return ast.Name(self._name(tok), self._loc(tok))

    def negate(self, children):
        minus, operand = children
        return ast.Negate(operand, _span(self.source, minus, operand))

    def binary(self, children):
        left, op, right = children
        return ast.Binary(str(op), left, right, _span(self.source, left, right))

    def logical_not(self, children):
        keyword, operand = children
        return ast.Not(operand, _span(self.source, keyword, operand))

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
        text = self._name(name, "an argument")
        return ast.KeywordArg(text, value, _span(self.source, name, value), self._loc(name))

    def call(self, children):
        token, _, *args, closing = children
        name = self._name(token)
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
        loc = _span(self.source, token, closing)
        return ast.Call(name, tuple(positional), tuple(keywords), loc, self._loc(token))

    # ------------------------------------------------------------ chains
    def stage(self, children):
        target, star, repeat = children
        end = repeat if repeat is not None else target
        return ast.Stage(target, repeat, _span(self.source, target, end))

    def no_stage(self, children):
        return ast.NoStage(self._loc(children[0]))

    def choice(self, children):
        opening, inner, closing = children
        return dataclasses.replace(inner, loc=_span(self.source, opening, closing))

    def cond_stage(self, children):
        then, _, cond, _, other = children
        return ast.CondStage(then, cond, other, _span(self.source, then, other))

    def flow(self, children):
        head, *rest = children
        stages = tuple(c for c in rest if isinstance(c, ast.Stage))
        last = stages[-1] if stages else head
        return ast.Chain(head, stages, _span(self.source, head, last))

    def headless(self, children):
        stages = tuple(c for c in children if isinstance(c, ast.Stage))
        return ast.Chain(None, stages, _span(self.source, stages[0], stages[-1]))

    def cond_chain(self, children):
        then, _, cond, _, other = children
        return ast.CondChain(then, cond, other, _span(self.source, then, other))

    def sequential(self, children):
        keyword, _, *items, closing = children
        items = tuple(c for c in items if c is not None)
        return ast.Sequential(items, _span(self.source, keyword, closing))

    # ------------------------------------------------------------ statements
    def input_stmt(self, children):
        kw, name, _, *dims, closing = children
        dims = tuple(d for d in dims if d is not None)
        text = self._name(name, "an input")
        return ast.InputStmt(text, dims, _span(self.source, kw, closing), self._loc(name))

    def bind_stmt(self, children):
        name, chain = children
        text = self._name(name, "a value")
        return ast.BindStmt(text, chain, _span(self.source, name, chain), self._loc(name))

    def unpack_stmt(self, children):
        *tokens, chain = children
        names = tuple(ast.Name(self._name(t, "a value"), self._loc(t)) for t in tokens)
        return ast.UnpackStmt(names, chain, _span(self.source, tokens[0], chain))

    def output_stmt(self, children):
        kw, *names = children
        names = tuple(ast.Name(self._name(n), self._loc(n)) for n in names)
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
        text = self._name(name, "a const")
        return ast.ConstDef(text, value, _span(self.source, kw, value), self._loc(name))

    def param(self, children):
        name, type_, default = children
        text = self._name(name, "a block parameter")
        kind = self._name(type_)
        if kind not in PARAM_TYPES:
            raise CompileError(
                f"unknown parameter type `{kind}`",
                self._loc(type_),
                help="a block parameter is one of: " + ", ".join(PARAM_TYPES),
            )
        end = default if default is not None else type_
        return ast.Param(text, kind, default, _span(self.source, name, end))

    def body(self, children):
        opening, *statements, closing = children
        return statements, _span(self.source, opening, closing)

    def block_def(self, children):
        kw, token, _, *params, _, (statements, body_loc) = children
        params = tuple(p for p in params if p is not None)
        name = self._name(token, "a block")
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
                f"block {name} has no `return` statement", self._loc(token),
                help="end the block with `return <chain>`",
            )
        return ast.BlockDef(name, params, tuple(binds), result, loc, self._loc(token))

    def network_def(self, children):
        kw, token, (statements, body_loc) = children
        name = self._name(token, "a network")
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
                f"network {name} has no `output` statement", self._loc(token),
                help="name what the network returns, e.g. `output logits`",
            )
        return ast.NetworkDef(name, tuple(inputs), tuple(binds), output, loc, self._loc(token))

    def start(self, children):
        return ast.Module(
            tuple(c for c in children if isinstance(c, ast.Import)),
            tuple(c for c in children if isinstance(c, ast.ConstDef)),
            tuple(c for c in children if isinstance(c, ast.BlockDef)),
            tuple(c for c in children if isinstance(c, ast.NetworkDef)),
        )
