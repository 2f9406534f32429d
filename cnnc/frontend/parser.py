"""Text -> AST. The Lark parser is built once; its exceptions become cnnc diagnostics here.

Known mistakes get a message of their own (KNOWN_MISTAKES); any other parse error
says what was found and what could have come instead.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lark import Lark, Token, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.exceptions import VisitError

from ..errors import CompileError, Location, Source, quote
from . import ast
from .transformer import RESERVED, RESERVED_HELP, ToAst

# Parsing the densest text (`1+1+...`, a const list of numbers) takes about 17 s a megabyte
# on a slow 2-core machine; 512 KiB keeps the worst case under 10 s there. A real .cnn file
# is a few kilobytes.
MAX_SOURCE_BYTES = 512 * 1024
BOM = "\ufeff"  # a byte-order mark: dropped at the start of a file (files.py)


def _grammar_text() -> str:
    try:
        return resources.files("cnnc.grammar").joinpath("cnn.lark").read_text()
    except ModuleNotFoundError:  # running from a source checkout that is not installed
        return (Path(__file__).parents[2] / "grammar" / "cnn.lark").read_text()


# Keywords of the grammar (its string terminals), by the text that spells them.
KEYWORDS = {
    "import": "IMPORT", "const": "CONST", "block": "BLOCK", "network": "NETWORK",
    "input": "INPUT", "output": "OUTPUT", "return": "RETURN", "true": "TRUE",
    "false": "FALSE", "none": "NONE", "if": "IF", "else": "ELSE", "and": "AND", "or": "OR",
    "not": "NOT", "sequential": "SEQUENTIAL",
}


class _KeywordsStayKeywords:
    """A Lark post-lexer that keeps some keywords from being read as names.

    Lark's contextual lexer reads a word as a NAME wherever its keyword cannot come next,
    so a `const` or `network` written inside a body (a `}` forgotten) used to surface as
    an odd error a token later. The item keywords are lexed as keywords everywhere
    (`always_accept`), and a statement keyword right after `->` (a chain left dangling at
    the end of a line, then `output logits`) is turned back into its keyword, so that the
    parse error is raised where the mistake is.
    """

    always_accept = ("IMPORT", "CONST", "BLOCK", "NETWORK")
    after_arrow = frozenset({"input", "output", "return"})

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        previous = None
        for token in stream:
            if (previous is not None and previous.type == "ARROW" and token.type == "NAME"
                    and str(token) in self.after_arrow):
                token = Token.new_borrow_pos(KEYWORDS[str(token)], str(token), token)
            yield token
            previous = token


@functools.lru_cache(maxsize=1)
def lark_parser() -> Lark:
    return Lark(
        _grammar_text(),
        parser="lalr",
        maybe_placeholders=True,
        postlex=_KeywordsStayKeywords(),
    )


def too_long(path: str, size: int | None, location: Location | None = None) -> CompileError:
    """The error for a source over MAX_SOURCE_BYTES (`size` None: more, unknown how much)."""
    length = f"is {size:,} bytes long" if size is not None else \
        f"is longer than {MAX_SOURCE_BYTES:,} bytes"
    return CompileError(f"{path} {length}; cnnc reads files of at most {MAX_SOURCE_BYTES:,}",
                        location)


def parse_source(source: Source) -> ast.Module:
    """Parse one file's text into an ast.Module, or raise CompileError."""
    size = len(source.text)
    if size > MAX_SOURCE_BYTES // 4:  # only a long text can be too many bytes
        size = len(source.text.encode("utf-8", "surrogatepass"))
    if size > MAX_SOURCE_BYTES:
        raise too_long(source.path, size)
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
    "DSLASH": "`//`", "EQ": "`==`", "NE": "`!=`", "LT": "`<`", "LE": "`<=`", "GT": "`>`",
    "GE": "`>=`", "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`", "RSQB": "`]`",
    "LBRACE": "`{`", "RBRACE": "`}`", "COMMA": "`,`", "COLON": "`:`", "EQUAL": "`=`",
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "$END": "the end of the file",
}
CLOSER = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
STATEMENT_KEYWORDS = ("INPUT", "OUTPUT", "RETURN")


