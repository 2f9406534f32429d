"""A training batch norm of a conv's output reads that output once: the conv's epilogue
stores partial statistics (mean, M2 per tile of rows and channel), the batch norm's apply
kernel merges them. Outputs, gradients, running statistics and the batch count against
PyTorch's conv + nn.BatchNorm2d, forward-only and with backward, contiguous and
channels-last, split-K, a large mean, momentum none, and the GPU launch shape."""

from __future__ import annotations

import sys

import pytest
import torch

import cnnc
from cnnc.passes import plan

from compile_helpers import assert_close_to_scale
from launch_recording import Recording, grids_into

SOURCE = """network T {{
    input x: [N, {c_in}, 7, 6]
    y = x -> conv2d({c_out}, 3, padding=1{extra}) -> batch_norm({bn}) -> relu
    output y
}}"""


def _source(c_in=3, c_out=8, extra="", bn=""):
    return SOURCE.format(c_in=c_in, c_out=c_out, extra=extra, bn=bn)


def _pair(source, **kwargs):
    """The compiled network and PyTorch's conv -> batch norm -> relu with its parameters,
    non-trivial batch-norm parameters and running statistics."""
    net = cnnc.compile(source=source, **kwargs).train()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("1.weight") or name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("1.bias") or name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g))
    ref = cnnc.reference(source=source).train()
    ref.load_state_dict(net.state_dict())
    return net, ref


def _close(actual, expected, what, tol=1e-4):
    assert_close_to_scale(actual, expected, what, tol)


def _state(net, ref, step):
    mine = net.state_dict()
    for name, t in ref.state_dict().items():
        if t.is_floating_point():
            _close(mine[name], t, f"{name} after step {step}")
        else:
            assert torch.equal(mine[name], t), (name, step)


def _steps(net, ref, shape, channels_last, backward, scale=1.0, shift=0.0, steps=2):
    g = torch.Generator().manual_seed(3)
    for step in range(steps):
        x = torch.randn(shape, generator=g) * scale + shift
        if channels_last and x.dim() in (4, 5):
            x = x.to(memory_format=torch.channels_last if x.dim() == 4 else
                     torch.channels_last_3d)
        if backward:
            xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
            ya, yb = net(xa), ref(xb)
            _close(ya.detach(), yb.detach(), "output")
            weight = torch.randn(yb.shape, generator=g)
            (ya * weight).sum().backward()
            (yb * weight).sum().backward()
            _close(xa.grad, xb.grad, "input gradient")
            mine = dict(net.named_parameters())
            for name, p in ref.named_parameters():
                _close(mine[name].grad, p.grad, f"{name} gradient")
                mine[name].grad = p.grad = None
        else:
            with torch.no_grad():
                _close(net(x), ref(x), "output")
        _state(net, ref, step)


def test_the_pair_is_marked_in_training_plans_only():
    graph = cnnc.load(source=_source())
    for differentiable in (False, True):
        steps = plan(graph, training=True, differentiable=differentiable).kernels
        conv, bn = steps
        assert (conv.kind, bn.kind) == ("conv", "batch_norm_train")
        assert conv.bn_stats == bn.anchor and bn.stats_from == conv.anchor
    for differentiable in (False, True):
        kernels = plan(graph, training=False, differentiable=differentiable).kernels
        assert all(k.bn_stats is None and k.stats_from is None for k in kernels)


@pytest.mark.parametrize("source", [
    """network T { input x: [N, 3, 5, 5]
        c = x -> conv2d(4, 3)
        y = c -> batch_norm -> add(c) output y }""",
    "network T { input x: [N, 3, 5, 5] y = x -> conv2d(4, 3) -> relu -> batch_norm output y }",
])
def test_a_conv_read_by_another_op_or_with_an_epilogue_is_not_paired(source):
    result = plan(cnnc.load(source=source), training=True)
    assert all(k.bn_stats is None and k.stats_from is None for k in result.kernels)
    assert any(r.reason.startswith("statistics not from the conv's epilogue")
               for r in result.refusals)


@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_batch_norm_relu_trains_as_torch(channels_last, backward):
    net, ref = _pair(_source())
    _steps(net, ref, (3, 3, 7, 6), channels_last, backward)


