"""Property tests of reshape, permute, transpose, channel_shuffle and upsample against
PyTorch (see test_shape_properties.py for the property; inputs here hold NaN and ±Inf).

Deliberately stricter than PyTorch (Case.stricter): the batch dim (dim 0) stays first and
stays a multiple of the batch for every batch size, so reshape's first entry is the batch
name or -1, and permute / transpose leave dim 0 in place.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from new_op_harness import bind, check_values, with_specials
from shape_harness import PROFILE

import cnnc
from cnnc.errors import ShapeError
from cnnc.ir.shapes import Sym, concrete
from cnnc.ops import OPS, TensorInfo
from cnnc.ops.signature import ArgError

from strategies import (
    BATCH,
    OMIT,
    SYM,
    Case,
    batch_dim,
    call_text,
    network,
    optional,
    seeds,
    shapes,
    tensors,
)


def source_case(draw, shape, call: str, torch_fn_of, stricter=None) -> Case:
    (x,) = tensors([shape], draw(seeds))
    x = draw(with_specials(x))
    return Case(network([("x", shape)], f"y = {call}"), [x], lambda: (torch_fn_of(x), None),
                stricter)


# ================================================================ reshape


@st.composite
def reshape_cases(draw):
    shape = draw(shapes(1, 4, hi=4, dim0=batch_dim()))
    per_sample = math.prod(shape[1:])
    kind = draw(st.sampled_from(["factors", "factors", "any"]))
    if kind == "factors":  # sizes that multiply to a divisor of the values per batch item
        rest, left = [], per_sample
        for _ in range(draw(st.integers(0, 3))):
            d = draw(st.sampled_from([f for f in range(1, left + 1) if left % f == 0]))
            rest.append(d)
            left //= d
    else:
        rest = draw(st.lists(st.sampled_from([1, 2, 3, 4, 6, -1, 0, -2]), max_size=3))
    first = draw(st.sampled_from([-1, -1, -1, -1, 2, 1]))
    new_shape = (first, *rest)
    call = draw(call_text("reshape", [("shape", new_shape)]))
    known = math.prod(d for d in rest if d > 0)
    stricter = None
    if first != -1:
        stricter = "reshape's first entry is the batch name or -1"
    elif shape[0] == SYM and -1 not in rest and 0 not in rest and per_sample % known:
        stricter = "the batch dim must stay a multiple of the batch for every batch size"
    return source_case(draw, shape, call, lambda x: x.reshape(new_shape), stricter)


@PROFILE
@given(reshape_cases())
def test_reshape(case):
    check_values(case)


@st.composite
def reshape_batch_first(draw):
    """reshape((N, ...)) on [N*coeff, ...], called on the Op: the front end cannot spell the
    batch name in an expression yet."""
    coeff = draw(st.sampled_from([1, 1, 1, 2]))
    rest_in = draw(st.tuples(*[st.integers(1, 4)] * draw(st.integers(0, 3))))
    per_sample = coeff * math.prod(rest_in)
    divisors = [f for f in range(1, per_sample + 1) if per_sample % f == 0]
    rest = draw(st.lists(st.sampled_from([*divisors, -1, 5]), max_size=3))
    name = draw(st.sampled_from(["N", "N", "B"]))
    return coeff, rest_in, (Sym(name), *rest)


def _cnnc_reshape(new_shape, info):
    """(attrs, shape), or the error cnnc raises (which the front end reports)."""
    op = OPS["reshape"]
    try:
        attrs = bind(op, shape=new_shape)
        return attrs, op.infer(attrs, [info])
    except (ArgError, ShapeError) as e:
        return e, None


@PROFILE
@given(reshape_batch_first(), seeds)
def test_reshape_with_the_batch_name_first(drawn, seed):
    coeff, rest_in, new_shape = drawn
    info = TensorInfo((Sym("N", coeff), *rest_in), "x")
    x = torch.randn(BATCH * coeff, *rest_in, generator=torch.Generator().manual_seed(seed))
    runtime = (BATCH, *new_shape[1:])  # the batch name is the batch size at run time
    try:
        expected = x.reshape(runtime)
    except RuntimeError:
        expected = None
    attrs, shape = _cnnc_reshape(new_shape, info)
    # Deliberately stricter: a name that is not the input's batch, and -1 after the batch
    # name where the input's dim 0 is not exactly the batch.
    deliberate = new_shape[0].name != "N" or (coeff != 1 and -1 in new_shape)
    if shape is None:
        assert expected is None or deliberate, f"cnnc rejects {new_shape} on {info}: {attrs}"
    else:
        assert expected is not None, f"cnnc accepts {new_shape} on {info}; PyTorch does not"
        assert concrete(shape, BATCH) == tuple(expected.shape)
        assert shape[0] == Sym("N")
        got = OPS["reshape"].reference(attrs, [x], {}, False)
        torch.testing.assert_close(got, expected)


def test_reshape_sizes_that_do_not_multiply_out_are_located():
    src = network([("x", (SYM, 3, 4, 4))], "y = x -> reshape((-1, 5, 4))")
    with pytest.raises(cnnc.CompileError) as caught:
        cnnc.load(source=src)
    assert "do not multiply out" in caught.value.message
    assert caught.value.location.text() == "(-1, 5, 4)"


# ================================================================ permute / transpose


@st.composite
def permute_cases(draw):
    shape = draw(shapes(1, 5, hi=3, dim0=batch_dim()))
    rank = len(shape)
    dims = list(draw(st.permutations(range(rank))))
    if draw(st.booleans()):
        dims = [0, *[d for d in dims if d != 0]]  # mostly the batch first
    dims = [d - rank if draw(st.integers(0, 3)) == 0 else d for d in dims]
    mistake = draw(st.integers(0, 9))
    if mistake == 0:
        dims = dims[:-1]
    elif mistake == 1:
        dims = [*dims, 1]
    elif mistake == 2:
        dims[-1] = dims[0]
    elif mistake == 3:
        dims[-1] = rank
    call = draw(call_text("permute", [("dims", tuple(dims))]))
    stricter = "permute keeps the batch dim first" if dims and dims[0] % rank != 0 else None
    return source_case(draw, shape, call, lambda x: x.permute(dims), stricter)


@PROFILE
@given(permute_cases())
def test_permute(case):
    check_values(case)


@st.composite
def transpose_cases(draw):
    shape = draw(shapes(1, 5, hi=3, dim0=batch_dim()))
    rank = len(shape)
    d0, d1 = draw(st.integers(-rank - 1, rank)), draw(st.integers(-rank - 1, rank))
    call = draw(call_text("transpose", [("dim0", d0), ("dim1", d1)]))
    in_range = all(-rank <= d < rank for d in (d0, d1))
    stricter = "transpose keeps the batch dim first" \
        if in_range and (d0 % rank == 0) != (d1 % rank == 0) else None
    return source_case(draw, shape, call, lambda x: x.transpose(d0, d1), stricter)


@PROFILE
@given(transpose_cases())
def test_transpose(case):
    check_values(case)


# ================================================================ channel_shuffle


@st.composite
def channel_shuffle_cases(draw):
    rank = draw(st.sampled_from([3, 4, 5, 3, 4, 2]))
    channels = draw(st.integers(1, 8))
    shape = (draw(batch_dim()), channels, *draw(st.tuples(*[st.integers(1, 3)] * (rank - 2))))
    groups = draw(st.one_of(st.sampled_from([g for g in range(1, 9) if channels % g == 0]),
                            st.integers(-1, 9)))
    call = draw(call_text("channel_shuffle", [("groups", groups)]))
    return source_case(draw, shape, call, lambda x: F.channel_shuffle(x, groups))


@PROFILE
@given(channel_shuffle_cases())
def test_channel_shuffle(case):
    check_values(case)


def test_channel_shuffle_matches_shufflenet():
    """torchvision's ShuffleNetV2 shuffles with view / transpose / view."""
    src = network([("x", (SYM, 6, 2, 2))], "y = x -> channel_shuffle(3)")
    x = torch.randn(BATCH, 6, 2, 2)
    shuffled = x.view(BATCH, 3, 2, 2, 2).transpose(1, 2).contiguous().view(BATCH, 6, 2, 2)
    torch.testing.assert_close(cnnc.reference(source=src)(x), shuffled)