def _describe(terminal: str) -> str:
    if terminal in TERMINAL_TEXT:
        return TERMINAL_TEXT[terminal]
    return f"`{terminal.lower()}`"  # keywords: IMPORT -> `import`


@dataclass(frozen=True)
class Context:
    """What is known where the parse failed."""

    source: Source
    token: Token  # the unexpected token
    expected: frozenset[str]  # the terminals that could have come instead
    prev: Token | None  # the token before it
    before_prev: Token | None  # and the one before that
    open_bracket: Token | None  # the innermost `(` or `[` not closed yet
    open_item: str | None  # "network Small": the item whose `{` is open

    @property
    def on_a_new_line(self) -> bool:
        """The unexpected token begins a line after the previous token's."""
        return self.token.type == "$END" or (
            self.prev is not None and self.token.line > (self.prev.end_line or self.prev.line)
        )


@dataclass(frozen=True)
class Mistake:
    """A parse error whose shape we recognise, and what to tell the user instead."""

    matches: Callable[[Context], bool]
    message: Callable[[Context], str]
    help: Callable[[Context], str | None] | str | None = None
    where: Callable[[Context], Location] | None = None  # default: the unexpected token


def _is_keyword(token: Token) -> bool:
    return str(token) in RESERVED


def _shown(token: Token) -> str:
    """A token as a message quotes it: a long name, number or string is cut short."""
    return quote(str(token))


# What a reserved word right after these keywords would name.
NAMED_BY = {"CONST": "a const", "NETWORK": "a network", "BLOCK": "a block", "INPUT": "an input"}
KEYWORD_TYPES = frozenset(KEYWORDS.values())


def _misused_keyword(c: Context) -> tuple[Token, str] | None:
    """A word the grammar read as its keyword where a name was being bound (`block = ...`,
    `relu(true=1)`, `const network = 3`), and what it would have named."""
    if c.token.type == "EQUAL" and c.prev is not None and c.prev.type in KEYWORD_TYPES:
        word, before, after = c.prev, c.before_prev, c.token  # `true` taken as a value
    elif c.token.type in KEYWORD_TYPES and "NAME" in c.expected:
        word, before, after = c.token, c.prev, _token_after(c.source, c.token)
    else:
        return None
    if before is not None and before.type in NAMED_BY:
        return word, NAMED_BY[before.type]
    if after is not None and after.type == "EQUAL":
        in_call = c.open_bracket is not None and c.open_bracket.type == "LPAR"
        return word, "an argument" if in_call else "a value"
    if after is not None and after.type == "COLON":
        return word, "a block parameter"
    return None


def _at(token: Token | None):
    return lambda c: _token_location(c.source, token(c))


def _item_help(c: Context) -> str:
    return f"close {c.open_item} with `}}` first" if c.open_item else \
        "close the network or block with `}` first"


def _unclosed_message(c: Context) -> str:
    opener = str(c.open_bracket)
    if c.token.type == "$END":
        return f"this `{opener}` is never closed: the file ends first"
    return f"this `{opener}` is not closed before `{_shown(c.token)}` on line {c.token.line}"


def _unclosed_help(c: Context) -> str:
    closer = ")" if c.open_bracket.type == "LPAR" else "]"
    text = f"close it with `{closer}`"
    if c.prev is not None and c.token.type != "$END":
        text += f", or end line {c.prev.line} with `,` if the list goes on"
    return text


def _dangling_arrow(c: Context) -> Token | None:
    """The `->` that ends a chain at the end of a line, if that is the mistake."""
    if c.prev is not None and c.prev.type == "ARROW" and (
            c.on_a_new_line or c.token.type in ("RBRACE", *STATEMENT_KEYWORDS)):
        return c.prev
    # `y = x -> relu ->` then `z = ...`: the next statement's name was taken as a stage.
    if (c.token.type == "EQUAL" and c.prev is not None and c.prev.type == "NAME"
            and c.before_prev is not None and c.before_prev.type == "ARROW"
            and c.before_prev.line < c.prev.line):
        return c.before_prev
    return None


