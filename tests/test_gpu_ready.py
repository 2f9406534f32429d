"""The example networks' kernels are ready for a GPU, checked without one: compiled for
sm_90 and sm_80 (cnnc.report.inspect), every kernel compiles, none spills registers, and
every kernel with a tl.dot runs it on tensor cores with operands loaded by asynchronous
copies (Triton's software pipeline: "pipelined all").

A 16-bit stem (3 channels: 6-byte pixels, no aligned 4-byte piece) is pipelined too: its
launcher reads copies of the input and weight padded to 4 channels (templates/conv.py).

A linear whose prologue averages a map (global average pool + flatten + linear) is
pipelined too: its means go through a scratch block, so its dot loop holds no inner loop
(templates/gemm.py); it is checked by name below."""

from __future__ import annotations

import math
import os

import pytest
import torch

import cnnc
from cnnc.passes import plan as make_plan
from cnnc.report.inspect import inspect_network

HEAVY = pytest.mark.skipif(os.environ.get("CNNC_HEAVY_TESTS") != "1",
                           reason="minutes of compilation: CNNC_HEAVY_TESTS=1 runs it")
# (file, network, target, dtype): bf16 at batch 64, and VGG-16 in float32 with both TF32
# flags on (its linears then take TF32 tensor cores too, as its convs do by default).
CASES = [("examples/resnet.cnn", "ResNet18", "sm_90", torch.bfloat16),
         ("examples/resnet.cnn", "ResNet18", "sm_80", torch.bfloat16),
         ("examples/mobilenet_v2.cnn", "MobileNetV2", "sm_90", torch.bfloat16),
         pytest.param("examples/resnet.cnn", "ResNet50", "sm_90", torch.bfloat16, marks=HEAVY),
         pytest.param("examples/vgg16.cnn", "VGG16", "sm_90", torch.float32, marks=HEAVY),
         pytest.param("examples/efficientnet_b0.cnn", "EfficientNetB0", "sm_90",
                      torch.bfloat16, marks=HEAVY),
         pytest.param("examples/mobilenet_v2.cnn", "MobileNetV2", "sm_80", torch.bfloat16,
                      marks=HEAVY)]


def _id(case) -> str:
    values = case.values if hasattr(case, "values") else case
    return f"{values[1]}-{values[2]}-{str(values[3]).removeprefix('torch.')}"


def _pooled_linears(graph) -> set[str]:
    """Linear kernels whose prologue averages each channel over a map (a loop)."""
    plan = make_plan(graph, training=False)
    names = set()
    for kernel in plan.kernels:
        if kernel.kind == "linear" and kernel.prologue:
            pool = plan.graph.node(kernel.prologue[0])
            if math.prod(pool.shape[2:]) == 1 < math.prod(
                    plan.graph.node(pool.inputs[0]).shape[2:]):
                names.add(f"k{kernel.index}_linear")
    return names


def _gemm_kernels(graph) -> int:
    plan = make_plan(graph, training=False)
    count = 0
    for kernel in plan.kernels:
        node = plan.graph.node(kernel.anchor)
        if kernel.kind == "linear" or (kernel.kind == "conv" and not (
                node.attrs.groups > 1
                and plan.graph.node(node.inputs[0]).shape[1] == node.attrs.groups)):
            count += 1
    return count


@pytest.mark.parametrize("path,network,target,dtype", CASES, ids=[_id(c) for c in CASES])
def test_kernels_compile_without_spills_pipelined_on_tensor_cores(path, network, target,
                                                                   dtype):
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        graph = cnnc.load(path, network)
        report = inspect_network(graph, target, dtype, batch=64)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    assert report.failures == []
    assert [r.launch.kernel for r in report.spilling] == []
    assert [r.launch.kernel for r in report.dots_off_tensor_cores] == []
    pooled = _pooled_linears(graph)
    assert [r.launch.pipelined for r in report.rows if r.launch.kernel in pooled] \
        == ["all"] * len(pooled)
    assert [r.launch.kernel for r in report.dots_not_pipelined] == []
    # every conv (but a depthwise one, a direct multiply-accumulate) and linear has a dot
    dots = [r for r in report.rows if r.launch.has_dot]
    assert len(dots) == _gemm_kernels(graph)
