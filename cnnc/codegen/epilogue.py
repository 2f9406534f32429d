"""The epilogue slot: elementwise ops applied to a kernel's result before it is stored.

A template computes its value `acc` (float32) over a tile of output elements and gives,
for each output dim d, an index expression that broadcasts over the tile (for a GEMM
tile, `n[:, None]` for the batch and `co[None, :]` for channels). The epilogue then
applies each fused node: an activation (its op's triton_expr), add/mul with a number
or another tensor (loaded through that tensor's broadcast strides), or a batch-norm
affine (per-channel scale and shift computed from the parameters at run time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..ir.graph import Graph
from ..ops import OPS
from .kernel import Derived
from .source import number

COMBINE = {"add": "+", "mul": "*"}


@dataclass
class Operand:
    """A tensor the epilogue reads: kernel parameters `{name}_ptr, {name}_s0, ...`, one
    stride per output dim (support.broadcast_strides)."""

    name: str
    node: int
    rank: int

    def params(self) -> list[str]:
        return [f"{self.name}_ptr"] + [f"{self.name}_s{d}" for d in range(self.rank)]


@dataclass
class Affine:
    """A batch norm applied as y = x * scale + shift: params `{name}_scale_ptr`, `_shift_ptr`."""

    name: str
    node: int

    def params(self) -> list[str]:
        return [f"{self.name}_scale_ptr", f"{self.name}_shift_ptr"]


@dataclass
class Epilogue:
    graph: Graph
    nodes: list[int]
    start: int  # the node whose value `acc` holds when the epilogue begins
    operands: list[Operand] = field(default_factory=list)
    affines: list[Affine] = field(default_factory=list)
    uses_tanh: bool = False

    def __post_init__(self):
        last = self.nodes[-1] if self.nodes else self.start
        out_rank = len(self.graph.node(last).shape)  # operands are read at the output's rank
        value = self.start
        for node_id in self.nodes:
            node = self.graph.node(node_id)
            if node.op == "batch_norm":
                self.affines.append(Affine(f"bn{len(self.affines)}", node_id))
            for i in self._operand_inputs(node, value):
                if i not in [o.node for o in self.operands]:
                    self.operands.append(Operand(f"r{len(self.operands)}", i, out_rank))
            value = node_id

    @staticmethod
    def _operand_inputs(node, value: int) -> list[int]:
        if node.op not in COMBINE:
            return []
        return [i for i in node.inputs if i != value]

    def params(self) -> list[str]:
        out: list[str] = []
        for item in (*self.operands, *self.affines):
            out += item.params()
        return out

    def lines(self, acc: str, index: Callable[[int], str], mask: str, rank: int,
              random_offsets: str | None = None) -> list[str]:
        """Code applying every node to `acc`. index(d): output dim d's index expression;
        random_offsets: per-element offsets for dropout's random numbers (and `seed`)."""
        code: list[str] = []
        value = self.start
        loaded: set[str] = set()
        for node_id in self.nodes:
            node = self.graph.node(node_id)
            line = f", line {node.loc.line}" if node.loc else ""
            code.append(f"# {node.op} (layer {node.layer}{line})")
            if node.op == "batch_norm":
                affine = next(a for a in self.affines if a.node == node_id)
                c = index(1)
                code.append(f"{acc} = {acc} * tl.load({affine.name}_scale_ptr + {c}, mask={mask}"
                            f", other=1.0) + tl.load({affine.name}_shift_ptr + {c}, mask={mask},"
                            f" other=0.0)")
            elif node.op in COMBINE:
                terms = []
                for arg_index, i in enumerate(node.inputs):
                    if i == value:
                        terms.append(acc)
                        continue
                    operand = next(o for o in self.operands if o.node == i)
                    if operand.name not in loaded:
                        code.append(self._load(operand, index, mask, rank))
                        loaded.add(operand.name)
                    terms.append(operand.name)
                for scalar in node.attrs.others:
                    if not hasattr(scalar, "index"):
                        terms.append(number(float(scalar)))
                code.append(f"{acc} = " + f" {COMBINE[node.op]} ".join(terms))
            elif node.op == "dropout":
                if random_offsets is None:
                    raise ValueError("dropout needs a template with random offsets")
                p = node.attrs.p
                scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
                code.append(f"keep = tl.rand(seed, {random_offsets}) >= {number(float(p))}")
                # A product, as in PyTorch: a dropped NaN or inf gives NaN, not 0.
                code.append(f"{acc} = {acc} * tl.where(keep, {number(scale)}, 0.0)")
            else:
                expr = OPS[node.op].triton_expr(node.attrs, acc)
                self.uses_tanh |= "_cnnc_tanh" in expr
                code.append(f"{acc} = {expr}")
            value = node_id
        return code

    @staticmethod
    def _load(operand: Operand, index: Callable[[int], str], mask: str, rank: int) -> str:
        # Strides are the operand's broadcast to the output's shape (0 along broadcast dims).
        terms = [f"{index(d)} * {operand.name}_s{d}" for d in range(operand.rank)]
        offset = " + ".join(terms) if terms else "0"
        return (f"{operand.name} = tl.load({operand.name}_ptr + {offset}, mask={mask}, "
                f"other=0.0).to(tl.float32)")


def param_name(node, leaf: str) -> str | None:
    """The dotted name of a node's parameter `leaf`, or None when it has none (no bias)."""
    return f"{node.scope}.{leaf}" if any(s.name == leaf for s in node.params) else None


def epilogue_refs(epi: Epilogue) -> list[tuple[str, str, object]]:
    """(launcher parameter, Argument kind, reference) for each tensor the epilogue reads."""
    refs = [(op.name, "value", op.node) for op in epi.operands]
    for affine in epi.affines:
        refs.append((f"{affine.name}_scale", "derived", f"{affine.name}.scale.{affine.node}"))
        refs.append((f"{affine.name}_shift", "derived", f"{affine.name}.shift.{affine.node}"))
    return refs


def epilogue_arguments(epi: Epilogue, graph, derived) -> tuple[list[str], list[str]]:
    """Launcher parameters for the epilogue's tensors, and what it passes to the kernel."""
    params, call = [], []
    for op in epi.operands:
        params.append(op.name)
        call += [op.name, f"*broadcast_strides({op.name}, out.shape)"]
    for affine in epi.affines:
        bn = graph.node(affine.node)
        sources = [param_name(bn, "weight"), param_name(bn, "bias"), f"{bn.scope}.running_mean",
                   f"{bn.scope}.running_var"]
        for pick, part in ((0, "scale"), (1, "shift")):
            derived.append(Derived(f"{affine.name}.{part}.{affine.node}", "batch_norm_scale_shift",
                                   sources, [number(bn.attrs.eps)], pick=pick))
        params += [f"{affine.name}_scale", f"{affine.name}_shift"]
        call += [f"{affine.name}_scale", f"{affine.name}_shift"]
    return params, call
