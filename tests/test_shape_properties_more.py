"""Property tests, continued: flatten, softmax, dropout, activations, add/mul, concat,
upsample, and wrong argument types located precisely (see test_shape_properties.py)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from shape_harness import (
    PROFILE,
    check,
    evaluated,
    expect_compile_error,
)
from torch import nn

import cnnc
from cnnc.ops import OPS

from strategies import (
    BATCH,
    OMIT,
    SYM,
    Case,
    Raw,
    batch_dim,
    call_text,
    concrete,
    dims_text,
    fmt,
    network,
    numbers,
    optional,
    seeds,
    shapes,
    tensors,
)

# ================================================================ flatten, softmax, dropout


def dim_index(rank: int) -> st.SearchStrategy:
    """A dim for a rank-`rank` tensor, sometimes one out of range."""
    return st.integers(-rank - 1, rank)


@st.composite
def flatten_cases(draw):
    shape = draw(shapes(1, 5, hi=3, dim0=batch_dim()))
    rank = len(shape)
    start_s, start = draw(optional(dim_index(rank), 1))
    end_s, end = draw(optional(dim_index(rank), -1))
    call = draw(call_text("flatten", [("start_dim", start_s), ("end_dim", end_s)]))
    (x,) = tensors([shape], draw(seeds))
    return Case(network([("x", shape)], f"y = {call}"), [x],
                lambda: (torch.flatten(x, start, end), None))


@PROFILE
@given(flatten_cases())
def test_flatten(case):
    check(case)


@st.composite
def softmax_cases(draw):
    op = draw(st.sampled_from(["softmax", "log_softmax"]))
    shape = draw(shapes(1, 4, hi=4, dim0=batch_dim()))
    dim_s, dim = draw(optional(dim_index(len(shape)), 1))
    call = draw(call_text(op, [("dim", dim_s)]))
    (x,) = tensors([shape], draw(seeds))
    fn = getattr(F, op)
    return Case(network([("x", shape)], f"y = {call}"), [x],
                lambda: (fn(x, dim=dim), None))


@PROFILE
@given(softmax_cases())
def test_softmax(case):
    check(case)


@st.composite
def dropout_cases(draw):
    shape = draw(shapes(1, 4, hi=4))
    p_s, p = draw(optional(st.one_of(st.floats(0, 1), st.sampled_from([0, 1, -0.5, 1.5, -1, 2])),
                           0.5))
    call = draw(call_text("dropout", [("p", p_s)]))
    (x,) = tensors([shape], draw(seeds))
    case = Case(network([("x", shape)], f"y = {call}"), [x],
                lambda: evaluated(nn.Dropout(p), x))
    case.info["p"] = p
    return case


@PROFILE
@given(dropout_cases())
def test_dropout(case):
    check(case)
    p = case.info["p"]
    if p in (0, 1):  # deterministic in training mode too: identity, or all zeros
        ref = cnnc.reference(source=case.src).train()
        with torch.no_grad():
            torch.testing.assert_close(ref(case.inputs[0]), F.dropout(case.inputs[0], p, True))


# ================================================================ activations

PLAIN_ACTIVATIONS = {
    "relu": F.relu, "relu6": F.relu6, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
    "silu": F.silu, "hardsigmoid": F.hardsigmoid, "hardswish": F.hardswish,
    "identity": lambda x: x,
}


@st.composite
def activation_cases(draw):
    op = draw(st.sampled_from([*PLAIN_ACTIVATIONS, "leaky_relu", "elu", "gelu"] * 1))
    shape = draw(shapes(1, 4, hi=5, dim0=batch_dim()))
    (x,) = tensors([shape], draw(seeds))
    x = x * 4  # reach the kinks of relu6, hardsigmoid, hardswish
    if op in PLAIN_ACTIVATIONS:
        fn = PLAIN_ACTIVATIONS[op]
        call = draw(call_text(op, []))
        torch_fn = lambda: (fn(x), None)  # noqa: E731
    elif op == "leaky_relu":
        slope_s, slope = draw(optional(numbers(), 0.01))
        call = draw(call_text(op, [("negative_slope", slope_s)]))
        torch_fn = lambda: (F.leaky_relu(x, slope), None)  # noqa: E731
    elif op == "elu":
        alpha_s, alpha = draw(optional(numbers(), 1.0))
        call = draw(call_text(op, [("alpha", alpha_s)]))
        torch_fn = lambda: (F.elu(x, alpha), None)  # noqa: E731
    else:
        approx_s, approx = draw(optional(st.sampled_from(["none", "tanh", "sigmoid", "Tanh"]),
                                         "none"))
        call = draw(call_text(op, [("approximate", approx_s)]))
        torch_fn = lambda: (F.gelu(x, approximate=approx), None)  # noqa: E731
    return Case(network([("x", shape)], f"y = {call}"), [x], torch_fn)


@PROFILE
@given(activation_cases())
def test_activation(case):
    check(case)


# ================================================================ add / mul


def sym_broadcast(a: tuple, b: tuple) -> tuple | str:
    """cnnc's broadcasting of declared shapes (SYM for the batch): the shape, "bad" where
    sizes clash, or "batch" where the batch meets a fixed size other than 1."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        elif SYM in (x, y):
            return "batch"
        else:
            return "bad"
    return tuple(reversed(out))


