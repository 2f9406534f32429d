"""`cnnc inspect`: every kernel of a plan compiled for a GPU that need not be here, with
what decides its speed: registers, spills, shared memory, warps and stages, whether its
main loop is pipelined and on tensor cores, and a roofline time at the target's peak."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..codegen.kernel import EmitContext
from ..ir.graph import Graph
from ..ops import OPS, TensorInfo
from ..runtime.aot import AotError, Launch, compile_plan


@dataclass(frozen=True)
class Peak:
    """A GPU's peak rates: dense tensor-core FLOP/s by input precision, FP32 FMA FLOP/s,
    and memory bandwidth in bytes/s."""

    name: str
    bf16: float
    tf32: float
    fp32: float
    bandwidth: float


PEAKS = {
    "sm_90": Peak("H100 SXM", 989e12, 495e12, 67e12, 3.35e12),
    "sm_80": Peak("A100 SXM", 312e12, 156e12, 19.5e12, 2.0e12),
}


@dataclass
class KernelRow:
    launch: Launch
    layers: list[str]
    ops: list[str]
    flops: int  # 2 x the MACs of the ops it computes
    precision: str  # the peak its FLOPs are measured against: bf16, tf32 or fp32
    roofline_us: float
    bound: str  # "compute" or "memory"


@dataclass
class Inspection:
    network: str
    target: str
    peak: Peak
    dtype: torch.dtype
    batch: int
    training: bool
    rows: list[KernelRow]
    backward: bool = False  # a whole training step: the differentiable forward + backward

    @property
    def failures(self) -> list[KernelRow]:
        return [r for r in self.rows if r.launch.error is not None]

    @property
    def spilling(self) -> list[KernelRow]:
        return [r for r in self.rows if r.launch.spill_bytes > 0]

    @property
    def dots_off_tensor_cores(self) -> list[KernelRow]:
        return [r for r in self.rows if r.launch.has_dot and not r.launch.tensor_cores]

    @property
    def dots_not_pipelined(self) -> list[KernelRow]:
        return [r for r in self.rows if r.launch.has_dot
                and r.launch.pipelined not in ("all", "no loop")]


def total_launches(graph: Graph, training: bool, backward: bool = False) -> int | None:
    """The kernels of the plan (for a progress bar; concat copies come on top), or None
    for a training step, whose backward launches are known only as they come."""
    return None if backward else len(_kernel_nodes(graph, training))


def _kernel_nodes(graph: Graph, training: bool, backward: bool = False) -> dict[str, tuple]:
    """jit function name -> (graph, nodes) for every kernel of the plan; with backward,
    the differentiable training plan's kernels, whose names also name their autograd
    units and chain-backward kernels."""
    from ..codegen.backward import GRAD_PREFIX
    from ..passes import plan as make_plan

    if backward:
        plan = make_plan(graph, training=True, differentiable=True)
        prefixes = [GRAD_PREFIX["train"], "b" + GRAD_PREFIX["train"][1]]
    else:
        plan = make_plan(graph, training=training)
        prefixes = ["t" if training else "k"]
    return {EmitContext(plan.graph, k, prefix).name: (plan.graph, k.nodes)
            for prefix in prefixes for k in plan.kernels}


def _flops(graph: Graph, nodes, batch: int) -> int:
    macs = 0
    for node_id in nodes:
        node = graph.node(node_id)
        infos = [TensorInfo(graph.node(i).shape, graph.node(i).label) for i in node.inputs]
        macs += OPS[node.op].macs(node.attrs, infos, node.shape) * batch
    return 2 * macs


def _precision(launch: Launch, dtype: torch.dtype) -> str:
    if launch.tensor_cores:
        return "tf32" if dtype == torch.float32 else "bf16"
    return "fp32"


def inspect_network(graph: Graph, target: str = "sm_90", dtype: torch.dtype = torch.float32,
                    batch: int = 1, training: bool = False, progress=None,
                    backward: bool = False) -> Inspection:
    """Compile the network's kernels for `target` and describe each launch: of one forward
    in eval or training mode, or with `backward` of one training step."""
    from ..compiler import generate

    if backward and graph.parameter_count() == 0:
        raise AotError(f"network {graph.name} has no trainable parameters: a training step "
                       "computes no gradient, so it has no backward kernels to compile "
                       "(inspect its forward: --training without --backward)")
    generated = generate(graph)
    launches = compile_plan(generated.source, generated.class_name, target, dtype, batch,
                            training, progress, backward=backward)
    peak = PEAKS[target]
    kernels = _kernel_nodes(graph, training, backward)
    rows = []
    for launch in launches:
        plan_graph, nodes = kernels.get(launch.kernel, (None, []))
        if plan_graph is None:
            flops = 0
        elif launch.backward:  # a gradient GEMM does the anchor's MACs once per gradient
            flops = _flops(plan_graph, nodes[:1], batch) * _gradient_gemms(launch)
        else:
            flops = _flops(plan_graph, nodes, batch)
        layers = list(dict.fromkeys(plan_graph.node(n).layer for n in nodes)) \
            if plan_graph is not None else []
        ops = [plan_graph.node(n).op for n in nodes] if plan_graph is not None else ["copy"]
        if launch.backward:
            ops = ["backward of"] + ops
        precision = _precision(launch, dtype)
        compute_s = flops / getattr(peak, precision)
        memory_s = launch.tensor_bytes / peak.bandwidth
        rows.append(KernelRow(launch, layers, ops, flops, precision,
                              max(compute_s, memory_s) * 1e6,
                              "compute" if compute_s >= memory_s else "memory"))
    return Inspection(graph.name, target, peak, dtype, batch, training or backward, rows,
                      backward)


def _gradient_gemms(launch: Launch) -> int:
    """How many of an anchor's gradient GEMMs a backward launch computes: the data and the
    weight gradient parts its switches turn on (HAS_DX, HAS_DW with the weight computed,
    not only the bias); a chain or reduction kernel none."""
    if not launch.has_dot:
        return 0
    on = launch.switches or {}
    weight = on.get("HAS_DW", False) and on.get("DW_COMPUTE_W", on.get("COMPUTE_W", True))
    return int(on.get("HAS_DX", False)) + int(weight) or 1


def _name(launch: Launch) -> str:
    """The plan kernel, and the jit function where it is another kernel's (one body) or a
    second kernel of the same launcher (batch statistics)."""
    if launch.function in (launch.kernel, "_cnnc_copy"):
        return launch.kernel
    return f"{launch.kernel} ({launch.function})"


def _yes(flag: bool, applies: bool) -> str:
    if not applies:
        return "-"
    return "yes" if flag else "NO"


def render(inspection: Inspection, console) -> None:
    from rich.table import Table
    from rich.text import Text

    mode = ("training step (forward + backward)" if inspection.backward else
            "training forward" if inspection.training else "eval forward")
    dtype = str(inspection.dtype).replace("torch.", "")
    table = Table(title=Text(f"{inspection.network}: {mode}, {dtype}, batch "
                             f"{inspection.batch}, {inspection.target} "
                             f"({inspection.peak.name} peaks)"), title_justify="left")
    for column, justify in (("kernel", "left"), ("ops", "left"), ("regs", "right"),
                            ("spill B", "right"), ("smem B", "right"), ("warps", "right"),
                            ("stages", "right"), ("pipelined", "left"), ("tensor cores", "left"),
                            ("GFLOP", "right"), ("MB", "right"), ("roofline µs", "right"),
                            ("bound by", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for row in inspection.rows:
        launch = row.launch
        ops = Text(" -> ".join(row.ops))
        if launch.error is not None:
            table.add_row(Text(_name(launch)), ops, Text(f"FAILED: {launch.error}"),
                          *[""] * 10)
            continue
        table.add_row(
            Text(_name(launch)), ops, str(launch.registers), str(launch.spill_bytes),
            str(launch.shared_bytes), str(launch.num_warps), str(launch.num_stages),
            launch.pipelined if launch.pipelined != "none" else "NO",
            _yes(launch.tensor_cores, launch.has_dot),
            f"{row.flops / 1e9:.3f}", f"{launch.tensor_bytes / 1e6:.2f}",
            f"{row.roofline_us:.2f}", f"{row.bound} ({row.precision})" if row.bound == "compute"
            else "memory",
        )
    console.print(table)
    total = sum(r.roofline_us for r in inspection.rows)
    console.print(Text(
        f"{len(inspection.rows)} launches, roofline total {total:.1f} µs; "
        f"{len(inspection.failures)} failed to compile, {len(inspection.spilling)} spill, "
        f"{len(inspection.dots_off_tensor_cores)} dot kernels off tensor cores, "
        f"{len(inspection.dots_not_pipelined)} dot kernels not fully pipelined"))


__all__ = ["PEAKS", "Inspection", "KernelRow", "inspect_network", "render", "total_launches"]
