"""cnnc: a compiler for convolutional networks written in the .cnn language.

    import cnnc
    graph = cnnc.load("examples/lenet5.cnn")        # checked graph IR (shapes, names)
    model = cnnc.reference("examples/lenet5.cnn")   # an nn.Module on torch.nn.functional
"""

from __future__ import annotations

import torch

from .compiler import load
from .errors import CompileError, Location
from .ir.graph import Graph
from .ir.printer import print_graph
from .runtime.inputs import InputError
from .runtime.reference import ReferenceModule

__version__ = "0.1.0"


def reference(path_or_source=None, network: str | None = None, *, source: str | None = None,
              dtype: torch.dtype = torch.float32) -> ReferenceModule:
    """The network as an nn.Module computed with torch.nn.functional (the oracle)."""
    return ReferenceModule(load(path_or_source, network, source=source), dtype=dtype)


parse = load

__all__ = [
    "CompileError", "Graph", "InputError", "Location", "ReferenceModule", "load", "parse",
    "print_graph", "reference",
]
