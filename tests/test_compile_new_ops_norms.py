"""Compiled layer_norm, group_norm and prelu against torch.nn.functional, on inputs with
NaN and ±Inf, in eval and training mode; and what fuses with them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compile_helpers import assert_same, pair
from strategies import BATCH, dims_text, plant, seeds, special_values

SETTINGS = settings(max_examples=6, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
ACTIVATIONS = {"relu": F.relu, "silu": F.silu, "sigmoid": torch.sigmoid,
               "identity": lambda t: t}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))


def randomized(net, ref) -> dict[str, torch.Tensor]:
    """Weights other than the initial ones (slopes, gammas and betas of both signs)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.rand(p.shape, generator=g) * 4 - 2)
    net.load_state_dict(ref.state_dict())
    return ref.state_dict()


def layer(p: dict, index: int) -> str:
    """The parameter prefix of the chain's index-th layer with parameters: `y.<i>`, or
    `y` alone where it is the only one (LANGUAGE.md's naming)."""
    counted = sorted({k.split(".")[1] for k in p if k.count(".") == 2})
    return f"y.{counted[index]}" if counted else "y"


def check_modes(src: str, x: torch.Tensor, expected_fn) -> list[list[str]]:
    """Compiled == reference == expected_fn(state) in eval and training mode; the eval plan."""
    net, ref = pair(src)
    p = randomized(net, ref)
    expected = expected_fn(p)
    for mode in ("train", "eval"):
        getattr(net, mode)()
        getattr(ref, mode)()
        with torch.no_grad():
            got = net(x)
            assert_same(got, ref(x))
            assert_same(got, expected)
    return [row["ops"] for row in net.plan]


@st.composite
def layer_norm_cases(draw):
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    k = draw(st.integers(1, len(shape)))
    eps = draw(st.sampled_from([1e-5, 0.1, 1.0]))
    affine = draw(st.booleans())
    act = draw(st.sampled_from(sorted(ACTIVATIONS)))
    return shape, k, eps, affine, act, draw(seeds), draw(special_values())


@given(layer_norm_cases())
@SETTINGS
def test_layer_norm_with_its_epilogue(case):
    shape, k, eps, affine, act, seed, special = case
    normalized = tuple(shape[-k:])
    call = f"layer_norm({normalized}, eps={eps}, elementwise_affine={str(affine).lower()})"
    src = (f"network n {{\n input x: {dims_text(['N', *shape])}\n"
           f" y = x -> {call} -> {act}\n output y\n}}")
    x = plant(torch.randn((BATCH, *shape), generator=torch.Generator().manual_seed(seed)),
              special)

    def expected(p):
        y = F.layer_norm(x, normalized, p.get("y.weight"), p.get("y.bias"), eps)
        return ACTIVATIONS[act](y)

    ops = check_modes(src, x, expected)
    assert ops == [["layer_norm"] + ([act] if act != "identity" else [])], ops


@st.composite
def group_norm_cases(draw):
    groups = draw(st.integers(1, 3))
    c = groups * draw(st.integers(1, 3))
    spatial = draw(st.lists(st.integers(1, 3), min_size=0, max_size=3))
    if c // groups * math.prod(spatial) == 1:
        spatial = [*spatial, 2]  # a group of one value is refused
    eps = draw(st.sampled_from([1e-5, 0.1]))
    affine = draw(st.booleans())
    act = draw(st.sampled_from(sorted(ACTIVATIONS)))
    return groups, c, spatial, eps, affine, act, draw(seeds), draw(special_values())


@given(group_norm_cases())
@SETTINGS
def test_group_norm_after_a_conv_with_its_epilogue(case):
    """Channels-last in 4-d and 5-d when a conv makes its input; the activation fused."""
    groups, c, spatial, eps, affine, act, seed, special = case
    shape = (c, *spatial)
    conv = f"conv{len(spatial)}d({c}, 1) -> " if 1 <= len(spatial) <= 3 else ""
    src = (f"network n {{\n input x: {dims_text(['N', *shape])}\n"
           f" y = x -> {conv}group_norm({groups}, eps={eps}, affine={str(affine).lower()})"
           f" -> {act}\n output y\n}}")
    x = plant(torch.randn((BATCH, *shape), generator=torch.Generator().manual_seed(seed)),
              special)

    def expected(p):
        t = x
        if conv:
            fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(spatial)]
            t = fn(t, p[f"{layer(p, 0)}.weight"], p[f"{layer(p, 0)}.bias"])
        w, b = (p[f"{layer(p, -1)}.weight"], p[f"{layer(p, -1)}.bias"]) if affine else (None,) * 2
        y = F.group_norm(t, groups, w, b, eps)
        return ACTIVATIONS[act](y)

    ops = check_modes(src, x, expected)
    assert ["group_norm"] + ([act] if act != "identity" else []) in ops, ops


@st.composite
def prelu_cases(draw):
    c = draw(st.integers(1, 4))
    per_channel = draw(st.booleans())
    where = draw(st.sampled_from(["conv", "linear", "pointwise", "batch_norm"]))
    return c, per_channel, where, draw(seeds), draw(special_values())


@given(prelu_cases())
@SETTINGS
def test_prelu_fuses_where_an_activation_would(case):
    c, per_channel, where, seed, special = case
    n = c if per_channel else 1
    shape = (c, 3, 2) if where != "linear" else (c,)
    before = {"conv": f"conv2d({c}, 1) -> ", "linear": f"linear({c}) -> ",
              "pointwise": "sigmoid -> ", "batch_norm": "batch_norm -> "}[where]
    src = (f"network n {{\n input x: {dims_text(['N', *shape])}\n"
           f" y = x -> {before}prelu({n}) -> tanh\n output y\n}}")
    x = plant(torch.randn((BATCH, *shape), generator=torch.Generator().manual_seed(seed)),
              special)

    def expected(p):
        if where == "conv":
            t = F.conv2d(x, p["y.0.weight"], p["y.0.bias"])
        elif where == "linear":
            t = F.linear(x, p["y.0.weight"], p["y.0.bias"])
        elif where == "pointwise":
            t = x.sigmoid()
        else:
            return None
        return F.prelu(t, p[f"{layer(p, -1)}.weight"]).tanh()

    net, ref = pair(src)
    p = randomized(net, ref)
    want = expected(p)
    for mode in ("train", "eval"):
        getattr(net, mode)()
        getattr(ref, mode)()
        with torch.no_grad():
            got = net(x)
            assert_same(got, ref(x))
            if want is not None:
                assert_same(got, want)
    first = {"conv": "conv2d", "linear": "linear", "pointwise": "sigmoid",
             "batch_norm": "batch_norm"}[where]
    assert [row["ops"] for row in net.plan] == [[first, "prelu", "tanh"]]


def test_prelu_slopes_are_read_at_every_launch():
    """The slope is a live parameter: changing it changes the next result."""
    src = "network n {\n input x: [N, 3, 2, 2]\n y = x -> prelu(3)\n output y\n}"
    net, ref = pair(src)
    x = -torch.rand(BATCH, 3, 2, 2) - 0.1
    with torch.no_grad():
        net.state_dict()["y.weight"].copy_(torch.tensor([0.5, -1.0, 2.0]))
        assert_same(net(x), F.prelu(x, torch.tensor([0.5, -1.0, 2.0])))