@st.composite
def operand_shape(draw, a: tuple) -> tuple:
    """A shape to broadcast with `a`: each dim aligned from the right is a's, 1 or another
    size; sometimes fewer or more dims."""
    rank = draw(st.integers(1, len(a) + 1))
    dims = []
    for i in range(1, rank + 1):
        mine = a[-i] if i <= len(a) else None
        choices = [st.integers(1, 4), st.just(1)]
        if mine is not None and (mine != SYM or i == rank):  # only dim 0 may be the batch
            choices += [st.just(mine)] * 3
        dims.append(draw(st.one_of(*choices)))
    dims.reverse()
    dims[0] = draw(st.sampled_from([dims[0], dims[0], SYM]))
    if len(dims) == len(a) and a[0] == SYM:
        dims[0] = draw(st.sampled_from([SYM, SYM, SYM, 1, 2]))
    return tuple(dims)


def nice_number():
    return st.sampled_from([0.5, -1.5, 2.0, 1e-3, 0.0, 3.25])


@st.composite
def arithmetic_cases(draw):
    op = draw(st.sampled_from(["add", "mul"]))
    a = draw(shapes(1, 4, hi=4, dim0=st.sampled_from([SYM, SYM, SYM, 1, 2])))
    n_others = draw(st.sampled_from([0, 1, 1, 2, 2, 3]))  # none: torch.add(a) raises too
    others, inputs = [], [("a", a)]
    for name in "bcd"[:n_others]:
        if draw(st.integers(0, 3)) == 0:
            others.append(draw(st.one_of(st.integers(-3, 3), nice_number())))
        else:
            inputs.append((name, draw(operand_shape(a))))
            others.append(Raw(name))
    args = [fmt(o) for o in others]
    stmt = draw(st.sampled_from([f"y = a -> {op}({', '.join(args)})",
                                 f"y = {op}({', '.join(['a', *args])})"]))
    xs = tensors([s for _, s in inputs], draw(seeds))
    by_name = {name: x for (name, _), x in zip(inputs, xs)}
    operands = [by_name["a"]] + [by_name[o.text] if isinstance(o, Raw) else o for o in others]

    def torch_fn():
        fn = torch.add if op == "add" else torch.mul
        y = fn(*operands[:2])  # torch.add(a) alone raises, as add() alone must
        for o in operands[2:]:
            y = fn(y, o)
        return y, None

    shape, stricter = a, None
    for _, s in inputs[1:]:
        shape = sym_broadcast(shape, s)
        if shape == "batch":
            stricter = "add/mul do not broadcast the batch dim N against a fixed size"
        if isinstance(shape, str):
            break
    return Case(network(inputs, stmt), xs, torch_fn, stricter)


@PROFILE
@given(arithmetic_cases())
def test_add_mul(case):
    check(case)


# ================================================================ concat


