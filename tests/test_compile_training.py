"""Training-mode forward: batch statistics (not running ones), running statistics updated
as PyTorch updates them, dropout active. Gradients are the next issue's business."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import cnnc

from compile_helpers import assert_same, inputs_for, pair

ROOT = Path(__file__).resolve().parents[1]


def _train_pair(source: str, network: str | None = None):
    net, ref = pair(source=source, network=network)
    return net.train(), ref.train()


SMALL = """
block basic(x: tensor, planes: int) {
    conv1 = x -> conv2d(planes, 3, padding=1, bias=false)
    bn1 = conv1 -> batch_norm -> relu
    conv2 = bn1 -> conv2d(planes, 3, padding=1, bias=false)
    bn2 = conv2 -> batch_norm(momentum=none)
    return bn2 -> add(x) -> relu
}
network Small {
    input x: [N, 3, 12, 12]
    stem = x -> conv2d(6, 3, padding=1) -> batch_norm(eps=0.001) -> relu -> max_pool2d(2)
    body = stem -> basic(6) * 2 -> dropout(0.0)
    head = body -> adaptive_avg_pool2d(1) -> flatten -> linear(4)
    output head
}
"""


def test_training_forward_uses_batch_statistics_and_updates_running_ones():
    net, ref = _train_pair(SMALL)
    xs = inputs_for(ref, batch=3)
    for step in range(3):
        assert_same(net(*xs), ref(*xs))
        for (key, a), (_, b) in zip(net.state_dict().items(), ref.state_dict().items()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"{key} after {step}")
    assert any(p["ops"][0] == "batch_norm" for p in net.plan)
    assert_same(net.eval()(*xs), ref.eval()(*xs))


def test_training_forward_reads_channels_last_inputs():
    net, ref = _train_pair(SMALL)
    x = inputs_for(ref, batch=2)[0]
    assert_same(net(x.to(memory_format=torch.channels_last)), ref(x))
    for (key, a), (_, b) in zip(net.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.slow
def test_resnet18_training_forward_uses_batch_statistics_and_updates_running_ones(
        monkeypatch):
    text = (ROOT / "examples" / "resnet.cnn").read_text()
    text = re.sub(r"(input \w+: \[N, 3, )224, 224\]", r"\g<1>64, 64]", text)
    monkeypatch.chdir(ROOT / "examples")
    net, ref = _train_pair(text, "ResNet18")
    xs = inputs_for(ref, batch=2)
    for step in range(2):
        assert_same(net(*xs), ref(*xs))
        for (key, a), (_, b) in zip(net.state_dict().items(), ref.state_dict().items()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"{key} after {step}")
    # the training plan keeps batch norm apart from the conv: it needs the batch first
    assert any(p["ops"][0] == "batch_norm" for p in net.plan)
    # and eval afterwards uses the updated running statistics, folded again
    assert_same(net.eval()(*xs), ref.eval()(*xs))


def test_dropout_in_training_drops_and_rescales():
    source = "network T { input x: [N, 4000] y = x -> relu -> dropout(0.25) output y }"
    net = cnnc.compile(source=source).train()
    x = torch.rand(2, 4000) + 0.5
    y = net(x)
    kept = y != 0
    assert 0.2 < 1 - kept.float().mean().item() < 0.3
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    assert not torch.equal(net(x), y)  # fresh random numbers every call
    assert torch.equal(net.eval()(x), x)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_dropout_extremes(p):
    source = f"network T {{ input x: [N, 64] y = x -> dropout({p}) output y }}"
    net = cnnc.compile(source=source).train()
    x = torch.rand(3, 64) + 0.5
    expected = x if p == 0.0 else torch.zeros_like(x)
    torch.testing.assert_close(net(x), expected)
