"""Where kernels run: compiled Triton on a CUDA GPU, Triton's interpreter on the CPU.

The interpreter must be chosen before triton is first imported, so `cnnc` sets
TRITON_INTERPRET=1 on import when no GPU is present.
"""

from __future__ import annotations

import os
import sys

import torch


class DeviceError(RuntimeError):
    pass


def select_triton_mode() -> None:
    if torch.cuda.is_available():
        return
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET", "0") != "1":
        return  # reported by require_triton when kernels are actually needed
    os.environ.setdefault("TRITON_INTERPRET", "1")


def require_triton() -> None:
    """Fail with instructions when triton cannot run here."""
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET", "0") == "1":
        return
    raise DeviceError(
        "there is no CUDA GPU and triton was imported before cnnc without "
        "TRITON_INTERPRET=1, so its kernels cannot run on the CPU; set TRITON_INTERPRET=1 in "
        "the environment before starting Python, or import cnnc before triton"
    )
