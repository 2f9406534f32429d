"""`cnnc bench`: cnnc, PyTorch eager and torch.compile timed in one run, at a tiny size
(on a CPU the kernels run in Triton's interpreter, and the command says what that means)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cnnc
from cnnc.cli import main
from cnnc.passes import plan
from cnnc.report.bench import bench
from cnnc.report.run import random_inputs
from cnnc.report.summary import summarize
from cnnc.report.training import cnnc_step_cost

ROOT = Path(__file__).resolve().parents[1]
TINY = """
network Tiny {
    input x: [N, 3, 8, 8]
    c = x -> conv2d(4, 3, padding=1) -> batch_norm -> relu -> max_pool2d(2)
    y = c -> flatten -> linear(5)
    output y
}
"""
ROW = re.compile(r"^  (cnnc \(\d+ kernels\)|PyTorch eager|torch\.compile\(eager\)) +([\d.]+)"
                 r" *([\d.e+-]+x)?$", re.M)


@pytest.mark.slow
def test_bench_times_cnnc_eager_and_torch_compile_in_one_run(tmp_path):
    source = tmp_path / "tiny.cnn"
    source.write_text(TINY)
    result = subprocess.run(
        [sys.executable, "-m", "cnnc", "bench", str(source), "--batch", "3", "--training",
         "--repeat", "2"], capture_output=True, text=True, cwd=tmp_path, timeout=900,
        env={**os.environ, "CNNC_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    graph = cnnc.load(source)
    if not torch.cuda.is_available():
        assert out.startswith("note: on a CPU, cnnc's kernels run in Triton's interpreter")
        assert "these are interpreter times and say nothing about GPU speed" in out
    assert "note: --training times one training step" in out
    assert "Tiny: batch 3, float32, training step (forward + backward)" in out
    assert "median of 2" in out and "ms per step" in out
    rows = {name.split(" (")[0]: (float(ms), ratio) for name, ms, ratio in ROW.findall(out)}
    assert set(rows) == {"cnnc", "PyTorch eager", "torch.compile(eager)"}, out
    # the kernels of one step: the differentiable forward's and the backward's
    net = cnnc.compile(source)
    kernels = cnnc_step_cost(net, random_inputs(graph, 3, "cpu", torch.float32)).kernels
    assert kernels > len(plan(graph, training=True).kernels)
    assert f"cnnc ({kernels} kernels)" in out
    cnnc_ms = rows["cnnc"][0]
    for name in ("PyTorch eager", "torch.compile(eager)"):  # speed-up: their ms / cnnc ms
        ms, ratio = rows[name]
        assert float(ratio[:-1]) == pytest.approx(ms / cnnc_ms, rel=0.01, abs=0.01)
    macs = summarize(graph, 3).macs
    # conv 3x3x3 -> 4 at 8x8, and 64 -> 5 linear, per image
    assert macs == 3 * (8 * 8 * 4 * 3 * 3 * 3 + 64 * 5)
    flops = re.search(r"cnnc: ([\d.e+-]+) GFLOP per training step \(2 FLOPs per MAC, 3x "
                      r"the forward's\) in ([\d.]+) ms = ([\d.e+-]+) TFLOP/s", out)
    assert float(flops[1]) == pytest.approx(3 * 2 * macs / 1e9, rel=1e-3)
    assert float(flops[3]) == pytest.approx(3 * 2 * macs / (float(flops[2]) / 1e3) / 1e12,
                                            rel=1e-2)
    diff = float(re.search(r"max \|cnnc - eager\| over the outputs: (\S+)", out)[1])
    assert diff < 1e-4


def test_a_failing_torch_compile_is_reported_and_cnnc_still_timed(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    net = cnnc.compile(source=TINY)
    eager = cnnc.reference(source=TINY)

    def broken(module, **kwargs):
        def call(*xs):
            raise RuntimeError("no C++ compiler found\nmore detail")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    result = bench(cnnc.load(source=TINY), net, eager, 2, torch.float32, "cpu", False, 1)
    cnnc_t, eager_t, compiled = result.timings
    assert cnnc_t.ms > 0 and eager_t.ms > 0 and compiled.ms is None
    assert compiled.error == "torch.compile failed: RuntimeError: no C++ compiler found"
    text = "\n".join(result.lines())
    assert "(torch.compile failed: RuntimeError: no C++ compiler found)" in text
    assert f"cnnc ({len(plan(cnnc.load(source=TINY), False).kernels)} kernels)" in text
    assert "eval-mode forward" in text and result.max_abs_diff < 1e-4


@pytest.mark.parametrize("args", [("--batch", "0"), ("--dtype", "fp64"), ("--repeat", "-1")])
def test_bench_usage_errors_exit_2(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "examples/lenet5.cnn", *args])
    assert info.value.code == 2 and "usage: cnnc bench" in capsys.readouterr().err


def test_bench_of_a_missing_file_is_a_diagnostic(capsys):
    assert main(["bench", str(ROOT / "no" / "such.cnn")]) == 1
    assert "no such file" in capsys.readouterr().err
