"""Fuzzing the front end: whatever text it is given, `cnnc.load(source=...)` either succeeds
or raises `cnnc.CompileError`. A ValueError, OverflowError, RecursionError, KeyError, ...
escaping is a bug: the command line would print a Python traceback.

Inputs are random text, random sequences of .cnn tokens, and mutations of valid programs
(examples/*.cnn and the snippets of LANGUAGE.md): tokens or characters deleted, duplicated,
swapped or inserted, the text truncated, numbers replaced by 0, -1, huge values, floats or
strings, names swapped. Each CompileError must also render, and where it has a location in
the source, that location must be inside the text and the diagnostic must quote its line.

CNNC_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py explores more.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnc
from cnnc.errors import escape
from cnnc.frontend.parser import BOM

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("CNNC_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------- seeds

# The code of LANGUAGE.md (its first file, items, a block, and fragments).
LANGUAGE_SNIPPETS = [
    """\
# LeNet-5 (LeCun et al. 1998) on 28x28 grey digits
network LeNet5 {
    input image: [N, 1, 28, 28]          # N: batch size, chosen at run time

    c1 = image -> conv2d(6, 5, padding=2) -> relu     # [N, 6, 28, 28]  156 params
    s2 = c1 -> max_pool2d(2)                           # [N, 6, 14, 14]
    c3 = s2 -> conv2d(16, 5) -> relu                   # [N, 16, 10, 10]
    s4 = c3 -> max_pool2d(2)                           # [N, 16, 5, 5]
    f5 = s4 -> flatten -> linear(120) -> relu
    f6 = f5 -> linear(84) -> relu
    logits = f6 -> linear(10)

    output logits
}
""",
    """\
const width = 64                    # compile-time value
const sobel_x = [[1, 0, -1], [2, 0, -2], [1, 0, -1]]
const gauss = [[1,4,7,4,1],[4,16,26,16,4],[7,26,41,26,7],[4,16,26,16,4],[1,4,7,4,1]] / 273
block basic(x: tensor, planes: int, stride: int = 1) {
    conv1 = x -> conv2d(planes, 3, stride=stride, padding=1, bias=false)
    bn1 = conv1 -> batch_norm -> relu
    conv2 = bn1 -> conv2d(planes, 3, padding=1, bias=false)
    bn2 = conv2 -> batch_norm
    return bn2 -> add(x) -> relu
}
network ResNetish {
    input image: [N, 3, 64, 64]
    stem = image -> conv2d(width, 7, stride=2, padding=3, bias=false) -> batch_norm -> relu
    edges = stem -> conv2d(width, 3, padding=1, weight=sobel_x, groups=width)
    blur = stem -> conv2d(width, 5, padding=2, weight=gauss, padding_mode="reflect")
    layer1 = stem -> basic(width) * 2
    layer2 = layer1 -> basic(width, stride=1) -> add(edges) -> add(blur)
    both = layer2 -> concat(layer1, dim=1) -> conv2d(channels(layer1), 1)
    up = both -> upsample(2) -> avg_pool2d(2, count_include_pad=false)
    logits = up -> adaptive_avg_pool2d((1, 1)) -> flatten(start_dim=1, end_dim=-1)
        -> dropout(p=0.5) -> linear(10) -> log_softmax(dim=1)
    output logits, layer2
}
""",
    """\
