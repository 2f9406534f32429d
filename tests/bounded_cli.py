"""Run the command line in a child process bounded in time and memory.

For reads that once hung (a FIFO) or ran out of memory (/dev/zero, a sparse file): a
regression then fails its test instead of stalling or exhausting the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEMORY_LIMIT = 2 << 30  # bytes of address space: importing torch and cnnc takes ~0.7 GiB


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def cnnc_cli(*args: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess:
    """`python -m cnnc ARGS` run in `cwd`; subprocess.TimeoutExpired if it hangs."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "cnnc", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, env=env,
                          preexec_fn=_limit_memory if os.name == "posix" else None)
