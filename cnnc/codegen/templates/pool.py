"""max_pool1/2/3d and avg_pool1/2/3d as a window reduction, with an epilogue slot.

Rows of the tile are output elements (n, c, o_1, ..., o_S); columns are offsets in the
window (k_1, ..., k_S), reduced in chunks of BLOCK_K so that a large window (a global
average) still fits the registers. Each output's window is found from its position
alone, so padding, dilation and ceil_mode's shorter last window are index arithmetic:
positions outside the input are masked (-inf for max, 0 for avg), never a padded copy.

`window_kernel` is shared with the adaptive pools (adaptive_pool.py): a `WindowSpec`
says where each output's window starts and which of its offsets are inside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..builder import KernelBuilder
from ..epilogue import Epilogue, epilogue_arguments, epilogue_refs
from ..kernel import SPATIAL, EmitContext, EmittedKernel
from ..source import number


@dataclass
class WindowSpec:
    """What distinguishes one windowed reduction from another.

    reduce      "max" (NaN propagates, as in PyTorch) or "avg" (a float32 sum, then divisor)
    title       the kernel's docstring line
    consts      compile-time sizes passed as tl.constexpr: C, the input sizes ({D}), the
                output sizes (O{D}), the window extents (K{D}) and whatever the lines use
    starts      lines computing, per row, `start_{d}` (and anything `valid` reads)
    position    per spatial dim d: the input index, a [BLOCK_M, BLOCK_K] expression of
                `start_{d}` and the offset `k{d}`
    valid       per spatial dim d: conditions (beyond offs_k < WINDOW) for a real element
    divisor     lines that divide `acc` by the window's divisor (avg only)
    """

    reduce: str
    title: str
    consts: dict[str, int]
    starts: list[str]
    position: Callable[[str], str]
    valid: Callable[[str], list[str]]
    divisor: list[str] = field(default_factory=list)


def emit(ctx: EmitContext) -> EmittedKernel:
    pool = ctx.node(ctx.kernel.anchor)
    a = pool.attrs
    x = ctx.node(pool.inputs[0])
    dims = SPATIAL[len(a.kernel_size)]
    consts = {"C": x.shape[1]}
    for i, d in enumerate(dims):
        D = d.upper()
        consts.update({D: x.shape[2 + i], f"O{D}": pool.shape[2 + i], f"K{D}": a.kernel_size[i],
                       f"S{D}": a.stride[i], f"P{D}": a.padding[i], f"D{D}": a.dilation[i]})
    is_max = pool.op.startswith("max")
    starts = ["# Each window starts at o * stride - padding; positions outside the input",
              "# (padding, or past it in ceil_mode's last window) are masked."]
    starts += [f"start_{d} = o{d} * S{d.upper()} - P{d.upper()}" for d in dims]
    spec = WindowSpec(
        reduce="max" if is_max else "avg",
        title=(f"{pool.op}: the max over each window (dilated), padding ignored."
               if is_max else f"{pool.op}: the mean over each window, PyTorch's divisor."),
        consts=consts,
        starts=starts,
        position=lambda d: f"start_{d}[:, None] + k{d}[None, :] * D{d.upper()}",
        valid=lambda d: [f"(i{d} >= 0)", f"(i{d} < {d.upper()})"],
        divisor=[] if is_max else _avg_divisor(a, dims),
    )
    return window_kernel(ctx, spec)


def _avg_divisor(a, dims) -> list[str]:
    """PyTorch's avg-pool divisor: divisor_override, else the window clipped to the padded
    input (count_include_pad) or to the input itself."""
    if a.divisor_override is not None:
        return ["# divisor_override replaces the window's size.",
                f"acc = acc / {number(float(a.divisor_override))}"]
    what = "padding included" if a.count_include_pad else "padding not counted"
    lines = ["# Divisor: the window's elements up to the padded input's end (ceil_mode's last",
             f"# window is shorter), {what}."]
    for d in dims:
        D = d.upper()
        lines.append(f"end_{d} = tl.minimum(start_{d} + K{D}, {D} + P{D})")
        if a.count_include_pad:
            lines.append(f"count_{d} = end_{d} - start_{d}")
        else:
            lines.append(f"count_{d} = tl.minimum(end_{d}, {D}) - tl.maximum(start_{d}, 0)")
    lines.append("divisor = (" + " * ".join(f"count_{d}" for d in dims) + ").to(tl.float32)")
    lines.append("acc = acc / divisor")
    return lines


def window_kernel(ctx: EmitContext, spec: WindowSpec) -> EmittedKernel:
    """The Triton kernel and launcher of a windowed max/avg reduction over 1-3 spatial dims."""
    graph, kernel = ctx.graph, ctx.kernel
    anchor = graph.node(kernel.anchor)
    x = graph.node(anchor.inputs[0])
    S = len(x.shape) - 2
    dims = SPATIAL[S]
    out_node = graph.node(kernel.output)
    rank = len(out_node.shape)
    epi = Epilogue(graph, kernel.epilogue, kernel.anchor)
    consts = spec.consts
    rows = ["n", "c"] + [f"o{d}" for d in dims]
    window = " * ".join(f"K{d.upper()}" for d in dims)
    is_max = spec.reduce == "max"

    b = KernelBuilder(ctx, "window", spec.title + "\n\n" + (
        f"Rows: output elements ({', '.join(rows)}); columns: offsets in the window "
        f"({', '.join(f'k{d}' for d in dims)})."))
    b.argument("x", "value", anchor.inputs[0])
    for name, kind, ref in epilogue_refs(epi):
        b.argument(name, kind, ref)
    _, operand_call = epilogue_arguments(epi)
    b.group("input, output", ["x_ptr", "out_ptr"], ["x", "out"])
    b.group("epilogue operands", epi.params(), operand_call)
    b.group("batch size", ["N"])
    b.group("input strides", [f"sx{i}" for i in range(S + 2)], ["*x.stride()"])
    b.group("output strides", [f"so{i}" for i in range(S + 2)], ["*out.stride()"])
    b.constants("channels, input sizes, output sizes, window", consts)
    outputs = " * ".join(str(consts[f"O{d.upper()}"]) for d in dims)
    b.problem(["N = x.shape[0]", f"M = N * {consts['C']} * {outputs}"], "M")
    window_size = 1
    for d in dims:
        window_size *= consts[f"K{d.upper()}"]
    # Tiles of BLOCK_M outputs x BLOCK_K window offsets, within the family's cap.
    b.tile_expr("BLOCK_M", "tile(M, config['BLOCK'] // BLOCK_K)")
    b.tiles.insert(0, "BLOCK_K")
    b.tile_lines.insert(0, f"BLOCK_K = min({_next_power_of_2(window_size)}, "
                        "config['BLOCK'] // 16)")
    b.grid_dims(("M", "BLOCK_M"))

    src = b.body
    b.program_id("pid")
    src.line("# Rows: output elements (" + ", ".join(rows) + ").")
    src.line("offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)")
    src.line("rest = offs_m")
    for var in reversed(rows[2:]):
        src.line(f"{var} = rest % O{var[1:].upper()}")
        src.line(f"rest = rest // O{var[1:].upper()}")
    src.line("c = rest % C")
    src.line("n = rest // C")
    src.line("m_mask = n < N")
    src.line("x_base = n * sx0 + c * sx1")
    src.extend(spec.starts)
    if is_max:
        src.line('acc = tl.full((BLOCK_M,), float("-inf"), tl.float32)')
        src.line("nans = tl.zeros((BLOCK_M,), dtype=tl.int32)")
    else:
        src.line("acc = tl.zeros((BLOCK_M,), dtype=tl.float32)")
    src.line(f"WINDOW = {window}")
    with src.indent("for k0 in range(0, WINDOW, BLOCK_K):"):
        src.line("# Columns: offsets in the window (" + ", ".join(f"k{d}" for d in dims)
                 + ").")
        src.line("offs_k = k0 + tl.arange(0, BLOCK_K)")
        src.line("rest_k = offs_k")
        for d in reversed(dims[1:]):
            src.line(f"k{d} = rest_k % K{d.upper()}")
            src.line(f"rest_k = rest_k // K{d.upper()}")
        src.line(f"k{dims[0]} = rest_k")
        src.line("mask = m_mask[:, None] & (offs_k < WINDOW)[None, :]")
        offset = "x_base[:, None]"
        for i, d in enumerate(dims):
            src.line(f"i{d} = {spec.position(d)}")
            src.line(f"mask = mask & {' & '.join(spec.valid(d))}")
            offset += f" + i{d} * sx{2 + i}"
        other = 'float("-inf")' if is_max else "0.0"
        src.line(f"v = tl.load(x_ptr + {offset}, mask=mask, other={other}).to(tl.float32)")
        if is_max:
            src.line("acc = tl.maximum(acc, tl.max(v, axis=1))")
            src.line("nans += tl.sum((v != v).to(tl.int32), axis=1)")
        else:
            src.line("acc += tl.sum(v, axis=1)")
    if is_max:
        src.line("# A NaN in the window makes the max NaN, as in PyTorch.")
        src.line('acc = tl.where(nans > 0, float("nan"), acc)')
    src.extend(spec.divisor)

    def index(d: int) -> str:
        return rows[d]

    src.extend(epi.lines("acc", index, "m_mask", rank))
    offset = " + ".join(f"{var} * so{i}" for i, var in enumerate(rows))
    src.line(f"tl.store(out_ptr + {offset}, acc.to(out_ptr.dtype.element_ty), mask=m_mask)")
    if epi.uses_tanh:
        b.helpers.add("tanh")
    return b.build()


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()
