"""The epilogue slot: elementwise ops applied to a kernel's result before it is stored.

A template computes its value `acc` (float32: the builder's ACC, float64 for float64
tensors) over a tile of output elements and gives, for each output dim d, an index
expression that broadcasts over the tile (for a GEMM tile, `n[:, None]` for the batch
and `co[None, :]` for channels). The epilogue then applies each fused node: an
activation (its op's triton_expr), add/mul with a number or another tensor (loaded
through that tensor's broadcast strides), or an eval-mode batch norm as a per-channel
affine whose scale and shift the kernel computes from the batch norm's own parameters
and buffers at every launch. Nothing derived from parameter values lives outside the
kernel, so no change of a parameter (`.data` included) is missed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..ir.graph import Graph
from ..ops import OPS
from .source import number

COMBINE = {"add": "+", "mul": "*"}
BATCH_NORM_LEAVES = ("weight", "bias", "running_mean", "running_var")  # what an affine reads


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
    """An eval-mode batch norm, y = x * scale + shift per channel, computed in float32 as
    PyTorch does: scale = weight / sqrt(running_var + eps), shift = bias - running_mean *
    scale. Kernel parameters `{name}_{leaf}_ptr`, one per leaf the batch norm has."""

    name: str
    node: int
    leaves: list[str]  # of weight, bias, running_mean, running_var: those present
    eps: float

    def params(self) -> list[str]:
        return [f"{self.name}_{leaf}_ptr" for leaf in self.leaves]

    def lines(self, c: str, mask: str) -> list[str]:
        """`{name}_scale` and `{name}_shift` at channel index `c` (a tensor), under `mask`."""
        def load(leaf: str, other: str) -> str:
            return (f"tl.load({self.name}_{leaf}_ptr + {c}, mask={mask}, other={other})"
                    ".to(tl.float32)")

        n = self.name
        # Rounded division and square root: bit for bit PyTorch's 1 / std::sqrt(var + eps).
        code = [f"# {n}: batch norm scale and shift per channel, from its parameters as they are",
                f"{n}_var = {load('running_var', '1.0')}",
                f"{n}_scale = _cnnc_rstd({n}_var, {number(self.eps)})"]
        if "weight" in self.leaves:
            code.append(f"{n}_scale = {n}_scale * {load('weight', '1.0')}")
        code.append(f"{n}_mean = {load('running_mean', '0.0')}")
        if "bias" in self.leaves:
            code.append(f"{n}_shift = {load('bias', '0.0')} - {n}_mean * {n}_scale")
        else:
            code.append(f"{n}_shift = -({n}_mean * {n}_scale)")
        return code


@dataclass
class Slope:
    """An op with a learned slope per channel or a single one (prelu, `channel_slope`):
    kernel parameter `{name}_ptr`, read at the channel index, or at 0 for one slope."""

    name: str
    node: int
    per_channel: bool

    def params(self) -> list[str]:
        return [f"{self.name}_ptr"]

    def load(self, index: Callable[[int], str], mask: str) -> str:
        if not self.per_channel:
            return f"{self.name} = tl.load({self.name}_ptr).to(tl.float32)"
        return (f"{self.name} = tl.load({self.name}_ptr + {index(1)}, mask={mask}, "
                "other=0.0).to(tl.float32)")


@dataclass
class Epilogue:
    graph: Graph
    nodes: list[int]
    start: int  # the node whose value `acc` holds when the epilogue begins
    operands: list[Operand] = field(default_factory=list)
    affines: list[Affine] = field(default_factory=list)
    slopes: list[Slope] = field(default_factory=list)
    uses_tanh: bool = False

    def __post_init__(self):
        last = self.nodes[-1] if self.nodes else self.start
        out_rank = len(self.graph.node(last).shape)  # operands are read at the output's rank
        value = self.start
        for node_id in self.nodes:
            node = self.graph.node(node_id)
            if node.op == "batch_norm":
                leaves = [s.name for s in node.params if s.name in BATCH_NORM_LEAVES]
                self.affines.append(Affine(f"bn{len(self.affines)}", node_id, leaves,
                                           node.attrs.eps))
            slope = getattr(OPS[node.op], "channel_slope", None)
            if slope is not None:
                spec = next(s for s in node.params if s.name == slope)
                self.slopes.append(Slope(f"pw{len(self.slopes)}", node_id,
                                         spec.shape != (1,)))
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
        for item in (*self.operands, *self.affines, *self.slopes):
            out += item.params()
        return out

    def channel_lines(self, c: str, mask: str) -> list[str]:
        """Every batch norm's scale and shift at the channel vector `c`: a template whose
        tile has one computes them once, and passes `channels` to `lines`."""
        return [line for affine in self.affines for line in affine.lines(c, mask)]

    def lines(self, acc: str, index: Callable[[int], str], mask: str, rank: int,
              random_offsets: str | None = None, channels: str | None = None) -> list[str]:
        """Code applying every node to `acc`. index(d): output dim d's index expression;
        random_offsets: per-element offsets for dropout's random numbers (and `seed`);
        channels: how channel_lines' vectors broadcast over the tile (`[None, :]`), or
        None to compute them here, element by element."""
        code: list[str] = []
        value = self.start
        loaded: set[str] = set()
        for node_id in self.nodes:
            node = self.graph.node(node_id)
            # The op alone: the kernel's header says which layers and lines it holds
            # (a body shared by kernels of several layers names none of them).
            code.append(f"# {node.op}")
            if node.op == "batch_norm":
                affine = next(a for a in self.affines if a.node == node_id)
                if channels is None:
                    code.extend(affine.lines(index(1), mask))
                cast = channels or ""
                code.append(f"{acc} = {acc} * {affine.name}_scale{cast} + "
                            f"{affine.name}_shift{cast}")
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
            elif any(s.node == node_id for s in self.slopes):
                slope = next(s for s in self.slopes if s.node == node_id)
                code.append(slope.load(index, mask))
                code.append(f"{acc} = {OPS[node.op].triton_expr(node.attrs, acc, slope.name)}")
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


def epilogue_refs(epi: Epilogue) -> list[tuple[str, str, object]]:
    """(launcher parameter, Argument kind, reference) for each tensor the epilogue reads."""
    refs = [(op.name, "value", op.node) for op in epi.operands]
    for affine in epi.affines:
        bn = epi.graph.node(affine.node)
        names = {spec.name: bn.param_name(spec) for spec in bn.params}
        refs += [(f"{affine.name}_{leaf}", "param", names[leaf]) for leaf in affine.leaves]
    for slope in epi.slopes:
        node = epi.graph.node(slope.node)
        spec = next(s for s in node.params if s.name == OPS[node.op].channel_slope)
        refs.append((slope.name, "param", node.param_name(spec)))
    return refs


def epilogue_arguments(epi: Epilogue) -> tuple[list[str], list[str]]:
    """Launcher parameters for the epilogue's tensors, and what it passes to the kernel."""
    params, call = [], []
    for op in epi.operands:
        params.append(op.name)
        call += [op.name, f"*broadcast_strides({op.name}, out.shape)"]
    for affine in epi.affines:
        names = [f"{affine.name}_{leaf}" for leaf in affine.leaves]
        params += names
        call += names
    for slope in epi.slopes:
        params.append(slope.name)
        call.append(slope.name)
    return params, call
