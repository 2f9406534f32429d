"""`cnnc summary`: a row per network statement with shape, parameters and MACs, and totals;
with `explain`, the lecture's arithmetic under each conv, pool and linear."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.graph import Graph
from ..ir.shapes import concrete, format_shape, numel
from ..ops import OPS, TensorInfo

BYTES_PER_ELEMENT = 4  # float32


@dataclass
class Row:
    name: str
    ops: str
    shape: str
    params: int
    macs: int
    kernels: list[str] = field(default_factory=list)  # eval-plan kernels its ops run in
    explain: list[tuple[str, list[str]]] = field(default_factory=list)  # (op call, lines)


@dataclass
class Summary:
    network: str
    batch: int
    rows: list[Row]
    refusals: list[str]  # fusions refused, with reasons
    closing: list[str]  # --explain's last words: the last receptive field
    params: int
    buffers: int
    macs: int
    activation_bytes: int
    param_bytes: int


def kernel_names(graph: Graph) -> tuple[dict[int, str], list[str]]:
    """Which eval-mode kernel (or view) each node lands in, and the refused fusions. A
    network using an operator that has no kernel yet still gets its summary, without the
    kernel column, and the reason instead of the refusals."""
    from ..errors import CompileError
    from ..passes import plan as make_plan

    try:
        plan = make_plan(graph, training=False)
    except CompileError as e:
        return {}, [f"no kernels: {e.message}"]
    where: dict[int, str] = {}
    for step in plan.steps:
        label = f"k{step.index}" if hasattr(step, "index") else f"({step.kind})"
        for n in step.nodes:
            where[n] = label
    return where, refusal_lines(plan)


def refusal_lines(plan) -> list[str]:
    """Each fusion the plan refused, with where and why, on one line."""
    lines = []
    for r in plan.refusals:
        node = plan.graph.node(r.node)
        line = f", line {node.loc.line}" if node.loc else ""
        lines.append(f"{node.op} (layer {node.layer}{line}) not fused: {r.reason}")
    return lines


def _kernel_order(label: str) -> tuple:
    return (not label.startswith("k"), int(label[1:]) if label[1:].isdigit() else 0)


def summarize(graph: Graph, batch: int = 1) -> Summary:
    from .lessons import Lessons

    where, refusals = kernel_names(graph)
    lessons = Lessons(graph, batch)
    by_layer: dict[str, list] = {}
    for node in graph.nodes():
        by_layer.setdefault(node.layer, []).append(node)
    rows = []
    total_macs = 0
    activations = 0
    for layer in graph.layers:
        nodes = by_layer.get(layer.name, [])
        params = macs = 0
        explained = []
        for node in nodes:
            params += sum(s.numel() for s in node.params if s.trainable)
            activations += numel(node.shape, batch)
            if node.op == "input":
                continue
            op = OPS[node.op]
            infos = [TensorInfo(graph.node(i).shape, graph.node(i).label) for i in node.inputs]
            macs += op.macs(node.attrs, infos, node.shape) * batch
            lines = op.explain(node.attrs, infos, node.shape) + lessons.node_lines(node)
            if lines:
                text = node.loc.text() if node.loc else node.op
                before = format_shape(concrete(infos[0].shape, batch))
                after = format_shape(concrete(node.shape, batch))
                explained.append((f"{text}: {before} -> {after}", lines))
        total_macs += macs
        shape = format_shape(concrete(graph.node(layer.output).shape, batch))
        line = lessons.layer_line(layer, nodes)
        if line is not None:
            explained.append((line, []))
        kernels = sorted(dict.fromkeys(where[n.id] for n in nodes if n.id in where),
                         key=_kernel_order)
        rows.append(Row(layer.name, layer.ops, shape, params, macs, kernels=kernels,
                        explain=explained))
    buffers = sum(s.numel() for _, s, _ in graph.parameters(trainable=False))
    n_params = graph.parameter_count()
    return Summary(
        network=graph.name, batch=batch, rows=rows, refusals=refusals,
        closing=lessons.closing_lines(), params=n_params,
        buffers=buffers,
        macs=total_macs, activation_bytes=activations * BYTES_PER_ELEMENT,
        param_bytes=(n_params + buffers) * BYTES_PER_ELEMENT,
    )


def human_bytes(n: int) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")
    for unit in units:
        if n < 1024 or unit == units[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def human_count(n: int) -> str:
    for unit, size in (("E", 10**18), ("P", 10**15), ("T", 10**12), ("G", 10**9),
                       ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def render(summary: Summary, explain: bool = False, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=_escape(f"{summary.network}  (batch {summary.batch})"),
                  title_justify="left")
    table.add_column("layer", style="bold")
    table.add_column("ops", overflow="fold")
    table.add_column("output shape", no_wrap=True)
    table.add_column("params", justify="right")
    table.add_column("MACs", justify="right")
    table.add_column("kernel")
    for row in summary.rows:
        table.add_row(_escape(row.name), _escape(row.ops), _escape(row.shape),
                      f"{row.params:,}" if row.params else "",
                      human_count(row.macs) if row.macs else "", _escape(", ".join(row.kernels)))
        if explain:
            for call, lines in row.explain:
                text = call + "\n" + "\n".join("  " + line for line in lines)
                table.add_row("", f"[dim]{_escape(text)}[/dim]", "", "", "", "")
    console.print(table)
    console.print(
        f"total params: {summary.params:,}"
        + (f"   buffers: {summary.buffers:,}" if summary.buffers else "")
        + f"   MACs: {summary.macs:,} ({human_count(summary.macs)})"
        + f"   activations: {human_bytes(summary.activation_bytes)}"
        + f"   weights: {human_bytes(summary.param_bytes)}  (float32, batch {summary.batch})",
        highlight=False, markup=False,
    )
    kernels = len({k for row in summary.rows for k in row.kernels if k.startswith("k")})
    console.print(f"kernels in eval mode: {kernels}", highlight=False, markup=False)
    if explain:
        for line in summary.refusals:
            console.print(f"  {line}", highlight=False, markup=False)
        for line in summary.closing:
            console.print(line, highlight=False, markup=False)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


__all__ = ["Row", "Summary", "render", "summarize"]
