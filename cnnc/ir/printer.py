"""A readable text form of the graph IR, one line per node:

    %3 = conv2d(%2, out_channels=16, ...) : [N, 16, 10, 10]  # c3 [c3] @ lenet5.cnn:7:16
"""

from __future__ import annotations

import dataclasses

from .graph import Graph, Node
from .shapes import format_shape


def _value_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "(" + ", ".join(_value_text(v) for v in value) + ")"
    if type(value).__name__ == "TensorSlot":
        return f"#{value.index}"
    if type(value).__name__ == "Array":
        return "const[" + "x".join(map(str, value.shape)) + "]"
    return str(value)


def node_text(graph: Graph, node: Node) -> str:
    if node.op == "input":
        return f"%{node.id} = input {node.attrs.name} : {format_shape(node.shape)}"
    args = [f"%{i}" for i in node.inputs]
    if dataclasses.is_dataclass(node.attrs):
        args += [
            f"{f.name}={_value_text(getattr(node.attrs, f.name))}"
            for f in dataclasses.fields(node.attrs)
        ]
    line = f"%{node.id} = {node.op}({', '.join(args)}) : {format_shape(node.shape)}"
    where = f"  # {node.layer}"
    if node.scope:
        where += f" [{node.scope}]"
    if node.loc is not None:
        where += f" @ {node.loc}"
    return line + where


def print_graph(graph: Graph) -> str:
    lines = [f"graph {graph.name} {{"]
    lines += ["  " + node_text(graph, n) for n in graph.nodes()]
    outs = ", ".join(f"%{o} ({name})" for o, name in zip(graph.outputs, graph.output_names))
    lines += [f"  output {outs}", "}"]
    return "\n".join(lines)
