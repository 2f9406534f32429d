"""Steps that launch no kernel of their own, as the module emitter writes them: strided
views (permute, transpose, chunk and split results), a channel_shuffle folded into the
concat it shuffles, and whether a reshape can stay a view.

A strided view is torch's own view op on the producer's buffer; every template reads its
input through strides, so the consumer's kernel does the index map. A reshape is a view
where torch can make one (its input is allocated contiguous); of a strided view that it
cannot view, the emitter copies the view into a contiguous buffer with `copy_into` (one
Triton copy kernel, listed in the plan) and reshapes that.
"""

from __future__ import annotations

import torch

from ..ir.graph import Graph
from ..ir.shapes import concrete
from ..ops import OPS
from ..passes.plan import Kernel, Plan, View
from .source import Source

COPY_RANK = 5  # copy_into's most dims


def shuffled_concats(graph: Graph, plan: Plan | None) -> dict[int, int]:
    """concat -> the channel_shuffle whose output holds the concat's pieces."""
    steps = plan.steps if plan is not None else []
    return {graph.node(s.node).inputs[0]: s.node for s in steps
            if isinstance(s, View) and s.kind == "shuffle"}


def piece(values, concat: int, position: int) -> str:
    """Where the concat's input at `position` lies: a narrow slice of the concat's output,
    or a strided channel slice of the channel_shuffle output the concat is folded into."""
    graph = values.graph
    node = graph.node(concat)
    dim = node.attrs.dim % len(node.shape)
    if concat in values.shuffled:
        shuffle = graph.node(values.shuffled[concat])
        pieces = [graph.node(i).shape[1] for i in node.inputs]
        slices = OPS[shuffle.op].concat_slices(shuffle.attrs, node.shape[1], pieces)
        start, stop, step = slices[position]
        return f"{values.allocate(shuffle.id)}[:, {start}:{stop}:{step}]"
    offset = " + ".join(values.dim(i, dim) for i in node.inputs[:position]) or "0"
    size = values.dim(node.inputs[position], dim)
    return f"{values.allocate(concat)}.narrow({dim}, {offset}, {size})"


def emit_strided(src: Source, graph: Graph, node_id: int, values) -> None:
    node = graph.node(node_id)
    source = graph.node(node.inputs[0])
    expr = OPS[node.op].view_expr(node.attrs, values.names[source.id], source.shape)
    src.line(f"v{node.id} = {expr}")
    values.names[node.id] = f"v{node.id}"


def reshape_copies(graph: Graph, plan: Plan, node_id: int, flat: set[int]) -> bool:
    """Whether a reshape's input is a strided view torch cannot reshape without a copy
    (decided on meta tensors at batch 2, with the layouts the module allocates)."""
    node = graph.node(node_id)
    source = node.inputs[0]
    step = plan.step_of(source)
    if not (isinstance(step, View) and step.kind == "strided"):
        return False
    if len(graph.node(source).shape) > COPY_RANK:
        return False  # torch's reshape copies it
    try:
        _meta(graph, plan, source, flat).view(concrete(node.shape, 2))
    except RuntimeError:
        return True
    return False


def _meta(graph: Graph, plan: Plan, node_id: int, flat: set[int]) -> torch.Tensor:
    node = graph.node(node_id)
    step = plan.step_of(node_id)
    if isinstance(step, View) and step.kind in ("strided", "reshape"):
        base = _meta(graph, plan, node.inputs[0], flat)
        if step.kind == "reshape":
            return base.reshape(concrete(node.shape, 2))
        return OPS[node.op].reference(node.attrs, [base], {}, False)
    shape = concrete(node.shape, 2)
    layout = torch.contiguous_format
    if isinstance(step, (Kernel, View)) and len(shape) in (4, 5) and node_id not in flat:
        layout = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    return torch.empty(shape, device="meta", memory_format=layout)


def emit_reshape_copy(src: Source, graph: Graph, node_id: int, values) -> str:
    """Copy a reshape's strided input into a contiguous buffer; its name."""
    source = graph.node(node_id).inputs[0]
    name = f"c{node_id}"
    src.line(f"{name} = torch.empty({values.shape(source)}, device=device, dtype=dtype)")
    src.line(f"copy_into({name}, {values.names[source]})")
    return name
