"""Differentiable forwards: each fused kernel group of a differentiable plan becomes one
autograd unit (support.CnncGroup) with a generated forward and backward function.

The forward function allocates the group's output, launches the group's kernel and names
what the backward needs: the group's inputs that its backward reads, what the launcher
returned where the anchor's GradRule reads "stats" and, where an activation ends its
epilogue, its output. The backward function, in reverse:
1. the epilogue chain (templates/chain_backward.py): one kernel giving the gradient of
   the anchor's result and of every tensor the chain adds (a pointwise group recomputes
   its whole chain from its inputs instead). None where the epilogue is adds and then one
   activation with an Op.output_window (or that activation alone) and the anchor's
   launcher takes `mask=` (and `masked_out=` where there are adds): the launcher folds
   the activation's derivative in, and gives the added tensors' gradient;
2. the anchor: its Op's GradRule names a launcher of cnnc/runtime/grad and what it reads;
3. gradients summed per input tensor, reduced over broadcast dims (grad_sum_to).

Views stay PyTorch views (their backward is a view); a concat is torch.cat, whose backward
gives the inputs narrow views of one buffer, no copies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..ir.graph import Graph
from ..ops import OPS
from ..ops.registry import GradRule
from ..passes.plan import Kernel, Plan, View
from .forward import partials_variable
from .kernel import EmitContext, EmittedKernel
from .source import Source, text_literal
from .templates import chain_backward

GRAD_PREFIX = {"eval": "ge", "train": "gt"}  # forward kernels of the differentiable plans


@dataclass
class Group:
    """One kernel step of a differentiable plan and the code of its autograd unit."""

    kernel: Kernel
    forward: EmittedKernel
    chain: chain_backward.ChainGrads | None  # None: the gradient passes straight through
    refs: list  # the unit's tensors, in order: ("value", node id) or ("param", name)
    needs_y: bool
    unsupported: str | None = None  # why it cannot be differentiated (raised at backward)
    rule: GradRule | None = None  # the anchor's backward (None for a pointwise group)
    window: tuple[float, float] | None = None  # the activation the anchor's launcher folds in
    conv: Group | None = None  # a batch norm's: the conv joined to its unit (backward_pair)
    joined: bool = False  # joined to a later unit (a conv's to its batch norm's, a pair's
    # to the next pair's): emits nothing itself
    upstream: Group | None = None  # a pair's: the pair before it in its chain (backward_pair)

    @property
    def name(self) -> str:
        return self.forward.name


def plan_groups(plan: Plan, emitted: list[EmittedKernel], mode: str) -> list[Group]:
    graph = plan.graph
    groups = []
    for kernel, code in zip(plan.kernels, emitted):
        refs = list(dict.fromkeys((a.kind, a.ref) for a in code.arguments))
        anchor = graph.node(kernel.anchor)
        op = OPS[anchor.op]
        pointwise = kernel.kind == "pointwise"
        rule = None if pointwise else op.grad_rule(anchor.attrs)
        window = None if pointwise else _folded_window(graph, kernel, rule)
        unsupported = None
        chain = None
        ctx = EmitContext(graph, kernel, "b" + GRAD_PREFIX[mode][1])
        try:
            if pointwise or (window is None and _needs_chain_kernel(graph, kernel)):
                chain = chain_backward.emit(ctx, recompute=pointwise)
        except ValueError as e:
            unsupported = str(e)
        if not pointwise and rule is None:
            unsupported = f"{anchor.op} has no backward yet"
        if kernel.prologue or kernel.pool is not None or kernel.folded_bn is not None:
            unsupported = "a fused prologue, pool or folded batch norm"
        needs_y = (chain is not None and "y" in chain.reads) or window is not None or (
            rule is not None and "y" in rule.reads)
        groups.append(Group(kernel, code, chain, refs, needs_y, unsupported, rule, window))
    from .backward_pair import pair_groups  # (it builds on this module's helpers)
    pair_groups(graph, groups)
    return groups


def _folded_window(graph: Graph, kernel: Kernel, rule: GradRule | None):
    """(lo, hi) of the activation ending the anchor's epilogue where the anchor's launcher
    can fold its derivative in: the epilogue is adds of tensors from outside the group
    (only with `masked_out`, which gives their gradient) then that one activation, the
    output has the anchor's shape. Else None (a chain kernel, where one is needed)."""
    if rule is None or not rule.mask or not kernel.epilogue:
        return None
    if graph.node(kernel.output).shape != graph.node(kernel.anchor).shape:
        return None
    *adds, last = kernel.epilogue
    if adds and not rule.masked_out:
        return None
    previous = kernel.anchor
    for n in kernel.epilogue:
        node = graph.node(n)
        inside = [i for i in node.inputs if i in kernel.nodes]
        if inside != [previous] or (n != last and OPS[node.op].combine != "+"):
            return None
        previous = n
    node = graph.node(last)
    return OPS[node.op].output_window(node.attrs)