import "blocks/resnet.cnn"
network Temporal {
    input signal: [N, 2, 128]
    a = signal -> conv1d(8, 5, padding="same", dilation=2) -> gelu(approximate="tanh")
    b = a -> max_pool1d(2, ceil_mode=true) -> leaky_relu(0.2) -> elu(alpha=1.0)
    c = b -> conv_transpose1d(4, 4, stride=2, output_padding=1) -> hardswish -> silu
    d = c -> mul(0.5) -> softmax(dim=-1) -> relu6 -> tanh -> sigmoid -> identity
    output d
}
""",
    # Issue 9: quoted names, sequential, conditions, op parameters, several results.
    """block conv_bn_act(x: tensor, c: int, stride: int = 1, act: op = relu, se: op = none) {
    return x -> conv2d(c, 3, stride=stride, padding=1, bias=false) -> batch_norm -> act -> se
}
block mbconv(x: tensor, c: int, stride: int = 1, act: op = hardswish) {
    `block` = x -> sequential(conv_bn_act(channels(x) * 4, act=act) if c != channels(x)
        else none, conv_bn_act(c, stride, act=act), relu * 0, (identity if stride > 1 else none))
    return `block` -> add(x) if stride == 1 and not (channels(x) != c) else `block`
}
network Breadth {
    input image: [N, 4, 16, 16]
    `block1-0` = image -> conv_bn_act(8, act=leaky_relu(0.2))
    features = `block1-0` -> sequential(mbconv(8), mbconv(16, 2, act=relu6) -> relu) * 2
    a, b = features -> chunk(2)
    classifier = a -> adaptive_avg_pool2d(1) -> flatten -> sequential(dropout(0.2), linear(10))
    output classifier
}
""",
]


def _seeds() -> list[str]:
    texts = list(LANGUAGE_SNIPPETS)
    for path in sorted((ROOT / "examples").glob("*.cnn")) + sorted(
            (ROOT / "examples" / "blocks").glob("*.cnn")):
        texts.append(path.read_text(encoding="utf-8"))
    for path in sorted((ROOT / "examples" / "errors").glob("*.cnn")):
        text = path.read_text(encoding="utf-8")
        if len(text) < 5_000:  # not the 10,000-deep expressions
            texts.append(text)
    return texts


SEEDS = _seeds()  # read once

TOKEN = re.compile(
    r'"(?:\\.|[^"\\\n])*"|#[^\n]*|[A-Za-z_]\w*|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?'
    r"|->|//|\s+|.",
    re.S,
)
NUMBER = re.compile(r"(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
NAME = re.compile(r"[A-Za-z_]\w*")

NUMBER_REPLACEMENTS = [
    "0", "-1", "1", "2", "0.0", "-0", "0.5", "1e-5", "1e308", "1e309", "1e-400", "4294967296",
    "99999999999999999999999999999999", "9" * 400, "1.5", "-3", '"x"', '"same"', "true", "none",
    "(1, 2)", "(0, 0, 0)", "[1]", "[[1, 2], [3]]", "()", "2 * 2 * 2", "1 / 0", "7 // 0",
    "channels(x)", "N", "x",
]
INSERTIONS = [
    "(", ")", "{", "}", "[", "]", ",", ":", "=", "->", "-", ">", "+", "*", "**", "/", "//", '"',
    "'", "#", "\\", ";", ".", "\n", " ", "\t", "0", "1e", "input", "output", "return", "block",
    "network", "const", "import", "true", "none", "tensor", "channels", "x", "N", "_", "\x00",
    "\u2192", "é", "\ufeff", "conv2d(", "add(x)", "* 3", '"../x.cnn"', "import \"x.cnn\"\n",
    "`", "``", "`a-b`", "if", "else", "and", "not", "==", "<=", "sequential(", "a, b =", "op",
    "* 0", "none",
]

# Escapes already reported, each with a strict xfail test at the end of this file. The fuzz
# tests tolerate them (so that they fail only on something new); when one is fixed its xfail
# test passes, fails as strict, and its entry here should go. (None known now.)
KNOWN_ESCAPES: list[tuple[type[BaseException], str]] = []


# --------------------------------------------------------------------------- the property

def check(source: str, tolerate_known: bool = True) -> None:
    """Load `source`; only CompileError may escape, and it must render a sound location."""
    try:
        cnnc.load(source=source)
    except tuple(kind for kind, _ in KNOWN_ESCAPES) as error:
        if isinstance(error, cnnc.CompileError) or not tolerate_known or not any(
                isinstance(error, kind) and text in str(error) for kind, text in KNOWN_ESCAPES):
            raise
    except cnnc.CompileError as error:
        text = str(error)
        assert text.startswith("error: ")
        loc = error.location
        if loc is None or loc.file != "<source>":
            return
        # Lines end at "\n" only (a "\r" before it is part of the break), as the lexer
        # counts them; a byte-order mark that begins the text is dropped (files.py).
        lines = [line.removesuffix("\r") for line in source.removeprefix(BOM).split("\n")]
        assert 1 <= loc.line <= len(lines), (loc.line, len(lines))
        line = lines[loc.line - 1]
        assert 1 <= loc.col <= len(line) + 1, (loc.col, line)
        line = escape(line, keep="\t")  # as quoted: no control character reaches a terminal
        prefix = f"{loc.line} | "
        quoted = [q[len(prefix):] for q in text.split("\n") if q.startswith(prefix)]
        assert quoted, text
        if len(line) <= 200:
            assert line in quoted, text
        else:  # a long line is quoted in part, around the culprit, cut with an ellipsis
            shown = quoted[0]
            assert shown.startswith("...") or shown.endswith("..."), text
            assert shown.removeprefix("...").removesuffix("...") in line, text


# --------------------------------------------------------------------------- strategies

@st.composite
def mutated(draw) -> str:
    source = draw(st.sampled_from(SEEDS))
    tokens = TOKEN.findall(source)
    for _ in range(draw(st.integers(1, 4))):
        if not tokens:
            break
        i = draw(st.integers(0, len(tokens) - 1))
        kind = draw(st.sampled_from(
            ["delete", "duplicate", "swap", "insert", "number", "name", "char", "truncate"]))
        if kind == "delete":
            del tokens[i]
        elif kind == "duplicate":
            tokens.insert(i, tokens[i])
        elif kind == "swap":
            j = draw(st.integers(0, len(tokens) - 1))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif kind == "insert":
            tokens.insert(i, draw(st.sampled_from(INSERTIONS) | st.text(max_size=3)))
        elif kind == "number":
            numbers = [k for k, t in enumerate(tokens) if NUMBER.fullmatch(t)]
            if numbers:
                tokens[draw(st.sampled_from(numbers))] = draw(st.sampled_from(NUMBER_REPLACEMENTS))
        elif kind == "name":
            names = [k for k, t in enumerate(tokens) if NAME.fullmatch(t)]
            if names:
                tokens[draw(st.sampled_from(names))] = tokens[draw(st.sampled_from(names))]
        elif kind == "char":  # delete one character somewhere
            text = "".join(tokens)
            k = draw(st.integers(0, max(0, len(text) - 1)))
            tokens = TOKEN.findall(text[:k] + text[k + 1:])
        else:
            text = "".join(tokens)
            return text[: draw(st.integers(0, len(text)))]
    return "".join(tokens)


@st.composite
def every_number_replaced(draw) -> str:
    """One seed with many of its numbers replaced at once."""
    source = draw(st.sampled_from(SEEDS))
    replacement = st.sampled_from(NUMBER_REPLACEMENTS)

    def swap(match: re.Match) -> str:
        return draw(replacement) if draw(st.integers(0, 3)) == 0 else match.group(0)

    return NUMBER.sub(swap, source)


VOCABULARY = sorted(set(INSERTIONS) | {
    "conv2d", "max_pool2d", "relu", "linear", "flatten", "add", "concat", "upsample", "basic",
    "batch_norm", "(", ")", "=", "->", ",", "{", "}", "[", "]", ":", "\n", " ", "3", "-2", "0.5",
    '"reflect"', "stride", "padding", "dim", "y", "z", "int", "float", "str", "bool",
})


@st.composite
def token_soup(draw) -> str:
    """Random sequences of .cnn tokens, usually inside `network A { ... }`."""
    body = " ".join(draw(st.lists(st.sampled_from(VOCABULARY), max_size=60)))
    if draw(st.booleans()):
        return f"network A {{\n input x: [N, 3, 8, 8]\n{body}\n output x\n}}\n"
    return body


def _one_op_networks() -> st.SearchStrategy[str]:
    """A call of any operator, with arguments drawn from typical and extreme values."""
    from cnnc.ops import OPS

    values = st.sampled_from([
        "0", "1", "2", "3", "-1", "0.5", "1.5", "1e308", "1e-308", "99999999999", '"same"',
        '"valid"', '"reflect"', '"circular"', '"tanh"', '"none"', '"x"', "true", "false", "none",
        "(1, 2)", "(2, 2, 2)", "(1e308, 1e308)", "(0.5, 0.5)", "(none, 2)", "(1,)", "()",
        "(0, 0)", "[[1, 0], [0, 1]]", "[1, 2, 3]", "x", "y", "channels(x)",
    ])
    shapes = st.sampled_from([
        "[N, 3, 8, 8]", "[N, 3, 8]", "[N, 2, 4, 4, 4]", "[N, 4]", "[N]", "[2, 3, 8, 8]",
        "[N, 1, 1, 1]", "[N, 6, 5, 7]",
    ])

    @st.composite
    def network(draw) -> str:
        name = draw(st.sampled_from(sorted(OPS)))
        args = [a for a in OPS[name].signature[1:]]
        positional = draw(st.lists(values, max_size=3))
        keywords = [f"{a.name}={draw(values)}" for a in args if draw(st.booleans())]
        call = f"{name}({', '.join(positional + keywords)})"
        return (f"network A {{\n input x: {draw(shapes)}\n input y: {draw(shapes)}\n"
                f" z = x -> {call} -> add(y)\n output z\n}}\n")

    return network()


# --------------------------------------------------------------------------- tests

@FUZZ
@given(st.text(max_size=300))
def test_random_text(source: str):
    check(source)


@FUZZ
@given(token_soup())
def test_random_tokens(source: str):
    check(source)


@FUZZ
@given(mutated())
def test_mutated_programs(source: str):
    check(source)


@FUZZ
@given(every_number_replaced())
def test_numbers_replaced(source: str):
    check(source)


@FUZZ
@given(_one_op_networks())
def test_any_operator_with_extreme_arguments(source: str):
    check(source)


def test_the_seeds_themselves():
    for source in SEEDS:
        check(source)


# --------------------------------------------------------------------------- found by fuzzing

def test_upsample_by_a_huge_float_tuple():
    """Once an OverflowError (math.floor of inf in the shape rule)."""
    source = ("network A {\n input x: [N, 3, 8, 8]\n y = x -> upsample((1e308, 1e308))\n"
              " output y\n}\n")
    check(source, tolerate_known=False)
    with pytest.raises(cnnc.CompileError, match="scale_factor 1e[+]308 is too large"):
        cnnc.load(source=source)


@pytest.mark.parametrize("path, reason", [
    pytest.param("a\x00b.cnn", "NUL", id="a NUL in the path"),
    pytest.param("x" * 5000 + ".cnn", "too long", id="a path too long for the OS"),
])
def test_import_of_an_impossible_path(path: str, reason: str):
    """Once a ValueError and an OSError (ENAMETOOLONG) escaping from the import."""
    source = f'import "{path}"\nnetwork A {{\n input x: [N, 3]\n output x\n}}\n'
    check(source, tolerate_known=False)
    with pytest.raises(cnnc.CompileError) as info:
        cnnc.load(source=source)
    assert info.value.message.startswith('cannot import "'), info.value
    assert reason in info.value.message and len(info.value.message) < 200, info.value
    assert (info.value.location.line, info.value.location.col) == (1, 1)


@pytest.mark.parametrize("brk", ["\x0c", "\x0b", "\x1c", "\x85", "\u2028", "\r"],
                         ids=["form-feed", "vtab", "fs", "nel", "line-sep", "lone-cr"])
def test_odd_line_breaks_do_not_shift_the_quoted_line(brk: str):
    """Once Source.lines used str.splitlines(), which breaks lines at characters the lexer
    does not count, so the diagnostic quoted the wrong line."""
    source = (f"# a comment{brk}with an odd line break\nnetwork A {{\n input x: [N, 3, 8, 8]\n"
              " y = x -> conv2d(4, 99)\n output y\n}\n")
    with pytest.raises(cnnc.CompileError) as info:
        cnnc.load(source=source)
    quoted = [line for line in str(info.value).split("\n") if re.match(r"\d+ \| ", line)]
    assert quoted == ["4 |  y = x -> conv2d(4, 99)"]


def test_windows_line_breaks_are_one_break():
    source = ("# a comment\nnetwork A {\n input x: [N, 3, 8, 8]\n y = x -> conv2d(4, 99)\n"
              " output y\n}\n").replace("\n", "\r\n")
    with pytest.raises(cnnc.CompileError) as info:
        cnnc.load(source=source)
    quoted = [line for line in str(info.value).split("\n") if re.match(r"\d+ \| ", line)]
    assert quoted == ["4 |  y = x -> conv2d(4, 99)"]
    assert (info.value.location.line, info.value.location.col) == (4, 11)