# ================================================================ upsample

MODES = ["nearest", "linear", "bilinear", "bicubic", "trilinear"]


@st.composite
def upsample_cases(draw):
    rank = draw(st.sampled_from([3, 4, 5, 3, 4, 5, 2, 6]))
    hi = {2: 4, 3: 6, 4: 5, 5: 3, 6: 2}[rank]
    shape = (SYM, *draw(st.tuples(*[st.integers(1, hi)] * (rank - 1))))
    spatial = max(rank - 2, 1)
    mode_s, mode = draw(optional(st.sampled_from([*MODES, *MODES, "Bilinear"]), "nearest"))
    entry = st.integers(1, 6)
    size_s, size = draw(optional(st.one_of(
        st.none(), entry, st.tuples(*[entry] * spatial),
        st.lists(st.integers(0, 4), min_size=1, max_size=4).map(tuple),
    ), None))
    scale_value = st.one_of(st.integers(1, 3), st.sampled_from([0.5, 1.5, 2.5, 0.75, 0.3]))
    scale_s, scale = draw(optional(st.one_of(
        st.none(), scale_value, st.tuples(*[scale_value] * spatial)), None,
        spell_default=False))
    if scale_s is OMIT and size is None:
        scale = 2  # LANGUAGE.md: scale_factor defaults to 2 only when size is none
    ac_s, ac = draw(optional(st.sampled_from([None, True, False]), None))
    call = draw(call_text("upsample", [("scale_factor", scale_s), ("size", size_s),
                                       ("mode", mode_s), ("align_corners", ac_s)]))

    def fn(x):
        return F.interpolate(x, size=size, scale_factor=scale, mode=mode, align_corners=ac)

    return source_case(draw, shape, call, fn)


