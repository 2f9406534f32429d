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


def dotted(name: str) -> str:
    """A validated dotted parameter name, e.g. layer1.0.conv1.weight."""
    parts = name.split(".")
    for part in parts:
        if not (_IDENTIFIER.match(part) or part.isdigit()):
            raise ValueError(f"not a parameter name: {name!r}")
    return name


def number(value) -> str:
    """A number as Python source: ints as ints, floats round-tripping exactly."""
    if isinstance(value, bool):
        raise ValueError("a bool is not a number here")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    raise ValueError(f"not a finite number: {value!r}")
