"""Run-time checks of the tensors given to a network's forward."""

from __future__ import annotations

import torch

from ..ir.graph import Graph
from ..ir.shapes import Sym, format_shape


class InputError(ValueError):
    """A tensor given to forward does not match the network's declared input."""


def check_inputs(graph: Graph, inputs: tuple) -> None:
    declared = graph.input_nodes()
    if len(inputs) != len(declared):
        names = ", ".join(n.attrs.name for n in declared)
        raise InputError(
            f"network {graph.name} takes {len(declared)} input(s) ({names}); got {len(inputs)}"
        )
    batch: dict[str, tuple[int, str]] = {}
    for node, x in zip(declared, inputs):
        name = node.attrs.name
        if not isinstance(x, torch.Tensor):
            raise InputError(f"input {name} must be a tensor; got {type(x).__name__}")
        expected = format_shape(node.shape)
        got = list(x.shape)
        if x.dim() != len(node.shape):
            raise InputError(f"input {name} must be {len(node.shape)}-d {expected}; got {got}")
        for i, (d, size) in enumerate(zip(node.shape, x.shape)):
            if isinstance(d, Sym):
                if size % d.coeff or size == 0:
                    raise InputError(f"input {name} dim {i} must be a positive multiple of "
                                     f"{d.coeff} ({expected}); got {got}")
                n = size // d.coeff
                if d.name in batch and batch[d.name][0] != n:
                    other = batch[d.name][1]
                    raise InputError(
                        f"input {name} has {d.name}={n} but input {other} has "
                        f"{d.name}={batch[d.name][0]}"
                    )
                batch[d.name] = (n, name)
            elif d != size:
                raise InputError(f"input {name} must have shape {expected}; got {got}")
        if not x.is_floating_point():
            raise InputError(f"input {name} must be a floating-point tensor; got {x.dtype}")