COMPARISON_TYPES = frozenset({"EQ", "NE", "LT", "LE", "GT", "GE"})


def _chained_comparison(c: Context) -> bool:
    """`1 < x < 3`: a comparison right after another in one expression."""
    if c.token.type not in COMPARISON_TYPES:
        return False
    before = _tokens_before(c.source, c.token.line, c.token.column, 12)
    for token in reversed(before):
        if token.type in COMPARISON_TYPES:
            return True
        if token.type in ("COMMA", "LPAR", "IF", "AND", "OR", "NOT", "EQUAL", "ARROW"):
            return False
    return False


KNOWN_MISTAKES: tuple[Mistake, ...] = (
    Mistake(
        _chained_comparison,
        lambda c: "comparisons do not chain in .cnn",
        "join them with `and`: `a < b and b < c`",
    ),
    Mistake(
        lambda c: c.token.type == "$END" and "RBRACE" in c.expected,
        lambda c: "the file ends inside `{ ... }`: a closing `}` is missing",
        lambda c: f"close {c.open_item} with `}}`" if c.open_item else None,
    ),
    Mistake(
        lambda c: c.open_bracket is not None and CLOSER[c.open_bracket.type] in c.expected
        and c.on_a_new_line,
        _unclosed_message,
        _unclosed_help,
        where=_at(lambda c: c.open_bracket),
    ),
    Mistake(
        lambda c: _dangling_arrow(c) is not None,
        lambda c: "the chain ends with `->`",
        "a `->` is followed by an operator or a block: `x -> relu`; remove the last `->`, "
        "or finish the chain",
        where=_at(_dangling_arrow),
    ),
    Mistake(
        lambda c: _misused_keyword(c) is not None,
        lambda c: "`{}` is a reserved word and cannot name {}".format(*_misused_keyword(c)),
        RESERVED_HELP,
        where=_at(lambda c: _misused_keyword(c)[0]),
    ),
    Mistake(
        lambda c: _is_keyword(c.token) and "NAME" in c.expected and len(c.expected) <= 3,
        lambda c: f"`{c.token}` is a reserved word and cannot be used as a name here",
        RESERVED_HELP,
    ),
    Mistake(
        lambda c: c.token.type == "EQUAL" and "COLON" in c.expected,
        lambda c: "an input's shape follows a `:`, not `=`",
        "write it as `input x: [N, 3, 32, 32]`",
    ),
    Mistake(
        lambda c: c.token.type == "LPAR" and c.expected == {"LSQB"},
        lambda c: "an input's shape is a list in square brackets",
        "write it as `input x: [N, 3, 32, 32]`",
    ),
    Mistake(
        lambda c: "EQUAL" in c.expected and c.expected <= {"EQUAL", "COMMA"}
        and c.prev is not None and c.prev.type == "NAME" and c.token.line != c.prev.line,
        lambda c: f"`{_shown(c.prev)}` stands alone at the end of a line; "
        "is a `->` missing before it?",
        "stages of a chain are joined by `->`: `x -> conv2d(6, 5) -> relu`",
        where=_at(lambda c: c.prev),
    ),
    Mistake(
        lambda c: c.token.type in ("NUMBER", "NAME", "STRING") and "COMMA" in c.expected
        and "RPAR" in c.expected,
        lambda c: f"a `,` is missing before `{_shown(c.token)}`",
        "separate arguments with commas: `conv2d(6, 5, stride=1)`",
    ),
    Mistake(
        lambda c: c.token.type == "STAR" and c.prev is not None and c.prev.type == "STAR"
        and (c.prev.line, c.prev.end_column) == (c.token.line, c.token.column),
        lambda c: "`**` is not an operator in .cnn",
        "write the product out, e.g. `2 * 2 * 2`",
        where=lambda c: Location(c.source, c.prev.line, c.prev.column, c.token.line,
                                 c.token.column + 1),
    ),
    Mistake(
        lambda c: c.token.type == "NAME" and {"IMPORT", "CONST", "BLOCK", "NETWORK"} <= c.expected,
        lambda c: f"unexpected `{_shown(c.token)}` at the top level of the file",
        "a file holds `import`, `const`, `block` and `network` items",
    ),
    Mistake(
        lambda c: c.token.type in ("CONST", "IMPORT") and "RBRACE" in c.expected,
        lambda c: f"`{c.token}` belongs at the top level of the file, not inside "
        f"{c.open_item or 'a network or block'}",
        lambda c: f"move it above {c.open_item or 'the network or block'}"
        if c.token.type == "CONST" else "imports come first in a file",
    ),
    Mistake(
        lambda c: c.token.type in ("BLOCK", "NETWORK") and "RBRACE" in c.expected,
        lambda c: f"`{c.token}` belongs at the top level of the file, but "
        f"{c.open_item or 'the network or block before it'} is not closed",
        _item_help,
    ),
    Mistake(
        lambda c: c.token.type == "ARROW" and "NAME" in c.expected,
        lambda c: "a chain starts with a tensor or a call, not with `->`",
        "write `y = x -> relu`",
    ),
)

