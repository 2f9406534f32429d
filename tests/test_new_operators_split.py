"""chunk and split against torch.chunk / torch.split, calling the Op objects directly
(the front end's `a, b = x -> chunk(2)` comes separately): every result's shape, each
result node's shape and values, and an error wherever PyTorch raises.

The protocol for several results: one IR node per result, each with the same arguments
and its own `index` in the attribute record (not a user argument); `results` gives every
result's shape, `infer` the one at `index`, `reference` computes that one.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from new_op_harness import bind, with_specials
from shape_harness import PROFILE, outcome

from cnnc.errors import ShapeError
from cnnc.ir.shapes import Sym, concrete
from cnnc.ops import OPS, TensorInfo
from cnnc.ops.signature import ArgError

from strategies import BATCH, SYM, batch_dim, seeds, shapes


@st.composite
def partition(draw, size: int) -> tuple[int, ...]:
    """Positive sections adding up to size."""
    cuts = sorted(draw(st.sets(st.integers(1, size - 1), max_size=3))) if size > 1 else []
    bounds = [0, *cuts, size]
    return tuple(b - a for a, b in zip(bounds, bounds[1:]))


@st.composite
def several_result_cases(draw):
    shape = draw(shapes(2, 4, hi=6, dim0=batch_dim()))
    rank = len(shape)
    dim_given = draw(st.booleans())
    dim = draw(st.one_of(st.integers(-rank, rank - 1), st.integers(-rank - 1, rank))) \
        if dim_given else 1
    op = draw(st.sampled_from(["chunk", "split"]))
    size = shape[dim] if -rank <= dim < rank and shape[dim] != SYM else 4
    if op == "chunk":
        how = draw(st.one_of(st.integers(1, 4), st.integers(-1, 8)))
    else:
        how = draw(st.one_of(
            partition(size),
            st.integers(-1, 8),
            st.lists(st.integers(0, size), min_size=1, max_size=4).map(tuple),
        ))
    return op, shape, how, (dim if dim_given else None)


def run_torch(op, x, how, dim):
    fn = torch.chunk if op == "chunk" else torch.split
    return fn(x, how, 1 if dim is None else dim)  # cnnc's default dim: the channels


def run_cnnc(op_name, shape, how, dim):
    """(attrs, result shapes), or (the error, None)."""
    op = OPS[op_name]
    first = "chunks" if op_name == "chunk" else "split_size_or_sections"
    given_args = {first: how} if dim is None else {first: how, "dim": dim}
    info = TensorInfo(tuple(Sym("N") if d == SYM else d for d in shape), "x")
    try:
        attrs = bind(op, **given_args)
        return attrs, op.results(attrs, [info]), info
    except (ArgError, ShapeError) as e:
        return e, None, info


@PROFILE
@given(several_result_cases(), seeds, st.data())
def test_chunk_and_split(drawn, seed, data):
    op_name, shape, how, dim = drawn
    g = torch.Generator().manual_seed(seed)
    x = data.draw(with_specials(torch.randn(concrete_shape(shape), generator=g)))
    try:
        expected = run_torch(op_name, x, how, dim)
    except (RuntimeError, IndexError, TypeError):
        expected = None
    attrs, shapes_, info = run_cnnc(op_name, shape, how, dim)
    along = 1 if dim is None else dim
    on_batch = expected is not None and shape[0] == SYM and along % len(shape) == 0
    if shapes_ is None:  # PyTorch raises, or gives an empty piece, or splits the batch
        outcome("cnnc rejects")
        assert expected is None or on_batch or any(t.numel() == 0 for t in expected), (
            f"cnnc rejects {op_name}({how}, dim={dim}) of {shape}: {attrs}")
    else:
        outcome(f"cnnc accepts, {len(shapes_)} results")
        assert expected is not None, f"cnnc accepts {op_name}({how}, dim={dim}) of {shape}"
        assert not on_batch
        assert [concrete(s, BATCH) for s in shapes_] == [tuple(t.shape) for t in expected]
        op = OPS[op_name]
        for i, piece in enumerate(expected):
            node_attrs = dataclasses.replace(attrs, index=i)
            assert op.infer(node_attrs, [info]) == shapes_[i]
            got = op.reference(node_attrs, [x], {}, False)
            torch.testing.assert_close(got, piece, equal_nan=True)


def concrete_shape(shape) -> tuple[int, ...]:
    return tuple(BATCH if d == SYM else d for d in shape)


def test_chunk_can_give_fewer_results_than_asked():
    """torch.chunk(x, 4) of 6 channels gives 3 pieces of 2."""
    attrs, shapes_, _ = run_cnnc("chunk", (SYM, 6, 2), 4, None)
    assert shapes_ == [(Sym("N"), 2, 2)] * 3 == [
        (Sym("N"), *t.shape[1:]) for t in torch.chunk(torch.zeros(2, 6, 2), 4, 1)]


def test_index_is_no_user_argument():
    for name in ("chunk", "split"):
        assert "index" not in [a.name for a in OPS[name].signature]
        assert bind(OPS[name], **{OPS[name].signature[1].name: 2}).index == 0


def test_a_result_index_beyond_the_results_is_an_error():
    op = OPS["split"]
    attrs = dataclasses.replace(bind(op, split_size_or_sections=(1, 3)), index=2)
    with pytest.raises(ShapeError, match="gives 2 results"):
        op.infer(attrs, [TensorInfo((Sym("N"), 4), "x")])


@pytest.mark.parametrize("op, args, expected", [
    ("chunk", {"chunks": 3}, "ceil(10/3) = 4 per chunk: 4, 4, 2 (dim 1); this is result 0"),
    ("chunk", {"chunks": 4}, "ceil(10/4) = 3 per chunk: 3, 3, 3, 1 (dim 1); this is result 0"),
    ("split", {"split_size_or_sections": (2, 8)}, "10 = 2 + 8 (dim 1); this is result 0"),
    ("channel_shuffle", {"groups": 2},
     "10 channels as 2 groups of 5, transposed to 5 x 2: channel i goes to (i % 5)*2 + i // 5"),
])
def test_explain_arithmetic(op, args, expected):
    info = TensorInfo((Sym("N"), 10, 3), "x")
    attrs = bind(OPS[op], **args)
    out = OPS[op].infer(attrs, [info])
    assert OPS[op].explain(attrs, [info], out) == [expected]
