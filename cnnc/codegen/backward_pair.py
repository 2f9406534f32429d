"""A conv and the training batch norm that alone reads its output (Kernel.bn_stats /
stats_from) as ONE autograd unit of a differentiable plan, and chains of such pairs.

A pair's forward launches the conv (into z, which gives the batch norm's partial
statistics) then the batch norm (z -> out, and its [2, C] statistics); nothing crosses
between two units. Its backward is two launches, and the batch norm's input gradient dz is
never written: grad_batch_norm_coefficients (one pass of sums, with the epilogue's
activation mask and the residual's gradient `masked_out` as grad_batch_norm takes them)
turns the sums into per-channel coefficients, dz = A*g + B*(z - mean) + K, and grad_conv
applies them to every dy tile it loads (`affine=(z, coef)`).

A pair is formed where the batch norm's epilogue needs no chain kernel (none, adds, or
adds then a relu-like activation folded as a mask) and the conv's backward is grad_conv;
otherwise the two stay separate units (backward.py).

Chains: where a pair's output (its activation's, with no tensor added) is read only by the
next pair's conv (conv1 -> bn1 -> relu -> conv2 -> bn2: a ResNet block), the pairs are one
unit. Its forward launches each pair's two kernels in turn; its backward takes the last
batch norm's coefficients, then runs each conv's gradient from the last: the data-gradient
tiles of a conv that reads the previous pair's output also sum that pair's batch-norm
gradient and give its coefficients (grad_conv's `bn_input`), so a chain of n pairs takes
n + 1 launches where n separate pairs take 2n.
"""

from __future__ import annotations

from ..ir.graph import Graph
from .backward import Group, _accumulate, _emit_anchor_backward, _float, _param, _ref_index, _var
from .source import Source


def pair_groups(graph: Graph, groups: list[Group]) -> None:
    """Join each pairable conv group to its batch norm's group: the batch norm's group
    becomes the unit (`conv` set, refs the conv's then the batch norm's own, less z and
    the partials), the conv's is marked `joined` (it emits nothing). Then chain pairs."""
    by_anchor = {g.kernel.anchor: g for g in groups}
    for bn in groups:
        conv = by_anchor.get(bn.kernel.stats_from) if bn.kernel.stats_from is not None \
            else None
        if conv is None or not _pairable(conv, bn):
            continue
        z = ("value", conv.kernel.output)
        own = [r for r in bn.refs if r != z and r != ("stats", conv.kernel.anchor)]
        bn.refs = list(dict.fromkeys([*conv.refs, *own]))
        bn.conv, conv.joined = conv, True
    _chain_pairs(graph, groups)


def _pairable(conv: Group, bn: Group) -> bool:
    return (conv.unsupported is None and bn.unsupported is None and conv.chain is None
            and conv.rule is not None and conv.rule.function == "grad_conv"
            and bn.chain is None and bn.rule is not None and "stats" in bn.rule.reads)


def _chain_pairs(graph: Graph, groups: list[Group]) -> None:
    """Join a pair to the pair whose conv alone reads its output (`upstream`; the earlier
    pair is marked `joined`), where nothing is added in the earlier pair's epilogue (its
    output gradient is then exactly the later conv's data gradient)."""
    by_output = {g.kernel.output: g for g in groups if g.conv is not None}
    for unit in groups:  # plan order: an upstream pair has its own upstream already
        if unit.conv is None:
            continue
        anchor = graph.node(unit.conv.kernel.anchor)
        x = anchor.inputs[0]
        up = by_output.get(x)
        if up is None or up.joined or _added(graph, up) or x in graph.outputs \
                or [n.id for n in graph.consumers(x)] != [anchor.id]:
            continue
        inner = ("value", x)
        unit.refs = list(dict.fromkeys([*up.refs, *(r for r in unit.refs if r != inner)]))
        unit.upstream, up.joined = up, True


def pairs(unit: Group) -> list[Group]:
    """The unit's pairs (batch norm groups with their conv), first to last."""
    found = []
    while unit is not None:
        found.append(unit)
        unit = unit.upstream
    return found[::-1]


def _added(graph: Graph, bn: Group) -> list:
    """The nodes from outside the group that the batch norm's epilogue adds."""
    kernel = bn.kernel
    return [i for n in kernel.epilogue for i in graph.node(n).inputs if i not in kernel.nodes]


def saved(graph: Graph, unit: Group) -> list[str]:
    """The unit's saved variables: per pair, the conv's x and weight, the batch norm's
    weight (if affine), z, stats, and its output y where an activation is folded or the
    next conv reads it."""
    chain = pairs(unit)
    names = []
    for i, pair in enumerate(chain):
        anchor = graph.node(pair.conv.kernel.anchor)
        names.append(f"y{i - 1}" if i else _var(unit.refs.index(("value", anchor.inputs[0]))))
        names.append(_var(unit.refs.index(("param", _param(anchor, "weight")))))
        weight = _bn_weight(graph, unit, pair)
        if weight is not None:
            names.append(_var(weight))
        names += [f"z{i}", f"stats{i}"]
        if pair.window is not None:
            names.append(f"y{i}")
    return list(dict.fromkeys(names))


def _bn_weight(graph: Graph, unit: Group, pair: Group) -> int | None:
    leaf = _param(graph.node(pair.kernel.anchor), "weight")
    return _ref_index(unit, ("param", leaf)) if leaf is not None else None


def _bn_results(graph: Graph, unit: Group, pair: Group) -> list[int | None]:
    """The unit's indices of the batch norm's weight and bias (None: absent)."""
    anchor = graph.node(pair.kernel.anchor)
    return [_ref_index(unit, ("param", _param(anchor, leaf))) if _param(anchor, leaf)
            else None for leaf in ("weight", "bias")]


