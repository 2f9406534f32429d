"""An indented source buffer, and checks that keep user text out of generated code."""

from __future__ import annotations

import math
import re
from contextlib import contextmanager

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class Source:
    def __init__(self, indent: str = "    "):
        self.lines: list[str] = []
        self.level = 0
        self.unit = indent

    def line(self, text: str = "") -> None:
        self.lines.append(self.unit * self.level + text if text else "")

    def extend(self, lines) -> None:
        for text in lines:
            self.line(text)

    @contextmanager
    def indent(self, header: str | None = None):
        if header is not None:
            self.line(header)
        self.level += 1
        try:
            yield self
        finally:
            self.level -= 1

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def identifier(name: str) -> str:
    """A validated identifier (names from the .cnn file may appear only so)."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not an identifier: {name!r}")
    return name


def python_name(name: str) -> str:
    """An identifier for any name a .cnn file may bind (quoted names hold any text): the
    name itself when it is one, else its letters, digits and `_` with a short hash of the
    whole, so two names never meet."""
    if _IDENTIFIER.match(name):
        return name
    import hashlib

    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    stem = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "name"
    return f"{'n_' if stem[0].isdigit() else ''}{stem}_{digest}"


def shown(name: str) -> str:
    """A name for a comment or a docstring: quoted names keep only their ASCII letters,
    digits, `_` and `.` (others become `?`), so no other user text reaches the file."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "_.") else "?" for c in name)


def text_literal(text: str) -> str:
    """A Python expression for any name: a plain string literal for dotted identifiers,
    else decoded from hex at import, so the file holds no user text."""
    parts = text.split(".")
    if all(_IDENTIFIER.match(p) or p.isdigit() for p in parts):
        return repr(text)
    return f"bytes.fromhex({text.encode().hex()!r}).decode()"


def number(value) -> str:
    """A number as Python source: ints as ints, floats round-tripping exactly."""
    if isinstance(value, bool):
        raise ValueError("a bool is not a number here")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    raise ValueError(f"not a finite number: {value!r}")
