"""The backward of an elementwise chain: one kernel for every op of a group's epilogue.

Reads the gradient of the group's output and what the group kept, and writes the
gradient of the chain's start and of every tensor the chain reads, in one pass:

- a pointwise group keeps its inputs: the kernel recomputes the chain forward in
  registers (each intermediate value named), then walks it backwards;
- an anchor's epilogue (differentiable plans, passes/fuse.py) holds adds, products with
  numbers and last an activation whose derivative its output gives: the kernel reads the
  group's output `y` and needs nothing else.

Each op's derivative is its Op's `derivative` expression; add passes the gradient to
every operand, mul multiplies by the other factors, an eval batch norm scales by its
per-channel scale and contributes `g * xhat` and `g` to its weight and bias (summed over
the batch and positions by the caller), dropout regenerates its mask from the forward's
seed and offsets (`tl.rand(seed, flat index)`: the forward's own numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...ops import OPS
from ..builder import KernelBuilder
from ..epilogue import COMBINE, Epilogue
from ..kernel import EmitContext, EmittedKernel
from ..source import number


@dataclass
class ChainGrads:
    """What the emitted launcher takes and gives, for the group's backward function.

    launcher(gstart, g, *reads, *outputs): `reads` are node ids (values kept by the group,
    or "y"), parameters by name for batch norms; `outputs` (node id or (bn node, leaf))
    are full-output-shape buffers the kernel writes, besides `gstart` (the start's).
    """

    kernel: EmittedKernel
    start: int
    reads: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    seed: bool = False


def emit(ctx: EmitContext, recompute: bool) -> ChainGrads:
    graph, kernel = ctx.graph, ctx.kernel
    anchor = graph.node(kernel.anchor)
    out = graph.node(kernel.output)
    rank = len(out.shape)
    if recompute:  # a pointwise group: the anchor is the chain's first op
        nodes, start = [kernel.anchor, *kernel.epilogue], anchor.inputs[0]
    else:
        nodes, start = list(kernel.epilogue), kernel.anchor
    epi = Epilogue(graph, nodes, start)
    dropout = any(graph.node(n).op == "dropout" for n in nodes)
    ops = " -> ".join(graph.node(n).op for n in nodes)
    result = ChainGrads(None, start, seed=dropout)

    b = KernelBuilder(ctx, "elementwise", f"Backward of the elementwise chain {ops}.")
    pointers, calls, strides = ["g_ptr"], ["g"], ["*g.stride()"]
    stride_params = [f"sg{d}" for d in range(rank)]
    if recompute:
        pointers.append("x_ptr")
        calls.append("x")
        strides.append("*broadcast_strides(x, out.shape)")
        stride_params += [f"sx{d}" for d in range(rank)]
        result.reads.append(start)
        for operand in epi.operands:
            pointers.append(f"{operand.name}_ptr")
            calls.append(operand.name)
            strides.append(f"*broadcast_strides({operand.name}, out.shape)")
            stride_params += [f"{operand.name}_s{d}" for d in range(rank)]
            result.reads.append(operand.node)
        for affine in epi.affines:
            bn = graph.node(affine.node)
            names = {spec.name: bn.param_name(spec) for spec in bn.params}
            for leaf in affine.leaves:
                pointers.append(f"{affine.name}_{leaf}_ptr")
                calls.append(f"{affine.name}_{leaf}")
                result.reads.append(("param", names[leaf]))
        for slope in epi.slopes:
            node = graph.node(slope.node)
            leaf = OPS[node.op].channel_slope
            spec = next(s for s in node.params if s.name == leaf)
            pointers.append(f"{slope.name}_ptr")
            calls.append(slope.name)
            result.reads.append(("param", node.param_name(spec)))
    else:
        pointers.append("y_ptr")
        calls.append("y")
        strides.append("*y.stride()")
        stride_params += [f"sy{d}" for d in range(rank)]
        result.reads.append("y")
    # Outputs besides gstart (`out`): one per operand, two per batch norm with weight.
    grads: dict[object, str] = {start: "gstart"}
    for operand in epi.operands:
        if operand.node != start:
            grads[operand.node] = f"d{operand.name}"
    for affine in epi.affines:
        for leaf in ("weight", "bias"):
            if leaf in affine.leaves:
                grads[(affine.node, leaf)] = f"d{affine.name}_{leaf}"
    for slope in epi.slopes:
        grads[(slope.node, OPS[graph.node(slope.node).op].channel_slope)] = f"d{slope.name}"
    extra = [key for key in grads if key != start]
    result.outputs = extra
    for key in extra:
        pointers.append(f"{grads[key]}_ptr")
        calls.append(grads[key])
    # every output buffer has the output's shape and layout (the caller allocates them so)
    stride_params += [f"so{d}" for d in range(rank)]
    strides.append("*out.stride()")
    for name in calls:
        b.argument(name, "value", name)
    b.group("output gradient, kept values, gradient buffers", ["gstart_ptr", *pointers],
            ["out", *calls])
    b.group("strides (broadcast to the output's shape)", stride_params, strides)
    if dropout:  # a number the caller passes: not part of the launch's kept plan
        b.argument("seed", "scalar", "seed")
        b.group("the forward's dropout seed", ["seed"], ["seed"], per_call=True)
    b.flat_elements(out.shape)
    src = b.body

    def off(prefix: str) -> str:
        return " + ".join(f"i{d} * {prefix}{d}" for d in range(rank))

    def index(d: int) -> str:
        return f"i{d}"

    src.line(f"g = tl.load(g_ptr + {off('sg')}, mask=mask, other=0.0).to(tl.float32)")
    value_of: dict[int, str] = {}
    if recompute:
        src.line("# the chain forward, recomputed from the kept inputs")
        src.line(f"v_x = tl.load(x_ptr + {off('sx')}, mask=mask, other=0.0).to(tl.float32)")
        value_of[start] = "v_x"
        for operand in epi.operands:
            if operand.node == start:
                continue
            src.line(f"v_{operand.name} = tl.load({operand.name}_ptr + "
                     f"{off(operand.name + '_s')}, mask=mask, other=0.0).to(tl.float32)")
            value_of[operand.node] = f"v_{operand.name}"
        src.extend(epi.channel_lines(index(1), "mask"))
        for slope in epi.slopes:
            src.line(slope.load(index, "mask"))
    else:
        src.line(f"v_y = tl.load(y_ptr + {off('sy')}, mask=mask, other=0.0).to(tl.float32)")
    value = start
    for k, node_id in enumerate(nodes):
        node = graph.node(node_id)
        name = f"v{k}"
        if node.op == "dropout":
            p = node.attrs.p
            src.line(f"keep{k} = tl.rand(seed, offs) >= {number(float(p))}")
        if recompute:
            src.line(f"# {node.op}")
            src.line(f"{name} = {_forward(epi, node, value, value_of, k)}")
        value_of[node_id] = name
        value = node_id
    if not recompute:
        value_of[nodes[-1]] = "v_y"
    src.line("# backwards through the chain")
    for key, var in grads.items():
        src.line(f"{var} = tl.zeros_like(g)")
    previous = [start, *nodes[:-1]]
    for k in reversed(range(len(nodes))):
        node = graph.node(nodes[k])
        into = previous[k]
        src.line(f"# {node.op}")
        if node.op == "batch_norm":
            affine = next(a for a in epi.affines if a.node == node.id)
            n = affine.name
            src.line(f"{n}_xhat = ({value_of[into]} - {n}_mean) * "
                     f"_cnnc_rstd({n}_var, {number(affine.eps)})")
            if (node.id, "weight") in grads:
                src.line(f"d{n}_weight += g * {n}_xhat")
            if (node.id, "bias") in grads:
                src.line(f"d{n}_bias += g")
            src.line(f"g = g * {n}_scale")
        elif node.op in COMBINE:
            factors = _factors(epi, node, value_of)
            carried = None
            for position, i in enumerate(node.inputs):
                others = [f for j, f in enumerate(factors) if j != position]
                scalars = [number(float(s)) for s in node.attrs.others if not hasattr(s, "index")]
                if COMBINE[node.op] == "*":
                    term = " * ".join(["g", *others, *scalars])
                else:
                    term = "g"
                if i == into and carried is None:
                    carried = term
                elif i == into:
                    carried = f"({carried}) + ({term})"
                else:
                    src.line(f"{grads.get(i, 'gstart') if i != start else 'gstart'} += {term}")
            src.line(f"g = {carried}")
        elif node.op == "dropout":
            p = node.attrs.p
            scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
            src.line(f"g = g * tl.where(keep{k}, {number(scale)}, 0.0)")
        elif any(s.node == node.id for s in epi.slopes):
            slope = next(s for s in epi.slopes if s.node == node.id)
            dx, dslope = OPS[node.op].slope_derivatives(node.attrs, "g", value_of[into],
                                                         slope.name)
            src.line(f"d{slope.name} += {dslope}")
            src.line(f"g = {dx}")
        else:
            op = OPS[node.op]
            x_text = value_of[into] if recompute else "NOT_KEPT"
            expr = op.derivative(node.attrs, "g", x_text, value_of[node.id])
            if expr is None:
                raise ValueError(f"{node.op} has no derivative")
            if "_cnnc_tanh" in expr:
                b.helpers.add("tanh")
            src.line(f"g = {expr}")
    src.line("gstart += g")
    for key, var in grads.items():
        target = "gstart_ptr" if var == "gstart" else f"{var}_ptr"
        src.line(f"tl.store({target} + {off('so')}, {var}.to({target}.dtype.element_ty), "
                 "mask=mask)")
    if epi.uses_tanh:
        b.helpers.add("tanh")
    result.kernel = b.build()
    return result


def _factors(epi: Epilogue, node, value_of: dict[int, str]) -> list[str]:
    """The value of each tensor input of an add/mul, in input order."""
    out = []
    for i in node.inputs:
        operand = next((o for o in epi.operands if o.node == i), None)
        if i in value_of:
            out.append(value_of[i])
        elif operand is not None:
            out.append(f"v_{operand.name}")
        else:
            out.append("NOT_KEPT")  # an anchor's epilogue: never read (passes/fuse.py)
    return out


def _forward(epi: Epilogue, node, value: int, value_of: dict[int, str], k: int) -> str:
    """One op of the chain recomputed, as the forward kernel computes it."""
    acc = value_of[value]
    if node.op == "batch_norm":
        affine = next(a for a in epi.affines if a.node == node.id)
        return f"{acc} * {affine.name}_scale + {affine.name}_shift"
    if node.op in COMBINE:
        terms = _factors(epi, node, value_of)
        terms += [number(float(s)) for s in node.attrs.others if not hasattr(s, "index")]
        return f" {COMBINE[node.op]} ".join(terms)
    if node.op == "dropout":
        p = node.attrs.p
        scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
        return f"{acc} * tl.where(keep{k}, {number(scale)}, 0.0)"
    slope = next((s for s in epi.slopes if s.node == node.id), None)
    if slope is not None:
        return OPS[node.op].triton_expr(node.attrs, acc, slope.name)
    expr = OPS[node.op].triton_expr(node.attrs, acc)
    epi.uses_tanh |= "_cnnc_tanh" in expr
    return expr
