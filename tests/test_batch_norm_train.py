"""Batch norm with batch statistics (training mode): outputs, running statistics and the
batch count against PyTorch's nn.BatchNorm{1,2,3}d, over ranks 2 to 5, contiguous and
channels-last inputs, momentum and affine choices, special values, a large mean, fused
epilogues, the chunked launch a GPU gets, and what the kernels cost on sm_90."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnc
from cnnc.report.inspect import inspect_network

from launch_recording import Recording, grids_into
from strategies import plant, special_values

BN = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d,
      5: torch.nn.BatchNorm3d}


def _source(shape, args: str = "", tail: str = "") -> str:
    dims = ", ".join(["N", *map(str, shape[1:])])
    other = f" input r: [{dims}]" if "(r)" in tail else ""
    return (f"network T {{ input x: [{dims}]{other} "
            f"y = x -> batch_norm({args}){tail} output y }}")


def _torch_bn(shape, momentum=0.1, affine=True, track=True, seed=0):
    """The PyTorch batch norm, with non-trivial parameters and running statistics."""
    bn = BN[len(shape)](shape[1], momentum=momentum, affine=affine, track_running_stats=track)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if affine:
            bn.weight.copy_(torch.rand(shape[1], generator=g) + 0.5)
            bn.bias.copy_(torch.randn(shape[1], generator=g))
        if track:
            bn.running_mean.copy_(torch.randn(shape[1], generator=g))
            bn.running_var.copy_(torch.rand(shape[1], generator=g) + 0.5)
            bn.num_batches_tracked.fill_(3)
    return bn.train()


def _compiled(source: str, bn: torch.nn.Module):
    net = cnnc.compile(source=source)
    net.load_state_dict({f"y.{k}": v.clone() for k, v in bn.state_dict().items()})
    return net.train()


def _check_state(net, bn, step) -> None:
    for key, expected in bn.state_dict().items():
        torch.testing.assert_close(net.state_dict()[f"y.{key}"], expected, rtol=1e-5,
                                   atol=1e-5, equal_nan=True, msg=f"{key} after {step}")


def _layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if not channels_last:
        return x
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
    return x.to(memory_format=fmt) if fmt else x.transpose(1, -1).contiguous().transpose(1, -1)


CASES = [  # (shape, channels_last, momentum, affine, track)
    ((4, 5), False, 0.1, True, True),
    ((3, 7, 9), True, None, True, True),
    ((1, 6, 5, 7), False, 0.3, False, True),      # batch 1, spatial > 1
    ((2, 6, 5, 7), True, None, True, True),
    ((2, 40, 3, 5), True, 0.1, True, True),       # more channels than one tile holds
    ((2, 3, 3, 4, 5), False, 0.1, True, False),   # no running statistics
    ((1, 4, 2, 3, 5), True, None, False, True),
]


@pytest.mark.parametrize("shape,channels_last,momentum,affine,track", CASES)
def test_matches_torch_batch_norm(shape, channels_last, momentum, affine, track):
    bn = _torch_bn(shape, momentum, affine, track)
    args = [f"momentum={'none' if momentum is None else momentum}"]
    args += [] if affine else ["affine=false"]
    args += [] if track else ["track_running_stats=false"]
    net = _compiled(_source(shape, ", ".join(args)), bn)
    g = torch.Generator().manual_seed(1)
    for step in range(2):
        x = _layout(torch.randn(shape, generator=g) * 3 + 2, channels_last)
        with torch.no_grad():
            expected = bn(x)
        torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-4)
        _check_state(net, bn, step)
    # the functional form agrees too (batch statistics, no running statistics)
    x = torch.randn(shape, generator=g)
    functional = torch.nn.functional.batch_norm(
        x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
    if not track:
        torch.testing.assert_close(net(x), functional, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tail", ["-> relu", "-> add(r) -> relu"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_epilogue(tail, channels_last):
    shape = (2, 6, 5, 7)
    bn = _torch_bn(shape)
    net = _compiled(_source(shape, tail=f" {tail}"), bn)
    g = torch.Generator().manual_seed(2)
    x = _layout(torch.randn(shape, generator=g), channels_last)
    r = torch.randn(shape, generator=g)
    with torch.no_grad():
        y = bn(x)
    expected = torch.relu(y + r) if "add" in tail else torch.relu(y)
    got = net(x, r) if "add" in tail else net(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    _check_state(net, bn, 0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_large_mean(channels_last):
    """Mean 1e4, standard deviation 1: a float32 sum of squares minus the squared sum
    loses every digit of the variance; the pivot and Welford's updates keep them."""
    shape = (8, 4, 16, 16)
    bn = _torch_bn(shape, momentum=0.5)
    net = _compiled(_source(shape, "momentum=0.5"), bn)
    x = _layout(torch.randn(shape, generator=torch.Generator().manual_seed(3)) + 1e4,
                channels_last)
    truth = copy.deepcopy(bn).double()
    with torch.no_grad():
        expected = truth(x.double())
    # PyTorch's float64 batch norm; near 1e4 one float32 ulp is 0.001. (PyTorch's own
    # float32 channels-last path is 0.005 off here, and its running variance 7e-5 off with
    # one thread, 1e-5 with two: so the running statistics are checked against float64's.)
    torch.testing.assert_close(net(x).double(), expected, rtol=0, atol=2e-3)
    var = x.double().var(dim=(0, 2, 3))
    naive = (x * x).mean(dim=(0, 2, 3)) - x.mean(dim=(0, 2, 3)) ** 2
    assert ((naive.double() - var).abs() > 0.05).any()  # the naive formula would fail here
    for key, exact in truth.state_dict().items():
        torch.testing.assert_close(net.state_dict()[f"y.{key}"].to(exact.dtype), exact,
                                   rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's inf - inf, as in PyTorch
@settings(max_examples=8, deadline=None)
@given(planted=special_values(), channels_last=st.booleans(), seed=st.integers(0, 99))
def test_special_values_propagate_as_in_torch(planted, channels_last, seed):
    shape = (2, 3, 4, 5)
    bn = _torch_bn(shape, momentum=None)
    net = _compiled(_source(shape, "momentum=none", " -> relu"), bn)
    x = plant(torch.randn(shape, generator=torch.Generator().manual_seed(seed)), planted)
    x = _layout(x, channels_last)
    with torch.no_grad():
        expected = torch.relu(bn(x))
    torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-4, equal_nan=True)
    _check_state(net, bn, 0)


