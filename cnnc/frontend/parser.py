"""Text -> AST. The Lark parser is built once; its exceptions become cnnc diagnostics here.

Known mistakes get a message of their own (KNOWN_MISTAKES); any other parse error
says what was found and what could have come instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lark import Lark, Token, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.exceptions import VisitError

from ..errors import CompileError, Location, Source
from . import ast
from .transformer import RESERVED, ToAst

MAX_SOURCE_BYTES = 4_000_000


def _grammar_text() -> str:
    try:
        return resources.files("cnnc.grammar").joinpath("cnn.lark").read_text()
    except ModuleNotFoundError:  # running from a source checkout that is not installed
        return (Path(__file__).parents[2] / "grammar" / "cnn.lark").read_text()


@functools.lru_cache(maxsize=1)
def lark_parser() -> Lark:
    return Lark(
        _grammar_text(),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
    )


def parse_source(source: Source) -> ast.Module:
    """Parse one file's text into an ast.Module, or raise CompileError."""
    if len(source.text) > MAX_SOURCE_BYTES:
        raise CompileError(
            f"{source.path} is {len(source.text):,} characters long; "
            f"cnnc reads files of at most {MAX_SOURCE_BYTES:,}"
        )
    try:
        tree = lark_parser().parse(source.text)
    except UnexpectedInput as e:
        raise _translate(source, e) from None
    try:
        return ToAst(source).transform(tree)
    except VisitError as e:  # Lark wraps what a transformer callback raises
        raise e.orig_exc from None


# --------------------------------------------------------------------------- diagnostics

TERMINAL_TEXT = {
    "ARROW": "`->`", "PLUS": "`+`", "MINUS": "`-`", "STAR": "`*`", "SLASH": "`/`",
    "DSLASH": "`//`", "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`", "RSQB": "`]`",
    "LBRACE": "`{`", "RBRACE": "`}`", "COMMA": "`,`", "COLON": "`:`", "EQUAL": "`=`",
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "$END": "the end of the file",
}


def _describe(terminal: str) -> str:
    if terminal in TERMINAL_TEXT:
        return TERMINAL_TEXT[terminal]
    return f"`{terminal.lower()}`"  # keywords: IMPORT -> `import`


@dataclass(frozen=True)
class Mistake:
    """A parse error whose shape we recognise, and what to tell the user instead."""

    matches: Callable[[Token, frozenset[str], Token | None], bool]
    message: Callable[[Token, Token | None], str]
    help: str | None = None
    at_previous: bool = False  # point at the token before the unexpected one


def _is_keyword(token: Token) -> bool:
    return str(token) in RESERVED


