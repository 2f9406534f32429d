"""Three lessons of `cnnc summary --explain`, with the arithmetic shown.

Receptive field and effective stride ("jump"): at an input, a value sees rf = 1 pixel and
neighbouring values are jump = 1 pixel apart; a window of k taps with dilation d and
stride s gives rf = rf_prev + (k - 1) * d * jump_prev and jump = jump_prev * s (convs and
pools alike: a 1x1 conv does not grow it). Where paths meet (a residual add, a concat)
the largest receptive field is taken. A global pool sees the whole input, and past an
op that enlarges the image (a transposed conv with stride, an upsample) the fields are not
followed.

Parameter sharing: next to each conv, what a fully connected layer from the same input
(the image stretched into one vector: 32x32x3 = 3,072 values) to the same output would
cost.

Activation growth: the memory each layer's tensors take at the chosen batch, and what a
pool or a 1x1 conv saves (or costs) where one follows.

Ops are recognised by their attribute records (a window has `kernel_size` and `stride`;
an adaptive pool an `output_size`), not by name, so new operators fall in line.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir.graph import Graph, Layer, Node
from ..ir.shapes import concrete, format_shape, numel, per_sample_numel
from .summary import BYTES_PER_ELEMENT, human_bytes


@dataclass(frozen=True)
class Field:
    """The receptive field of a value, per spatial dim, in input pixels."""

    rf: tuple[int, ...]
    jump: tuple[int, ...]

    def text(self) -> str:
        return f"{_dims(self.rf)} px, jump {_dims(self.jump)} px"


def _dims(values: tuple[int, ...]) -> str:
    return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))


def _spatial(node: Node) -> tuple[int, ...] | None:
    sizes = node.shape[2:]
    if len(node.shape) < 3 or not all(isinstance(d, int) for d in sizes):
        return None
    return tuple(sizes)


class Lessons:
    """The three lessons for one graph at one batch size."""

    def __init__(self, graph: Graph, batch: int):
        self.graph = graph
        self.batch = batch
        self.fields: dict[int, Field] = {}
        self.rf_lines: dict[int, list[str]] = {}
        self.branched = False  # some path was shorter than another where they met
        for node in graph.nodes():
            self._follow(node)

    # ------------------------------------------------------------ receptive field
    def _follow(self, node: Node) -> None:
        out = _spatial(node)
        if out is None:
            return
        if node.op == "input":
            self.fields[node.id] = Field((1,) * len(out), (1,) * len(out))
            return
        known = [(i, self.fields[i]) for i in dict.fromkeys(node.inputs) if i in self.fields]
        if not known:
            return
        lines = []
        field = known[0][1]
        if len(known) > 1:
            rf = tuple(max(f.rf[d] for _, f in known) for d in range(len(field.rf)))
            jump = tuple(max(f.jump[d] for _, f in known) for d in range(len(field.jump)))
            if len({f for _, f in known}) > 1:
                self.branched = True
                seen = ", ".join(_dims(f.rf) for _, f in known)
                lines.append(f"receptive field: paths meet; the largest is taken: "
                             f"rf = max({seen}) = {_dims(rf)} px, jump {_dims(jump)} px")
            field = Field(rf, jump)
        before = _spatial(self.graph.node(known[0][0]))
        field, more = self._through(node, field, before, out)
        lines += more
        if field is not None:
            self.fields[node.id] = field
        if lines:
            self.rf_lines[node.id] = lines

    def _through(self, node: Node, field: Field, before: tuple[int, ...],
                 out: tuple[int, ...]) -> tuple[Field | None, list[str]]:
        attrs = node.attrs
        kernel = getattr(attrs, "kernel_size", None)
        stride = getattr(attrs, "stride", None)
        if len(out) != len(field.rf):
            return None, []
        if any(o > b for o, b in zip(out, before)):
            return None, [f"receptive field: {node.op} enlarges the image; fields past it are "
                          "not followed here"]
        if isinstance(kernel, tuple) and isinstance(stride, tuple) and len(kernel) == len(out):
            dilation = getattr(attrs, "dilation", None)
            dilation = dilation if isinstance(dilation, tuple) else (1,) * len(kernel)
            return _window(field, kernel, stride, dilation, node.params != ())
        if getattr(attrs, "output_size", None) is not None and out != before:
            if all(o == 1 for o in out):
                size = "x".join(map(str, before))
                return None, [f"receptive field: global pooling: each output sees the whole "
                              f"{size} input, every path of rf {_dims(field.rf)} px"]
            if all(b % o == 0 for b, o in zip(before, out)):
                k = tuple(b // o for b, o in zip(before, out))
                field, lines = _window(field, k, k, (1,) * len(k), False)
                return field, [f"(adaptive pooling {_dims(before)} -> {_dims(out)}: windows of "
                               f"{_dims(k)} at stride {_dims(k)})"] + lines
            return None, ["receptive field: uneven adaptive windows; not followed here"]
        if out == before:
            return field, []
        return None, []

    # ------------------------------------------------------------ what summary shows
    def node_lines(self, node: Node) -> list[str]:
        """The lessons' lines under one operator: its field, its sharing, its saving."""
        lines = list(self.rf_lines.get(node.id, []))
        lines += self._sharing(node)
        lines += self._saving(node)
        return lines

    def _sharing(self, node: Node) -> list[str]:
        if not node.params or getattr(node.attrs, "kernel_size", None) is None \
                or _spatial(node) is None:
            return []
        src = self.graph.node(node.inputs[0])
        n_in, n_out = per_sample_numel(src.shape), per_sample_numel(node.shape)
        weights = sum(p.numel() for p in node.params)
        dense = n_in * n_out + n_out
        positions = per_sample_numel(node.shape[2:])
        return [f"parameter sharing: a fully connected layer from the same input "
                f"({_volume(src)} = {n_in:,} values) to the same output ({_volume(node)} = "
                f"{n_out:,} values) needs {n_in:,}*{n_out:,} + {n_out:,} = {dense:,} "
                f"parameters; this conv's {weights:,} are shared by all {positions:,} output "
                f"positions ({dense / max(weights, 1):,.0f}x fewer)"]

    def _saving(self, node: Node) -> list[str]:
        """What a pool or a 1x1 conv does to activation memory."""
        kernel = getattr(node.attrs, "kernel_size", None)
        pool = not node.params and (kernel is not None
                                    or getattr(node.attrs, "output_size", None) is not None)
        one_by_one = bool(node.params) and isinstance(kernel, tuple) and set(kernel) == {1}
        if not (pool or one_by_one) or not node.inputs:
            return []
        src = self.graph.node(node.inputs[0])
        before, after = self.bytes(src), self.bytes(node)
        what = "the pool" if pool else "the 1x1 conv"
        if after < before:
            change = f"{what} saves {human_bytes(before - after)} ({before / after:.1f}x less)"
        elif after > before:
            change = f"{what} costs {human_bytes(after - before)} more ({after / before:.1f}x)"
        else:
            change = f"{what} keeps it"
        return [f"activation memory at batch {self.batch}: "
                f"{format_shape(concrete(src.shape, self.batch))} in = {human_bytes(before)}, "
                f"{format_shape(concrete(node.shape, self.batch))} out = {human_bytes(after)}: "
                f"{change}"]

    def bytes(self, node: Node) -> int:
        return numel(node.shape, self.batch) * BYTES_PER_ELEMENT

    def layer_line(self, layer: Layer, nodes: list[Node]) -> str | None:
        """Under each layer: the receptive field and the activation memory of its output."""
        out = self.graph.node(layer.output)
        parts = []
        field = self.fields.get(layer.output)
        if field is not None:
            parts.append(f"receptive field {field.text()}")
        if nodes:
            written = sum(self.bytes(n) for n in nodes)
            ops = f"its {len(nodes)} ops" if len(nodes) > 1 else "its op"
            ops += " (before fusion)" if len(nodes) > 1 else ""
            parts.append(f"activations at batch {self.batch}: {human_bytes(written)} written by "
                         f"{ops}, {human_bytes(self.bytes(out))} in its output")
        if not parts:
            return None
        return f"{layer.name} -> {format_shape(concrete(out.shape, self.batch))}: " + \
            "; ".join(parts)

    def closing_lines(self) -> list[str]:
        """The receptive field of the last value that still has one."""
        last = [n for n in self.graph.nodes() if n.id in self.fields and n.op != "input"]
        if not last:
            return []
        node = last[-1]
        line = (f"receptive field of the last spatial value ({node.layer}, {node.op}): "
                f"{self.fields[node.id].text()}")
        if self.branched:
            line += " (where paths of different reach meet, the largest is taken)"
        return [line]


