"""Source locations, the error class every user mistake becomes, and its renderer.

A diagnostic reads like this (LANGUAGE.md, "Diagnostics"):

    error: add() cannot broadcast bn2 [N, 128, 28, 28] with x [N, 64, 56, 56]
      --> resnet18.cnn:7:19
       |
     7 |     return bn2 -> add(x) -> relu
       |                   ^^^^^^
       = in block basic, used at resnet18.cnn:21:22 (layer2 = layer1 -> basic(128, stride=2))
       = help: a strided 1x1 conv2d on x makes the shapes agree
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field


@dataclass(frozen=True, eq=False)
class Source:
    r"""The text of one .cnn file (or of source given as a string), split into lines once.

    Lines end at `\n` only (a `\r` before it belongs to the line break), exactly as the
    parser counts them: str.splitlines() would also break at form feeds, `\x85`,
    `\u2028` and the like, and shift every quoted line after one.
    """

    path: str  # as shown to the user: relative to the working directory where possible
    text: str

    @property
    def lines(self) -> list[str]:
        cached = self.__dict__.get("_lines")
        if cached is None:
            cached = [
                line[:-1] if line.endswith("\r") else line for line in self.text.split("\n")
            ]
            object.__setattr__(self, "_lines", cached)
        return cached

    def line(self, number: int) -> str:
        lines = self.lines
        return lines[number - 1] if 1 <= number <= len(lines) else ""


@dataclass(frozen=True, eq=False)
class Location:
    """A span of source text: 1-based line and column, end column exclusive."""

    source: Source
    line: int
    col: int
    end_line: int
    end_col: int

    @property
    def file(self) -> str:
        return self.source.path

    def __str__(self) -> str:
        return f"{self.source.path}:{self.line}:{self.col}"

    def text(self) -> str:
        """The spanned text, on one line with runs of whitespace folded, unprintable
        characters escaped (it is shown to the user: in diagnostics, in summaries)."""
        if self.line == self.end_line:
            return escape(self.source.line(self.line)[self.col - 1 : self.end_col - 1])
        parts = [self.source.line(self.line)[self.col - 1 :]]
        parts += [self.source.line(n) for n in range(self.line + 1, self.end_line)]
        parts.append(self.source.line(self.end_line)[: self.end_col - 1])
        return escape(" ".join(" ".join(parts).split()))


@dataclass(frozen=True)
class Frame:
    """One block instantiation on the way to an error: block `block` used at `location`."""

    block: str
    location: Location
    statement: Location  # the whole statement that used it, quoted in the trail


@dataclass
class Diagnostic:
    message: str
    location: Location | None = None
    trail: tuple[Frame, ...] = ()
    help: str | None = None
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        out = [f"error: {self.message}"]
        loc = self.location
        if loc is not None:
            number = str(loc.line)
            pad = " " * len(number)
            line = loc.source.line(loc.line)
            end = loc.end_col if loc.end_line == loc.line else len(line) + 1
            line, start, end = _escaped(line, loc.col - 1, max(end - 1, loc.col))
            line, start, end = _excerpt(line, start, end)
            width = max(1, _width(line[start:end]))
            lead = "".join("\t" if c == "\t" else " " * _width(c) for c in line[:start])
            out += [
                f"{pad}--> {escape(str(loc))}",
                f"{pad} |",
                f"{number} | {line}",
                f"{pad} | {lead}{'^' * width}",
            ]
            gutter = f"{pad} ="
        else:
            gutter = "  ="
        for frame in reversed(self.trail):
            out.append(
                f"{gutter} in block {frame.block}, used at {escape(str(frame.location))} "
                f"({_shorten(escape(frame.statement.text()))})"
            )
        out += [f"{gutter} note: {note}" for note in self.notes]
        if self.help:
            out.append(f"{gutter} help: {self.help}")
        return "\n".join(out)


MAX_QUOTED = 200  # longer source lines are quoted in part, around the culprit
QUOTED_BEFORE = 60  # how much of a long line is kept before the culprit
ELLIPSIS = "..."


def _excerpt(line: str, start: int, end: int) -> tuple[str, int, int]:
    """The part of `line` to quote, and the culprit's [start, end) within it.

    A line of a generated file can be 50,000 characters long; quoting it whole buries the
    caret. Such a line is cut to a window of MAX_QUOTED characters that begins a little
    before the culprit, each cut marked with an ellipsis; the caret stays aligned.
    """
    if len(line) <= MAX_QUOTED:
        return line, start, end
    first = max(0, min(start - QUOTED_BEFORE, len(line) - MAX_QUOTED))
    last = min(len(line), first + MAX_QUOTED)
    head = ELLIPSIS if first > 0 else ""
    tail = ELLIPSIS if last < len(line) else ""
    shift = len(head) - first
    shown = head + line[first:last] + tail
    return shown, start + shift, min(end, last) + shift


def _shorten(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


def escape(text: str, keep: str = "") -> str:
    r"""`text` with every unprintable character written as a Python escape (`\x1b`,
    `\ufeff`, `\u202e`): nothing a source file or a file name holds reaches the terminal
    as a control sequence, and an invisible character shows. Characters in `keep` stay."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else _escape_char(c) for c in text)


