"""The example networks' kernels are ready for a GPU, checked without one: compiled for
sm_90 and sm_80 (cnnc.report.inspect), every kernel compiles, none spills registers, and
every kernel with a tl.dot runs it on tensor cores with operands loaded by asynchronous
copies (Triton's software pipeline: "pipelined all").

One exemption, derived from the network rather than listed: a 16-bit conv whose filters
hold an odd number of values (a 3-channel stem: 3 x 7 x 7) has no operand that can be
read in aligned 4-byte pieces, the smallest asynchronous copy, so its loads are
synchronous; padding the channels would take a copy of the input and of the weight."""

from __future__ import annotations

import math

import pytest
import torch

import cnnc
from cnnc.passes import plan as make_plan
from cnnc.report.inspect import inspect_network

CASES = [("examples/resnet.cnn", "ResNet18", "sm_90"),
         ("examples/resnet.cnn", "ResNet18", "sm_80"),
         ("examples/mobilenet_v2.cnn", "MobileNetV2", "sm_90")]


def _unaligned_convs(graph, dtype: torch.dtype) -> set[str]:
    """Kernels whose conv operands cannot be read in aligned 4-byte pieces."""
    if dtype.itemsize >= 4:
        return set()
    plan = make_plan(graph, training=False)
    names = set()
    for kernel in plan.kernels:
        node = plan.graph.node(kernel.anchor)
        if kernel.kind != "conv":
            continue
        c_in = plan.graph.node(node.inputs[0]).shape[1] // node.attrs.groups
        if c_in > 1 and (c_in * math.prod(node.attrs.kernel_size)) % 2:
            names.add(f"k{kernel.index}_{node.op}")
    return names


@pytest.mark.parametrize("path,network,target", CASES,
                         ids=[f"{n}-{t}" for _, n, t in CASES])
def test_kernels_compile_without_spills_pipelined_on_tensor_cores(path, network, target):
    graph = cnnc.load(path, network)
    report = inspect_network(graph, target, torch.bfloat16, batch=64)
    assert report.failures == []
    assert [r.launch.kernel for r in report.spilling] == []
    assert [r.launch.kernel for r in report.dots_off_tensor_cores] == []
    exempt = _unaligned_convs(graph, torch.bfloat16)
    assert len(exempt) <= 1  # the stem
    assert [r.launch.kernel for r in report.dots_not_pipelined
            if r.launch.kernel not in exempt] == []
    dots = [r for r in report.rows if r.launch.has_dot]
    assert len(dots) >= 20