@st.composite
def concat_cases(draw):
    rank = draw(st.integers(1, 4))
    k = draw(st.sampled_from([1, 2, 2, 3]))  # one tensor: torch.cat of one is a copy
    dim_s, dim = draw(optional(dim_index(rank), 1))
    base = list(draw(shapes(rank, rank, hi=4, dim0=st.sampled_from([SYM, SYM, 2]))))
    inputs = []
    for name in "abc"[:k]:
        s = list(base)
        if -rank <= dim < rank and s[dim] != SYM:
            s[dim] = draw(st.integers(1, 4))
        trouble = draw(st.integers(0, 9))
        if trouble == 0:  # another dim differs
            i = draw(st.integers(0, rank - 1))
            s[i] = draw(st.sampled_from([1, 2, 3, SYM])) if i == 0 else draw(st.integers(1, 4))
        elif trouble == 1:  # another rank
            s = s + [2] if draw(st.booleans()) or rank == 1 else s[:-1]
        inputs.append((name, tuple(s)))
    shapes_ = [s for _, s in inputs]
    args = [n for n, _ in inputs[1:]] + ([] if dim_s is OMIT else [f"dim={dim}"])
    stmt = draw(st.sampled_from([
        f"y = a -> concat({', '.join(args)})" if args else "y = a -> concat",
        f"y = concat({', '.join(['a', *args])})",
    ]))
    xs = tensors(shapes_, draw(seeds))
    stricter = None
    if len({len(s) for s in shapes_}) == 1:
        for i in range(len(shapes_[0])):
            column = {s[i] for s in shapes_}
            if SYM in column and len(column) > 1:
                stricter = "concat() does not mix the batch dim N with a fixed size"
    return Case(network(inputs, stmt), xs, lambda: (torch.cat(xs, dim=dim), None), stricter)


@PROFILE
@given(concat_cases())
def test_concat(case):
    check(case)


# ================================================================ upsample


@st.composite
def upsample_cases(draw):
    rank = draw(st.sampled_from([3, 4, 5, 3, 4, 5, 2, 6]))
    hi = {2: 4, 3: 8, 4: 6, 5: 4, 6: 3}[rank]
    shape = (SYM, *draw(st.tuples(*[st.integers(1, hi)] * (rank - 1))))
    scale_value = st.one_of(st.integers(1, 3), st.sampled_from([0.5, 1.5, 2.5, 0.75, 1.3, 0.3,
                                                                2.0, 0.25, 0.1, 0, -1]))
    spatial_dims = max(rank - 2, 1)
    scale_s, scale = draw(optional(st.one_of(
        scale_value,
        st.tuples(*[scale_value] * spatial_dims),
        st.lists(scale_value, min_size=1, max_size=4).map(tuple),
    ), 2))
    call = draw(call_text("upsample", [("scale_factor", scale_s)]))
    (x,) = tensors([shape], draw(seeds))

    def torch_fn():
        return F.interpolate(x, scale_factor=scale, mode="nearest"), None

    return Case(network([("x", shape)], f"y = {call}"), [x], torch_fn)


@PROFILE
@given(upsample_cases())
def test_upsample(case):
    check(case)


# ================================================================ wrong argument types

WRONG = {  # kind -> wrong-type spellings (each must be rejected wherever the kind goes)
    "int": ['"3"', "true", "2.5", "(2, 2)", "x", "none", "relu"],
    "ints": ['"3"', "true", "2.5", "x", "none", "relu", "@LONG", "@SHORT", "@STRING_IN"],
    "opt_ints": ['"3"', "true", "2.5", "x", "@LONG", "@SHORT", "@STRING_IN"],  # none is valid
    "padding": ['"full"', "true", "2.5", "x", "none", "@LONG", "@SHORT"],
    "bool": ["1", '"true"', "x", "none", "0.5", "(true,)"],
    "choice": ["1", '"Zeros"', "x", "true", "none", "(1, 2)"],
    "float": ['"0.1"', "x", "(0.1, 0.2)", "true", "none"],
    "opt_float": ['"0.1"', "x", "(0.1, 0.2)", "true"],
    "scale": ['"2"', "x", "true", "none", "(2, 2, 2, 2)"],
    "sizes": ['"2"', "x", "2.5", "true", "@LONG"],
    "filter": ["3", '"w"', "x", "(1, 2)"],
    "opt_int": ['"3"', "true", "2.5", "x", "(2, 2)"],
    "tensor": ["1", '"a"', "(1, 2)", "true", "none"],
    "tensor_or_number": ['"a"', "true", "(1, 2)", "none", "relu"],
}

X4 = (SYM, 4, 8, 8)
SHAPE_FOR = {1: (SYM, 4, 8), 2: X4, 3: (SYM, 4, 5, 5, 5)}