def _escape_char(c: str) -> str:
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


LONG_WORD = re.compile(r"\S{161,}")


def _tame(text: str) -> str:
    """A message as shown: escaped, and any run of 161 or more characters without a space
    (a 10,000-character name, number or path) cut in the middle; line breaks kept."""
    text = escape(text, "\n")
    return LONG_WORD.sub(lambda m: m[0][:100] + ELLIPSIS + m[0][-40:], text)


def quote(text: str, limit: int = 60) -> str:
    """User text (a token, a string) as a diagnostic shows it: escaped and cut short."""
    return _shorten(escape(text), limit)


def _escaped(line: str, start: int, end: int) -> tuple[str, int, int]:
    """`line` escaped (tabs kept, for the caret line copies them), and [start, end) moved
    to where the same characters are in it."""
    if line.isprintable():
        return line, start, end
    shown, where = [], [0]
    for c in line:
        shown.append(c if c.isprintable() or c == "\t" else _escape_char(c))
        where.append(where[-1] + len(shown[-1]))

    def moved(i: int) -> int:  # a span may end past the line (the end of the file)
        return where[min(i, len(line))] + max(0, i - len(line))

    return "".join(shown), moved(start), moved(end)


def _width(text: str) -> int:
    """Terminal columns of `text`: wide (CJK) characters take two."""
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


class CompileError(Exception):
    """A mistake in a .cnn program, or in how it is used; carries the rendered diagnostic.

    `str(error)` is the full diagnostic text; `error.location` is the Location of the
    culprit (file, line, col) or None; `error.diagnostic` holds the parts.
    """

    def __init__(
        self,
        message: str,
        location: Location | None = None,
        *,
        trail: tuple[Frame, ...] = (),
        help: str | None = None,
        notes: list[str] | None = None,
    ) -> None:
        # Messages may quote user text; tamed here once, `error.message` is safe too.
        self.diagnostic = Diagnostic(
            _tame(message), location, tuple(trail), None if help is None else _tame(help),
            [_tame(note) for note in notes or ()],
        )
        super().__init__(self.diagnostic.render())

    @property
    def message(self) -> str:
        return self.diagnostic.message

    @property
    def location(self) -> Location | None:
        return self.diagnostic.location

    @property
    def trail(self) -> tuple[Frame, ...]:
        return self.diagnostic.trail

    def with_trail(self, trail: tuple[Frame, ...]) -> CompileError:
        """The same error seen from inside the given block instantiations (if it has none)."""
        if self.diagnostic.trail or not trail:
            return self
        d = self.diagnostic
        return CompileError(d.message, d.location, trail=trail, help=d.help, notes=d.notes)


class ShapeError(Exception):
    """Raised by an operator's rules; the builder turns it into a located CompileError.

    `arg` names the argument to point at (its expression), or None for the whole call.
    """

    def __init__(self, message: str, *, arg: str | None = None, help: str | None = None):
        super().__init__(message)
        self.message = message
        self.arg = arg
        self.help = help
