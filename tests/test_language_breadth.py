"""The constructs of issue 9 as LANGUAGE.md specifies them, computed against PyTorch:
quoted names, compile-time conditions, `stage * 0`, `op` block parameters, `size(t, d)`,
and `a, b = x -> chunk(2)` (through the stand-in of several_results.py until the real
`chunk` lands)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnc

from several_results import chunk_available

X = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))


def net(body: str, head: str = "", inputs: str = "input x: [N, 4, 6, 6]") -> str:
    return f"{head}\nnetwork A {{\n {inputs}\n {body}\n output y\n}}\n"


def run(source: str, *inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return cnnc.reference(source=source).eval()(*(inputs or (X,)))


def ops(source: str) -> list[str]:
    return [n.op for n in cnnc.load(source=source).nodes() if n.op != "input"]


# --------------------------------------------------------------------------- quoted names


def test_a_quoted_name_is_the_name_inside_the_backticks():
    source = """const `width` = 3
    block `my-block`(`in put`: tensor, `c`: int) { `out-1` = `in put` -> conv2d(c, 1)
        return `out-1` -> `relu` }
    network `Net-1` { input `x`: [N, 4, 6, 6]
        `y-0` = x -> `my-block`(`c`=width) -> leaky_relu(`negative_slope`=0.5)
        y = `y-0` -> identity
        output `y` }"""
    model = cnnc.reference(source=source)
    assert list(model.state_dict()) == ["y-0.out-1.weight", "y-0.out-1.bias"]
    w, b = model.state_dict().values()
    with torch.no_grad():
        torch.testing.assert_close(model(X), F.leaky_relu(F.relu(F.conv2d(X, w, b)), 0.5))


RESERVED = ("network block input output return const import true false none tensor int "
            "float bool str op if else and or not sequential").split()


@pytest.mark.parametrize("word", RESERVED)
def test_every_reserved_word_quoted_is_a_name(word: str):
    source = f"network A {{ input `{word}`: [N, 4, 6, 6]\n `{word}-c` = `{word}` -> " \
             f"conv2d(2, 1)\n y = `{word}-c` -> relu\n output y }}"
    assert [n for n, _, _ in cnnc.load(source=source).parameters()] == \
        [f"{word}-c.weight", f"{word}-c.bias"]


def test_a_quoted_module_attribute_names_a_layer():
    # `eval` is an attribute of every nn.Module; the layer is still named so in state_dict
    ref = cnnc.reference(source=net("a = x -> b\n y = a -> relu", "block b(x: tensor) {\n"
                                    " `eval` = x -> conv2d(2, 1)\n return `eval` }"))
    assert list(ref.state_dict()) == ["a.eval.weight", "a.eval.bias"]
    cnnc.load(source=net("training = x -> relu\n y = training -> relu"))


# --------------------------------------------------------------------------- conditions

LEAVES = st.one_of(st.integers(-3, 3), st.booleans())


def _expressions(leaf):
    """(cnn text, python value) pairs; only well-typed ones are drawn."""
    numbers = st.integers(-3, 3).map(lambda n: (str(n) if n >= 0 else f"({n})", n))
    comparisons = st.tuples(numbers, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
                            numbers).map(
        lambda t: (f"{t[0][0]} {t[1]} {t[2][0]}", eval(f"{t[0][1]} {t[1]} {t[2][1]}")))
    bools = st.one_of(st.booleans().map(lambda b: (str(b).lower(), b)), comparisons)
    return st.recursive(bools, lambda inner: st.one_of(
        inner.map(lambda e: (f"not {e[0]}", not e[1])),
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
            lambda t: (f"({t[0][0]} {t[1]} {t[2][0]})",
                       (t[0][1] and t[2][1]) if t[1] == "and" else (t[0][1] or t[2][1]))),
    ), max_leaves=6)


@settings(max_examples=30, deadline=None)
@given(_expressions(LEAVES))
def test_conditions_evaluate_as_python_does(expression):
    text, value = expression
    source = net(f"y = x -> relu if {text} else x -> sigmoid")
    assert ops(source) == (["relu"] if value else ["sigmoid"])


@pytest.mark.parametrize("condition, value", [
    ('"reflect" == "reflect"', True), ('"a" != "b"', True), ("(1, 2) == (1, 2)", True),
    ("none == none", True), ("3 == none", False), ("3 != none", True), ("2 == 2.0", True),
    ("true == false", False), ("channels(x) == 4 and size(x, 2) > 5", True),
    ("not (1 < 2 and 2 < 1) or false", True), ("1 + 2 * 3 == 7", True),
])
def test_comparisons_of_every_kind(condition: str, value: bool):
    assert ops(net(f"y = x -> (relu if {condition} else sigmoid)")) == \
        (["relu"] if value else ["sigmoid"])


def test_only_the_chosen_branch_is_built_but_its_names_are_checked():
    # The other branch would be a shape error (a kernel of 100 on 6x6): it is never built.
    assert ops(net("y = x -> conv2d(4, 100) if false else x -> relu")) == ["relu"]
    assert ops(net("y = x -> relu -> (conv2d(4, 100) if false else identity)")) == \
        ["relu", "identity"]
    with pytest.raises(cnnc.CompileError, match="`conv9` is not defined"):
        cnnc.load(source=net("y = x -> relu if true else x -> conv9(4, 1)"))
    with pytest.raises(cnnc.CompileError, match="`depth` is not defined"):
        cnnc.load(source=net("y = x -> (relu if true else relu * depth)"))


def test_if_else_binds_loosest_and_nests_to_the_right():
    source = net("y = x -> relu -> relu if false else x -> sigmoid if false else x -> tanh")
    assert ops(source) == ["tanh"]
    source = net("y = x -> sequential(relu -> relu if false else sigmoid, tanh)")
    assert ops(source) == ["sigmoid", "tanh"]


def test_the_chosen_branch_is_named_as_if_written_alone():
    source = net("y = x -> relu -> conv2d(2, 1) if true else x")
    assert [n for n, _, _ in cnnc.load(source=source).parameters()] == ["y.weight", "y.bias"]


def test_zero_repeats_are_the_identity():
    source = net("z = x -> relu * 0\n y = z -> conv2d(2, 1) * 0 -> sigmoid")
    assert ops(source) == ["sigmoid"]
    torch.testing.assert_close(run(source), torch.sigmoid(X))


# --------------------------------------------------------------------------- op parameters

BLOCKS = """
block cba(x: tensor, c: int, act: op = relu) { conv = x -> conv2d(c, 1)
    return conv -> act }