def _needs_chain_kernel(graph: Graph, kernel: Kernel) -> bool:
    """An anchor's epilogue of adds alone passes the gradient on unchanged: no kernel."""
    for n in kernel.epilogue:
        node = graph.node(n)
        if OPS[node.op].combine != "+":
            return True
    return False


# ------------------------------------------------------------------ module-level functions


def emit_group_functions(src: Source, graph: Graph, plan: Plan, groups: list[Group],
                         layout_of) -> None:
    """_fw_<kernel>(spec, *tensors) and _bw_<kernel>(state, g, needs, *saved) per group
    (a group joined to a later unit: none; a unit of conv + batch norm pairs:
    backward_pair's)."""
    from . import backward_pair

    for group in groups:
        if group.joined:
            continue
        layout = layout_of(group.kernel.output)
        if group.conv is not None:
            backward_pair.emit_forward(src, plan.graph, group, layout_of)
        else:
            _emit_forward_function(src, plan.graph, group, layout)
        src.line("")
        src.line("")
        if group.conv is not None:
            backward_pair.emit_backward(src, plan.graph, group)
        else:
            _emit_backward_function(src, plan.graph, group, layout)
        src.line("")
        src.line("")


def _var(i: int) -> str:
    return f"a{i}"


def _saved(graph: Graph, group: Group) -> list[str]:
    """The variables the backward reads, in order (`stats`, then `y` last, where needed)."""
    names = []
    for i, ref in enumerate(group.refs):
        if _reads(graph, group, ref):
            names.append(_var(i))
    return names + (["stats"] if _keeps_stats(group) else []) + (["y"] if group.needs_y else [])


def _keeps_stats(group: Group) -> bool:
    """Whether the backward reads what the forward's launcher returned."""
    return group.rule is not None and "stats" in group.rule.reads


def _reads(graph: Graph, group: Group, ref) -> bool:
    anchor = graph.node(group.kernel.anchor)
    if group.chain is not None and group.kernel.kind == "pointwise":
        wanted = [r if isinstance(r, tuple) else ("value", r) for r in group.chain.reads]
        return ref in wanted
    rule = group.rule
    if rule is None:
        return False
    for read in rule.reads:
        if read == "x" and ref == ("value", anchor.inputs[0]):
            return True
        if read.startswith("x") and read[1:].isdigit() \
                and ref == ("value", anchor.inputs[int(read[1:])]):
            return True
        leaf = _param(anchor, read)
        if leaf is not None and ref == ("param", leaf):
            return True
    return False


def _param(anchor, leaf: str) -> str | None:
    for spec in anchor.params:
        if spec.name == leaf:
            return anchor.param_name(spec)
    return None


def _emit_forward_function(src: Source, graph: Graph, group: Group, layout: str) -> None:
    args = [_var(i) for i in range(len(group.refs))]
    dropout = group.chain is not None and group.chain.seed
    with src.indent(f"def _fw_{group.name}(spec, {', '.join(args)}):"):
        src.line(f"out = torch.empty(spec[0], device=spec[1], dtype=spec[2]{layout})")
        if dropout:
            src.line("state = rng_state()  # the launch draws dropout's seed from it")
        call = [_var(group.refs.index((a.kind, a.ref))) for a in group.forward.arguments]
        kept = "stats = " if _keeps_stats(group) else ""
        partials = group.kernel.bn_stats is not None
        kept = "partials = " if partials else kept
        src.line(f"{kept}{group.forward.launcher}({', '.join(['out', *call])})")
        saved = [s if s != "y" else "out" for s in _saved(graph, group)]
        tup = "(" + ", ".join(saved) + ("," if len(saved) == 1 else "") + ")"
        shapes = "(" + "".join(f"{a}.shape, " if ref[0] != "stats" else "None, "
                               for a, ref in zip(args, group.refs)) + ")"
        # a conv's partial statistics for its batch norm: more outputs, not differentiable
        result = "(out, *partials)" if partials else "out"
        src.line(f"return {result}, {tup}, ({shapes}, {'state' if dropout else 'None'})")


