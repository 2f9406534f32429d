"""bench/train.py runs a training step of LeNet-5 at toy size and reports it (its numbers
are for the closing notes, not for tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cnnc

ROOT = Path(__file__).resolve().parents[1]


def test_training_benchmark_prints_and_writes_a_row_per_network(tmp_path):
    env_cache = {"CNNC_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "bench/train.py", "--toy", "--network", "LeNet5",
                           "--repeat", "1", "--json", str(tmp_path / "t.json")],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, **env_cache})
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "interpreter times" in out
    data = json.loads((tmp_path / "t.json").read_text())
    (row,) = data["results"]
    assert row["network"] == "LeNet5" and row["batch"] == 2 and row["input"] == 28
    assert row["cnnc_ms"] > 0 and row["eager_ms"] > 0 and row["compile_ms"] is None
    # the step launches more than the training forward does, and no more than eager runs
    forward = len(cnnc.compile(ROOT / "examples" / "lenet5.cnn").train().plan)
    assert forward < row["cnnc_kernels"] <= row["eager_kernels"]
    assert 0 < row["cnnc_saved_mib"] and 0 < row["eager_saved_mib"]
    assert data["meta"]["torch"] and "bench/train.py --toy" in data["meta"]["command"]
    # the printed table has that row, with the same kernel counts
    (line,) = [line for line in out.splitlines() if line.startswith("LeNet5 ")]
    cells = line.split()
    assert cells[:5] == ["LeNet5", "2", "28", "float32", "fp32"]
    assert str(row["cnnc_kernels"]) in cells and str(row["eager_kernels"]) in cells
