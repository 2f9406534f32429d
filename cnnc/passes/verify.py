"""The IR verifier: checks the invariants every pass may rely on, and says which broke.

- every input of a node exists and comes before it in the topological order;
- each node's stored shape is what its operator's shape rule gives for its inputs;
- parameter names are unique, and none is a prefix of another (nn.Module nesting);
- outputs exist.
"""

from __future__ import annotations

from ..errors import CompileError
from ..ir.graph import Graph
from ..ops import OPS, TensorInfo


class VerificationError(AssertionError):
    """An internal invariant is broken: a bug in cnnc, not in the user's program."""


def verify(graph: Graph) -> None:
    seen: set[int] = set()
    for node in graph.nodes():
        for i in node.inputs:
            if i not in seen:
                raise VerificationError(f"node {node.id} ({node.op}) reads {i} before it exists")
        seen.add(node.id)
        if node.op == "input":
            continue
        infos = [TensorInfo(graph.node(i).shape, graph.node(i).label) for i in node.inputs]
        shape = OPS[node.op].infer(node.attrs, infos)
        if shape != node.shape:
            raise VerificationError(
                f"node {node.id} ({node.op}) holds shape {node.shape}, its rule gives {shape}"
            )
    for out in graph.outputs:
        if out not in graph:
            raise VerificationError(f"output {out} is not in the graph")
    check_parameter_names(graph)


def check_parameter_names(graph: Graph) -> None:
    """Two parameters with one name, or a name that is also a module path, is the user's
    doing (statement names chosen so), so it is a CompileError at the second node."""
    owners: dict[str, object] = {}
    for name, _, node in graph.parameters():
        if name in owners:
            raise CompileError(f"two parameters would be named `{name}`", node.loc,
                               trail=node.trail, help="rename one of the statements")
        owners[name] = node
    names = sorted(owners)
    for a, b in zip(names, names[1:]):
        if b.startswith(a + "."):
            node = owners[b]
            raise CompileError(
                f"parameter `{a}` would also be a module holding `{b}`", node.loc,
                trail=node.trail, help="rename one of the statements",
            )