def _emit_backward_function(src: Source, graph: Graph, group: Group, layout: str) -> None:
    saved = _saved(graph, group)
    n = len(group.refs)
    with src.indent(f"def _bw_{group.name}(state, g, needs, {', '.join(saved)}):"
                    if saved else f"def _bw_{group.name}(state, g, needs):"):
        if group.unsupported is not None:
            node = graph.node(group.kernel.anchor)
            where = f" (line {node.loc.line})" if node.loc is not None else ""
            message = f"cnnc cannot differentiate {node.op}{where} yet: {group.unsupported}"
            src.line(f"raise NotImplementedError({text_literal(message)})")
            return
        src.line(f"d = [None] * {n}")
        with src.indent("with LAUNCH_LOCK:"):
            _emit_backward_body(src, graph, group, layout)
        src.line("return tuple(d)")


def _ref_index(group: Group, ref) -> int | None:
    return group.refs.index(ref) if ref in group.refs else None


def _emit_backward_body(src: Source, graph: Graph, group: Group, layout: str) -> None:
    kernel = group.kernel
    anchor = graph.node(kernel.anchor)
    chain = group.chain
    pointwise = kernel.kind == "pointwise"
    if group.window is not None:
        _emit_folded_backward(src, graph, group, anchor)
        return
    if chain is None:
        src.line("g_anchor = g")
        # an epilogue of adds: each added tensor's gradient is g itself (reduced to it)
        for n in kernel.epilogue:
            for i in graph.node(n).inputs:
                j = _ref_index(group, ("value", i))
                if j is not None and i not in kernel.nodes:
                    _accumulate(src, j, "g")
    else:
        like = "y" if "y" in chain.reads else None
        alloc = (f"torch.empty_like({like})" if like else
                 f"torch.empty(g.shape, device=g.device, dtype=g.dtype{layout})")
        src.line(f"g_anchor = {alloc}")
        buffers = []
        for k, key in enumerate(chain.outputs):
            src.line(f"buf{k} = torch.empty_like(g_anchor"
                     f"{', dtype=work_dtype(g)' if isinstance(key, tuple) else ''})")
            buffers.append(f"buf{k}")
        reads = []
        for r in chain.reads:
            if r == "y":
                reads.append("y")
            else:
                reads.append(_var(_ref_index(group, r if isinstance(r, tuple) else
                                             ("value", r))))
        args = ["g_anchor", "g", *reads, *buffers]
        if chain.seed:  # the forward's seed, drawn again from the generator's saved state
            src.line("seed = replayed_seed(state[1])")
            args.append("seed")
        src.line(f"{chain.kernel.launcher}({', '.join(args)})")
        for k, key in enumerate(chain.outputs):
            if isinstance(key, tuple):  # (node, leaf): per-channel (or one) sums
                owner, leaf = key
                j = _ref_index(group, ("param", _param(graph.node(owner), leaf)))
                if j is not None:
                    shape = _sum_shape(graph, owner, leaf, kernel)
                    src.line(f"if needs[{j}]:")
                    src.line(f"    d[{j}] = grad_sum_to(buf{k}, {shape})"
                             f".reshape(state[0][{j}]).to(g.dtype)")
            else:
                j = _ref_index(group, ("value", key))
                if j is not None:
                    _accumulate(src, j, f"buf{k}")
        if pointwise:
            j = _ref_index(group, ("value", chain.start))
            if j is not None:
                _accumulate(src, j, "g_anchor")
            return
    _emit_anchor_backward(src, graph, group, anchor)


