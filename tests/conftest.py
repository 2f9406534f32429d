"""Shared test setup: run from the repository root, make tests/ importable."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _worker_threads() -> int | None:
    """Under pytest-xdist, each worker's share of the cores (torch's own thread pool would
    otherwise take every core in every worker); None outside xdist."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not os.environ.get("PYTEST_XDIST_WORKER") or not workers:
        return None
    return max(1, (os.cpu_count() or 1) // int(workers))


_THREADS = _worker_threads()
if _THREADS is not None:
    import torch

    torch.set_num_threads(_THREADS)


@pytest.fixture(autouse=True, scope="session")
def _repo_root_cwd():
    """Diagnostics show paths relative to the working directory; tests expect the root."""
    old = os.getcwd()
    os.chdir(ROOT)
    yield
    os.chdir(old)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
