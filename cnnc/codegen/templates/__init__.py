"""Kernel templates, by plan kind (passes/plan.py Kernel.kind).

Each template module has `emit(ctx: EmitContext) -> EmittedKernel`; modules are imported
when first needed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

MODULES = {
    "conv": "conv",                      # implicit-GEMM conv 1/2/3-d + epilogue + fused pool
    "linear": "gemm",                    # GEMM + epilogue, optional adaptive-avg-pool prologue
    "pointwise": "pointwise",            # elementwise chains with broadcast operands
    "pool": "pool",                      # max/avg pool 1/2/3-d
    "adaptive_pool": "adaptive_pool",    # adaptive avg/max pool 1/2/3-d
    "conv_transpose": "conv_transpose",  # transposed conv 1/2/3-d + epilogue
    "softmax": "softmax",                # softmax / log_softmax along any dim
    "upsample": "upsample",              # nearest, (bi/tri)linear and bicubic upsampling
    "channel_shuffle": "shuffle",        # channel_shuffle as an index-map copy + epilogue
    "norm": "norm",                      # layer_norm / group_norm + epilogue
    "batch_norm_train": "batch_norm_train",  # batch statistics, running stats, normalise
}


class _Templates:
    def get(self, kind: str) -> Callable | None:
        module = MODULES.get(kind)
        if module is None:
            return None
        try:
            return importlib.import_module(f"{__name__}.{module}").emit
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{module}":
                return None
            raise


TEMPLATES = _Templates()
