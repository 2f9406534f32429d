"""Memory layouts around the convolutions: channels-last activations and weights inside a
compiled module, inputs in any layout, parameters replaced by other layouts, outputs in a
documented format, and the kernels' loops at GPU tile sizes (several reduction steps,
partial channel blocks) run under the interpreter."""

from __future__ import annotations

import sys

import pytest
import torch

import cnnc

from compile_helpers import assert_same, inputs_for, pair

CHANNEL_BLOCKS = """network T {
    input x: [N, 20, 7, 6]
    y = x -> conv2d(24, 3, stride=2, padding=1, padding_mode="reflect") -> batch_norm -> relu
    z = y -> conv2d(24, (1, 3), padding="same", dilation=2, groups=2) -> add(y)
    output z
}"""

TAP_BLOCKS = """network T {
    input x: [N, 3, 9, 8]
    y = x -> conv2d(8, 3, stride=2, padding=2, padding_mode="circular") -> relu
    output y
}"""

DEPTHWISE = """network T {
    input x: [N, 6, 7, 6]
    y = x -> conv2d(12, 3, padding=1, groups=6, padding_mode="replicate") -> relu6
    output y
}"""

POOLED = """network T {
    input x: [N, 12, 8, 8]
    y = x -> conv2d(16, 3, padding=1) -> relu -> max_pool2d(2)
    output y
}"""

VOLUME = """network T {
    input x: [N, 10, 4, 5, 3]
    y = x -> conv3d(12, 3, padding=1) -> relu
    output y
}"""

TRANSPOSED = """network T {
    input x: [N, 18, 4, 5]
    y = x -> conv_transpose2d(8, 3, stride=2, padding=1, output_padding=1) -> relu
    output y
}"""

CLASSIFIERS = """network T {
    input x: [N, 16, 5, 5]
    f = x -> conv2d(40, 3, padding=1) -> relu
    g = f -> adaptive_avg_pool2d(1) -> flatten -> linear(20)
    h = f -> adaptive_avg_pool2d(5) -> flatten -> linear(7)
    output g, h
}"""

# Reductions of one dot step: on a GPU a program loops over tiles of rows instead.
ONE_STEP = """network T {
    input x: [N, 16, 5, 7]
    input s: [N, 3, 5, 7]
    y = x -> conv2d(24, 1, bias=false) -> batch_norm -> relu6
    z = s -> conv2d(3, 1) -> add(s)
    output y, z
}"""

SOURCES = {"channel_blocks": CHANNEL_BLOCKS, "one_step": ONE_STEP, "tap_blocks": TAP_BLOCKS,
           "depthwise": DEPTHWISE, "pooled": POOLED, "volume": VOLUME,
           "transposed": TRANSPOSED, "classifiers": CLASSIFIERS}

# Small tiles, as on a GPU: reduction loops of several steps, the last channel block
# partial, several programs per dim. (BLOCK_M, BLOCK_N caps, bytes of BLOCK_K, warps, stages)
SMALL_TILES = {"conv": (32, 16, 64, 4, 3), "conv_pool": (16, 16, 64, 4, 3),
               "depthwise": (16, 8, 0, 4, 1)}


def generated_module(net):
    return sys.modules[type(net).__module__]