def _window(field: Field, kernel, stride, dilation, has_params: bool):
    rf = tuple(r + (k - 1) * d * j for r, k, d, j in zip(field.rf, kernel, dilation, field.jump))
    jump = tuple(j * s for j, s in zip(field.jump, stride))
    same = len(set(zip(kernel, stride, dilation, field.rf, field.jump))) == 1
    names = {1: "L", 2: "HW", 3: "DHW"}.get(len(rf), "0123456789")
    parts = []
    for i in [0] if same else range(len(rf)):
        parts.append(f"{'' if same else names[i] + ': '}rf = {field.rf[i]} + ({kernel[i]} - 1) "
                     f"* {dilation[i]} * {field.jump[i]} = {rf[i]} px, jump = {field.jump[i]} "
                     f"* {stride[i]} = {jump[i]} px")
    line = "receptive field: " + "; ".join(parts)
    if has_params and set(kernel) == {1}:
        line += " (a 1x1 conv does not grow it)"
    return Field(rf, jump), [line]


def _volume(node: Node) -> str:
    """A per-sample shape as the lecture writes it: H x W x C."""
    dims = [d for d in node.shape[1:]]
    return "x".join(str(d) for d in (dims[1:] + dims[:1]))


__all__ = ["Field", "Lessons"]