# op -> (spatial dims, input shape, [(argument, valid spelling, kind)])
SPECS: dict[str, tuple[int, tuple, list[tuple[str, str, str]]]] = {}
for _d in (1, 2, 3):
    _t = fmt((2,) * _d)
    SPECS[f"conv{_d}d"] = (_d, SHAPE_FOR[_d], [
        ("out_channels", "4", "int"), ("kernel_size", "3", "ints"), ("stride", _t, "ints"),
        ("padding", '"same"', "padding"), ("dilation", "1", "ints"), ("groups", "2", "int"),
        ("bias", "false", "bool"), ("padding_mode", '"reflect"', "choice"),
        ("weight", "none", "filter"),
    ])
    SPECS[f"conv_transpose{_d}d"] = (_d, SHAPE_FOR[_d], [
        ("out_channels", "4", "int"), ("kernel_size", "3", "ints"), ("stride", "2", "ints"),
        ("padding", "1", "ints"), ("output_padding", "1", "ints"), ("groups", "2", "int"),
        ("bias", "true", "bool"), ("dilation", "1", "ints"),
    ])
    SPECS[f"max_pool{_d}d"] = (_d, SHAPE_FOR[_d], [
        ("kernel_size", "2", "ints"), ("stride", "none", "opt_ints"), ("padding", "1", "ints"),
        ("dilation", "1", "ints"), ("ceil_mode", "true", "bool"),
    ])
    SPECS[f"avg_pool{_d}d"] = (_d, SHAPE_FOR[_d], [
        ("kernel_size", "2", "ints"), ("stride", _t, "opt_ints"), ("padding", "1", "ints"),
        ("ceil_mode", "false", "bool"), ("count_include_pad", "false", "bool"),
        ("divisor_override", "3", "opt_int"),
    ])
    for _k in ("avg", "max"):
        SPECS[f"adaptive_{_k}_pool{_d}d"] = (_d, SHAPE_FOR[_d], [
            ("output_size", "3", "sizes"),
        ])
SPECS.update({
    "batch_norm": (2, X4, [("eps", "0.001", "float"), ("momentum", "0.1", "opt_float"),
                           ("affine", "true", "bool"), ("track_running_stats", "false", "bool")]),
    "linear": (2, X4, [("out_features", "5", "int"), ("bias", "false", "bool")]),
    "flatten": (2, X4, [("start_dim", "1", "int"), ("end_dim", "-1", "int")]),
    "softmax": (2, X4, [("dim", "1", "int")]),
    "log_softmax": (2, X4, [("dim", "-1", "int")]),
    "dropout": (2, X4, [("p", "0.2", "float")]),
    "leaky_relu": (2, X4, [("negative_slope", "0.2", "float")]),
    "elu": (2, X4, [("alpha", "1.0", "float")]),
    "gelu": (2, X4, [("approximate", '"tanh"', "choice")]),
    "upsample": (2, X4, [("scale_factor", "2", "scale")]),
    "add": (2, X4, [("others", "x", "tensor_or_number")]),  # variadic: by position only
    "mul": (2, X4, [("others", "2", "tensor_or_number")]),
    "concat": (2, X4, [("others", "x", "tensor"), ("dim", "1", "int")]),
    **{op: (2, X4, []) for op in [*PLAIN_ACTIVATIONS]},
})
VARIADIC = {"add", "mul", "concat"}  # their first argument is positional-only


def wrong_spelling(d: int, choice: str) -> str:
    if choice == "@LONG":
        return fmt((2,) * (d + 1))
    if choice == "@SHORT":
        return "()" if d == 1 else fmt((2,) * (d - 1))
    if choice == "@STRING_IN":
        return "(" + ", ".join(['"2"'] + ["2"] * (d - 1)) + ("," if d == 1 else "") + ")"
    return choice