block twice(x: tensor, act: op) { return x -> act * 2 }
block outer(x: tensor, c: int, act: op = relu) { return x -> cba(c, act=act) -> act }
block scale(x: tensor, k: float, then: op = none) { return x -> mul(k) -> then }
"""


@pytest.mark.parametrize("use, expected", [
    ("twice(act=mul(3))", lambda x: x * 9),
    ("twice(leaky_relu(negative_slope=0.3))", lambda x: F.leaky_relu(F.leaky_relu(x, 0.3), 0.3)),
    ("twice(act=scale(2.0, then=scale(0.5)))", lambda x: x),
    ("twice(act=scale(-1.0, then=relu))", lambda x: F.relu(-F.relu(-x))),
    ("scale(2.0)", lambda x: 2 * x),
])
def test_an_op_argument_is_applied_where_the_block_says(use: str, expected):
    torch.testing.assert_close(run(net(f"y = x -> {use}", BLOCKS)), expected(X))


def test_op_arguments_pass_on_and_default():
    source = net("y = x -> outer(2, act=hardswish) -> cba(2)", BLOCKS)
    model = cnnc.reference(source=source).eval()
    sd = model.state_dict()
    assert list(sd) == ["y.0.conv.weight", "y.0.conv.bias", "y.1.conv.weight", "y.1.conv.bias"]
    inner = F.hardswish(F.hardswish(F.conv2d(X, sd["y.0.conv.weight"], sd["y.0.conv.bias"])))
    expected = F.relu(F.conv2d(inner, sd["y.1.conv.weight"], sd["y.1.conv.bias"]))
    with torch.no_grad():
        torch.testing.assert_close(model(X), expected)


def test_an_op_argument_is_evaluated_where_it_is_written():
    """`act=conv2d(c, 1)` takes the caller's `c`, not the block's."""
    source = BLOCKS + """
    block caller(x: tensor, c: int) { return x -> outer(3, act=conv2d(c, 1)) }
    network A { input x: [N, 4, 6, 6]
        y = x -> caller(5)
        output y }"""
    assert cnnc.load(source=source).output_shapes(batch=1) == [(1, 5, 6, 6)]


def test_an_op_parameter_inside_sequentials_and_conditions():
    source = net("y = x -> b(relu)", """
    block b(x: tensor, act: op) {
        return x -> sequential(conv2d(4, 1), act, (act if channels(x) == 4 else none)) }""")
    assert ops(source) == ["conv2d", "relu", "relu"]
    assert [n for n, _, _ in cnnc.load(source=source).parameters()] == ["y.0.weight", "y.0.bias"]


# --------------------------------------------------------------------------- size(t, d)


def test_size_gives_a_static_dim():
    source = net("y = x -> conv2d(size(x, 2) + size(x, -1), 1)")
    assert cnnc.load(source=source).output_shapes(batch=1) == [(1, 12, 6, 6)]
    with pytest.raises(cnnc.CompileError, match="size\\(\\) dim must be an int from 1 to 3"):
        cnnc.load(source=net("y = x -> conv2d(size(x, 0), 1)"))


# --------------------------------------------------------------------------- several results


def test_several_results_are_bound_in_order():
    with chunk_available():
        source = net("a, b = x -> relu -> chunk(2)\n c, d = chunk(b, 2, dim=2)\n"
                     " y = d -> concat(c, dim=2) -> mul(a)")
        graph = cnnc.load(source=source)
        assert [layer.name for layer in graph.layers] == ["x", "a", "b", "c", "d", "y"]
        a, b = torch.chunk(F.relu(X), 2, dim=1)
        c, d = torch.chunk(b, 2, dim=2)
        torch.testing.assert_close(run(source), torch.cat([d, c], 2) * a)


def test_the_count_is_what_torch_returns():
    """torch.chunk(x, 3) of 4 channels gives 2 chunks of 2."""
    with chunk_available():
        source = net("a, b = x -> chunk(3)\n y = a -> concat(b)")
        torch.testing.assert_close(run(source), X)
        with pytest.raises(cnnc.CompileError, match="chunk\\(3\\) gives 2 results here, but 3 "
                           "names are bound to them"):
            cnnc.load(source=net("a, b, c = x -> chunk(3)\n y = a -> concat(b, c)"))


@pytest.mark.parametrize("statement, message", [
    ("a, b = x -> conv2d(4, 1) -> chunk(2)", "its chain may hold no op with parameters; "
     "conv2d(4, 1) has some"),
    ("y = x -> chunk(2) -> relu", "chunk(2) gives several results (2 here)"),
    ("a, b = x -> chunk(2) * 2", "which must end its chain"),
    ("a, b = x", "which must end its chain"),
    ("a, a = x -> chunk(2)", "`a` is already bound"),
])
def test_misused_several_results(statement: str, message: str):
    with chunk_available(), pytest.raises(cnnc.CompileError) as info:
        cnnc.load(source=net(statement + "\n y = x -> relu"))
    assert message in info.value.message, info.value


def test_several_results_inside_a_block():
    """ShuffleNetV2's split: half the channels pass, half go through a branch."""
    source = """
    block half_branch(x: tensor) {
        left, right = x -> chunk(2)
        branch = right -> conv2d(2, 1)
        return left -> concat(branch) }
    network S { input x: [N, 4, 6, 6]
        y = x -> half_branch
        output y }"""
    with chunk_available():
        model = cnnc.reference(source=source).eval()
        w, b = model.state_dict().values()
        assert list(model.state_dict()) == ["y.branch.weight", "y.branch.bias"]
        left, right = torch.chunk(X, 2, dim=1)
        with torch.no_grad():
            torch.testing.assert_close(model(X), torch.cat([left, F.conv2d(right, w, b)], 1))
