"""How a diagnostic quotes what the user wrote: nothing from a source file or a file name
reaches the terminal raw (control characters are escaped, so NUL, ESC and BEL cannot move
the cursor, recolour or ring), the carets still sit under the culprit, and only the
offending line is quoted, with long user text in a message cut short.
"""

from __future__ import annotations

import os
import re

import pytest
from bounded_cli import cnnc_cli

import cnnc

# Anything but a line break, a tab or printable text is a control sequence to a terminal.
RAW = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def _error(source: str) -> cnnc.CompileError:
    with pytest.raises(cnnc.CompileError) as info:
        cnnc.load(source=source)
    assert not RAW.search(str(info.value)), repr(str(info.value))
    return info.value


def _net(statement: str) -> str:
    return f"network A {{\n input x: [N, 3, 8, 8]\n {statement}\n output y\n}}\n"


def _carets(error: cnnc.CompileError) -> tuple[str, str]:
    """The quoted line and the underlined part of it."""
    lines = str(error).split("\n")
    quoted, carets = lines[3].split(" | ", 1)[1], lines[4].split(" | ", 1)[1]
    start = carets.index("^")
    return quoted, quoted[start:len(carets)]


@pytest.mark.parametrize("char, shown", [("\x00", "\\x00"), ("\x1b", "\\x1b"), ("\x07", "\\x07"),
                                         ("\u202e", "\\u202e")])
def test_an_unexpected_control_character_is_escaped_and_underlined(char: str, shown: str):
    error = _error(_net(f"y = x -> relu{char}[31m"))
    assert error.message.startswith(f"unexpected character `{shown}`")
    quoted, underlined = _carets(error)
    assert quoted == f" y = x -> relu{shown}[31m"
    assert underlined == shown


def test_a_string_with_control_characters_is_escaped_in_the_message():
    error = _error(_net('y = x -> conv2d(4, 3, padding_mode="\x1b[2J\x07")'))
    assert 'found the string "\\x1b[2J\\x07"' in error.message
    assert _carets(error)[1] == '"\\x1b[2J\\x07"'


def test_carets_stay_under_the_culprit_after_an_escaped_character():
    error = _error(_net('y = x -> conv2d(4, 3, padding_mode="\x1b\\q")'))
    assert error.message == "unknown escape `\\q` in a string"
    assert _carets(error)[1] == "\\q"


def test_wide_characters_before_the_culprit_keep_the_carets_aligned():
    error = _error(_net('y = x -> gelu(approximate="漢字\\q")'))
    lines = str(error).split("\n")
    before = lines[3][:lines[3].index("\\q")]
    columns = len(before) + before.count("漢") + before.count("字")  # two columns each
    assert lines[4].index("^") == columns
    assert lines[4].count("^") == 2


@pytest.mark.parametrize("statement", [
    'y = x -> conv2d(4 "' + "a" * 10_000 + '")',
    "y = x -> conv2d(4 " + "9" * 10_000 + ")",
    "y = x -> relu\n " + "z" * 10_000 + "\n",
    "y = " + "z" * 10_000 + " -> relu",
    "y = x -> " + "z" * 10_000,
    'y = x -> add("' + "a " * 5_000 + '")',
    "y = x -> flatten(" + " + ".join(["1"] * 3_000) + ", 1, 1)",
])
def test_long_user_text_in_a_message_is_cut_short(statement: str):
    error = _error(_net(statement))
    assert len(error.message) < 200, error.message[:300]
    assert all(len(line) < 220 for line in str(error).split("\n"))


@pytest.mark.skipif(os.name != "posix", reason="file names with control characters")
def test_a_file_name_with_control_characters_is_escaped(tmp_path):
    name = "evil\x1b[2J\x07.cnn"
    (tmp_path / name).write_text(_net("y = x -> conv2d(4, 99)"))
    result = cnnc_cli("check", name, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert not RAW.search(result.stderr), repr(result.stderr)
    assert "--> evil\\x1b[2J\\x07.cnn:3:11" in result.stderr


def test_the_command_line_prints_no_raw_control_character(tmp_path):
    bad = tmp_path / "bad.cnn"
    bad.write_text(_net("y = x -> relu\x00\x1b[31m\x07"))
    result = cnnc_cli("check", str(bad))
    assert result.returncode == 1, result.stderr
    assert not RAW.search(result.stderr), repr(result.stderr)
    assert "relu\\x00\\x1b[31m\\x07" in result.stderr


def test_a_control_character_in_a_block_call_is_escaped_in_the_trail():
    source = ('block b(x: tensor, mode: str) { return x -> conv2d(4, 99) }\n'
              + _net('y = x -> b("\x1b[31m")'))
    error = _error(source)
    assert '(y = x -> b("\\x1b[31m"))' in str(error)
