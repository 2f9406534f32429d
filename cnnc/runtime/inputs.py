"""Run-time checks of the tensors given to a network's forward (see support.check_inputs)."""

from __future__ import annotations

from ..ir.graph import Graph
from ..ir.shapes import Sym
from .support import InputError, check_inputs

__all__ = ["InputError", "check_inputs", "input_specs"]


def input_specs(graph: Graph) -> list[tuple[str, tuple]]:
    """(name, dims) per input; a symbolic dim is (symbol, multiple)."""
    return [
        (node.attrs.name,
         tuple((d.name, d.coeff) if isinstance(d, Sym) else d for d in node.shape))
        for node in graph.input_nodes()
    ]


def parameter_specs(graph: Graph) -> list[tuple]:
    """(name, shape, trainable, is_long, init recipe) per parameter, in creation order."""
    return [(name, spec.shape, spec.trainable, spec.dtype == "long", spec.init)
            for name, spec, _ in graph.parameters()]