def _layouts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same values as contiguous, channels-last and a strided view of a larger tensor."""
    last = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
    bigger = torch.zeros(*x.shape[:-1], 2 * x.shape[-1])
    bigger[..., ::2] = x
    views = {"contiguous": x.contiguous(), "strided": bigger[..., ::2]}
    if last is not None:
        views["channels_last"] = x.contiguous(memory_format=last)
    return views


@pytest.mark.parametrize("name", list(SOURCES))
def test_inputs_in_any_layout(name):
    net, ref = pair(source=SOURCES[name])
    xs = inputs_for(ref)
    expected = ref(*xs)
    for layout, x in _layouts(xs[0]).items():
        assert_same(net(x, *xs[1:]), expected), layout


@pytest.mark.parametrize("name", list(SOURCES))
def test_gpu_sized_tiles_and_launch_choices(name, monkeypatch):
    """The launchers' GPU branch (INTERPRET false) with small tiles: multi-step reductions
    whose last channel block is partial, and a single-step reduction split in two."""
    net, ref = pair(source=SOURCES[name])
    module = generated_module(net)
    monkeypatch.setattr(module, "INTERPRET", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # the interpreter's dot
    monkeypatch.setattr(module, "PLANS", {})  # plans worked out with the interpreter's tiles
    for family, (m, n, k_bytes, warps, stages) in SMALL_TILES.items():
        monkeypatch.setitem(module.CONFIGS, family, [dict(
            BLOCK_M=m, BLOCK_N=n, K_BYTES=k_bytes, SPLIT_K=1, num_warps=warps,
            num_stages=stages)])
    monkeypatch.setitem(module.CONFIGS, "gemm", [dict(
        BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=2, SPLIT_K=1, num_warps=4, num_stages=3)])
    xs = inputs_for(ref, batch=3)
    assert_same(net(*xs), ref(*xs))


def test_gpu_tiles_give_every_reduction_two_steps(monkeypatch):
    net = cnnc.compile(source=TAP_BLOCKS)
    module = generated_module(net)
    x = torch.empty(1, dtype=torch.bfloat16)
    assert module.gemm_tiles("conv", 4096, 64, 64, x, 9)[2] == 64
    monkeypatch.setattr(module, "INTERPRET", False)
    assert module.gemm_tiles("conv", 4096, 64, 64, x, 9)[2] == 64  # nine taps: nine steps
    # A 1x1 conv over 64 channels: two steps of 32, so loads overlap the first dot.
    assert module.gemm_tiles("conv", 4096, 64, 64, x, 1)[2] == 32
    assert module.gemm_tiles("conv", 4096, 64, 16, x, 1)[2] == 16  # the smallest dot


def test_weights_are_channels_last_and_other_layouts_still_compute_right():
    net, ref = pair(source=CHANNEL_BLOCKS)
    weights = {k: v for k, v in net.state_dict().items() if v.dim() == 4}
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last)
                           for w in weights.values())
    volume = cnnc.compile(source=VOLUME)
    assert volume.get_parameter("y.weight").is_contiguous(memory_format=torch.channels_last_3d)
    xs = inputs_for(ref)
    first, second = net.get_parameter("y.0.weight"), net.get_parameter("z.weight")
    # Weights replaced by other layouts: kernels read them through their strides.
    first.data = first.data.contiguous()
    second.data = second.data.permute(3, 2, 1, 0).contiguous().permute(3, 2, 1, 0)
    assert not first.is_contiguous(memory_format=torch.channels_last)
    assert_same(net(*xs), ref(*xs))
    # An in-place change through .data is seen at the next forward.
    first.data.mul_(2)
    ref.get_parameter("y.0.weight").data.mul_(2)
    assert_same(net(*xs), ref(*xs))


def test_load_state_dict_keeps_channels_last():
    net, ref = pair(source=POOLED)
    net.load_state_dict({k: v.contiguous() for k, v in ref.state_dict().items()})
    assert net.get_parameter("y.weight").is_contiguous(memory_format=torch.channels_last)


def test_outputs_come_back_channels_last_and_flattened_values_contiguous():
    net, ref = pair(source=CHANNEL_BLOCKS)
    (x,) = inputs_for(ref)
    assert net(x).is_contiguous(memory_format=torch.channels_last)
    volume, _ = pair(source=VOLUME)
    y = volume(torch.randn(2, 10, 4, 5, 3))
    assert y.is_contiguous(memory_format=torch.channels_last_3d)
    classifiers, ref = pair(source=CLASSIFIERS)
    (x,) = inputs_for(ref)
    for out in classifiers(x):
        assert out.dim() == 2 and out.is_contiguous()
    text = open(classifiers.source_path).read()
    # f feeds a global pool (channel rows: channels-last) and a 5x5 -> 5x5 pool that is
    # only a flatten (rows of memory: contiguous), so f is contiguous; flatten's input too.
    forward = text[text.index("def _forward_eval"):]
    allocation = next(line for line in forward.splitlines() if "torch.empty(" in line)
    assert "memory_format" not in allocation
    flat = """network T { input x: [N, 4, 6, 6]
        y = x -> conv2d(4, 3) -> relu -> flatten
        output y }"""
    text = open(cnnc.compile(source=flat).source_path).read()
    forward = text[text.index("def _forward_eval"):text.index("def _forward_train")]
    assert "memory_format" not in forward and ".reshape(" in forward


def test_kernels_read_strides_as_constants():
    """Strides are tl.constexpr: Triton then knows the channel loads are contiguous and
    aligned, which is what lets it turn them into asynchronous copies."""
    net = cnnc.compile(source=CHANNEL_BLOCKS)
    text = open(net.source_path).read()
    kernel = text[text.index("def k0_conv2d("):text.index("def launch_k0_conv2d")]
    for name in ("XS1", "WS1", "OS1"):
        assert f"{name}: tl.constexpr" in kernel
    # taps outside, channels inside: the loads are rows of channels, index math is 1-D
    assert "a = tl.load(x_ptr + x_tap[:, None] + c[None, :] * XS1" in kernel
    assert "b = tl.load(w_ptr + w_tap[None, :] + c[:, None] * WS1" in kernel
