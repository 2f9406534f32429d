"""Generated kernels against PyTorch: softmax / log_softmax, nearest upsampling, and batch
norm with batch statistics (training mode).

Each property test draws a configuration, writes a one-statement network, compiles it
with cnnc (kernels under Triton's interpreter on the CPU) and compares values with
torch.nn.functional or cnnc.reference (inputs sometimes holding NaN and infinities), and
checks the plan's kernel count.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import cnnc

from strategies import OMIT, SYM, call_text, fmt, network, optional, plant, seeds, special_values

EXAMPLES = int(os.environ.get("CNNC_CODEGEN_EXAMPLES", "25"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=True)
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


def concrete(shape, batch: int) -> tuple[int, ...]:
    return tuple(batch if d == SYM else d for d in shape)


def random_layout(x: torch.Tensor, permutation: list[int]) -> torch.Tensor:
    """The same values in memory ordered by `permutation` (strided, not contiguous)."""
    inverse = [permutation.index(d) for d in range(x.dim())]
    return x.permute(permutation).contiguous().permute(inverse)


def kernels(net) -> list[list[str]]:
    return [row["ops"] for row in net.plan]


# ---------------------------------------------------------------- softmax / log_softmax


@st.composite
def softmax_cases(draw):
    rank = draw(st.integers(1, 5))
    first = draw(st.sampled_from([SYM, SYM, 1, 2, 3]))
    sizes = draw(st.tuples(*[st.integers(1, 5)] * (rank - 1)))
    shape = (first, *sizes)
    op = draw(st.sampled_from(["softmax", "log_softmax"]))
    dims = st.integers(-rank, rank - 1)
    if rank >= 2:
        spelled, dim = draw(optional(dims, 1))
    else:
        spelled = dim = draw(dims)
    call = draw(call_text(op, [("dim", spelled)]))
    permutation = draw(st.permutations(range(rank)))
    return shape, op, dim, call, permutation


@PROPERTY
@given(softmax_cases(), st.integers(1, 3), seeds, special_values())
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's inf - inf, as in PyTorch
def test_softmax_matches_torch(case, batch, seed, planted):
    shape, op, dim, call, permutation = case
    net = cnnc.compile(source=network([("x", shape)], f"y = {call}"))
    x = torch.randn(concrete(shape, batch), generator=torch.Generator().manual_seed(seed)) * 4
    x = random_layout(plant(x, planted), list(permutation))
    expected = getattr(F, op)(x, dim=dim)
    for mode in ("eval", "train"):
        getattr(net, mode)()
        torch.testing.assert_close(net(x), expected, equal_nan=True, **TOLERANCE)
        assert kernels(net) == [[op]]


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape, dim, batch", [
    ((SYM, 4500), -1, 2),     # longer than one tile (4096 under the interpreter)
    ((2, 4200, 3), 1, 2),     # long and strided
    ((SYM, 3), 0, 4500),      # the reduced dim is the run-time batch
])
def test_softmax_longer_than_a_tile(op, shape, dim, batch):
    net = cnnc.compile(source=network([("x", shape)], f"y = x -> {op}(dim={dim})"))
    x = torch.randn(concrete(shape, batch), generator=torch.Generator().manual_seed(0)) * 6
    torch.testing.assert_close(net(x), getattr(F, op)(x, dim=dim), **TOLERANCE)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("width", [5, 4500])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the all -inf row: 0 / 0, as in PyTorch
def test_softmax_infinities(op, width):
    """-inf entries weigh nothing; a row of -inf gives nan, as in PyTorch."""
    net = cnnc.compile(source=network([("x", (SYM, width))], f"y = x -> {op}(dim=1)"))
    x = torch.randn(3, width)
    x[0, ::2] = float("-inf")
    x[1, :] = float("-inf")
    torch.testing.assert_close(net(x), getattr(F, op)(x, dim=1), equal_nan=True, **TOLERANCE)


# ---------------------------------------------------------------- upsample

FACTORS = [1, 2, 3, 0.5, 0.7, 1.2, 1.5, 1.7, 2.5, 3.3, 2.0, 1.25, 0.9, 2.2]


@st.composite
def upsample_cases(draw):
    spatial = draw(st.integers(1, 3))
    sizes = draw(st.tuples(*[st.integers(1, {1: 9, 2: 7, 3: 4}[spatial])] * spatial))
    factor = st.one_of(st.sampled_from(FACTORS), st.integers(1, 3),
                       st.floats(0.3, 3.5).map(lambda v: round(v, 2)))
    if spatial > 1 and draw(st.booleans()):
        scale = draw(st.tuples(*[factor] * spatial))
    else:
        scale = draw(factor)
    scales = scale if isinstance(scale, tuple) else (scale,) * spatial
    assume(all(math.floor(n * s) >= 1 for n, s in zip(sizes, scales)))
    spelled = OMIT if scale == 2 and draw(st.booleans()) else scale
    call = draw(call_text("upsample", [("scale_factor", spelled)]))
    channels = draw(st.integers(1, 3))
    shape = (draw(st.sampled_from([SYM, 1, 2])), channels, *sizes)
    permutation = draw(st.permutations(range(2 + spatial)))
    return shape, scale, call, permutation


@PROPERTY
@given(upsample_cases(), seeds)
def test_upsample_matches_interpolate(case, seed):
    shape, scale, call, permutation = case
    net = cnnc.compile(source=network([("x", shape)], f"y = {call}"))
    x = torch.randn(concrete(shape, 2), generator=torch.Generator().manual_seed(seed))
    x = random_layout(x, list(permutation))
    expected = F.interpolate(x, scale_factor=scale, mode="nearest")
    got = net(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=0)  # a copy: exactly equal
    assert kernels(net) == [["upsample"]]


@pytest.mark.parametrize("spatial", [1, 2, 3])
@pytest.mark.parametrize("scale", [1.5, 2.5, 1.2, 2.2, 0.7])
def test_upsample_float_factors_pick_pytorch_rows(spatial, scale):
    """Sizes where out == in or out == 2 * in with a factor other than 1 or 2: ATen's 2-d
    kernel copies or halves exactly there, its 1-d and 3-d kernels use the formula."""
    for size in range(1, 7 if spatial < 3 else 5):
        if math.floor(size * scale) < 1:
            continue
        shape = (SYM, 2) + (size,) * spatial
        net = cnnc.compile(source=network([("x", shape)], f"y = x -> upsample({fmt(scale)})"))
        x = torch.arange(float(math.prod(concrete(shape, 2)))).reshape(concrete(shape, 2))
        torch.testing.assert_close(net(x), F.interpolate(x, scale_factor=scale, mode="nearest"),
                                   rtol=0, atol=0)


# ---------------------------------------------------------------- batch norm, training

MOMENTA = st.sampled_from([OMIT, 0.1, None, None, 0.3, 0.5, 1.0, 0.0])


@st.composite
def batch_norm_cases(draw):
    rank = draw(st.integers(2, 5))
    channels = draw(st.integers(1, 4))
    sizes = draw(st.tuples(*[st.integers(1, {2: 1, 3: 6, 4: 4, 5: 3}[rank])] * (rank - 2)))
    shape = (SYM, channels, *sizes)
    momentum = draw(MOMENTA)
    eps = draw(st.sampled_from([OMIT, 1e-5, 1e-3, 0.1]))
    affine = draw(st.sampled_from([OMIT, True, False]))
    track = draw(st.sampled_from([OMIT, True, False]))
    args = [("eps", eps), ("momentum", momentum), ("affine", affine),
            ("track_running_stats", track)]
    call = draw(call_text("batch_norm", args))
    relu = draw(st.sampled_from([True, True, False]))
    tracked = draw(st.integers(0, 4))
    batch = draw(st.integers(1, 3))
    assume(batch * math.prod(sizes) > 1)
    layout = draw(st.permutations(range(rank)))
    return shape, call, relu, tracked, batch, layout, track is not False


def _random_state(ref, seed: int, tracked: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = ref.state_dict()
    for name, value in state.items():
        if name.endswith("num_batches_tracked"):
            value.fill_(tracked)
        elif name.endswith("running_var") or name.endswith("weight"):
            value.copy_(torch.rand(value.shape, generator=g) + 0.5)
        else:
            value.copy_(torch.randn(value.shape, generator=g))
    return state


@PROPERTY
@given(batch_norm_cases(), seeds, special_values())
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's inf - inf, as in PyTorch
def test_batch_norm_training_matches_torch(case, seed, planted):
    shape, call, relu, tracked, batch, layout, track = case
    statement = f"y = {call}" + (" -> relu" if relu else "")
    src = network([("x", shape)], statement)
    net, ref = cnnc.compile(source=src), cnnc.reference(source=src)
    net.load_state_dict(_random_state(ref, seed, tracked))
    net.train()
    ref.train()
    assert kernels(net) == [["batch_norm", "relu"] if relu else ["batch_norm"]]
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(2):  # the second call starts from the updated running statistics
        x = plant(torch.randn(concrete(shape, batch), generator=g) * 3 + 1, planted)
        x = random_layout(x, list(layout))
        torch.testing.assert_close(net(x), ref(x), equal_nan=True, **TOLERANCE)
        got, expected = net.state_dict(), ref.state_dict()
        assert got.keys() == expected.keys()
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], equal_nan=True, **TOLERANCE)
    if track:  # eval mode then normalises with the running statistics just updated
        net.eval()
        ref.eval()
        x = plant(torch.randn(concrete(shape, batch), generator=g), planted)
        torch.testing.assert_close(net(x), ref(x), equal_nan=True, **TOLERANCE)


def test_batch_norm_running_stats_reach_folded_weights():
    """The kernel writes running statistics in place; eval's folded conv weights must see it."""
    src = network([("x", (SYM, 3, 6, 6))],
                  "y = x -> conv2d(4, 3, padding=1) -> batch_norm(momentum=none) -> relu")
    net, ref = cnnc.compile(source=src), cnnc.reference(source=src)
    net.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(0)
    for mode in ("eval", "train", "train", "eval", "train", "eval"):
        getattr(net, mode)()
        getattr(ref, mode)()
        x = torch.randn(2, 3, 6, 6, generator=g) * 2 + 0.5
        torch.testing.assert_close(net(x), ref(x), **TOLERANCE)
    for name, value in ref.state_dict().items():
        torch.testing.assert_close(net.state_dict()[name], value, **TOLERANCE)
    net.train()
    assert kernels(net) == [["conv2d"], ["batch_norm", "relu"]]


@pytest.mark.parametrize("shape", [(SYM, 3), (SYM, 3, 1), (SYM, 2, 1, 1), (SYM, 2, 1, 1, 1)])
def test_batch_norm_one_value_per_channel_is_an_error(shape):
    src = network([("x", shape)], "y = x -> batch_norm -> relu")
    net, ref = cnnc.compile(source=src).train(), cnnc.reference(source=src).train()
    x = torch.randn(concrete(shape, 1))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        ref(x)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        net(x)
    assert net.state_dict()["y.num_batches_tracked"] == 0  # nothing was updated
    net(torch.randn(concrete(shape, 2)))  # two values per channel are enough


def test_batch_norm_without_running_stats_in_eval_uses_batch_statistics():
    src = network([("x", (SYM, 3, 5))],
                  "y = x -> batch_norm(affine=false, track_running_stats=false) -> relu")
    net, ref = cnnc.compile(source=src).eval(), cnnc.reference(source=src).eval()
    net.load_state_dict(_random_state(ref, 0, 0))
    x = torch.randn(2, 3, 5)
    torch.testing.assert_close(net(x), ref(x), **TOLERANCE)
    assert kernels(net) == [["batch_norm", "relu"]]