def _emit_folded_backward(src: Source, graph: Graph, group: Group, anchor) -> None:
    """The anchor's launcher reads g, the activation's output gradient, with mask=(y, lo,
    hi); where the epilogue adds tensors, it writes their gradient into `masked`."""
    kernel = group.kernel
    added = [j for n in kernel.epilogue[:-1] for i in graph.node(n).inputs
             if i not in kernel.nodes and (j := _ref_index(group, ("value", i))) is not None]
    lo, hi = group.window
    keywords = {"mask": f"(y, {_float(lo)}, {_float(hi)})"}
    src.line("g_anchor = g")
    if added:
        wanted = " or ".join(dict.fromkeys(f"needs[{j}]" for j in added))
        src.line(f"masked = torch.empty_like(y) if {wanted} else None")
        keywords["masked_out"] = "masked"
    _emit_anchor_backward(src, graph, group, anchor, keywords)
    for j in added:
        _accumulate(src, j, "masked")


def _float(value: float) -> str:
    return repr(float(value)) if math.isfinite(value) else f"float({str(float(value))!r})"


def _sum_shape(graph: Graph, owner: int, leaf: str, kernel: Kernel) -> str:
    """The shape a parameter's per-element gradient sums to: its channels along dim 1
    (a batch norm's weight, a prelu's slopes), or one value."""
    rank = len(graph.node(kernel.output).shape)
    spec = next(s for s in graph.node(owner).params if s.name == leaf)
    if spec.shape == (1,) or rank < 2:
        return "(" + "1, " * rank + ")"
    return "(1, " + str(spec.shape[0]) + ", 1" * (rank - 2) + ")"


def _accumulate(src: Source, j: int, grad: str) -> None:
    src.line(f"if needs[{j}]:")
    src.line(f"    d[{j}] = add_grad(d[{j}], grad_sum_to({grad}, state[0][{j}]))")


def _emit_anchor_backward(src: Source, graph: Graph, group: Group, anchor,
                          keywords: dict[str, str] | None = None, *, refs: list | None = None,
                          local: dict | None = None) -> None:
    """The anchor's launcher call; keywords: more `name=expression` arguments. refs: the
    unit's tensors (the group's own by default) that `d` and the variables index; local:
    {ref: (variable, gradient variable)} for a tensor inside the unit (a chain's), read
    from that variable, its gradient always computed and assigned to the other."""
    rule = group.rule
    refs = group.refs if refs is None else refs
    local = local or {}
    keywords = dict(keywords or {})

    def index(ref) -> int | None:
        return refs.index(ref) if ref in refs else None

    reads = []
    for read in rule.reads:
        if read == "stats":
            keywords["stats"] = "stats"
        elif read == "y":
            reads.append("y")
        elif read == "x" or (read.startswith("x") and read[1:].isdigit()):
            ref = ("value", anchor.inputs[0 if read == "x" else int(read[1:])])
            reads.append(local[ref][0] if ref in local else _var(index(ref)))
        else:
            leaf = _param(anchor, read)
            j = index(("param", leaf)) if leaf is not None else None
            reads.append(_var(j) if j is not None else "None")
    targets = []
    for result in rule.results:
        if result == "x" or (result.startswith("x") and result[1:].isdigit()):
            ref = ("value", anchor.inputs[0 if result == "x" else int(result[1:])])
            targets.append(local[ref][1] if ref in local else index(ref))
        else:
            leaf = _param(anchor, result)
            targets.append(index(("param", leaf)) if leaf is not None else None)
    options = "".join(f", {k}={_option(v)}" for k, v in rule.options)
    options += "".join(f", {k}={v}" for k, v in keywords.items())
    if rule.needs:
        needs = ", ".join("True" if isinstance(j, str) else f"needs[{j}]" if j is not None
                          else "False" for j in targets)
        src.line(f"grads = {rule.function}(g_anchor, {', '.join(reads)}{options}, "
                 f"needs=({needs}{',' if len(targets) == 1 else ''}))")
        for k, j in enumerate(targets):
            if isinstance(j, str):
                src.line(f"{j} = grads[{k}]")
            elif j is not None:
                src.line(f"if needs[{j}]:")
                src.line(f"    d[{j}] = add_grad(d[{j}], grads[{k}])")
    else:
        j = targets[0]
        if j is not None:
            src.line(f"if needs[{j}]:")
            src.line(f"    d[{j}] = add_grad(d[{j}], {rule.function}(g_anchor, "
                     f"{', '.join(reads)}{options}))")


