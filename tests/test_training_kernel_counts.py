"""Issue 7's kernel counts for one training step (forward + backward) of the ResNets, at
batch 2 with their input declared 32 x 32 (the count does not depend on the size below
the GPU's partial-merge threshold): at most 80 launches for ResNet-18 and 200 for
ResNet-50, half of PyTorch eager's compute ops or fewer, and no more bytes saved for the
backward than eager saves (LeNet-5's count is in test_training.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

import cnnc
from cnnc.report.training import cnnc_step_cost, eager_step_cost

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HEAVY = pytest.mark.skipif(os.environ.get("CNNC_HEAVY_TESTS") != "1",
                           reason="minutes under the interpreter: CNNC_HEAVY_TESTS=1 runs it")


@pytest.mark.parametrize("network,most", [("ResNet18", 80),
                                          pytest.param("ResNet50", 200, marks=HEAVY)])
def test_a_resnet_step_launches_at_most_half_of_eager(network, most, monkeypatch):
    source = (EXAMPLES / "resnet.cnn").read_text()
    source = re.sub(r"(input \w+: \[N, 3, )\d+, \d+\]", r"\g<1>32, 32]", source)
    monkeypatch.chdir(EXAMPLES)
    torch.manual_seed(10)
    net = cnnc.compile(source=source, network=network).train()
    ref = cnnc.reference(source=source, network=network).train()
    ref.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 32, 32)
    mine, eager = cnnc_step_cost(net, [x]), eager_step_cost(ref, [x])
    assert mine.kernels <= most and 2 * mine.kernels <= eager.kernels, (mine, eager)
    assert mine.saved_bytes <= eager.saved_bytes, (mine, eager)