@PROFILE
@given(upsample_cases())
def test_upsample(case):
    check_values(case)


def test_upsample_both_size_and_scale_is_an_error_at_size():
    src = network([("x", (SYM, 2, 4, 4))], "y = x -> upsample(2, size=(8, 8))")
    with pytest.raises(cnnc.CompileError) as caught:
        cnnc.load(source=src)
    assert caught.value.location.text() == "(8, 8)"
    assert "not both" in caught.value.message


def explain_lines(src: str) -> list[str]:
    """What --explain shows for the output's operator. (The summary also plans kernels,
    which these operators lack yet, so the op is asked directly.)"""
    graph = cnnc.load(source=src)
    node = graph.node(graph.outputs[0])
    infos = [TensorInfo(graph.node(i).shape, graph.node(i).label) for i in node.inputs]
    return OPS[node.op].explain(node.attrs, infos, node.shape)


@pytest.mark.parametrize("stmt, layer, expected", [
    ("x -> upsample(2.5)", "y", ["output size = floor(input * scale_factor): floor(4*2.5) = 10, "
                                 "floor(6*2.5) = 15"]),
    ('x -> upsample(size=(5, 9), mode="bilinear", align_corners=true)', "y",
     ["size given: 4 -> 5, 6 -> 9", "bilinear (align_corners=true): "
      "src = dst * (input - 1) / (output - 1); each output mixes 4 inputs"]),
    ("x -> reshape((-1, 6))", "y", ["-1 = N*72 / (6) = N*12"]),
])
def test_explain_arithmetic(stmt, layer, expected):
    src = network([("x", (SYM, 3, 4, 6))], f"{layer} = {stmt}")
    assert explain_lines(src)[:len(expected)] == expected


def test_upsample_macs_count_the_mixed_inputs():
    """Bilinear: 4 multiply-adds per output value; [N, 3, 8, 12] holds 288 per item."""
    src = network([("x", (SYM, 3, 4, 6))], 'y = x -> upsample(mode="bilinear")')
    graph = cnnc.load(source=src)
    node = graph.node(graph.outputs[0])
    x = graph.node(node.inputs[0])
    assert OPS["upsample"].macs(node.attrs, [TensorInfo(x.shape, "x")], node.shape) == 288 * 4
