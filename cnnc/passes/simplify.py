"""Removal of identities and dead values.

Expects: a verified graph. Guarantees: no `identity` node, no `dropout` node in eval
mode (both pass their input through), and every node left is an input or reaches an
output. Idempotent. Works on a copy; the given graph is unchanged.
"""

from __future__ import annotations

from ..ir.graph import Graph
from ..ops import OPS


def simplify(graph: Graph, training: bool) -> Graph:
    graph = graph.copy()
    through = {"always"} if training else {"always", "eval"}
    for node in list(graph.nodes()):
        if node.op != "input" and OPS[node.op].pass_through in through:
            graph.replace_uses(node.id, node.inputs[0])
            graph.remove(node.id)
    live = set(graph.outputs) | set(graph.inputs)
    for node in reversed(list(graph.nodes())):
        if node.id in live:
            live.update(node.inputs)
    for node in list(graph.nodes()):
        if node.id not in live:
            graph.remove(node.id)
    return graph
