"""What every template produces, and what it may ask of the module emitter."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.graph import Graph
from ..passes.plan import Kernel
from .source import identifier, shown

SPATIAL = {1: ("l",), 2: ("h", "w"), 3: ("d", "h", "w")}


@dataclass
class Argument:
    """A tensor the launcher passes: a run-time value of the forward function.

    kind: "value" (a node's tensor) or "param" (a parameter or buffer by dotted name).
    Nothing computed from parameter values is passed: kernels read parameters as they are.
    """

    name: str  # the launcher's parameter name
    kind: str
    ref: object  # node id or parameter name


@dataclass
class EmittedKernel:
    name: str
    source: str  # the @triton.jit function and its launcher
    launcher: str  # the launcher function's name: launcher(out, *arguments)
    arguments: list[Argument]  # what the launcher takes after `out`, in order
    helpers: set[str] = field(default_factory=set)  # shared jit helpers it calls
    jit: str = ""  # the @triton.jit function alone (builder kernels say; see parts())
    host: str = ""  # the launcher alone
    # flags the launcher computes from global state unless given (name -> `function(x)`):
    # a forward computes each once (`function(dtype)`) and passes it to every launch
    keyed: dict[str, str] = field(default_factory=dict)

    def parts(self) -> tuple[str, str]:
        """(the @triton.jit function, the launcher): a template that writes both into
        `source` puts the launcher last, so the split is where its def starts."""
        if self.jit:
            return self.jit, self.host
        cut = self.source.index(f"\ndef {self.launcher}(")
        return self.source[:cut].rstrip("\n") + "\n", self.source[cut + 1:]


@dataclass
class EmitContext:
    graph: Graph
    kernel: Kernel
    prefix: str = "k"  # "k" for the eval plan's kernels, "t" for the training plan's

    @property
    def name(self) -> str:
        anchor = self.graph.node(self.kernel.anchor)
        return identifier(f"{self.prefix}{self.kernel.index}_{anchor.op}")

    def node(self, node_id: int):
        return self.graph.node(node_id)

    def describe(self) -> list[str]:
        """Header comment lines: the ops covered and the file:line each came from (a block
        file's own name and line for a node written there)."""
        lines = []
        for node_id in self.kernel.nodes:
            node = self.graph.node(node_id)
            where = (f"{safe_file_name(node.loc.file)}:{node.loc.line}"
                     if node.loc is not None else "?")
            scope = f" [{shown(node.scope)}]" if node.scope else ""
            lines.append(f"{node.op:<22} layer {shown(node.layer)}{scope}, {where}")
        return lines


def safe_file_name(path: str | None) -> str:
    """A source file's name for generated comments: its base name when that is an
    identifier with `.cnn` (user text reaches generated code only validated)."""
    base = (path or "").replace("\\", "/").rsplit("/", 1)[-1]
    stem = base[:-4] if base.endswith(".cnn") else base
    try:
        return identifier(stem) + (".cnn" if base.endswith(".cnn") else "")
    except ValueError:
        return "a .cnn source"


def launch_lines(src, kernel: str, grid: str, args: list[str], per_line: int = 6) -> None:
    """`kernel[grid](args...)`, a few arguments a line."""
    src.line(f"{kernel}[{grid}](")
    with src.indent():
        for i in range(0, len(args), per_line):
            src.line(", ".join(args[i:i + per_line]) + ",")
    src.line(")")


def def_lines(src, kernel: str, params: list[str], per_line: int = 6) -> None:
    """`@triton.jit`-ready `def kernel(params...):`, a few parameters a line."""
    with src.indent(f"def {kernel}("):
        for i in range(0, len(params), per_line):
            src.line(", ".join(params[i:i + per_line]) + ",")
    src.line("):")


def split_index(src, flat: str, names: list[str], sizes: list[str], rest: str = "rest") -> None:
    """Split a flat index into per-dim indices, innermost last: names[i] gets size sizes[i];
    what remains (the outermost index) is left in `rest`."""
    src.line(f"{rest} = {flat}")
    for name, size in zip(reversed(names), reversed(sizes)):
        src.line(f"{name} = {rest} % {size}")
        src.line(f"{rest} = {rest} // {size}")
