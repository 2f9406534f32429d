"""Passes: the IR before and after each, compared with the expected IR; idempotence;
fusion decisions and the reasons recorded for refusals."""

from __future__ import annotations

import cnnc
from cnnc.ir.printer import print_graph
from cnnc.passes import fold_batch_norm, fuse, plan, simplify

SOURCE = """network T {
    input x: [N, 3, 8, 8]
    a = x -> identity -> conv2d(4, 3, padding=1) -> batch_norm -> dropout(0.1) -> relu
    unused = x -> conv2d(2, 1)
    b = a -> conv2d(4, 1) -> batch_norm
    c = a -> batch_norm -> relu
    d = b -> add(c) -> max_pool2d(2)
    output d
}"""


def _ops(graph):
    return [n.op for n in graph.nodes()]


def test_simplify_removes_identities_dropout_and_dead_values():
    graph = cnnc.load(source=SOURCE)
    simple = simplify(graph, training=False)
    assert _ops(simple) == ["input", "conv2d", "batch_norm", "relu", "conv2d", "batch_norm",
                            "batch_norm", "relu", "add", "max_pool2d"]
    # the conv now reads the input directly; the given graph is untouched
    conv = next(n for n in simple.nodes() if n.op == "conv2d")
    assert conv.inputs == (simple.inputs[0],)
    assert "identity" in _ops(graph) and "dropout" in _ops(graph)
    # training keeps dropout
    assert "dropout" in _ops(simplify(graph, training=True))


def test_passes_are_idempotent():
    graph = cnnc.load(source=SOURCE)
    once = simplify(graph, training=False)
    assert print_graph(simplify(once, training=False)) == print_graph(once)
    folded = fold_batch_norm(once, training=False)
    again = fold_batch_norm(folded, training=False)
    marks = [(n.id, dict(n.meta)) for n in folded.nodes()]
    assert marks == [(n.id, dict(n.meta)) for n in again.nodes()]
    assert print_graph(again) == print_graph(once)


def test_fold_batch_norm_marks_and_explains():
    graph = fold_batch_norm(simplify(cnnc.load(source=SOURCE), training=False), training=False)
    bns = [n for n in graph.nodes() if n.op == "batch_norm"]
    assert [("fold_into" in n.meta) for n in bns] == [True, True, False]
    assert bns[2].meta["fold_refused"] == "its input comes from relu, not a conv or linear"
    assert all("fold_into" not in n.meta for n in fold_batch_norm(graph, training=True).nodes())


def test_fuse_groups_and_records_refusals():
    graph = cnnc.load(source=SOURCE)
    p = plan(graph, training=False)
    g = p.graph
    kernels = [[g.node(n).op for n in k.nodes] for k in p.kernels]
    assert kernels == [
        ["conv2d", "batch_norm", "relu"],
        ["batch_norm", "relu"],                      # not folded: its input is a relu
        ["conv2d", "batch_norm", "add", "max_pool2d"],
    ]
    reasons = [r.reason for r in p.refusals if g.node(r.node).op == "batch_norm"]
    assert reasons == ["not folded: its input comes from relu, not a conv or linear",
                       "its input is also used by conv2d(4, 1)"]
    # the training plan keeps every batch norm apart (batch statistics first)
    train = plan(graph, training=True)
    tg = train.graph
    assert sum(tg.node(k.anchor).op == "batch_norm" for k in train.kernels) == 3


def test_fuse_refuses_epilogue_when_a_value_is_shared():
    source = """network T {
        input x: [N, 3, 8, 8]
        a = x -> conv2d(4, 3)
        b = a -> relu
        c = a -> sigmoid
        output b, c
    }"""
    p = fuse(simplify(cnnc.load(source=source), False), False)
    assert len(p.kernels) == 3
    assert {r.reason for r in p.refusals} == {"its input is also used by sigmoid",
                                              "its input is also used by relu"}
