"""Differential tests of the conv, GEMM and pointwise kernels against torch.nn.functional
(through the reference backend), over the operators' whole option space; inputs sometimes
hold NaN and infinities, which must come out where PyTorch puts them."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import cnnc
from cnnc.errors import CompileError
from cnnc.passes import plan

from compile_helpers import assert_same, inputs_for, pair
from strategies import plant, special_values

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
SIZES = {1: ["L"], 2: ["H", "W"], 3: ["D", "H", "W"]}


def compiles(source: str) -> bool:
    try:
        cnnc.load(source=source)
    except CompileError:
        return False
    return True


def _ints(draw, dims, lo, hi):
    values = [draw(st.integers(lo, hi)) for _ in range(dims)]
    if draw(st.booleans()) or dims == 1:
        return values[0], [values[0]] * dims
    return "(" + ", ".join(map(str, values)) + ")", values


@st.composite
def conv_case(draw, per_group=st.integers(1, 3), can_be_depthwise=True, largest=(8, 5)):
    dims = draw(st.sampled_from([1, 2, 2, 3]))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c_in = groups * draw(per_group)
    depthwise = can_be_depthwise and draw(st.booleans())
    c_out = c_in if depthwise else groups * draw(st.integers(1, 3))
    sizes = [draw(st.integers(3, largest[0] if dims < 3 else largest[1]))
             for _ in range(dims)]
    k_text, k = _ints(draw, dims, 1, 3)
    s_text, s = _ints(draw, dims, 1, 2)
    d_text, d = _ints(draw, dims, 1, 2)
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    padding = draw(st.sampled_from(["int", "same", "valid"]))
    bias = draw(st.sampled_from(["true", "false"]))
    args = [str(c_out), str(k_text), f"stride={s_text}", f"dilation={d_text}",
            f"groups={c_in if depthwise else groups}", f"bias={bias}", f'padding_mode="{mode}"']
    if padding == "same":
        args[2] = "stride=1"
        args.append('padding="same"')
    elif padding == "valid":
        args.append('padding="valid"')
    else:
        p_text, _ = _ints(draw, dims, 0, 2)
        args.append(f"padding={p_text}")
    tail = draw(st.sampled_from(["", " -> relu", " -> add(x2)", " -> mul(0.5) -> tanh"]))
    shape = ", ".join(map(str, [c_in, *sizes]))
    return dims, f"""network T {{
    input x: [N, {shape}]
    x2 = x -> conv{dims}d({", ".join(args)})
    y = x -> conv{dims}d({", ".join(args)}){tail}
    output y
}}"""


@SETTINGS
@given(conv_case(), special_values())
def test_conv_matches_reference(case, planted):
    _, source = case
    assume(compiles(source))  # configurations PyTorch rejects are the front end's business
    net, ref = pair(source=source)
    xs = [plant(x, planted) for x in inputs_for(ref)]
    assert_same(net(*xs), ref(*xs))


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(conv_case(per_group=st.sampled_from([9, 16, 20]), can_be_depthwise=False,
                 largest=(6, 4)), special_values())
def test_conv_with_channel_blocks_matches_reference(case, planted):
    """9 or more channels per group: taps outside, blocks of channels inside."""
    _, source = case
    assume(compiles(source))
    net, ref = pair(source=source)
    text = open(net.source_path).read()
    assert "taps outside and channel blocks inside" in text
    xs = [plant(x, planted) for x in inputs_for(ref)]
    assert_same(net(*xs), ref(*xs))


@st.composite
def conv_pool_case(draw):
    dims = draw(st.sampled_from([1, 2, 3]))
    kind = draw(st.sampled_from(["max", "avg"]))
    size = draw(st.integers(5, 9 if dims < 3 else 6))
    k = draw(st.integers(1, 3))
    stride = draw(st.integers(k, 3))  # windows that do not overlap fuse into the conv
    pad = draw(st.integers(0, k // 2))
    ceil = draw(st.sampled_from(["true", "false"]))
    opts = [str(k), f"stride={stride}", f"padding={pad}", f"ceil_mode={ceil}"]
    if kind == "max":
        opts.append(f"dilation={draw(st.integers(1, 2))}")
    else:
        opts.append(f"count_include_pad={draw(st.sampled_from(['true', 'false']))}")
        if draw(st.booleans()):
            opts.append(f"divisor_override={draw(st.integers(1, 5))}")
    shape = ", ".join([str(size)] * dims)
    return f"""network T {{
    input x: [N, 2, {shape}]
    y = x -> conv{dims}d(3, 3, padding=1) -> relu -> {kind}_pool{dims}d({", ".join(opts)})
    output y
}}"""


@SETTINGS
@given(conv_pool_case(), special_values())
def test_conv_with_fused_pool_matches_reference(source, planted):
    assume(compiles(source))
    net, ref = pair(source=source)
    assert len(net.plan) == 1, net.plan
    xs = [plant(x, planted) for x in inputs_for(ref)]
    assert_same(net(*xs), ref(*xs))


def test_overlapping_pool_windows_are_not_fused_and_say_why():
    source = """network T {
    input x: [N, 2, 9, 9]
    y = x -> conv2d(3, 3, padding=1) -> relu -> max_pool2d(3, stride=2, padding=1)
    output y
}"""
    net, ref = pair(source=source)
    assert [row["ops"] for row in net.plan] == [["conv2d", "relu"], ["max_pool2d"]]
    xs = inputs_for(ref)
    assert_same(net(*xs), ref(*xs))
    graph = cnnc.load(source=source)
    (refusal,) = plan(graph, training=False).refusals
    assert "overlap" in refusal.reason and "2.25 times" in refusal.reason


ACTIVATIONS = ["relu", "relu6", "sigmoid", "tanh", "silu", "hardsigmoid", "hardswish",
               "leaky_relu(0.2)", "elu(0.7)", "gelu", 'gelu(approximate="tanh")', "identity"]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_each_activation_in_an_epilogue_and_alone(activation):
    source = f"""network T {{
    input x: [N, 3, 6, 6]
    a = x -> conv2d(4, 3) -> {activation}
    b = x -> {activation} -> mul(3.0)
    output a, b
}}"""
    net, ref = pair(source=source)
    x = inputs_for(ref)[0] * 4  # reach the activations' bends and tails
    assert_same(net(x), ref(x))


@st.composite
def broadcast_case(draw):
    rank = draw(st.integers(2, 4))
    shape = [draw(st.integers(1, 4)) for _ in range(rank - 1)]
    other = [d if draw(st.booleans()) else 1 for d in shape]
    other = other[draw(st.integers(0, len(other))):]
    op = draw(st.sampled_from(["add", "mul"]))
    swap = draw(st.booleans())
    first, second = ("y", "x") if swap else ("x", "y")
    other_shape = ", ".join(map(str, ["N", *other])) if len(other) == rank - 1 else \
        ", ".join(map(str, other or [1]))
    return f"""network T {{
    input x: [N, {", ".join(map(str, shape))}]
    input y: [{other_shape}]
    z = {first} -> {op}({second}) -> {op}(2) -> relu
    output z
}}"""


@SETTINGS
@given(broadcast_case(), special_values())
def test_broadcasting_add_mul_match_reference(source, planted):
    assume(compiles(source))
    net, ref = pair(source=source)
    xs = [plant(x, planted) for x in inputs_for(ref)]
    assert_same(net(*xs), ref(*xs))


@pytest.mark.parametrize("rank", [2, 3, 4])
@pytest.mark.parametrize("bias", ["true", "false"])
def test_linear_on_any_rank(rank, bias):
    dims = ", ".join(["N", *["3"] * (rank - 2), "5"])
    source = f"""network T {{
    input x: [{dims}]
    y = x -> linear(7, bias={bias}) -> relu
    output y
}}"""
    net, ref = pair(source=source)
    xs = inputs_for(ref)
    assert_same(net(*xs), ref(*xs))


def test_concat_producers_write_into_slices_and_copies_where_needed():
    source = """network T {
    input x: [N, 3, 6, 6]
    a = x -> conv2d(4, 3, padding=1) -> relu
    b = x -> conv2d(2, 1)
    c = concat(a, b, x)          # a is written in place; b (used twice) and x are copied
    d = concat(c, b, dim=1)      # c and b are copied
    output d
}"""
    net, ref = pair(source=source)
    xs = inputs_for(ref)
    assert_same(net(*xs), ref(*xs))
    assert [p["kernel"] for p in net.plan] == ["k0_conv2d", "k1_conv2d"] + ["copy_into"] * 4
    text = open(net.source_path).read()
    assert "copy_into(" in text and ".narrow(1, 0, 4)" in text
