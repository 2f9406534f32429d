"""Compiled reshape, permute, transpose, chunk, split and channel_shuffle against PyTorch:
values (with NaN and ±Inf) and launch counts. The view-like ops launch nothing; a
ShuffleNetV2 unit's split, shuffle and concat cost no kernel of their own."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compile_helpers import assert_same, pair
from strategies import BATCH, dims_text, plant, seeds, special_values

SETTINGS = settings(max_examples=6, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))


def run_both(src: str, xs: list[torch.Tensor]):
    net, ref = pair(src)
    with torch.no_grad():
        got, expected = net(*xs), ref(*xs)
    return net, got, expected


def launches(net) -> list[str]:
    return [row["kernel"] for row in net.plan]


# ---------------------------------------------------------------- differential


@st.composite
def view_cases(draw):
    """A conv (so the input of the view is a channels-last kernel output), one view-like
    op, and a pointwise consumer reading the view through its strides."""
    c = draw(st.integers(2, 6))
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    op = draw(st.sampled_from(["permute", "transpose", "reshape", "chunk", "split",
                               "channel_shuffle"]))
    if op == "permute":
        rest = draw(st.permutations([1, 2, 3]))
        call, fn = f"permute((0, {rest[0]}, {rest[1]}, {rest[2]}))", \
            lambda t: t.permute(0, *rest)
    elif op == "transpose":
        a, b = draw(st.sampled_from([(1, 2), (2, 3), (-1, 1), (3, -2)]))
        call, fn = f"transpose({a}, {b})", lambda t: t.transpose(a, b)
    elif op == "reshape":
        call, fn = f"reshape((-1, {w}, {h * c}))", lambda t: t.reshape(-1, w, h * c)
    elif op == "chunk":
        chunks, index = draw(st.integers(2, 4)), draw(st.integers(0, 3))
        count = len(torch.empty(c).chunk(chunks))
        index = min(index, count - 1)
        names = ", ".join(f"r{i}" for i in range(count))
        call, fn = f"chunk({chunks})", (lambda t: t.chunk(chunks, 1)[index])
        return c, h, w, call, fn, names, f"r{index}", draw(seeds), draw(special_values())
    elif op == "split":
        size = draw(st.integers(1, c - 1))
        count = len(torch.empty(c).split(size))
        index = min(draw(st.integers(0, 3)), count - 1)
        names = ", ".join(f"r{i}" for i in range(count))
        call, fn = f"split({size})", (lambda t: t.split(size, 1)[index])
        return c, h, w, call, fn, names, f"r{index}", draw(seeds), draw(special_values())
    else:
        groups = draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0]))
        call, fn = f"channel_shuffle({groups})", lambda t: F.channel_shuffle(t, groups)
    return c, h, w, call, fn, "v", "v", draw(seeds), draw(special_values())


@given(view_cases())
@SETTINGS
def test_view_ops_compute_as_pytorch(case):
    c, h, w, call, fn, names, used, seed, special = case
    src = (f"network n {{\n input x: {dims_text(['N', c, h, w])}\n"
           f" a = x -> conv2d({c}, 1)\n {names} = a -> {call}\n"
           f" y = {used} -> sigmoid\n output y\n}}")
    x = plant(torch.randn((BATCH, c, h, w), generator=torch.Generator().manual_seed(seed)),
              special)
    net, got, expected = run_both(src, [x])
    with torch.no_grad():
        a = F.conv2d(x, net.state_dict()["a.weight"], net.state_dict()["a.bias"])
    assert_same(got, expected)
    assert_same(got, fn(a).sigmoid())  # PyTorch's own view op on PyTorch's conv
    ops = [row["ops"] for row in net.plan]
    if "channel_shuffle" in call:  # a copy kernel, the sigmoid in its epilogue
        assert ops == [["conv2d"], ["channel_shuffle", "sigmoid"]], ops
    else:  # the view launched nothing
        assert ops == [["conv2d"], ["sigmoid"]], ops


@given(seeds, special_values())
@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_channel_shuffle_alone_is_one_kernel_with_its_epilogue(seed, special):
    src = ("network n {\n input x: [N, 6, 3, 2]\n y = x -> channel_shuffle(3) -> relu\n"
           " output y\n}")
    x = plant(torch.randn((BATCH, 6, 3, 2), generator=torch.Generator().manual_seed(seed)),
              special)
    net, got, expected = run_both(src, [x])
    assert_same(got, F.channel_shuffle(x, 3).relu())
    assert_same(got, expected)
    assert [r["ops"] for r in net.plan] == [["channel_shuffle", "relu"]]


# ---------------------------------------------------------------- ShuffleNetV2


SHUFFLE_UNITS = """
network shuffle {
    input x: [N, 8, 6, 6]
    # stride-2 unit: both branches are kernels
    b1 = x -> conv2d(8, 3, stride=2, padding=1, groups=8) -> batch_norm
              -> conv2d(8, 1) -> batch_norm -> relu
    b2 = x -> conv2d(8, 1) -> batch_norm -> relu
              -> conv2d(8, 3, stride=2, padding=1, groups=8) -> batch_norm
              -> conv2d(8, 1) -> batch_norm -> relu
    s = concat(b1, b2) -> channel_shuffle(2)
    # stride-1 unit: the first half passes through
    h1, h2 = s -> chunk(2)
    c2 = h2 -> conv2d(8, 1) -> batch_norm -> relu
              -> conv2d(8, 3, padding=1, groups=8) -> batch_norm
              -> conv2d(8, 1) -> batch_norm -> relu
    y = concat(h1, c2) -> channel_shuffle(2)
    output y
}
"""


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_shufflenet_units_cost_no_copy_for_split_and_shuffle(mode):
    net, ref = pair(SHUFFLE_UNITS)
    getattr(net, mode)()
    getattr(ref, mode)()
    x = torch.randn(BATCH, 8, 6, 6)
    x[0, 1, 2, 3] = float("nan")
    with torch.no_grad():
        assert_same(net(x), ref(x))
    ops = [op for row in net.plan for op in row["ops"]]
    kinds = launches(net)
    # no kernel for chunk or channel_shuffle; the concats' kernels write in place
    assert "channel_shuffle" not in ops and "chunk" not in ops, net.plan
    # the one copy: the stride-1 unit's pass-through half into the shuffled output
    assert kinds.count("copy_into") == 1, kinds
    convs = 8  # b1: 2, b2: 3, c2: 3; batch norms fold in eval, run after each in training
    assert len(kinds) == (convs if mode == "eval" else 2 * convs) + 1, kinds


def test_a_shuffled_concat_matches_torchvision_channel_order():
    """The strided slices put each piece where F.channel_shuffle puts it, groups of 3 and
    pieces of unequal size inside the groups."""
    src = """