@st.composite
def mutated_calls(draw):
    """A valid call with one argument made wrong; returns (src, line, span of the culprit)."""
    op = draw(st.sampled_from(sorted(SPECS)))
    d, shape, spec = SPECS[op]
    args = [(name, valid) for name, valid, _ in spec]
    mutations = ["type"] * 3 if spec else []
    # One positional argument too many: only where the spec names every argument after
    # the input (upsample's lists scale_factor alone: a second one would be its size).
    extra = op not in VARIADIC and len(spec) >= len(OPS[op].signature) - 1
    mutations += ["keyword"] + (["positional"] if extra else [])
    mutation = draw(st.sampled_from(mutations))
    culprit = None
    if mutation == "type":
        i = draw(st.integers(0, len(spec) - 1))
        name, valid, kind = spec[i]
        text = wrong_spelling(d, draw(st.sampled_from(WRONG[kind])))
        args[i] = (name, text)
        culprit = i
        # The tensors after the input have no name the user knows: say what was found.
        mention = "; found " if name == "others" else f"`{name}`"
    if op in VARIADIC:  # every positional argument joins the tensors: spell the rest by name
        n_positional = 1
    elif mutation == "positional":
        n_positional = len(args)
    else:
        n_positional = draw(st.integers(0, len(args)))
    parts = []  # (text, is the culprit)
    for i, (name, text) in enumerate(args):
        parts.append((text if i < n_positional else f"{name}={text}", i == culprit))
    if mutation == "keyword":
        bogus = draw(st.sampled_from(["bogus=1", "kernel=3", "strides=2", "inplace=true",
                                      "input=x"]))
        at = draw(st.integers(n_positional, len(parts)))
        parts.insert(at, (bogus, True))
        mention = f"`{bogus.split('=')[0]}`"
    elif mutation == "positional":  # one positional argument too many
        parts.append(("7", True))
        mention = "the int 7"
    prefix = f"    y = a -> {op}("
    text, span = prefix, None
    for j, (part, is_culprit) in enumerate(parts):
        if j:
            text += ", "
        if is_culprit:
            span = (len(text) + 1, len(text) + len(part) + 1)  # 1-based, end exclusive
        text += part
    text += ")"
    src = "\n".join([
        "# a network with one wrong argument",
        "network T {",
        f"    input x: {dims_text(shape)}",
        "    a = x -> relu",
        text,
        "    output y",
        "}",
    ]) + "\n"
    return src, 5, span, mention


@PROFILE
@given(mutated_calls())
def test_wrong_argument_is_located(drawn):
    src, line, (start, end), mention = drawn
    e = expect_compile_error(src, "one argument has the wrong type, or is unknown or extra")
    assert mention in e.message, f"the message does not mention {mention}\n{e}"
    loc = e.location
    assert loc is not None, f"no location\n{src}\n{e}"
    culprit = src.splitlines()[line - 1][start - 1:end - 1]
    assert (loc.line, loc.end_line) == (line, line), f"points at {loc}, not at {culprit}\n{e}"
    assert start <= loc.col and loc.end_col <= end, (
        f"points at {loc.text()!r} ({loc.col}-{loc.end_col}), not inside {culprit!r} "
        f"({start}-{end})\n{e}")
    assert str(loc).endswith(f":{loc.line}:{loc.col}")
    assert re.search(rf"^ *{line} \| ", str(e), re.M), str(e)  # the quoted line


def test_wrong_type_examples_point_at_the_argument():
    """A few spelled-out cases of the property above."""
    cases = {
        'conv2d(4, "3")': '"3"',
        "conv2d(4, (3, 3, 3))": "(3, 3, 3)",
        "conv2d(4, 3, stride=x)": "x",
        "conv2d(4, 3, paddin=1)": "paddin",
        "max_pool2d(2, ceil_mode=1)": "1",
        "linear(x)": "x",
        "upsample(scale_factor=(2, 2, 2, 2))": "(2, 2, 2, 2)",
        "softmax(dim=1.0)": "1.0",
    }
    for call, culprit in cases.items():
        src = network([("x", X4)], f"y = x -> {call}")
        e = expect_compile_error(src, "a wrong argument")
        assert e.location.text() == culprit, (call, str(e))


# ================================================================ regression tests for the
# bugs found by the properties above (fixed; each test pins the fixed behaviour)


def test_bug1_upsample_one_tuple_on_1d_input():
    """F.interpolate(x, scale_factor=(2,)) on [N, C, L] is fine; so is Ints' (3,) for
    conv1d's kernel_size. upsample rejected it (and printed the tuple as "(2)")."""
    src = network([("x", (SYM, 2, 5))], "y = x -> upsample(scale_factor=(2,))")
    x = torch.randn(BATCH, 2, 5)
    check(Case(src, [x], lambda: (F.interpolate(x, scale_factor=(2,), mode="nearest"), None)))


def test_bug2_avg_pool3d_input_smaller_than_window():
    """PyTorch's avg_pool3d (only the 3-d one) needs every unpadded input size >= the
    window: "input image (T: 2 H: 4 W: 4) smaller than kernel size (kT: 3 kH: 3 kW: 3)".
    cnnc inferred [N, 1, 2, 4, 4], and cnnc.reference then failed at run time."""
    src = network([("x", (SYM, 1, 2, 4, 4))], "y = x -> avg_pool3d(3, stride=1, padding=1)")
    x = torch.randn(BATCH, 1, 2, 4, 4)
    check(Case(src, [x], lambda: (F.avg_pool3d(x, 3, 1, 1), None)))


