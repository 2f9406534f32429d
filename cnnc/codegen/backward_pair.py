"""A conv and the training batch norm that alone reads its output (Kernel.bn_stats /
stats_from) as ONE autograd unit of a differentiable plan.

Its forward launches the conv (into z, which gives the batch norm's partial statistics)
then the batch norm (z -> out, and its [2, C] statistics); nothing crosses between two
units. Its backward is two launches, and the batch norm's input gradient dz is never
written: grad_batch_norm_coefficients (one pass of sums, with the epilogue's activation
mask and the residual's gradient `masked_out` as grad_batch_norm takes them) turns the
sums into per-channel coefficients, dz = A*g + B*(z - mean) + K, and grad_conv applies
them to every dy tile it loads (`affine=(z, coef)`).

A pair is formed where the batch norm's epilogue needs no chain kernel (none, adds, or
adds then a relu-like activation folded as a mask) and the conv's backward is grad_conv;
otherwise the two stay separate units (backward.py).
"""

from __future__ import annotations

from ..ir.graph import Graph
from .backward import Group, _accumulate, _emit_anchor_backward, _float, _param, _ref_index, _var
from .source import Source


def pair_groups(graph: Graph, groups: list[Group]) -> None:
    """Join each pairable conv group to its batch norm's group: the batch norm's group
    becomes the unit (`conv` set, refs the conv's then the batch norm's own, less z and
    the partials), the conv's is marked `joined` (it emits nothing)."""
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


def _pairable(conv: Group, bn: Group) -> bool:
    return (conv.unsupported is None and bn.unsupported is None and conv.chain is None
            and conv.rule is not None and conv.rule.function == "grad_conv"
            and bn.chain is None and bn.rule is not None and "stats" in bn.rule.reads)


def saved(graph: Graph, bn: Group) -> list[str]:
    """The pair's saved variables: the conv's x and weight, the batch norm's weight (if
    affine), z, stats, and y where an activation is folded."""
    conv = bn.conv
    anchor = graph.node(conv.kernel.anchor)
    names = [_var(_ref_index(bn, ("value", anchor.inputs[0])))]
    names.append(_var(_ref_index(bn, ("param", _param(anchor, "weight")))))
    weight = _bn_weight(graph, bn)
    if weight is not None:
        names.append(_var(weight))
    return [*dict.fromkeys(names), "z", "stats", *(["y"] if bn.window is not None else [])]


def _bn_weight(graph: Graph, bn: Group) -> int | None:
    leaf = _param(graph.node(bn.kernel.anchor), "weight")
    return _ref_index(bn, ("param", leaf)) if leaf is not None else None


def emit_forward(src: Source, graph: Graph, bn: Group, layout: str) -> None:
    """_fw_<bn>(spec, *tensors): spec = (out shape, device, dtype, z shape)."""
    conv = bn.conv
    args = [_var(i) for i in range(len(bn.refs))]
    z = ("value", conv.kernel.output)
    stats = ("stats", conv.kernel.anchor)

    def call(group: Group) -> list[str]:
        names = []
        for a in group.forward.arguments:
            ref = (a.kind, a.ref)
            names.append("z" if ref == z else "partials" if ref == stats else
                         _var(bn.refs.index(ref)))
        return names

    with src.indent(f"def _fw_{bn.name}(spec, {', '.join(args)}):"):
        src.line(f"z = torch.empty(spec[3], device=spec[1], dtype=spec[2]{layout})")
        src.line(f"partials = {conv.forward.launcher}({', '.join(['z', *call(conv)])})")
        src.line(f"out = torch.empty(spec[0], device=spec[1], dtype=spec[2]{layout})")
        src.line(f"stats = {bn.forward.launcher}({', '.join(['out', *call(bn)])})")
        kept = [s if s != "y" else "out" for s in saved(graph, bn)]
        shapes = "(" + "".join(f"{a}.shape, " for a in args) + ")"
        src.line(f"return out, ({', '.join(kept)},), ({shapes}, None)")


def emit_backward(src: Source, graph: Graph, bn: Group) -> None:
    """_bw_<bn>: the coefficients (and the batch norm's parameter gradients, the added
    tensors' gradient), then grad_conv reading dy through them."""
    conv, kernel = bn.conv, bn.kernel
    names = saved(graph, bn)
    with src.indent(f"def _bw_{bn.name}(state, g, needs, {', '.join(names)}):"):
        src.line(f"d = [None] * {len(bn.refs)}")
        with src.indent("with LAUNCH_LOCK:"):
            _emit_body(src, graph, bn, conv, kernel)
        src.line("return tuple(d)")


def _emit_body(src: Source, graph: Graph, bn: Group, conv: Group, kernel) -> None:
    anchor = graph.node(kernel.anchor)
    added = [j for n in kernel.epilogue for i in graph.node(n).inputs
             if i not in kernel.nodes and (j := _ref_index(bn, ("value", i))) is not None]
    keywords = {}
    if bn.window is not None:
        lo, hi = bn.window
        keywords["mask"] = f"(y, {_float(lo)}, {_float(hi)})"
        if added:
            wanted = " or ".join(dict.fromkeys(f"needs[{j}]" for j in added))
            src.line(f"masked = torch.empty_like(y) if {wanted} else None")
            keywords["masked_out"] = "masked"
    results = [_ref_index(bn, ("param", _param(anchor, leaf))) if _param(anchor, leaf)
               else None for leaf in ("weight", "bias")]
    weight = _bn_weight(graph, bn)
    needs = ", ".join(f"needs[{j}]" if j is not None else "False" for j in results)
    options = "".join(f", {k}={v}" for k, v in keywords.items())
    src.line(f"coef, *grads = grad_batch_norm_coefficients(g, z, "
             f"{_var(weight) if weight is not None else 'None'}, stats, "
             f"needs=({needs}){options})")
    for k, j in enumerate(results):
        if j is not None:
            src.line(f"if needs[{j}]:")
            src.line(f"    d[{j}] = grads[{k}]")
    src.line("g_anchor = g")
    conv_keywords = {"affine": "(z, coef)"}
    if "mask" in keywords:
        conv_keywords["mask"] = keywords["mask"]
    # the conv's refs lead the pair's, in the same order: its indices hold
    _emit_anchor_backward(src, graph, conv, graph.node(conv.kernel.anchor), conv_keywords)
    for j in added:  # an add before the activation: masked; else g itself
        _accumulate(src, j, "masked" if "masked_out" in keywords else "g")
