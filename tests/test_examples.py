"""Every example network loads, and the classic ones have their published sizes.

The published parameter counts come from torchvision's documentation (LeNet-5 from
LANGUAGE.md); they are compared with what `cnnc summary` reports.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import cnnc
from cnnc.cli import main
from cnnc.frontend import load_program
from cnnc.report.summary import summarize

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.cnn"))

PUBLISHED = [
    ("lenet5.cnn", "LeNet5", 61_706),
    ("alexnet.cnn", "AlexNet", 61_100_840),
    ("vgg16.cnn", "VGG16", 138_357_544),
    ("resnet.cnn", "ResNet18", 11_689_512),
    ("resnet.cnn", "ResNet50", 25_557_032),
    ("mobilenet_v2.cnn", "MobileNetV2", 3_504_872),
]


def _networks():
    for path in EXAMPLES:
        for net in load_program(path).networks:
            yield pytest.param(path, net.name, id=f"{path.name}:{net.name}")


@pytest.mark.parametrize("path,network", list(_networks()))
def test_example_checks_and_runs_in_reference(path, network):
    graph = cnnc.load(path, network)
    assert graph.outputs
    if sum(cnnc.ir.shapes.numel(n.shape, 1) for n in graph.nodes()) > 5_000_000:
        return  # the ImageNet-sized nets run in test_torchvision_twins
    model = cnnc.reference(path, network).eval()
    inputs = [torch.randn(cnnc.ir.shapes.concrete(n.shape, 2)) for n in graph.input_nodes()]
    with torch.no_grad():
        out = model(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    assert [tuple(o.shape) for o in outs] == graph.output_shapes(batch=2)
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize("file,network,count", PUBLISHED, ids=[p[1] for p in PUBLISHED])
def test_summary_totals_equal_published_counts(file, network, count, capsys):
    graph = cnnc.load(ROOT / "examples" / file, network)
    assert summarize(graph).params == count
    assert main(["summary", str(ROOT / "examples" / file), "--network", network]) == 0
    printed = capsys.readouterr().out
    assert re.search(rf"total params: {count:,}\b", printed), printed[-400:]


def test_lenet_parameter_names_follow_language_md():
    names = [name for name, _, _ in cnnc.load(ROOT / "examples/lenet5.cnn").parameters()]
    assert names == ["c1.weight", "c1.bias", "c3.weight", "c3.bias", "f5.weight", "f5.bias",
                     "f6.weight", "f6.bias", "logits.weight", "logits.bias"]
