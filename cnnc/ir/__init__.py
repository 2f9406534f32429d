"""The graph IR: shapes, the graph, its printer and verifier."""

from .graph import Graph, Node, ParamSpec
from .shapes import Shape, Sym, format_shape

__all__ = ["Graph", "Node", "ParamSpec", "Shape", "Sym", "format_shape"]
