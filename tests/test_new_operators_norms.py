"""Property tests of layer_norm, group_norm and prelu against nn.LayerNorm, nn.GroupNorm
and nn.PReLU: shapes, PyTorch's errors, parameter names and initial values (exactly
PyTorch's), and values given the PyTorch layer's state_dict, on inputs holding NaN and ±Inf.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from new_op_harness import check_values, with_specials
from shape_harness import PROFILE
from torch import nn

import cnnc
from cnnc.ops import OPS, TensorInfo

from strategies import (
    SYM,
    Case,
    batch_dim,
    call_text,
    network,
    numbers,
    optional,
    seeds,
    shapes,
    tensors,
)

EPS_VALUES = st.sampled_from([1e-5, 1e-3, 0.1, 1, 0.0, -1e-3])
NEGATIVE_EPS = "eps must be at least 0 (a negative one can make the variance negative)"


def randomized(module: nn.Module) -> nn.Module:
    """Parameters other than the initial ones, so the values test their use."""
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-2, 2)
    return module.eval()


def module_case(draw, shape, call: str, make, stricter=None) -> Case:
    (x,) = tensors([shape], draw(seeds))
    x = draw(with_specials(x))

    def torch_fn():
        m = randomized(make())
        return m(x), m

    case = Case(network([("x", shape)], f"y = {call}"), [x], torch_fn, stricter)
    case.info["make"] = make
    return case


# ================================================================ layer_norm


@st.composite
def layer_norm_cases(draw):
    shape = draw(shapes(2, 4, hi=4, dim0=batch_dim()))
    k = draw(st.integers(1, len(shape) - 1)) if draw(st.integers(0, 7)) else len(shape)
    normalized = tuple(2 if d == SYM else d for d in shape[-k:])  # SYM: the batch of 2
    if draw(st.integers(0, 4)) == 0:  # a wrong size
        i = draw(st.integers(0, k - 1))
        normalized = (*normalized[:i], normalized[i] + 1, *normalized[i + 1:])
    spelled = normalized[0] if k == 1 and draw(st.booleans()) else normalized
    eps_s, eps = draw(optional(EPS_VALUES, 1e-5))
    affine_s, affine = draw(optional(st.booleans(), True))
    call = draw(call_text("layer_norm", [("normalized_shape", spelled), ("eps", eps_s),
                                         ("elementwise_affine", affine_s)]))
    stricter = None
    if k == len(shape):
        stricter = "layer_norm never normalises over the batch dim"
    elif eps < 0:
        stricter = NEGATIVE_EPS
    return module_case(draw, shape, call,
                       lambda: nn.LayerNorm(normalized, eps=eps, elementwise_affine=affine),
                       stricter)


@PROFILE
@given(layer_norm_cases())
def test_layer_norm(case):
    check_values(case)


# ================================================================ group_norm


@st.composite
def group_norm_cases(draw):
    rank = draw(st.sampled_from([2, 3, 4, 5, 3, 4, 1]))
    channels = draw(st.integers(1, 8))
    shape = (draw(batch_dim()), channels, *draw(st.tuples(*[st.integers(1, 3)] * (rank - 2))))
    shape = shape[:rank]
    dividing = [g for g in range(1, 9) if channels % g == 0]
    groups = draw(st.one_of(st.sampled_from(dividing), st.integers(0, 9)))
    eps_s, eps = draw(optional(EPS_VALUES, 1e-5))
    affine_s, affine = draw(optional(st.booleans(), True))
    call = draw(call_text("group_norm", [("num_groups", groups), ("eps", eps_s),
                                         ("affine", affine_s)]))
    per_group = channels // groups * int(torch.Size(shape[2:]).numel()) if groups else 0
    stricter = None
    if rank >= 2 and groups and channels % groups == 0 and per_group == 1:
        stricter = "a group of one value normalises to 0 (PyTorch refuses it at batch 1)"
    elif eps < 0:
        stricter = NEGATIVE_EPS
    return module_case(draw, shape, call,
                       lambda: nn.GroupNorm(groups, channels, eps=eps, affine=affine),
                       stricter)


@PROFILE
@given(group_norm_cases())
def test_group_norm(case):
    check_values(case)


# ================================================================ prelu


@st.composite
def prelu_cases(draw):
    shape = draw(shapes(1, 4, hi=4, dim0=batch_dim()))
    channels = shape[1] if len(shape) > 1 else 1
    count_s, count = draw(optional(st.sampled_from([1, channels, channels + 1, 2]), 1))
    init_s, init = draw(optional(numbers(), 0.25))
    call = draw(call_text("prelu", [("num_parameters", count_s), ("init", init_s)]))
    return module_case(draw, shape, call, lambda: nn.PReLU(count, init))


@PROFILE
@given(prelu_cases())
def test_prelu(case):
    check_values(case)


# ================================================================ explain


def explain_lines(src: str) -> list[str]:
    graph = cnnc.load(source=src)
    node = graph.node(graph.outputs[0])
    infos = [TensorInfo(graph.node(i).shape, graph.node(i).label) for i in node.inputs]
    return OPS[node.op].explain(node.attrs, infos, node.shape)


@pytest.mark.parametrize("stmt, expected", [
    ("group_norm(4)", ["32 channels in 4 groups of 32/4 = 8: mean and variance over "
                       "8*14*14 = 1,568 values per group",
                       "params: weight and bias per channel: 2*32 = 64"]),
    ("layer_norm((14, 14), elementwise_affine=false)",
     ["mean and variance of each batch item over its last 2 dims: 14*14 = 196 values"]),
    ("prelu(32)", ["params: 32 slopes, one per channel for x < 0, starting at 0.25"]),
])
def test_explain_arithmetic(stmt, expected):
    src = network([("x", (SYM, 32, 14, 14))], f"y = x -> {stmt}")
    assert explain_lines(src) == expected