CHARACTER_HINTS = {
    ";": ("statements need no `;`", "end a statement with a new line, or just go on"),
    "'": ("strings are written in double quotes", 'write "reflect", not \'reflect\''),
    ">": ("unexpected `>`", "stages of a chain are joined by `->`"),
    "=": ("unexpected `=`", None),
    "{": ("unexpected `{`", None),
    "`": ("this quoted name is not closed on its line",
          "a quoted name is written between two backticks on one line: `block1-0`"),
}


def _translate(source: Source, e: UnexpectedInput) -> CompileError:
    if isinstance(e, UnexpectedCharacters):
        loc = _point(source, e.line, e.column)
        char = source.text[e.pos_in_stream] if e.pos_in_stream < len(source.text) else ""
        message, hint = CHARACTER_HINTS.get(char) or _odd_character(char)
        return CompileError(message, loc, help=hint)
    if isinstance(e, (UnexpectedToken, UnexpectedEOF)):
        token = getattr(e, "token", None)
        if token is None or token.type == "$END":
            token = _end_token(source)
        expected = _expected(e)
        before = _tokens_before(source, token.line, token.column, 2)
        stack = _value_stack(e)
        context = Context(
            source, token, expected,
            prev=before[-1] if before else None,
            before_prev=before[-2] if len(before) > 1 else None,
            open_bracket=_open_bracket(stack),
            open_item=_open_item(stack),
        )
        for mistake in KNOWN_MISTAKES:
            if mistake.matches(context):
                where = mistake.where(context) if mistake.where else \
                    _token_location(source, token)
                hint = mistake.help(context) if callable(mistake.help) else mistake.help
                return CompileError(mistake.message(context), where, help=hint)
        found = _describe("$END") if token.type == "$END" else f"`{_shown(token)}`"
        options = sorted({_describe(t) for t in expected})
        return CompileError(f"unexpected {found}; expected {_one_of(options)}",
                            _token_location(source, token))
    # Not reached with Lark's three kinds of error; its own text would quote the source.
    return CompileError("syntax error", _point(source, e.line, e.column))


def _odd_character(char: str) -> tuple[str, str | None]:
    """Message and help for a character the language has no use for. A non-ASCII one is
    named, since it may look like another or show as nothing (the message escapes it)."""
    if char.isascii():
        return f"unexpected character `{char}`", None
    name = unicodedata.name(char, "")
    message = f"unexpected character `{char}` (U+{ord(char):04X}{' ' + name if name else ''})"
    if char == BOM:
        return message, "a byte-order mark may only begin a file"
    if not char.isprintable():
        return message, "the character is invisible: delete it"
    return message, None


def _one_of(options: list[str]) -> str:
    if len(options) == 1:
        return options[0]
    return "one of " + ", ".join(options)


# ------------------------------------------------------------------ around a parse error

