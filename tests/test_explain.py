"""`cnnc summary --explain`'s lessons: receptive field and jump, parameter sharing, and
activation growth, each number checked against a hand computation or PyTorch."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest
import torch
from rich.console import Console

import cnnc
from cnnc.cli import main
from cnnc.report.lessons import Lessons
from cnnc.report.summary import human_bytes, render, summarize

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def explain(graph, batch: int = 1) -> str:
    """The --explain text, wide enough that no line is folded."""
    console = Console(file=io.StringIO(), width=400)
    render(summarize(graph, batch), True, console)
    return console.file.getvalue()


def by_hand(windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(rf, jump) after each (kernel, stride) window: rf += (k - 1) * jump; jump *= s."""
    rf, jump, out = 1, 1, []
    for k, s in windows:
        rf, jump = rf + (k - 1) * jump, jump * s
        out.append((rf, jump))
    return out


def test_resnet18_last_layer_sees_435_pixels():
    graph = cnnc.load(EXAMPLES / "resnet.cnn", "ResNet18")
    # the longest path: conv1 7/2, maxpool 3/2, then two 3x3 convs per basic block, the
    # first of layer2..4 with stride 2 (the 1x1 shortcuts are shorter paths)
    path = [(7, 2), (3, 2)] + [(3, 1)] * 4 + ([(3, 2)] + [(3, 1)] * 3) * 3
    assert by_hand(path)[-1] == (435, 32)
    lessons = Lessons(graph, 1)
    layer4 = next(layer for layer in graph.layers if layer.name == "layer4")
    assert lessons.fields[layer4.output].rf == (435, 435)
    assert lessons.fields[layer4.output].jump == (32, 32)
    text = explain(graph)
    assert "rf = 371 + (3 - 1) * 1 * 32 = 435 px, jump = 32 * 1 = 32 px" in text
    assert "layer4 -> [1, 512, 7, 7]: receptive field 435 px, jump 32 px" in text
    # where a residual joins, the longer path wins and the lesson says so
    assert "paths meet; the largest is taken: rf = max(27, 11) = 27 px" in text
    assert ("receptive field of the last spatial value (layer4, relu): 435 px, jump 32 px "
            "(where paths of different reach meet, the largest is taken)") in text
    assert "global pooling: each output sees the whole 7x7 input" in text
    # every layer's value, by hand along the longest path
    expected = {"conv1": by_hand(path)[0], "maxpool": by_hand(path)[1],
                "layer1": by_hand(path)[5], "layer2": by_hand(path)[9],
                "layer3": by_hand(path)[13], "layer4": by_hand(path)[17]}
    for name, (rf, jump) in expected.items():
        assert f"{name} -> " in text and f"receptive field {rf} px, jump {jump} px" in text
        layer = next(layer for layer in graph.layers if layer.name == name)
        assert lessons.fields[layer.output].rf == (rf, rf)


def test_alexnet_conv1_sees_11_pixels_with_stride_4():
    text = explain(cnnc.load(EXAMPLES / "alexnet.cnn"))
    assert "rf = 1 + (11 - 1) * 1 * 1 = 11 px, jump = 1 * 4 = 4 px" in text
    assert "rf = 11 + (3 - 1) * 1 * 4 = 19 px, jump = 4 * 2 = 8 px" in text  # the 3/2 pool


def test_lenet5_by_hand():
    # c1 5x5/1 (padding does not matter), s2 2/2, c3 5x5/1, s4 2/2
    assert by_hand([(5, 1), (2, 2), (5, 1), (2, 2)]) == [(5, 1), (6, 2), (14, 2), (16, 4)]
    text = explain(cnnc.load(EXAMPLES / "lenet5.cnn"))
    for line in ["c1 -> [1, 6, 28, 28]: receptive field 5 px, jump 1 px",
                 "s2 -> [1, 6, 14, 14]: receptive field 6 px, jump 2 px",
                 "c3 -> [1, 16, 10, 10]: receptive field 14 px, jump 2 px",
                 "s4 -> [1, 16, 5, 5]: receptive field 16 px, jump 4 px",
                 "rf = 6 + (5 - 1) * 1 * 2 = 14 px, jump = 2 * 1 = 2 px"]:
        assert line in text
    assert "f5 -> [1, 120]: receptive" not in text  # past flatten there is no image