network n {
    input x: [N, 4, 3, 3]
    a = x -> conv2d(2, 1)
    b = x -> conv2d(2, 1)
    c = x -> conv2d(4, 1)
    d = x -> conv2d(1, 1)
    e = x -> conv2d(3, 1)
    y = concat(a, b, c, d, e) -> channel_shuffle(3)
    output y
}
"""
    net, ref = pair(src)
    x = torch.randn(BATCH, 4, 3, 3)
    with torch.no_grad():
        assert_same(net(x), ref(x))
    assert "copy_into" not in launches(net)
    assert not any("channel_shuffle" in r["ops"] for r in net.plan)


def test_a_piece_across_two_groups_keeps_the_shuffle_kernel():
    src = """
network n {
    input x: [N, 4, 3, 3]
    a = x -> conv2d(3, 1)
    b = x -> conv2d(3, 1)
    y = concat(a, b) -> channel_shuffle(3)
    output y
}
"""
    net, ref = pair(src)
    x = torch.randn(BATCH, 4, 3, 3)
    with torch.no_grad():
        assert_same(net(x), ref(x))
    assert [r["ops"] for r in net.plan][-1] == ["channel_shuffle"]


def test_split_results_feed_kernels_without_copies_in_training_mode_too():
    src = """
network n {
    input x: [N, 6, 4, 4]
    k = x -> conv2d(6, 1)
    a, b, c = k -> split((1, 2, 3))
    cc = c -> conv2d(2, 1)
    bt = b -> transpose(2, 3)
    y = concat(cc, a, bt) -> relu
    output y
}
"""
    net, ref = pair(src)
    x = torch.randn(BATCH, 6, 4, 4)
    for mode in ("eval", "train"):
        getattr(net, mode)()
        getattr(ref, mode)()
        with torch.no_grad():
            assert_same(net(x), ref(x))
    assert not any(op in ("split", "transpose") for r in net.plan for op in r["ops"])


@pytest.mark.parametrize("view, copies", [
    ("permute((0, 2, 3, 1))", False),  # channels-last memory in NHWC order: a view
    ("transpose(2, 3)", True),
    ("chunk(2)", True),  # half the channels of each pixel: not one stride
])
def test_a_reshape_of_a_strided_view_copies_only_where_torch_must(view, copies):
    """Where the strided view cannot be reshaped in place, one Triton copy (listed in the
    plan) makes it contiguous; otherwise the reshape stays free."""
    bind = "v, w" if view.startswith("chunk") else "v"
    src = f"""
network n {{
    input x: [N, 3, 4, 5]
    a = x -> conv2d(4, 1)
    {bind} = a -> {view}
    y = v -> reshape((-1, 8)) -> relu
    output y
}}
"""
    net, got, expected = run_both(src, [torch.randn(BATCH, 3, 4, 5)])
    assert_same(got, expected)
    kinds = launches(net)
    assert kinds.count("copy_into") == int(copies), kinds
    assert len(kinds) == 2 + int(copies), kinds


def test_a_value_twice_in_a_shuffled_concat_lands_in_both_places():
    src = """
network n {
    input x: [N, 3, 2, 2]
    a = x -> conv2d(2, 1)
    y = concat(a, a) -> channel_shuffle(2)
    output y
}
"""
    net, got, expected = run_both(src, [torch.randn(BATCH, 3, 2, 2)])
    assert_same(got, expected)
    assert launches(net).count("copy_into") == 1, launches(net)


def test_a_kernel_output_twice_in_a_concat_is_copied_into_the_second_slice():
    """A sibling defect: the producer writes the first slice in place; the second one used
    to be left unwritten (an uninitialised slice of the output)."""
    src = """
network n {
    input x: [N, 3, 2, 2]
    a = x -> conv2d(2, 1)
    y = concat(a, a)
    output y
}
"""
    net, got, expected = run_both(src, [torch.randn(BATCH, 3, 2, 2)])
    assert_same(got, expected)
    assert launches(net) == ["k0_conv2d", "copy_into"]
