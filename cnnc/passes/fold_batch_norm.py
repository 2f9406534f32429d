"""Batch-norm folding (eval mode): marks each batch norm that can fold into the conv or
linear before it.

Expects: a simplified graph (passes/simplify.py). Guarantees: every eval-mode
`batch_norm` node carries `meta["fold_into"]` (the producer's id) when its producer is a
conv or linear whose only consumer it is and it has running statistics — that kernel then
applies it right after the conv's bias, with a per-channel scale and shift it computes
from the batch norm's parameters at every launch (never cached, so never stale) — or
`meta["fold_refused"]` with the reason (it then runs as an affine epilogue). Idempotent;
works on a copy. In training mode nothing folds: batch statistics are needed first.
"""

from __future__ import annotations

from ..ir.graph import Graph
from ..ops import OPS


def fold_refusal(graph: Graph, bn) -> str | None:
    producer = graph.node(bn.inputs[0])
    if OPS[bn.op].uses_batch_statistics(bn.attrs, training=False):
        return "without running statistics batch norm normalises by batch statistics"
    absorber = OPS.get(producer.op)
    if absorber is None or not absorber.absorbs_batch_norm:
        return f"its input comes from {producer.op}, not a conv or linear"
    if absorber.output_channel_dim(len(bn.shape)) != 1:
        return (f"batch norm normalises dim 1, but {producer.op} puts its features in dim "
                f"{absorber.output_channel_dim(len(bn.shape))}")
    if producer.id in graph.outputs:
        return "the conv's result is also a network output"
    others = [c.label for c in graph.consumers(producer.id) if c.id != bn.id]
    if others:
        return f"the conv's result is also used by {', '.join(sorted(set(others)))}"
    return None


def fold_batch_norm(graph: Graph, training: bool) -> Graph:
    graph = graph.copy()
    for node in graph.nodes():
        if node.op == "input" or not OPS[node.op].folds_into_producer:
            continue
        node.meta.pop("fold_into", None)
        node.meta.pop("fold_refused", None)
        if training:
            continue
        reason = fold_refusal(graph, node)
        if reason is None:
            node.meta["fold_into"] = node.inputs[0]
        else:
            node.meta["fold_refused"] = reason
    return graph