def _gpu_launch_shape(monkeypatch, net):
    """Make net's kernels launch as on a GPU (chunks of rows) under the interpreter, with
    small tiles; returns its generated module."""
    module = sys.modules[type(net).__module__]
    monkeypatch.setattr(module, "INTERPRET", False)
    monkeypatch.setitem(module.CONFIGS, "batch_norm", [dict(BLOCK=64, num_warps=4,
                                                            num_stages=1)])
    monkeypatch.setattr(module, "PLANS", {})  # plans worked out with the interpreter's tiles
    return module


@pytest.mark.parametrize("channels_last", [False, True])
def test_chunked_launch_of_a_gpu(monkeypatch, channels_last):
    """The GPU launch shape (several chunks of rows per channel, merged by the apply
    kernel), run under the interpreter by pretending not to interpret and shrinking tiles."""
    shape = (4, 8, 9, 10)  # 360 rows: 22 tiles of 16 rows, 2 chunks per channel block
    bn = _torch_bn(shape, momentum=None)
    net = _compiled(_source(shape, "momentum=none", " -> relu"), bn)
    module = _gpu_launch_shape(monkeypatch, net)
    grids = []
    name = next(n for n in dir(module) if n.endswith("batch_norm_stats"))

    monkeypatch.setattr(module, name, Recording(getattr(module, name), grids_into(grids)))
    g = torch.Generator().manual_seed(4)
    for step in range(2):
        x = _layout(torch.randn(shape, generator=g) * 2 - 1, channels_last)
        with torch.no_grad():
            expected = torch.relu(bn(x))
        torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-4)
        _check_state(net, bn, step)
    assert grids and all(grid[1] > 1 for grid in grids)  # more than one chunk per channel


def test_kernels_fill_an_sm90_and_do_not_spill():
    """64 channels, bf16, batch 64: many more programs than the 64 of one per channel,
    and no kernel spills registers."""
    graph = cnnc.load(source="network T { input x: [N, 64, 56, 56] "
                             "y = x -> batch_norm -> relu output y }")
    report = inspect_network(graph, "sm_90", torch.bfloat16, batch=64, training=True)
    assert report.failures == [] and report.spilling == []
    for row in report.rows:
        programs = 1
        for size in row.launch.grid:
            programs *= size
        assert programs >= 132, (row.launch.kernel, row.launch.grid)


@pytest.mark.parametrize("chunked", [False, True])
def test_the_forward_keeps_the_statistics_it_normalised_with(monkeypatch, chunked):
    """What a training forward saves for the backward: the batch mean and 1 / sqrt(biased
    variance + eps) per channel, float32 [2, C], as one chunk or merged from several."""
    shape = (4, 8, 9, 10)
    bn = _torch_bn(shape)
    net = _compiled(_source(shape, tail=" -> relu"), bn)
    if chunked:
        _gpu_launch_shape(monkeypatch, net)
    x = _layout(torch.randn(shape, generator=torch.Generator().manual_seed(5)) * 3 + 2, True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        net(x)
    kept = [t for t in saved if t.shape == (2, 8) and t.dtype == torch.float32]
    assert len(kept) == 1, [t.shape for t in saved]
    var, mean = torch.var_mean(x.double(), dim=(0, 2, 3), unbiased=False)
    expected = torch.stack([mean, 1 / torch.sqrt(var + bn.eps)]).float()
    torch.testing.assert_close(kept[0], expected, rtol=1e-5, atol=1e-6)
