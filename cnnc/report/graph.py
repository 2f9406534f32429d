"""`cnnc graph`: the graph IR drawn as DOT, SVG or PNG, before or after fusion.

A drawing has one box per operator (its op, parameter scope and output shape), one edge
per producer-consumer pair (labelled with the tensor's shape), and clusters: the block
instances the nodes came from, or with `fused`, the kernels of the plan, with the
fusions refused listed as notes. DOT is written here; SVG comes from Graphviz when its
`dot` program is on PATH, else from the pure-Python layout in report/svg.py; PNG needs
Graphviz. Every text a user wrote (names, scopes) is escaped for the format it lands in.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
import warnings
from dataclasses import dataclass, field

from ..errors import CompileError, escape
from ..ir.graph import Graph, Node
from ..ir.shapes import format_shape

FORMATS = (".svg", ".dot", ".png")
# Kernel fills, by kernel kind in order of first appearance (pastel: text stays legible).
PALETTE = ("#cfe2f3", "#fde2c8", "#d9ead3", "#ead1dc", "#fff2cc", "#d9d2e9", "#f4cccc",
           "#d0e0e3")
BLOCK_FILLS = ("#f3f3f3", "#e8e8e8", "#dddddd")  # nested block instances, outermost first
DOT_TIMEOUT_S = 300


@dataclass
class Box:
    node: int
    lines: list[str]  # raw text; each writer escapes it
    cluster: tuple[str, ...] = ()  # keys of the clusters holding it, outermost first
    fill: str = "#ffffff"
    dashed: bool = False  # a view: it launches nothing


@dataclass
class Cluster:
    key: str  # unique, safe in any format: "b3" (block instance) or "k7" (kernel)
    label: str
    fill: str


@dataclass
class Drawing:
    name: str  # the network's
    title: str
    boxes: list[Box]  # in topological order
    edges: list[tuple[int, int, str]]  # (producer, consumer, label)
    clusters: dict[str, Cluster]  # parents before children
    notes: list[str] = field(default_factory=list)


def drawing(graph: Graph, fused: bool = False, training: bool = False) -> Drawing:
    """What `cnnc graph` draws: `graph` as built, or with `fused` the plan's kernels."""
    if not fused:
        boxes, clusters = _block_clusters(graph)
        return Drawing(graph.name, f"{graph.name}: {_count(len(graph), 'operator')}, as written",
                       boxes, _edges(graph), clusters)
    from ..passes import Kernel
    from ..passes import plan as make_plan
    from .summary import refusal_lines

    plan = make_plan(graph, training)
    g = plan.graph
    kinds: dict[str, str] = {}
    boxes = {n.id: Box(n.id, _lines(n)) for n in g.nodes()}
    clusters = {}
    for step in plan.steps:
        if not isinstance(step, Kernel):  # a view: no launch, no cluster
            for n in step.nodes:
                boxes[n].dashed = True
                boxes[n].lines[0] += f"  (view: {step.kind}, no launch)"
            continue
        fill = kinds.setdefault(step.kind, PALETTE[len(kinds) % len(PALETTE)])
        key = f"k{step.index}"
        clusters[key] = Cluster(key, f"k{step.index}: {step.kind} kernel", fill)
        for n in step.nodes:
            boxes[n].cluster, boxes[n].fill = (key,), fill
    mode = "training" if training else "eval"
    notes = [f"refused: {line}" for line in refusal_lines(plan)] or ["no fusion refused"]
    title = (f"{g.name} after fusion ({mode} mode): "
             f"{_count(len(plan.kernels), 'kernel launch', 'es')}, {_count(len(g), 'operator')}")
    return Drawing(g.name, title, list(boxes.values()), _edges(g), clusters, notes)


def _count(n: int, what: str, plural: str = "s") -> str:
    return f"{n} {what}{'' if n == 1 else plural}"


def _lines(node: Node) -> list[str]:
    if node.op == "input":
        title = f"input {node.attrs.name}"
    else:
        title = node.op
        kernel = getattr(node.attrs, "kernel_size", None)
        if isinstance(kernel, tuple) and kernel:
            title += " " + "x".join(map(str, kernel))
        stride = getattr(node.attrs, "stride", None)
        if isinstance(stride, tuple) and any(s != 1 for s in stride):
            title += " /" + ("x".join(map(str, stride)) if len(set(stride)) > 1
                             else str(stride[0]))
    lines = [title]
    if node.scope:
        lines.append(node.scope)
    lines.append(format_shape(node.shape))
    return lines


def _edges(graph: Graph) -> list[tuple[int, int, str]]:
    edges = []
    for node in graph.nodes():
        for src in dict.fromkeys(node.inputs):
            label = format_shape(graph.node(src).shape)
            uses = node.inputs.count(src)
            edges.append((src, node.id, label + (f" x{uses}" if uses > 1 else "")))
    return edges


def _block_clusters(graph: Graph) -> tuple[list[Box], dict[str, Cluster]]:
    """Boxes in clusters by block instance. Each instantiation made its own Frame object,
    so two uses of one block at one place (`basic(64) * 2`) are told apart by identity."""
    keys: dict[int, str] = {}
    frames = {}
    scopes: dict[str, list[str]] = {}
    boxes = []
    for node in graph.nodes():
        path = []
        for frame in node.trail:
            key = keys.setdefault(id(frame), f"b{len(keys)}")
            frames[key] = (frame, len(path), node.layer)
            path.append(key)
            if node.scope:
                scopes.setdefault(key, []).append(node.scope)
        boxes.append(Box(node.id, _lines(node), tuple(path)))
    clusters = {}
    for key, (frame, depth, layer) in frames.items():
        prefix = _common_prefix(scopes.get(key, []))
        where = prefix or f"in {layer}, line {frame.location.line}"
        label = f"{frame.block}  {where}"
        clusters[key] = Cluster(key, label, BLOCK_FILLS[min(depth, len(BLOCK_FILLS) - 1)])
    return boxes, clusters


