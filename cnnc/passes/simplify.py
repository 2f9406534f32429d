"""Removal of identities and dead values.

Expects: a verified graph. Guarantees: no `identity` node, no `dropout` node in eval
mode (both pass their input through), and every node left is an input or reaches an
output. Idempotent. Works on a copy; the given graph is unchanged.
"""

from __future__ import annotations

from ..ir.graph import Graph

PASS_THROUGH = {"identity"}
PASS_THROUGH_IN_EVAL = {"dropout"}


def simplify(graph: Graph, training: bool) -> Graph:
    graph = graph.copy()
    through = PASS_THROUGH | (set() if training else PASS_THROUGH_IN_EVAL)
    for node in list(graph.nodes()):
        if node.op in through:
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
