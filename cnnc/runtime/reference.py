"""The reference backend: the network computed with torch.nn.functional only.

It is the oracle every generated kernel is compared with. Parameters and buffers live
in nested modules named as LANGUAGE.md says, so `state_dict()` has torchvision's keys,
and are initialised as PyTorch initialises the same layer.
"""

from __future__ import annotations

import torch
from torch import nn

from ..ir.graph import Graph, Node
from ..ops import OPS
from .init import initialize
from .inputs import check_inputs

DTYPES = {"float": None, "long": torch.long}


class ParameterScope(nn.Module):
    """A named level of the parameter tree (`layer1`, `layer1.0`, ...); computes nothing."""

    def forward(self, *args):  # pragma: no cover - never called
        raise RuntimeError("a parameter scope is not callable")


def build_parameter_tree(root: nn.Module, graph: Graph, dtype: torch.dtype,
                         device: torch.device | str | None = None) -> dict[int, nn.Module]:
    """Create every node's parameters under `root`, initialised as PyTorch does; returns the
    module holding each node's parameters."""
    holders: dict[int, nn.Module] = {}
    for node in graph.nodes():
        if not node.params:
            continue
        holder = root
        for part in node.scope.split("."):
            child = holder._modules.get(part)
            if child is None:
                child = ParameterScope()
                holder.add_module(part, child)
            holder = child
        tensors = {
            spec.name: torch.empty(spec.shape, dtype=DTYPES[spec.dtype] or dtype, device=device)
            for spec in node.params
        }
        for spec in node.params:
            initialize(tensors[spec.name], spec.init)
            if spec.trainable:
                holder.register_parameter(spec.name, nn.Parameter(tensors[spec.name]))
            else:
                holder.register_buffer(spec.name, tensors[spec.name])
        holders[node.id] = holder
    return holders


class ReferenceModule(nn.Module):
    """forward(*inputs) -> output, or a tuple of outputs in `output` order."""

    def __init__(self, graph: Graph, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.graph = graph
        self._holders = build_parameter_tree(self, graph, dtype)
        self._order: list[Node] = [n for n in graph.nodes() if n.op != "input"]

    def forward(self, *inputs: torch.Tensor):
        check_inputs(self.graph, inputs)
        env: dict[int, torch.Tensor] = dict(zip(self.graph.inputs, inputs))
        for node in self._order:
            holder = self._holders.get(node.id)
            params = {s.name: getattr(holder, s.name) for s in node.params} if holder else {}
            xs = [env[i] for i in node.inputs]
            env[node.id] = OPS[node.op].reference(node.attrs, xs, params, self.training)
        outputs = tuple(env[o] for o in self.graph.outputs)
        return outputs[0] if len(outputs) == 1 else outputs

    def extra_repr(self) -> str:
        return f"network={self.graph.name}, nodes={len(self._order)}"