# The grammar's terminals, to re-read the tokens just before an error (Lark keeps no
# history of them). Tokens never span lines, so a line can be read on its own.
_TOKEN = re.compile(
    r'"(?:\\.|[^"\\\n])*"|#.*|[A-Za-z_][A-Za-z0-9_]*|`[^`\n]*`'
    r"|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?|->|//|==|!=|<=|>=|\S"
)
_PUNCTUATION = {
    "(": "LPAR", ")": "RPAR", "[": "LSQB", "]": "RSQB", "{": "LBRACE", "}": "RBRACE",
    ",": "COMMA", ":": "COLON", "=": "EQUAL", "+": "PLUS", "-": "MINUS", "*": "STAR",
    "/": "SLASH", "//": "DSLASH", "->": "ARROW", "==": "EQ", "!=": "NE", "<": "LT",
    "<=": "LE", ">": "GT", ">=": "GE",
}


def _token_type(text: str) -> str:
    if text[0] == '"':
        return "STRING"
    if text[0].isalpha() or text[0] == "_":
        return KEYWORDS.get(text, "NAME")
    if text[0] == "`":
        return "NAME"
    if text[0].isdigit() or (text[0] == "." and len(text) > 1):
        return "NUMBER"
    return _PUNCTUATION.get(text, "UNKNOWN")


def _tokens_before(source: Source, line: int, col: int, count: int) -> list[Token]:
    """The last `count` tokens before line:col (comments and blank lines skipped)."""
    found: list[Token] = []
    number = line
    while number >= 1 and len(found) < count:
        text = source.line(number)
        if number == line:
            text = text[: col - 1]
        tokens = [
            Token(_token_type(m.group()), m.group(), line=number, column=m.start() + 1,
                  end_line=number, end_column=m.end() + 1)
            for m in _TOKEN.finditer(text) if not m.group().startswith("#")
        ]
        found = tokens + found
        number -= 1
    return found[-count:]


def _expected(e: UnexpectedInput) -> frozenset[str]:
    """The terminals the parser could have taken. (Lark's `expected` is the lexer's set
    when the lexer failed, which holds the always-accepted keywords too.)"""
    parser = getattr(e, "interactive_parser", None)
    if parser is not None:
        try:
            return frozenset(name for name in parser.choices() if name.isupper())
        except (AttributeError, KeyError, IndexError):
            pass
    return frozenset(getattr(e, "expected", None) or ())


def _value_stack(e: UnexpectedInput) -> list:
    parser = getattr(e, "interactive_parser", None)
    state = getattr(parser, "parser_state", None)
    return list(getattr(state, "value_stack", None) or [])


def _open_bracket(stack: list) -> Token | None:
    """The innermost `(` or `[` that the parse has opened and not closed."""
    opened: list[Token] = []
    for value in stack:  # finished rules are trees: only the open ones leave tokens here
        if isinstance(value, Token):
            if value.type in CLOSER:
                opened.append(value)
            elif value.type in CLOSER.values() and opened:
                opened.pop()
    brackets = [t for t in opened if t.type != "LBRACE"]
    if brackets and opened[-1] is brackets[-1]:
        return brackets[-1]
    return None


def _open_item(stack: list) -> str | None:
    """`network Small` (or `block b`) whose body the parse is inside."""
    for i in range(len(stack) - 2, -1, -1):
        value = stack[i]
        if isinstance(value, Token) and value.type in ("NETWORK", "BLOCK"):
            name = stack[i + 1]
            if isinstance(name, Token) and name.type == "NAME":
                return f"{value} {name}"
    return None


def _token_after(source: Source, token: Token) -> Token | None:
    """The token after `token` (comments and line breaks skipped), or None at the end."""
    number = token.line
    start = (token.end_column or token.column + len(str(token))) - 1
    while number <= len(source.lines):
        for m in _TOKEN.finditer(source.line(number), start):
            if not m.group().startswith("#"):
                return Token(_token_type(m.group()), m.group(), line=number,
                             column=m.start() + 1, end_line=number, end_column=m.end() + 1)
        number, start = number + 1, 0
    return None


def _end_token(source: Source) -> Token:
    lines = source.lines
    if len(lines) > 1 and lines[-1] == "":  # the text ends with a line break
        lines = lines[:-1]
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
