"""Passes over the graph IR, one per file; each states its contract in its docstring."""

from .fuse import fuse
from .plan import Kernel, Plan, View
from .simplify import simplify

__all__ = ["Kernel", "Plan", "View", "fuse", "simplify"]
