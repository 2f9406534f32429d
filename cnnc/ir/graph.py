"""The graph IR: one node per operator, after blocks and repeats are expanded.

This is the only module that touches networkx. Node ids are ints given in creation
order, which the builder makes a topological order; `nodes()` keeps a deterministic
topological order after passes too (ties broken by id).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from ..errors import Frame, Location
from .shapes import Shape, concrete


@dataclass(frozen=True)
class ParamSpec:
    """A learned parameter or a buffer of one node: local name, shape, and role."""

    name: str  # weight, bias, running_mean, ...
    shape: tuple[int, ...]
    trainable: bool = True  # False: a buffer (running stats, fixed filters)
    dtype: str = "float"  # "float" follows the module's dtype; "long" for counters
    init: tuple = ("fill", 0)  # how PyTorch initialises it: runtime/support.py initialize

    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class Node:
    id: int
    op: str  # an operator registry name, or "input"
    attrs: Any  # the op's frozen attribute record
    inputs: tuple[int, ...]  # producer node ids, in argument order
    shape: Shape
    loc: Location | None = None  # the call or stage in the source
    trail: tuple[Frame, ...] = ()  # block instantiations that led here, outermost first
    layer: str = ""  # the network statement this node belongs to (a summary row)
    scope: str = ""  # dotted prefix of its parameter names, e.g. "layer1.0.conv1"
    params: tuple[ParamSpec, ...] = ()
    label: str = ""  # how the source names the value (a statement name or the op)
    meta: dict[str, Any] = field(default_factory=dict)  # pass results (e.g. fusion group)

    def param_name(self, spec: ParamSpec) -> str:
        return f"{self.scope}.{spec.name}" if self.scope else spec.name


@dataclass(frozen=True)
class Layer:
    """A network statement (or input): a row of the summary."""

    name: str
    ops: str  # the chain as written, e.g. "conv2d(6, 5, padding=2) -> relu"
    output: int  # the node holding its value
    loc: Location | None = None


@dataclass(frozen=True)
class InputAttrs:
    name: str


class Graph:
    def __init__(self, name: str):
        self.name = name
        self._g = nx.DiGraph()
        self._next_id = 0
        self.inputs: list[int] = []  # input node ids in declaration order
        self.outputs: list[int] = []
        self.output_names: list[str] = []
        self.location: Location | None = None  # the network definition
        self.layers: list[Layer] = []  # inputs and network statements, in source order

    # ------------------------------------------------------------ building
    def add(self, op: str, attrs: Any, inputs: tuple[int, ...], shape: Shape, **fields) -> Node:
        node = Node(self._next_id, op, attrs, tuple(inputs), shape, **fields)
        self._next_id += 1
        self._g.add_node(node.id, node=node)
        for index, src in enumerate(node.inputs):
            if self._g.has_edge(src, node.id):
                self._g.edges[src, node.id]["indices"].append(index)
            else:
                self._g.add_edge(src, node.id, indices=[index])
        if op == "input":
            self.inputs.append(node.id)
        return node

    def remove(self, node_id: int) -> None:
        self._g.remove_node(node_id)

    def replace_uses(self, old: int, new: int) -> None:
        """Make every consumer of `old` (and the outputs) read `new` instead."""
        for consumer in list(self._g.successors(old)):
            node = self.node(consumer)
            node.inputs = tuple(new if i == old else i for i in node.inputs)
            indices = self._g.edges[old, consumer]["indices"]
            self._g.remove_edge(old, consumer)
            if self._g.has_edge(new, consumer):
                self._g.edges[new, consumer]["indices"].extend(indices)
            else:
                self._g.add_edge(new, consumer, indices=list(indices))
        self.outputs = [new if o == old else o for o in self.outputs]

    def copy(self) -> Graph:
        """An independent copy: passes rewrite copies, never the graph they are given."""
        other = Graph(self.name)
        other._g = nx.DiGraph()
        for node_id in self._g.nodes:
            node = dataclasses.replace(self.node(node_id), meta=dict(self.node(node_id).meta))
            other._g.add_node(node_id, node=node)
        for a, b, data in self._g.edges(data=True):
            other._g.add_edge(a, b, indices=list(data["indices"]))
        other._next_id = self._next_id
        other.inputs, other.outputs = list(self.inputs), list(self.outputs)
        other.output_names, other.layers = list(self.output_names), list(self.layers)
        other.location = self.location
        return other

    # ------------------------------------------------------------ reading
    def node(self, node_id: int) -> Node:
        return self._g.nodes[node_id]["node"]

    def __len__(self) -> int:
        return self._g.number_of_nodes()

    def __contains__(self, node_id: int) -> bool:
        return node_id in self._g

    def nodes(self) -> Iterator[Node]:
        """All nodes in a deterministic topological order."""
        for node_id in nx.lexicographical_topological_sort(self._g):
            yield self.node(node_id)

    def consumers(self, node_id: int) -> list[Node]:
        return [self.node(n) for n in sorted(self._g.successors(node_id))]

    def input_nodes(self) -> list[Node]:
        return [self.node(i) for i in self.inputs]

    def output_shapes(self, batch: int | None = None) -> list[tuple]:
        """The outputs' shapes; with `batch`, the batch symbol replaced by that size."""
        shapes = [self.node(o).shape for o in self.outputs]
        return [concrete(s, batch) if batch is not None else s for s in shapes]

    def parameters(self, trainable: bool | None = None) -> Iterator[tuple[str, ParamSpec, Node]]:
        """(dotted name, spec, node) for every parameter and buffer, in node order."""
        for node in self.nodes():
            for spec in node.params:
                if trainable is None or spec.trainable == trainable:
                    yield node.param_name(spec), spec, node

    def parameter_count(self) -> int:
        return sum(spec.numel() for _, spec, _ in self.parameters(trainable=True))

    def to_networkx(self) -> nx.DiGraph:
        """A copy of the underlying graph, for drawing and analysis."""
        return self._g.copy()
