"""Operators: importing this package registers every one of them (see registry.py)."""

from . import (  # noqa: F401  (imported for their registrations)
    activations,
    activations_extra,
    adaptive_pool,
    batch_norm,
    combine,
    conv,
    conv_transpose,
    linear,
    normalization,
    pool,
    shape_ops,
    split_ops,
    tensor_ops,
)
from .registry import OPS, Op, TensorInfo, get_op

__all__ = ["OPS", "Op", "TensorInfo", "get_op"]
