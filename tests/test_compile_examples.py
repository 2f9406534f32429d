"""Every example network compiles, and in eval mode its outputs match the reference
backend (torch.nn.functional) within 1e-4 relative, under Triton's interpreter on the CPU.

The ImageNet-sized classics run at a reduced input size (a test-only edit of their
`input` line) so that the interpreter finishes quickly; their structure is unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import cnnc
from cnnc.frontend import load_program

from compile_helpers import assert_same, inputs_for, pair
from test_examples_more import needs_kernels_mark

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.cnn"))
REDUCED = {"AlexNet": 64, "VGG16": 32, "ResNet18": 32, "ResNet50": 32, "MobileNetV2": 32,
           "EfficientNetB0": 32, "MobileNetV3Small": 32, "DenseNet121": 32,
           "ShuffleNetV2_x0_5": 32, "ShuffleNetV2_x1_0": 32, "UNet": 16, "UNetTransposed": 16}
# DenseNet121 compiles to ~240 kernels; test_examples_more.py runs it compiled (batch 1)
SLOW = ("VGG16", "ResNet50", "AlexNet", "DenseNet121")


def reduced_source(path: Path, network: str) -> str:
    text = path.read_text()
    size = REDUCED.get(network)
    if size is None:
        return text
    return re.sub(r"(input \w+: \[N, 3, )\d+, \d+\]", rf"\g<1>{size}, {size}]", text)


def _cases():
    for path in EXAMPLES:
        for net in load_program(path).networks:
            marks = [pytest.mark.slow] if net.name in SLOW else []
            marks += needs_kernels_mark(net.name)
            yield pytest.param(path, net.name, marks=marks, id=f"{path.stem}:{net.name}")


@pytest.mark.parametrize("path,network", list(_cases()))
def test_example_matches_reference_in_eval(path, network, monkeypatch):
    source = reduced_source(path, network)
    monkeypatch.chdir(path.parent)  # imports are relative to the file
    net, ref = pair(source=source, network=network)
    xs = inputs_for(ref, batch=2)
    assert_same(net(*xs), ref(*xs))


def test_lenet5_launches_at_most_5_kernels():
    net = cnnc.compile(ROOT / "examples" / "lenet5.cnn").eval()
    assert len(net.plan) <= 5
    assert [p["ops"] for p in net.plan][0] == ["conv2d", "relu", "max_pool2d"]


def test_resnet18_eval_launches_at_most_22_kernels():
    net = cnnc.compile(ROOT / "examples" / "resnet.cnn", "ResNet18").eval()
    plan = net.plan
    assert len(plan) <= 22
    ops = [p["ops"] for p in plan]
    # the stem: conv + folded batch norm + relu; its 3x3 stride-2 max pool overlaps, so
    # fusing it would compute the stem 2.25 times: a pool kernel of its own
    assert ops[0] == ["conv2d", "batch_norm", "relu"] and ops[1] == ["max_pool2d"]
    # every conv carries its batch norm; residual adds sit in epilogues
    assert sum(o.count("conv2d") for o in ops) == 20
    assert all(o.count("batch_norm") == o.count("conv2d") for o in ops if "conv2d" in o)
    assert sum("add" in o for o in ops) == 8
    # global average pool + flatten + fc as one kernel
    assert ops[-1] == ["adaptive_avg_pool2d", "flatten", "linear"]
