"""bench/forward.py divides by the peak of the precision actually used, and sets both
TF32 flags (convs follow cudnn's, linears matmul's) and prints them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def forward():
    spec = importlib.util.spec_from_file_location("bench_forward", ROOT / "bench" / "forward.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    yield module
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_peak_follows_the_precision(forward):
    h200 = "NVIDIA H200"
    forward.set_tf32(True)
    assert forward.peak(h200, torch.float32) == forward.PEAKS["H200"]["tf32"]
    assert forward.peak(h200, torch.bfloat16) == forward.PEAKS["H200"]["bf16"]
    assert forward.peak("NVIDIA A100-SXM4-80GB", torch.float16) == 312.0
    forward.set_tf32(False)
    assert forward.peak(h200, torch.float32) == forward.PEAKS["H200"]["fp32"]
    assert forward.peak(h200, torch.bfloat16) == forward.PEAKS["H200"]["bf16"]
    assert forward.peak("some other GPU", torch.float32) is None


def test_set_tf32_sets_both_flags(forward):
    forward.set_tf32(False)
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    forward.set_tf32(True)
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    assert forward.precision(torch.float32) == "tf32"
    assert forward.precision(torch.float32, cuda=False) == "fp32"  # the interpreter: IEEE


def test_the_flags_are_printed(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "forward.py"), "--quick", "--repeat", "1",
         "--no-tf32"], capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "CNNC_CACHE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert ("torch.backends.cudnn.allow_tf32=False  torch.backends.cuda.matmul.allow_tf32=False"
            in result.stdout)
