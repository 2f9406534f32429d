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
from .inputs import check_inputs, input_specs, parameter_specs
from .support import NamedModule, make_parameters


class ReferenceModule(NamedModule):
    """forward(*inputs) -> output, or a tuple of outputs in `output` order."""

    def __init__(self, graph: Graph, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.graph = graph
        make_parameters(self, parameter_specs(graph), dtype)
        self._order: list[Node] = [n for n in graph.nodes() if n.op != "input"]
        self._holders = {n.id: self._scope(n.scope) for n in self._order if n.params}
        self._inputs = input_specs(graph)

    def _scope(self, path: str) -> nn.Module:
        """The module holding a node's parameters, found through _modules: a layer's name
        may be that of an nn.Module attribute, which get_submodule would find instead."""
        holder: nn.Module = self
        for part in path.split(".") if path else ():
            holder = holder._modules[part]
        return holder

    def forward(self, *inputs: torch.Tensor):
        check_inputs(self.graph.name, self._inputs, inputs, None, None)
        env: dict[int, torch.Tensor] = dict(zip(self.graph.inputs, inputs))
        for node in self._order:
            holder = self._holders.get(node.id)
            params = {s.name: getattr(holder, s.name) for s in node.params}
            xs = [env[i] for i in node.inputs]
            env[node.id] = OPS[node.op].reference(node.attrs, xs, params, self.training)
        outputs = tuple(env[o] for o in self.graph.outputs)
        return outputs[0] if len(outputs) == 1 else outputs

    def extra_repr(self) -> str:
        return f"network={self.graph.name}, nodes={len(self._order)}"