def test_a_1x1_conv_does_not_grow_the_field_and_dilation_does():
    text = explain(cnnc.load(source="""
network D {
    input x: [N, 2, 32, 32]
    a = x -> conv2d(4, 3, stride=2)
    b = a -> conv2d(4, 1)
    c = b -> conv2d(4, 3, dilation=2)
    d = c -> avg_pool2d((3, 1), stride=(1, 1))
    output d
}
"""))
    assert "rf = 3 + (1 - 1) * 1 * 2 = 3 px, jump = 2 * 1 = 2 px (a 1x1 conv does not grow" in text
    assert "rf = 3 + (3 - 1) * 2 * 2 = 11 px, jump = 2 * 1 = 2 px" in text
    assert ("H: rf = 11 + (3 - 1) * 1 * 2 = 15 px, jump = 2 * 1 = 2 px; "
            "W: rf = 11 + (1 - 1) * 1 * 2 = 11 px, jump = 2 * 1 = 2 px") in text
    assert "d -> [1, 4, 9, 11]: receptive field 15x11 px, jump 2 px" in text


def test_parameter_sharing_against_a_fully_connected_layer():
    text = explain(cnnc.load(EXAMPLES / "lecture.cnn", "ConvLayer"))
    dense = sum(p.numel() for p in torch.nn.Linear(32 * 32 * 3, 32 * 32 * 10,
                                                    device="meta").parameters())
    conv = sum(p.numel() for p in torch.nn.Conv2d(3, 10, 5, padding=2,
                                                  device="meta").parameters())
    assert (dense, conv) == (31_467_520, 760)
    assert (f"from the same input (32x32x3 = 3,072 values) to the same output (32x32x10 = "
            f"10,240 values) needs 3,072*10,240 + 10,240 = {dense:,} parameters; this conv's "
            f"{conv} are shared by all 1,024 output positions ({dense / conv:,.0f}x fewer)"
            ) in text


def test_activation_growth_and_what_a_pool_or_1x1_conv_saves():
    text = explain(cnnc.load(EXAMPLES / "lenet5.cnn"), batch=4)
    before = torch.empty(4, 6, 28, 28).nbytes
    after = torch.empty(4, 6, 14, 14).nbytes
    assert (f"activation memory at batch 4: [4, 6, 28, 28] in = {human_bytes(before)}, "
            f"[4, 6, 14, 14] out = {human_bytes(after)}: the pool saves "
            f"{human_bytes(before - after)} (4.0x less)") in text
    c1 = 2 * torch.empty(4, 6, 28, 28).nbytes  # conv and relu each write one
    assert (f"c1 -> [4, 6, 28, 28]: receptive field 5 px, jump 1 px; activations at batch 4: "
            f"{human_bytes(c1)} written by its 2 ops (before fusion), "
            f"{human_bytes(c1 // 2)} in its output") in text
    # ResNet-50's bottleneck widens with a 1x1 conv: it costs memory instead
    text = explain(cnnc.load(EXAMPLES / "resnet.cnn", "ResNet50"), batch=2)
    small, wide = torch.empty(2, 64, 56, 56).nbytes, torch.empty(2, 256, 56, 56).nbytes
    assert (f"[2, 64, 56, 56] in = {human_bytes(small)}, [2, 256, 56, 56] out = "
            f"{human_bytes(wide)}: the 1x1 conv costs {human_bytes(wide - small)} more "
            "(4.0x)") in text


def test_user_names_are_not_read_as_markup():
    graph = cnnc.load(EXAMPLES / "lenet5.cnn").copy()
    name = "[red]c1[/red] [link=x]"
    graph.layers = [dataclasses.replace(layer, name=name) if layer.name == "c1" else layer
                    for layer in graph.layers]
    for node in graph.nodes():
        if node.layer == "c1":
            node.layer = name
    text = explain(graph)
    assert f"{name} -> [1, 6, 28, 28]: receptive field 5 px" in text


def test_the_cli_prints_the_lessons(capsys):
    assert main(["summary", str(EXAMPLES / "alexnet.cnn"), "--explain"]) == 0
    out = capsys.readouterr().out
    assert "receptive field" in out and "parameter sharing" in out
    assert "activations at batch 1" in out


@pytest.mark.parametrize("path, network", [("temporal.cnn", None), ("volume.cnn", None),
                                           ("inception.cnn", "MiniInception"),
                                           ("mobilenet_v2.cnn", None)])
def test_every_rank_and_branching_example_explains(path, network):
    graph = cnnc.load(EXAMPLES / path, network)
    lessons = Lessons(graph, 2)
    spatial = [n for n in graph.nodes() if n.id in lessons.fields]
    assert spatial and all(len(lessons.fields[n.id].rf) == len(n.shape) - 2 for n in spatial)
    assert "receptive field of the last spatial value" in explain(graph, 2)
