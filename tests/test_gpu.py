"""The same checks with compiled Triton on a CUDA GPU (skipped without one), plus the
low-precision dtypes that the CPU interpreter cannot emulate faithfully."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import cnnc
from cnnc.frontend import load_program

from compile_helpers import randomize_buffers
from test_examples_more import needs_kernels_mark

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.cnn"))
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}


def _cases():
    for path in EXAMPLES:
        for net in load_program(path).networks:
            yield pytest.param(path, net.name, marks=needs_kernels_mark(net.name),
                               id=f"{path.stem}:{net.name}")


def _relative_error(got, expected) -> float:
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    return max(float((a.float() - b.float()).abs().max()) / max(float(b.float().abs().max()),
                                                                1e-3)
               for a, b in zip(got, expected))


@pytest.fixture(autouse=True)
def _ieee_float32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16],
                         ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("path,network", list(_cases()))
@torch.no_grad()
def test_example_on_gpu_matches_float32_reference(path, network, dtype):
    ref = cnnc.reference(path, network).cuda().eval()
    randomize_buffers(ref)
    net = cnnc.compile(path, network, dtype=dtype, device="cuda").eval()
    net.load_state_dict(ref.state_dict())
    graph = ref.graph
    xs = [torch.randn(cnnc.ir.shapes.concrete(n.shape, 2), device="cuda")
          for n in graph.input_nodes()]
    error = _relative_error(net(*(x.to(dtype) for x in xs)), ref(*xs))
    assert error < TOLERANCE[dtype], error


@torch.no_grad()
def test_tf32_only_when_allowed():
    path = ROOT / "examples" / "resnet.cnn"
    ref = cnnc.reference(path, "ResNet18").cuda().eval()
    net = cnnc.compile(path, "ResNet18", device="cuda").eval()
    net.load_state_dict(ref.state_dict())
    x = torch.randn(4, 3, 224, 224, device="cuda")
    expected = ref(x)
    strict = _relative_error(net(x), expected)
    torch.backends.cuda.matmul.allow_tf32 = True
    relaxed = _relative_error(net(x), expected)
    assert strict < 1e-4 and relaxed < 1e-2


def test_launch_counts_and_training_forward_on_gpu():
    path = ROOT / "examples" / "resnet.cnn"
    net = cnnc.compile(path, "ResNet18", device="cuda")
    assert len(net.eval().plan) <= 22
    ref = cnnc.reference(path, "ResNet18").cuda()
    net.load_state_dict(ref.state_dict())
    x = torch.randn(8, 3, 224, 224, device="cuda")
    with torch.no_grad():
        assert _relative_error(net.train()(x), ref.train()(x)) < 1e-3
    for (key, a), (_, b) in zip(net.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=key)


@torch.no_grad()
def test_large_batch_int64_offsets():
    # [N, 64, 128, 128] with N = 2048 is 2^31 elements: offsets must not wrap.
    source = """network T { input x: [N, 64, 128, 128]
        y = x -> conv2d(64, 1, bias=false) -> relu
        output y }"""
    if torch.cuda.get_device_properties(0).total_memory < 40 * 2**30:
        pytest.skip("needs 40 GiB of GPU memory")
    net = cnnc.compile(source=source, device="cuda", dtype=torch.float16).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(1 / 64)
    x = torch.ones(2048, 64, 128, 128, device="cuda", dtype=torch.float16)
    y = net(x)
    assert float(y[-1, -1, -1, -1]) == pytest.approx(1.0, rel=1e-2)
    assert float(y[0, 0, 0, 0]) == pytest.approx(1.0, rel=1e-2)
