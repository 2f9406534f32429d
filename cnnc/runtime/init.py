"""PyTorch's parameter initialisation by recipe; lives in runtime/support.py, shared with
generated files."""

from .support import initialize, make_parameters

__all__ = ["initialize", "make_parameters"]
