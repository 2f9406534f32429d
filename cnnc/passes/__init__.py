"""Passes over the graph IR, one per file; each states its contract in its docstring."""

from .fold_batch_norm import fold_batch_norm
from .fuse import fuse
from .plan import Kernel, Plan, View
from .simplify import simplify

__all__ = ["Kernel", "Plan", "View", "fold_batch_norm", "fuse", "plan", "simplify"]


def plan(graph, training: bool, differentiable: bool = False) -> Plan:
    """The passes in order: simplify -> fold batch norms -> fuse into kernels.
    differentiable: the plan of a forward whose outputs carry an autograd graph."""
    simple = fold_batch_norm(simplify(graph, training), training)
    return fuse(simple, training, differentiable)