def _common_prefix(scopes: list[str]) -> str:
    """The dotted prefix all the scopes share: layer1.0 for layer1.0.conv1, layer1.0.bn1."""
    if not scopes:
        return ""
    parts = [s.split(".")[:-1] for s in scopes]  # a scope's last part names its op
    common = parts[0]
    for p in parts[1:]:
        n = 0
        while n < min(len(common), len(p)) and common[n] == p[n]:
            n += 1
        common = common[:n]
    return ".".join(common)


def note_lines(d: Drawing, columns: int = 110) -> list[str]:
    """The notes wrapped to lines of at most `columns` characters, continuations indented."""
    return [line for note in d.notes
            for line in textwrap.wrap(note, columns, subsequent_indent="    ")]


# ------------------------------------------------------------------ DOT
def dot_quote(text: str) -> str:
    r"""`text` as a DOT string whose label shows exactly it: unprintable characters
    written as escapes, backslashes doubled (Graphviz reads `\n`, `\N`, `\G`... in labels)
    and quotes escaped."""
    return _dot_lines([text], "")


def _dot_lines(lines: list[str], end: str, sep: str = "\\n") -> str:
    """Lines as one DOT string: `sep` between them (\\n centred, \\l left-justified)."""
    text = sep.join(escape(t).replace("\\", "\\\\").replace('"', '\\"') for t in lines)
    return f'"{text}{end}"'


def to_dot(d: Drawing) -> str:
    out = [f"digraph {dot_quote(d.name)} {{",
           f"  graph [rankdir=TB, fontname=monospace, fontsize=11, labelloc=t, "
           f"labeljust=l, label={_dot_notes(d)}];",
           '  node [shape=box, style="rounded,filled", fontname=monospace, fontsize=10];',
           "  edge [fontname=monospace, fontsize=9, fontcolor=\"#555555\"];"]
    children: dict[tuple[str, ...], list[str]] = {}
    members: dict[tuple[str, ...], list[Box]] = {}
    for box in d.boxes:
        members.setdefault(box.cluster, []).append(box)
        for depth in range(len(box.cluster)):
            parent, key = box.cluster[:depth], box.cluster[depth]
            if key not in children.setdefault(parent, []):
                children[parent].append(key)

    def emit(path: tuple[str, ...], indent: str) -> None:
        for box in members.get(path, []):
            style = ', style="rounded,filled,dashed"' if box.dashed else ""
            out.append(f"{indent}n{box.node} [label={_dot_lines(box.lines, '')}, "
                       f'fillcolor="{box.fill}"{style}];')
        for key in children.get(path, []):
            cluster = d.clusters[key]
            out.append(f"{indent}subgraph cluster_{key} {{")
            out.append(f"{indent}  label={dot_quote(cluster.label)}; "
                       f'style="rounded,filled"; fillcolor="{cluster.fill}"; color="#888888";')
            emit(path + (key,), indent + "  ")
            out.append(f"{indent}}}")

    emit((), "  ")
    for src, dst, label in d.edges:
        out.append(f"  n{src} -> n{dst} [label={dot_quote(label)}];")
    out.append("}")
    return "\n".join(out) + "\n"


def _dot_notes(d: Drawing) -> str:
    return _dot_lines([d.title, *note_lines(d)], "\\l", "\\l")  # \l: a left-justified line


# ------------------------------------------------------------------ files
def check_format(name: str) -> str:
    """The format `-o NAME` asks for: its extension (any case), or .dot for `-`."""
    if name == "-":
        return ".dot"
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix not in FORMATS:
        found = f"{suffix!r}" if suffix else "no extension"
        raise ValueError(f"expected a name ending in .svg, .dot or .png (or - for DOT on "
                         f"standard output), found {found}")
    return suffix


def render(d: Drawing, fmt: str) -> tuple[str | bytes, str]:
    """The drawing as the text (DOT, SVG) or bytes (PNG) of a file of format `fmt`, and
    how it was drawn."""
    if fmt == ".dot":
        return to_dot(d), "DOT text"
    dot = shutil.which("dot")
    if fmt == ".svg":
        if dot is not None:
            try:
                return _graphviz(dot, d, "svg").decode("utf-8"), "laid out by Graphviz"
            except CompileError as e:
                warnings.warn(f"{e.message}; drawing the SVG without Graphviz", stacklevel=2)
        from .svg import to_svg

        return to_svg(d), "laid out by cnnc; Graphviz's dot was not used"
    if dot is None:
        raise CompileError(
            "writing a .png needs Graphviz's `dot` program, which is not on PATH",
            help="install Graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: brew "
                 "install graphviz), or write .svg or .dot, which need nothing else")
    return _graphviz(dot, d, "png"), "laid out by Graphviz"


def _graphviz(dot: str, d: Drawing, fmt: str) -> bytes:
    try:
        result = subprocess.run([dot, f"-T{fmt}"], input=to_dot(d).encode("utf-8"),
                                capture_output=True, timeout=DOT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise CompileError(f"Graphviz's dot took more than {DOT_TIMEOUT_S} s") from None
    except OSError as e:
        raise CompileError(f"cannot run Graphviz's dot ({dot}): {e.strerror or e}") from None
    if result.returncode != 0 or not result.stdout:
        lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
        said = escape(lines[-1]) if lines else "no output"
        raise CompileError(f"Graphviz's dot failed (exit {result.returncode}): {said}")
    return result.stdout


__all__ = ["FORMATS", "Box", "Cluster", "Drawing", "check_format", "drawing", "render",
           "to_dot"]
