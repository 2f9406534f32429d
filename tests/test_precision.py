"""Precision as PyTorch chooses it: float32 convolutions follow torch.backends.cudnn's TF32
flag (on by default), float32 linears torch.backends.cuda.matmul's (off by default), the
interpreter's dots stay exact float32, and bfloat16 / float16 accumulate in float32.

Without a GPU the choice is read where it is made, in the launcher's call of the kernel,
and in the PTX of kernels compiled for sm_80 / sm_90 (mma / wgmma with tf32 inputs)."""

from __future__ import annotations

import sys

import pytest
import torch

import cnnc
from cnnc.report.inspect import inspect_network

from compile_helpers import pair
from launch_recording import Recording

SOURCE = """network T {
    input x: [N, 16, 8, 8]
    a = x -> conv2d(32, 3, padding=1) -> relu
    b = a -> conv_transpose2d(16, 2, stride=2)
    y = b -> adaptive_avg_pool2d(1) -> flatten -> linear(32)
    output y
}"""
KERNELS = {"k0_conv2d": "conv", "k1_conv_transpose2d": "conv", "k2_linear": "matmul"}


@pytest.fixture
def flags():
    """Set PyTorch's two TF32 flags for a test, and put them back."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32

    def set_flags(conv: bool, matmul: bool) -> None:
        torch.backends.cudnn.allow_tf32 = conv
        torch.backends.cuda.matmul.allow_tf32 = matmul

    yield set_flags
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _chosen_precisions(net, x, monkeypatch) -> dict[str, str]:
    """Run the launchers as on a GPU and record each kernel's DOT_PRECISION argument."""
    module = sys.modules[type(net).__module__]
    monkeypatch.setattr(module, "INTERPRET", False)
    chosen = {}

    def record(name):
        return lambda grid, arguments: chosen.__setitem__(name, arguments["DOT_PRECISION"])

    for name in KERNELS:
        monkeypatch.setattr(module, name, Recording(getattr(module, name), record(name),
                                                    launch=False))
    with torch.no_grad():  # the forward-only plan (a recording forward fuses less)
        net(x)
    return chosen


@pytest.mark.parametrize("conv,matmul", [(True, False), (False, True), (False, False),
                                         (True, True)])
def test_each_kernel_follows_its_flag(conv, matmul, flags, monkeypatch):
    net = cnnc.compile(source=SOURCE).eval()
    flags(conv, matmul)
    chosen = _chosen_precisions(net, torch.randn(2, 16, 8, 8), monkeypatch)
    allowed = {"conv": conv, "matmul": matmul}
    assert chosen == {name: "tf32" if allowed[kind] else "ieee"
                      for name, kind in KERNELS.items()}


def test_pytorch_defaults_give_tf32_convs_and_ieee_linears(monkeypatch):
    """A fresh process has cudnn.allow_tf32 True and matmul.allow_tf32 False."""
    import subprocess

    code = ("import torch; from cnnc.runtime.support import allows_tf32; "
            "print(allows_tf32('conv'), allows_tf32('matmul'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "False"]


def test_the_new_precision_api_is_read_too(flags):
    flags(True, False)
    from cnnc.runtime.support import allows_tf32

    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, matmul.fp32_precision
    try:
        conv.fp32_precision = "ieee"  # now cudnn's legacy getter raises (conv != rnn)
        assert allows_tf32("conv") is False
        conv.fp32_precision = "tf32"
        assert allows_tf32("conv") is True
        matmul.fp32_precision = "tf32"
        assert allows_tf32("matmul") is True and allows_tf32("conv") is True
        matmul.fp32_precision = "ieee"
        assert allows_tf32("matmul") is False
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved


def test_interpreter_and_low_precision_dots_are_not_tf32(flags, monkeypatch):
    flags(True, True)
    net = cnnc.compile(source=SOURCE)
    module = sys.modules[type(net).__module__]
    x32, x16 = torch.empty(1), torch.empty(1, dtype=torch.bfloat16)
    assert module.conv_precision(x32) == module.dot_precision(x32) == "ieee"  # interpreter
    monkeypatch.setattr(module, "INTERPRET", False)
    assert module.conv_precision(x32) == module.dot_precision(x32) == "tf32"
    assert module.conv_precision(x16) == module.dot_precision(x16) == "ieee"


def test_bfloat16_accumulates_in_float32():
    """576 products per output: summed in bfloat16 they would be off by far more than the
    output's own rounding."""
    source = """network T { input x: [N, 64, 6, 6]
        y = x -> conv2d(32, 3, padding=1, bias=false)
        output y }"""
    net, ref = pair(source=source)
    net = net.to(torch.bfloat16)
    generator = torch.Generator().manual_seed(0)
    weight = torch.rand(32, 64, 3, 3, generator=generator).to(torch.bfloat16)
    net.load_state_dict({"y.weight": weight})
    ref.load_state_dict({"y.weight": weight.float()})
    # Positive values: the sums do not cancel, so relative errors stay meaningful.
    x = torch.rand(2, 64, 6, 6, generator=generator).to(torch.bfloat16)
    got, expected = net(x).float(), ref(x.float())
    relative = ((got - expected).abs() / expected.abs().clamp_min(1e-3)).max()
    # One bfloat16 step of the output, nothing more (the interpreter's conversion to
    # bfloat16 truncates where a GPU rounds to nearest, hence a step, not half of one).
    assert relative <= 2 ** -7


@pytest.mark.parametrize("target", ["sm_80", "sm_90"])
def test_compiled_kernels_use_tf32_tensor_cores_as_chosen(target, flags):
    graph = cnnc.load(source=SOURCE)
    flags(True, False)  # PyTorch's defaults
    report = inspect_network(graph, target, torch.float32, batch=4)
    on_tensor_cores = {r.launch.kernel: r.launch.tensor_cores for r in report.rows
                       if r.launch.has_dot}
    assert on_tensor_cores == {"k0_conv2d": True, "k1_conv_transpose2d": True,
                               "k2_linear": False}
    assert {r.precision for r in report.rows if r.launch.tensor_cores} == {"tf32"}
    if target == "sm_80":
        flags(False, True)
        report = inspect_network(graph, target, torch.float32, batch=4)
        on_tensor_cores = {r.launch.kernel: r.launch.tensor_cores for r in report.rows
                           if r.launch.has_dot}
        assert on_tensor_cores == {"k0_conv2d": False, "k1_conv_transpose2d": False,
                                   "k2_linear": True}