SHAPES = {  # every loop of the conv template, 1-d and 3-d: (layers, input shape)
    "depthwise": ("conv2d(6, 3, padding=1, groups=6)", (2, 6, 7, 6)),
    "grouped": ("conv2d(8, 3, padding=1, groups=2, bias=false)", (2, 4, 7, 6)),
    "taps": ("conv2d(5, 3, stride=2)", (3, 3, 7, 6)),
    "one_step": ("conv2d(8, 1)", (2, 16, 7, 6)),  # a 1x1 over 16 channels: row tiles
    "conv1d": ("conv1d(6, 3, padding=1)", (3, 12, 9)),
    "conv3d": ("conv3d(4, 2)", (2, 3, 3, 4, 5)),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_every_conv_loop_gives_the_statistics(monkeypatch, name):
    """In the GPU's launch shape (several tiles of rows, row tiles of 4 where the reduction
    is one step) too."""
    layer, shape = SHAPES[name]
    dims = ", ".join(["N", *map(str, shape[1:])])
    source = f"network T {{ input x: [{dims}] y = x -> {layer} -> batch_norm -> relu output y }}"
    net, ref = _pair(source, config="conv:BLOCK_M=16")
    assert [row["ops"] for row in net.plan] == [[layer.split("(")[0]], ["batch_norm", "relu"]]
    _steps(net, ref, shape, False, False, steps=1)
    module = sys.modules[type(net).__module__]
    monkeypatch.setattr(module, "INTERPRET", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # the interpreter's dot
    monkeypatch.setattr(module, "PLANS", {})
    _steps(net, ref, shape, True, False, steps=1)


@pytest.mark.parametrize("backward", [False, True])
def test_momentum_none_and_no_affine(backward):
    net, ref = _pair(_source(bn="momentum=none, affine=false"))
    _steps(net, ref, (2, 3, 7, 6), True, backward, steps=3)


@pytest.mark.parametrize("groups", [False, True])
def test_a_large_mean_keeps_its_precision(monkeypatch, groups):
    """A conv bias of 1000 and inputs around 1000: the partials' means are merged relative
    to a pivot, and each tile's M2 is a two-pass over its values. groups: the partials are
    merged in groups first (more than CONV_PARTIALS of them)."""
    net, ref = _pair(_source(c_in=4), config="conv:BLOCK_M=16")
    if groups:
        monkeypatch.setattr(sys.modules[type(net).__module__], "CONV_PARTIALS", 2)
    with torch.no_grad():
        for m in (net, ref):
            m.state_dict()["y.0.bias"].fill_(1000.0)
    _steps(net, ref, (2, 4, 7, 6), True, False, scale=1.0, shift=30.0)


@pytest.mark.parametrize("backward", [False, True])
def test_split_k_conv_gives_its_last_programs_statistics(backward):
    """SPLIT_K programs share each tile: only the last, which applies the epilogue, stores
    the tile's partials (the others have none to store)."""
    net, ref = _pair(_source(c_in=32, c_out=16),
                     config="conv:BLOCK_M=16,BLOCK_N=16,K_BYTES=64,SPLIT_K=4")
    module = sys.modules[type(net).__module__]
    grids = []
    name = "t0_conv2d"  # the differentiable plan's gt0_conv2d has the same body: its launcher
    module_patch = pytest.MonkeyPatch()
    module_patch.setattr(module, name, Recording(getattr(module, name), grids_into(grids)))
    try:
        _steps(net, ref, (2, 32, 7, 6), True, backward)
    finally:
        module_patch.undo()
    assert grids and all(grid[2] == 4 for grid in grids)


@pytest.mark.parametrize("backward,many", [(False, False), (True, False), (False, True),
                                           (True, True)])
def test_the_gpu_launch_shape_reads_the_conv_output_once(monkeypatch, backward, many):
    """As launched on a GPU (INTERPRET false, small tiles: several tiles of rows, several
    chunks per channel): no statistics kernel reads x; the batch norm's apply kernel merges
    the conv's partials and reads x once. many: more partials than CONV_PARTIALS, merged in
    groups by a kernel that reads only them, first."""
    net, ref = _pair(_source(c_in=3, c_out=8))
    module = sys.modules[type(net).__module__]
    monkeypatch.setattr(module, "INTERPRET", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # the interpreter's dot
    monkeypatch.setattr(module, "PLANS", {})
    if many:
        monkeypatch.setattr(module, "CONV_PARTIALS", 3)  # 16 partials: 3 groups of 6
    monkeypatch.setitem(module.CONFIGS, "batch_norm", [dict(BLOCK=32, num_warps=4,
                                                            num_stages=1)])
    monkeypatch.setitem(module.CONFIGS, "conv", [dict(BLOCK_M=16, BLOCK_N=16, K_BYTES=64,
                                                      SPLIT_K=1, num_warps=4, num_stages=1)])
    assert not [n for n in vars(module) if n.endswith("batch_norm_stats")]
    launches = []
    # the forward kernels (gt<i>_... share the bodies of t<i>_...; b... are the backward's)
    for name in [n for n in vars(module) if n.startswith(("t", "gt")) and "_" in n
                 and n.split("_")[0].lstrip("gt").isdigit()
                 and hasattr(getattr(module, n), "__getitem__")]:
        monkeypatch.setattr(module, name, Recording(
            getattr(module, name), lambda grid, _, name=name: launches.append((name, grid))))
    _steps(net, ref, (6, 3, 7, 6), True, backward)  # 252 rows: 16 tiles of 16, 2 chunks
    names = [n.split("_", 1)[1] for n, _ in launches]
    merge = ["batch_norm_merge"] if many else []
    assert names == ["conv2d", *merge, "batch_norm"] * 2, launches
    if many:
        assert launches[1][1] == (1, 3)  # 8 channels in one block, 3 groups
    bn_grid = launches[2 if many else 1][1]
    assert bn_grid[1] > 1, launches  # several chunks of rows, each reading its rows once


def test_sm90_kernels_compile_without_spills_and_merge_many_partials():
    """A ResNet stage in training mode, bf16, batch 64, for sm_90: no kernel spills; the
    conv's output (3136 tiles of rows) is read by no statistics kernel, its partials are
    merged in groups first."""
    from cnnc.report.inspect import inspect_network

    graph = cnnc.load(source="""network T { input x: [N, 64, 56, 56]
        y = x -> conv2d(64, 3, padding=1, bias=false) -> batch_norm -> relu
              -> conv2d(64, 3, padding=1, bias=false) -> batch_norm -> relu output y }""")
    report = inspect_network(graph, "sm_90", torch.bfloat16, batch=64, training=True)
    assert report.failures == [] and report.spilling == []
    functions = [row.launch.function for row in report.rows]
    assert not [f for f in functions if f.endswith("_stats")], functions
    assert len([f for f in functions if f.endswith("_merge")]) == 2, functions