KNOWN_MISTAKES: tuple[Mistake, ...] = (
    Mistake(
        lambda t, exp, prev: t.type == "$END" and "RBRACE" in exp,
        lambda t, prev: "the file ends inside `{ ... }`: a closing `}` is missing",
    ),
    Mistake(
        lambda t, exp, prev: _is_keyword(t) and "NAME" in exp and len(exp) <= 3,
        lambda t, prev: f"`{t}` is a reserved word and cannot be used as a name here",
        "choose another name",
    ),
    Mistake(
        lambda t, exp, prev: t.type == "EQUAL" and "COLON" in exp,
        lambda t, prev: "an input's shape follows a `:`, not `=`",
        "write it as `input x: [N, 3, 32, 32]`",
    ),
    Mistake(
        lambda t, exp, prev: t.type == "LPAR" and exp == {"LSQB"},
        lambda t, prev: "an input's shape is a list in square brackets",
        "write it as `input x: [N, 3, 32, 32]`",
    ),
    Mistake(
        lambda t, exp, prev: exp == {"EQUAL"} and prev is not None and prev.type == "NAME"
        and t.line != prev.line,
        lambda t, prev: f"`{prev}` stands alone at the end of a line; is a `->` missing before it?",
        "stages of a chain are joined by `->`: `x -> conv2d(6, 5) -> relu`",
        at_previous=True,
    ),
    Mistake(
        lambda t, exp, prev: t.type in ("NUMBER", "NAME", "STRING") and "COMMA" in exp
        and "RPAR" in exp,
        lambda t, prev: f"a `,` is missing before `{t}`",
        "separate arguments with commas: `conv2d(6, 5, stride=1)`",
    ),
    Mistake(
        lambda t, exp, prev: t.type == "STAR" and prev is not None and prev.type == "STAR",
        lambda t, prev: "`**` is not an operator in .cnn",
        "write the product out, e.g. `2 * 2 * 2`",
    ),
    Mistake(
        lambda t, exp, prev: t.type == "NAME" and {"IMPORT", "CONST", "BLOCK", "NETWORK"} <= exp,
        lambda t, prev: f"unexpected `{t}` at the top level of the file",
        "a file holds `import`, `const`, `block` and `network` items",
    ),
    Mistake(
        lambda t, exp, prev: t.type in ("CONST", "IMPORT", "BLOCK", "NETWORK")
        and "RBRACE" in exp,
        lambda t, prev: f"`{t}` belongs at the top level of the file, not inside a body",
        "close the network or block with `}` first",
    ),
    Mistake(
        lambda t, exp, prev: t.type == "ARROW" and "NAME" in exp,
        lambda t, prev: "a chain starts with a tensor or a call, not with `->`",
        "write `y = x -> relu`",
    ),
)

CHARACTER_HINTS = {
    ";": ("statements need no `;`", "end a statement with a new line, or just go on"),
    "'": ("strings are written in double quotes", 'write "reflect", not \'reflect\''),
    ">": ("unexpected `>`", "stages of a chain are joined by `->`"),
    "=": ("unexpected `=`", None),
    "{": ("unexpected `{`", None),
}


def _translate(source: Source, e: UnexpectedInput) -> CompileError:
    if isinstance(e, UnexpectedCharacters):
        loc = _point(source, e.line, e.column)
        char = source.text[e.pos_in_stream] if e.pos_in_stream < len(source.text) else ""
        message, hint = CHARACTER_HINTS.get(char, (f"unexpected character `{char}`", None))
        return CompileError(message, loc, help=hint)
    if isinstance(e, (UnexpectedToken, UnexpectedEOF)):
        token = getattr(e, "token", None)
        if token is None or token.type == "$END":
            token = _end_token(source)
        expected = frozenset(e.expected or ())
        history = getattr(e, "token_history", None) or []
        prev = history[-1] if history else None
        loc = _token_location(source, token)
        for mistake in KNOWN_MISTAKES:
            if mistake.matches(token, expected, prev):
                where = _token_location(source, prev) if mistake.at_previous else loc
                return CompileError(mistake.message(token, prev), where, help=mistake.help)
        found = _describe("$END") if token.type == "$END" else f"`{token}`"
        options = sorted({_describe(t) for t in expected})
        return CompileError(f"unexpected {found}; expected {_one_of(options)}", loc)
    return CompileError(f"syntax error: {e}", _point(source, e.line, e.column))


def _one_of(options: list[str]) -> str:
    if len(options) == 1:
        return options[0]
    return "one of " + ", ".join(options)


def _end_token(source: Source) -> Token:
    lines = source.text.splitlines() or [""]
    line = len(lines)
    col = len(lines[-1]) + 1
    return Token("$END", "", line=line, column=col, end_line=line, end_column=col + 1)


def _point(source: Source, line: int, col: int) -> Location:
    return Location(source, line, col, line, col + 1)


def _token_location(source: Source, token: Token) -> Location:
    end_col = token.end_column if token.end_column and token.end_line == token.line else None
    if end_col is None or end_col <= token.column:
        end_col = token.column + max(1, len(str(token)))
    return Location(source, token.line, token.column, token.line, end_col)