def shapes(values, unit: Group) -> str:
    """The spec's last entry: per pair, (z's shape, its output's shape)."""
    return "(" + "".join(f"({values.shape(p.conv.kernel.output)}, "
                         f"{values.shape(p.kernel.output)}), " for p in pairs(unit)) + ")"


def emit_forward(src: Source, graph: Graph, unit: Group, layout_of) -> None:
    """_fw_<unit>(spec, *tensors): spec = (out shape, device, dtype, shapes())."""
    chain = pairs(unit)
    args = [_var(i) for i in range(len(unit.refs))]

    def call(group: Group, i: int) -> list[str]:
        names = []
        for a in group.forward.arguments:
            ref = (a.kind, a.ref)
            if ref == ("value", chain[i].conv.kernel.output):
                names.append(f"z{i}")
            elif ref == ("stats", chain[i].conv.kernel.anchor):
                names.append("partials")
            elif i and ref == ("value", chain[i - 1].kernel.output):
                names.append(f"y{i - 1}")
            else:
                names.append(_var(unit.refs.index(ref)))
        return names

    with src.indent(f"def _fw_{unit.name}(spec, {', '.join(args)}):"):
        for i, pair in enumerate(chain):
            layout = layout_of(pair.kernel.output)
            src.line(f"z{i} = torch.empty(spec[3][{i}][0], device=spec[1], dtype=spec[2]"
                     f"{layout})")
            src.line(f"partials = {pair.conv.forward.launcher}"
                     f"({', '.join([f'z{i}', *call(pair.conv, i)])})")
            src.line(f"y{i} = torch.empty(spec[3][{i}][1], device=spec[1], dtype=spec[2]"
                     f"{layout})")
            src.line(f"stats{i} = {pair.forward.launcher}"
                     f"({', '.join([f'y{i}', *call(pair, i)])})")
        kept = saved(graph, unit)
        arg_shapes = "(" + "".join(f"{a}.shape, " for a in args) + ")"
        src.line(f"return y{len(chain) - 1}, ({', '.join(kept)},), ({arg_shapes}, None)")


def emit_backward(src: Source, graph: Graph, unit: Group) -> None:
    """_bw_<unit>: the last batch norm's coefficients (and its parameter gradients, the
    added tensors' gradient), then each conv's gradient from the last, reading dy through
    its batch norm's coefficients and giving the previous pair's."""
    names = saved(graph, unit)
    with src.indent(f"def _bw_{unit.name}(state, g, needs, {', '.join(names)}):"):
        src.line(f"d = [None] * {len(unit.refs)}")
        with src.indent("with LAUNCH_LOCK:"):
            _emit_body(src, graph, unit)
        src.line("return tuple(d)")


def _window(pair: Group) -> str | None:
    """"(lo, hi)" of the activation the pair's batch norm folds in, or None."""
    if pair.window is None:
        return None
    lo, hi = pair.window
    return f"({_float(lo)}, {_float(hi)})"


def _mask(pair: Group, i: int) -> str | None:
    window = _window(pair)
    return f"(y{i}, {window[1:]}" if window is not None else None


def _needs(results: list[int | None]) -> str:
    return ", ".join(f"needs[{j}]" if j is not None else "False" for j in results)


def _emit_body(src: Source, graph: Graph, unit: Group) -> None:
    chain = pairs(unit)
    last = len(chain) - 1
    added = [j for i in _added(graph, unit) if (j := _ref_index(unit, ("value", i))) is not None]
    keywords = {}
    mask = _mask(unit, last)
    if mask is not None:
        keywords["mask"] = mask
        if added:
            wanted = " or ".join(dict.fromkeys(f"needs[{j}]" for j in added))
            src.line(f"masked = torch.empty_like(y{last}) if {wanted} else None")
            keywords["masked_out"] = "masked"
    weight = _bn_weight(graph, unit, unit)
    results = _bn_results(graph, unit, unit)
    options = "".join(f", {k}={v}" for k, v in keywords.items())
    src.line(f"coef, *grads = grad_batch_norm_coefficients(g, z{last}, "
             f"{_var(weight) if weight is not None else 'None'}, stats{last}, "
             f"needs=({_needs(results)}){options})")
    _take(src, results, 0)
    for j in added:  # an add before the activation: masked; else g itself
        _accumulate(src, j, "masked" if "masked_out" in keywords else "g")
    for i in range(last, -1, -1):
        pair = chain[i]
        conv_keywords = {"affine": f"(z{i}, coef)"}
        if _mask(pair, i) is not None:
            conv_keywords["mask"] = _mask(pair, i)
        local = {}
        if i:
            up = chain[i - 1]
            up_weight = _bn_weight(graph, unit, up)
            window = _window(up) or "None"
            conv_keywords["bn_input"] = (
                f"(z{i - 1}, {_var(up_weight) if up_weight is not None else 'None'}, "
                f"stats{i - 1}, {window}, ({_needs(_bn_results(graph, unit, up))},))")
            local[("value", up.kernel.output)] = ("y" + str(i - 1), "g")
        src.line("g_anchor = g")
        _emit_anchor_backward(src, graph, pair.conv, graph.node(pair.conv.kernel.anchor),
                              conv_keywords, refs=unit.refs, local=local)
        if i:
            src.line("coef = grads[3]")
            _take(src, _bn_results(graph, unit, chain[i - 1]), 4)


def _take(src: Source, results: list[int | None], first: int) -> None:
    """d[j] = grads[first + k] for the batch norm's weight and bias where needed."""
    for k, j in enumerate(results):
        if j is not None:
            src.line(f"if needs[{j}]:")
            src.line(f"    d[{j}] = grads[{first + k}]")
