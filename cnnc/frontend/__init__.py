"""The front end: .cnn text -> AST -> checked graph IR."""

from .builder import build_graph
from .loader import Program, load_program

__all__ = ["Program", "build_graph", "load_program"]