@pytest.mark.parametrize("op", ["adaptive_avg_pool2d", "adaptive_max_pool2d",
                                "adaptive_avg_pool3d", "adaptive_max_pool3d"])
def test_bug3_adaptive_pool_bare_none(op):
    """F.adaptive_*_pool2d(x, None) raises TypeError (none is allowed only inside a tuple);
    cnnc accepted `output_size=none` and kept every dim."""
    d = int(op[-2])
    shape = (SYM, 3, 5, 7, 4)[: d + 2]
    src = network([("x", shape)], f"y = x -> {op}(none)")
    x = torch.randn(concrete(shape))
    check(Case(src, [x], lambda: (getattr(F, op)(x, None), None)))


def test_bug4_batch_norm_zero_eps_with_batch_statistics():
    """nn.BatchNorm2d(3, eps=0, track_running_stats=False) raises at every forward
    ("batch_norm eps must be positive during training"); cnnc accepted it and its reference
    raised ValueError at run time. (With tracked statistics eps=0 works in eval mode but
    raises in training: cnnc refuses eps=0 always.)"""
    src = network([("x", (SYM, 3, 5, 5))], "y = x -> batch_norm(eps=0, track_running_stats=false)")
    x = torch.randn(BATCH, 3, 5, 5)
    check(Case(src, [x], lambda: evaluated(nn.BatchNorm2d(3, eps=0, track_running_stats=False),
                                           x)))


BIG = [2**31, 2**63, 2**64]
X3 = (SYM, 3, 6, 6)


def _extreme(stmt_and_fn):
    return [pytest.param(stmt, fn, id=stmt) for stmt, fn in stmt_and_fn]


@pytest.mark.parametrize("stmt, fn", _extreme([
    *[(f"x -> conv2d(3, 2, stride={v})", lambda x, v=v: evaluated(nn.Conv2d(3, 3, 2, stride=v), x))
      for v in BIG],
    *[(f"x -> max_pool2d(2, stride={v})", lambda x, v=v: (F.max_pool2d(x, 2, v), None))
      for v in BIG],
    *[(f"x -> avg_pool2d(2, divisor_override={v})",
       lambda x, v=v: (F.avg_pool2d(x, 2, divisor_override=v), None)) for v in BIG],
    *[(f"x -> {op}({v})", lambda x, v=v, fn=fn: (fn(x, v), None))
      for op, fn in [("leaky_relu", F.leaky_relu), ("elu", F.elu)]
      for v in [3.5e38, -1e300]],
    ("x -> add(1e300)", lambda x: (x + 1e300, None)),
    ("x -> batch_norm(eps=1e300, momentum=-1e300)",
     lambda x: evaluated(nn.BatchNorm2d(3, eps=1e300, momentum=-1e300), x)),
    ("x -> upsample(1e300)", lambda x: (F.interpolate(x, scale_factor=1e300), None)),
]))
def test_bug5_extreme_argument_values(stmt, fn):
    """Ints beyond int64 (and, in pooling, beyond int32) and floats beyond float32 that
    PyTorch refuses ("Overflow when unpacking long long", "value cannot be converted to
    type float without overflow") were accepted; cnnc.reference then raised TypeError,
    ValueError or RuntimeError at run time. The values PyTorch takes must stay accepted."""
    x = torch.randn(concrete(X3))
    check(Case(network([("x", X3)], f"y = {stmt}"), [x], lambda: fn(x)))


@pytest.mark.parametrize("tup", ["(3, 3, 3)", "(2,)", "( 3 , 3 , 3 )"])
def test_bug6_tuple_argument_is_underlined_whole(tup):
    """A wrong tuple argument's caret covered only the inside: `3, 3, 3` of `(3, 3, 3)`,
    `2` of `(2,)`; the message also printed a 1-tuple as "(2)"."""
    src = network([("x", X4)], f"y = x -> max_pool2d({tup})")
    e = expect_compile_error(src, "a 2-d kernel_size cannot have 3 or 1 entries")
    assert e.location.text() == tup, str(e)
    if tup == "(2,)":
        assert "(2,)" in e.message, e.message