def _option(value) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return text_literal(value)
    if isinstance(value, tuple):
        inner = ", ".join(_option(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    raise TypeError(f"cannot emit {value!r}")


# ------------------------------------------------------------------ the forward method


def emit_grad_method(src: Source, mode: str, plan: Plan, groups: list[Group], values,
                     index: dict[str, int], inputs: list[str]) -> None:
    """_grad_<mode>(P, S, device, dtype, inputs): the plan's steps as autograd units."""
    from . import backward_pair

    graph = plan.graph
    by_kernel = {id(g.kernel): g for g in groups}
    with src.indent(f"def _grad_{mode}(self, P, S, device, dtype, {', '.join(inputs)}):"):
        for step in plan.steps:
            if isinstance(step, View):
                node = graph.node(step.node)
                name = f"v{node.id}"
                if step.kind == "reshape":
                    src.line(f"{name} = {values.names[node.inputs[0]]}.reshape("
                             f"{values.shape(node.id)})")
                elif step.kind == "strided":  # permute, transpose, chunk, split: torch views
                    source = graph.node(node.inputs[0])
                    src.line(f"{name} = " + OPS[node.op].view_expr(
                        node.attrs, values.names[source.id], source.shape))
                else:
                    parts = ", ".join(values.names[i] for i in node.inputs)
                    src.line(f"{name} = torch.cat([{parts}], {node.attrs.dim})")
                values.names[node.id] = name
                continue
            group = by_kernel[id(step)]
            if group.joined:  # launched by its batch norm's unit
                continue
            tensors = []
            for kind, ref in group.refs:
                tensors.append(values.names[ref] if kind == "value" else
                               f"({partials_variable(ref)}, {partials_variable(ref)}_rows)"
                               if kind == "stats" else f"P[{index[ref]}]")
            name = f"v{step.output}"
            if step.bn_stats is not None:  # the conv's unit also gives its partials
                part = partials_variable(step.anchor)
                name = f"{name}, {part}, {part}_rows"
            shapes = f", {backward_pair.shapes(values, group)}" if group.conv else ""
            spec = f"({values.shape(step.output)}, device, dtype{shapes})"
            src.line(f"{name} = CnncGroup.apply((_fw_{group.name}, _bw_{group.name}, {spec}), "
                     f"{', '.join(tensors)})")
            name = f"v{step.output}"
            values.names[step.output] = name
        values.emit_return()
    values.emit_shapes(f"_shapes_grad_{mode}")


# ------------------------------------------------------------------ plan tables


def _row(graph: Graph, kernels: list[str], nodes: list[int]) -> dict:
    found = [graph.node(n) for n in nodes]
    return {"kernels": kernels, "layers": list(dict.fromkeys(n.layer for n in found)),
            "ops": [n.op for n in found],
            "lines": sorted({n.loc.line for n in found if n.loc is not None})}


def forward_table(plan: Plan, groups: list[Group]) -> list[dict]:
    """The differentiable forward's launches: one per group, one torch.cat per concat."""
    graph = plan.graph
    by_kernel = {id(g.kernel): g for g in groups}
    rows = []
    for step in plan.steps:
        if isinstance(step, Kernel):
            row = _row(graph, [], step.nodes)
            rows.append({"kernel": by_kernel[id(step)].name, **row})
        elif step.kind == "concat":
            rows.append({"kernel": "torch.cat", **_row(graph, [], [step.node])})
    for row in rows:
        del row["kernels"]
    return rows


def backward_table(plan: Plan, groups: list[Group]) -> list[dict]:
    """The backward's launches, in the order they run: per group (last first) its chain
    kernel and its anchor's backward launcher (which may launch a few kernels)."""
    from . import backward_pair

    graph = plan.graph
    rows = []
    for group in reversed(groups):
        kernels, nodes = [], group.kernel.nodes
        if group.joined:
            continue
        if group.conv is not None:  # the coefficients, then each conv reading through them
            chain = backward_pair.pairs(group)
            kernels = ["grad_batch_norm_coefficients",
                       *(p.conv.rule.function for p in reversed(chain))]
            nodes = [n for p in chain for n in (*p.conv.kernel.nodes, *p.kernel.nodes)]
        if group.chain is not None:
            kernels.append(group.chain.kernel.name)
        if group.rule is not None and group.conv is None:
            kernels.append(group.rule.function)
        rows.append({"group": group.name, **_row(graph, kernels, nodes)})
    return rows
