"""The benchmark scripts run (their numbers are for the closing notes, not for tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_frontend_benchmark_runs():
    out = _run("bench/frontend.py", "--repeat", "1")
    assert "ResNet-50" in out and "500 block instances" in out


def test_forward_benchmark_runs_and_writes_json(tmp_path):
    out = _run("bench/forward.py", "--quick", "--repeat", "1", "--json",
               str(tmp_path / "r.json"))
    assert "LeNet5" in out
    data = json.loads((tmp_path / "r.json").read_text())
    (row,) = data["results"]
    assert row["network"] == "LeNet5" and row["kernels"] == 5 and row["cnnc_ms"] > 0
    assert data["meta"]["torch"] and data["meta"]["command"]


def test_host_benchmark_counts_the_plans_launches(tmp_path):
    _run("bench/host.py", "--repeat", "1", "--inner", "2", "--json", str(tmp_path / "h.json"))
    rows = {r["network"]: r for r in json.loads((tmp_path / "h.json").read_text())["rows"]}
    # every launch of the plan reached the stub, and nothing else did
    assert rows["ResNet18"]["launches"] == rows["ResNet18"]["plan_rows"] == 22
    assert rows["LeNet5"]["launches"] == rows["LeNet5"]["plan_rows"] == 5
    assert all(r["forward_us"] > r["empty_calls_us"] > 0 for r in rows.values())


def _has_revision(rev: str) -> bool:
    return subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{rev}^{{commit}}"],
                          capture_output=True).returncode == 0


def test_host_benchmark_measures_a_baseline_revision_in_the_same_run(tmp_path):
    """--baseline: the commit before the host-path work, imported from a git archive in a
    subprocess; every row gets that revision's numbers and the fraction now / then."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import host
    finally:
        sys.path.remove(str(ROOT / "bench"))
    if not _has_revision(host.ISSUE_BASELINE):
        pytest.skip("not a git checkout with the baseline commit (a wheel or shallow clone)")
    out = _run("bench/host.py", "--baseline", "--network", "ResNet18", "--repeat", "1",
               "--inner", "2", "--json", str(tmp_path / "h.json"))
    assert f"the same at {host.ISSUE_BASELINE[:12]}" in out
    data = json.loads((tmp_path / "h.json").read_text())
    assert data["meta"]["baseline"] == host.ISSUE_BASELINE
    rows = {r["network"]: r for r in data["rows"]}
    assert list(rows) == ["ResNet18"]  # --network: that one alone
    then = rows["ResNet18"]["baseline"]
    assert then["launches"] == 21  # the baseline's plan (the stem pool fused then)
    assert then["forward_us"] > then["empty_calls_us"] > 0
    assert rows["ResNet18"]["fraction_of_baseline"] == pytest.approx(
        rows["ResNet18"]["forward_us"] / then["forward_us"])


def test_host_benchmark_names_a_revision_it_cannot_measure():
    result = subprocess.run([sys.executable, "bench/host.py", "--baseline", "no-such-rev",
                             "--repeat", "1", "--inner", "1"], capture_output=True, text=True,
                            cwd=ROOT, timeout=600)
    assert result.returncode != 0
    assert "cannot measure revision no-such-rev" in result.stderr
    assert "Traceback" not in result.stderr
