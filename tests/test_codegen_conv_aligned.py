"""Convolutions over a few input channels in 16 bits (an RGB stem): a pixel of 3 bfloat16
channels is 6 bytes, which no aligned 4-byte piece covers, so the launcher reads copies of
the input and the weight padded with zero channels to 4 (helpers.aligned_channels) and
the kernel's loads become asynchronous copies on a GPU (tests/test_gpu_ready.py). Here:
the values are PyTorch's in every dtype, layout and mode, and the padding happens exactly
where a pixel is not whole 4-byte words."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from compile_helpers import assert_close_to_scale, inputs_for, pair

# a: the stem (7x7 over 3 channels, several dot steps), b: a one-step reduction (2x2 taps
# of 4 slots), c: one channel (a multiply-accumulate, nothing to pad), d: 3 channels in
# each of 2 groups (each group padded to 4).
SOURCE = """network T {
    input x: [N, 3, 10, 9]
    input g: [N, 1, 6, 7]
    input s: [N, 6, 5, 6]
    a = x -> conv2d(8, 7, stride=2, padding=3, bias=false) -> batch_norm -> relu
    b = x -> conv2d(4, 2)
    c = g -> conv2d(4, 3, padding=1) -> relu
    d = s -> conv2d(4, 3, padding=1, groups=2)
    output a, b, c, d
}"""
# bfloat16 against PyTorch in float32 on the same rounded values: the output's rounding
TOLERANCE = {torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 2e-2}


def _module(net):
    return sys.modules[type(net).__module__]


def _record_padding(net, monkeypatch) -> list[tuple[int, int]]:
    """(channels given, channels read) for each aligned_channels call of net's launchers."""
    module, calls = _module(net), []
    original = module.aligned_channels

    def recording(t, groups, slots):
        padded = original(t, groups, slots)
        calls.append((t.shape[1], padded.shape[1]))
        return padded

    monkeypatch.setattr(module, "aligned_channels", recording)
    return calls


def _pad_reference(t: torch.Tensor, groups: int, slots: int) -> torch.Tensor:
    grouped = t.unflatten(1, (groups, t.shape[1] // groups))
    pads = [0, 0] * (t.dim() - 2) + [0, slots - grouped.shape[2]]
    return F.pad(grouped, pads).flatten(1, 2)


@pytest.mark.parametrize("shape,groups", [((2, 3, 5, 4), 1), ((2, 6, 3, 4), 2),
                                          ((2, 3, 7), 1), ((1, 5, 2, 3, 4), 1)])
def test_aligned_channels_pads_16_bit_pixels_channels_last(shape, groups):
    net, _ = pair(source=SOURCE)
    aligned_channels = _module(net).aligned_channels
    x = torch.randn(shape)
    slots = 1 << (shape[1] // groups - 1).bit_length()
    for layout in (x, x.movedim(1, -1).contiguous().movedim(-1, 1)):  # NCHW, channels-last
        half = layout.to(torch.bfloat16)
        padded = aligned_channels(half, groups, slots)
        assert torch.equal(padded, _pad_reference(half, groups, slots))
        assert padded.stride()[1] == 1  # channels-last: each pixel's channels one run
        assert padded.data_ptr() % 16 == 0 and all(
            s * 2 % 8 == 0 for i, s in enumerate(padded.stride()) if i != 1)
        single = layout.to(torch.float32)  # 4-byte channels: read as they are
        assert aligned_channels(single, groups, slots) is single
    whole = torch.randn(2, 4, 3, 3, dtype=torch.bfloat16)  # 8-byte pixels already
    assert aligned_channels(whole, 1, 4) is whole


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_few_channel_convs_match_pytorch_in_eval(dtype, channels_last, monkeypatch):
    net, ref = pair(source=SOURCE)
    net = net.to(dtype)
    calls = _record_padding(net, monkeypatch)
    ref.load_state_dict({k: v.float() for k, v in net.state_dict().items()})
    xs = [x.to(dtype) for x in inputs_for(ref)]
    if channels_last:
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
    for got, expected, name in zip(net(*xs), ref(*[x.float() for x in xs]), "abcd"):
        assert got.dtype == dtype
        assert_close_to_scale(got, expected, name, TOLERANCE[dtype])
    # a, b: x and the weight padded 3 -> 4 in 16 bits; d: s, each group 3 -> 4, and its
    # weight; c, one channel, calls nothing. In float32 nothing is padded.
    padded = [(3, 4), (3, 4), (3, 4), (3, 4), (6, 8), (3, 4)]
    assert calls == (padded if dtype == torch.bfloat16 else [(c, c) for c, _ in padded])


@pytest.mark.parametrize("dtype,channels_last", [(torch.float32, False),
                                                  (torch.bfloat16, True)])
def test_few_channel_convs_train_as_pytorch(dtype, channels_last, monkeypatch):
    """Training mode (batch statistics): outputs and the gradients of the inputs and of
    every parameter, as autograd gives them in float32."""
    net, ref = pair(source=SOURCE)
    net, ref = net.to(dtype).train(), ref.train()
    calls = _record_padding(net, monkeypatch)
    ref.load_state_dict({k: v.float() for k, v in net.state_dict().items()})
    xs = [x.to(dtype) for x in inputs_for(ref, batch=3)]
    if channels_last:
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
    ours = [x.clone().requires_grad_() for x in xs]
    theirs = [x.float().requires_grad_() for x in xs]
    got, expected = net(*ours), ref(*theirs)
    weights = torch.randn(4, generator=torch.Generator().manual_seed(1))
    sum(w * y.float().square().mean() for w, y in zip(weights, got)).backward()
    sum(w * y.square().mean() for w, y in zip(weights, expected)).backward()
    tolerance = TOLERANCE[dtype] * (1 if dtype == torch.float32 else 2)
    for a, b, name in zip(got, expected, "abcd"):
        assert_close_to_scale(a, b, name, tolerance)
    for a, b, name in zip(ours, theirs, "xgs"):
        assert_close_to_scale(a.grad, b.grad, f"d{name}", tolerance)
    for (name, p), q in zip(net.named_parameters(), ref.parameters()):
        assert_close_to_scale(p.grad, q.grad, f"d{name}", tolerance)
    assert ((3, 4) in calls) == (dtype == torch.bfloat16)  # the recording forward pads too


def test_padded_reads_at_gpu_tiles(monkeypatch):
    """The launchers' GPU branch with small tiles in float16 (the interpreter's float16 dot
    is exact, its bfloat16 one is not): the stem's reduction takes several steps, the last
    of them past the final tap, over the padded, unmasked channel slots."""
    net, ref = pair(source=SOURCE)
    net = net.to(torch.float16)
    module = _module(net)
    monkeypatch.setattr(module, "INTERPRET", False)
    monkeypatch.setattr(module, "PLANS", {})
    for family in ("conv", "depthwise"):
        monkeypatch.setitem(module.CONFIGS, family, [dict(
            BLOCK_M=32, BLOCK_N=16, K_BYTES=64, SPLIT_K=1, num_warps=4, num_stages=3)])
    calls = _record_padding(net, monkeypatch)
    ref.load_state_dict({k: v.float() for k, v in net.state_dict().items()})
    xs = [x.half() for x in inputs_for(ref, batch=3)]
    for got, expected, name in zip(net(*xs), ref(*[x.float() for x in xs]), "abcd"):
        assert_close_to_scale(got, expected, name, TOLERANCE[torch.float16])
    assert (3, 4) in calls and (6, 8) in calls
