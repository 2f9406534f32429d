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
        """The spanned text, on one line with runs of whitespace folded."""
        if self.line == self.end_line:
            return self.source.line(self.line)[self.col - 1 : self.end_col - 1]
        parts = [self.source.line(self.line)[self.col - 1 :]]
        parts += [self.source.line(n) for n in range(self.line + 1, self.end_line)]
        parts.append(self.source.line(self.end_line)[: self.end_col - 1])
        return " ".join(" ".join(parts).split())


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
            line, start, end = _excerpt(line, loc.col - 1, max(end - 1, loc.col))
            width = max(1, end - start)
            lead = "".join(c if c == "\t" else " " for c in line[:start])
            out += [
                f"{pad}--> {loc}",
                f"{pad} |",
                f"{number} | {line}",
                f"{pad} | {lead}{'^' * width}",
            ]
            gutter = f"{pad} ="
        else:
            gutter = "  ="
        for frame in reversed(self.trail):
            out.append(
                f"{gutter} in block {frame.block}, used at {frame.location} "
                f"({_shorten(frame.statement.text())})"
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
        self.diagnostic = Diagnostic(message, location, tuple(trail), help, list(notes or []))
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
