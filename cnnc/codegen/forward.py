"""The generated forward methods: values named and allocated (channels-last where a conv
reads them, flat where a reshape or a pooled linear does, in place in a concat's buffer,
or in the buffer of a value no later launch reads), kernels launched in plan order, views
as torch views or copies."""

from __future__ import annotations

from ..ir.graph import Graph
from ..ir.shapes import Sym
from ..passes.plan import Kernel, Plan, View
from ..runtime.support import channels_last_strides
from . import views
from .kernel import EmittedKernel
from .source import Source, python_name, shown, text_literal


def input_variable(name: str) -> str:
    """Inside the forward functions inputs are in_<name>: never a value (v12), P or sizes."""
    return f"in_{python_name(name)}"


def emit_forward_empty(src: Source, graph: Graph, inputs: list[str],
                        index: dict[str, int]) -> None:
    """A batch of 0 launches nothing and gives empty outputs, as PyTorch does; a training
    batch norm still counts the batch (its running statistics stay)."""
    with src.indent(f"def _forward_empty(self, P, sizes, {', '.join(inputs)}):"):
        values = Values(graph, None, src)
        static = [o for o in graph.outputs
                  if not any(isinstance(d, Sym) for d in graph.node(o).shape)]
        if static:
            output = graph.node(static[0])
            src.line(f"raise InputError('network ' + {text_literal(graph.name)} + ' cannot run "
                     f"a batch of 0: its output ' + {text_literal(output.layer)} + ' does not "
                     "depend on the batch')")
            return
        counters = [name for name, spec, node in graph.parameters()
                    if node.op == "batch_norm" and spec.name == "num_batches_tracked"]
        if counters:
            with src.indent("if self.training:"):
                for name in counters:
                    src.line(f"P[{index[name]}].add_(1)  # {shown(name)}")
        outs = []
        for o in graph.outputs:
            if o in values.names:
                outs.append(values.names[o])
            else:
                outs.append(f"torch.empty({values.shape(o)}, device=self._anchor.device, "
                            "dtype=self._anchor.dtype)")
        src.line("return " + (outs[0] if len(outs) == 1 else "(" + ", ".join(outs) + ")"))


def partials_variable(conv: int) -> str:
    """The variable holding what a conv's launcher returned for the training batch norm
    that reads its output (Kernel.bn_stats): its partial statistics, rows per partial."""
    return f"part{conv}"


def in_place_concat_inputs(graph: Graph, plan: Plan) -> dict[int, tuple[int, int, int]]:
    """value -> (concat node, dim, offset) for the values their producing kernel writes
    straight into a slice of a concat's output; every other concat input is copied."""
    out: dict[int, tuple[int, int, int]] = {}
    for step in plan.steps:
        if not (isinstance(step, View) and step.kind == "concat"):
            continue
        concat = graph.node(step.node)
        dim = concat.attrs.dim % len(concat.shape)
        offset = 0
        seen = set()
        for value in concat.inputs:
            producer = plan.step_of(value)
            size = graph.node(value).shape[dim]
            ok = (isinstance(producer, Kernel) and producer.output == value
                  and value not in seen and value not in graph.outputs
                  and len(graph.consumers(value)) == 1 and value not in out
                  and not isinstance(size, Sym))
            if ok:
                out[value] = (concat.id, dim, offset)
            seen.add(value)
            offset += size if not isinstance(size, Sym) else 0
    return out


class Values:
    """Variable names of node values in a generated forward, and output allocation."""

    def __init__(self, graph: Graph, plan: Plan | None, src: Source, table: bool = False):
        self.graph, self.plan, self.src = graph, plan, src
        self.names: dict[int, str] = {}
        # With a table, shape() names S[i]: a tuple the forward's _shapes_<mode> computes
        # once per batch size. Without one (the empty batch), the expression itself.
        self.table: list[str] | None = [] if table else None
        for node in graph.input_nodes():
            self.names[node.id] = input_variable(node.attrs.name)
        self.in_place = in_place_concat_inputs(graph, plan) if plan is not None else {}
        self.shuffled = views.shuffled_concats(graph, plan)
        # Buffer reuse (plan_reuse): a value's last reading step; the values whose buffer
        # may pass to a later value; the free buffers by (shape, layout).
        self.last_read: dict[int, int] = {}
        self.reusable: set[int] = set()
        self.free: dict[tuple[str, str], list[str]] = {}

    def plan_reuse(self, reads: list[list[int]], aliased: set[int]) -> None:
        """reads[i]: the values step i reads. A value allocated here whose readers are all
        launches (no view aliases it, it is no output) gives its buffer to a value of the
        same shape and layout allocated after its last read: fewer allocations per forward
        and less memory (launches run in stream order, so the reuse is safe on a GPU)."""
        for i, values in enumerate(reads):
            for v in values:
                self.last_read[v] = i
        self.reusable = {v for v in self.last_read
                         if v not in aliased and v not in self.graph.outputs
                         and v not in self.names and v not in self.in_place}

    def at_step(self, i: int) -> None:
        """Before step i: the buffers of values last read before it become free."""
        for v, last in self.last_read.items():
            if last == i - 1 and v in self.reusable and v in self.names:
                key = self._reuse_key(v)
                self.free.setdefault(key, []).append(self.names[v])

    def _channels_last_strides(self, node_id: int) -> str:
        """The strides of a channels-last value: a literal for a static shape, else an
        entry of the shape table (S), computed once per batch size."""
        dims = [self._dim(node_id, i) for i in range(len(self.graph.node(node_id).shape))]
        if all(d.isdigit() for d in dims):
            return str(channels_last_strides([int(d) for d in dims]))
        return self._entry(f"channels_last_strides(({', '.join(dims)}))")

    def _reuse_key(self, node_id: int) -> tuple[str, str]:
        return self.shape(node_id), layout_of(self.graph, self.plan, node_id)

    def emit_return(self) -> None:
        """A forward method's last line: the graph's outputs, one or a tuple."""
        outs = [self.names[o] for o in self.graph.outputs]
        self.src.line("return " + (outs[0] if len(outs) == 1 else "(" + ", ".join(outs) + ")"))

    def emit_shapes(self, method: str) -> None:
        """After a forward method: the static method `method(sizes)` computing the table of
        shapes it used (S), once per batch size."""
        self.src.line("")
        self.src.line("@staticmethod")
        with self.src.indent(f"def {method}(sizes):"):
            shapes = ", ".join(self.table)
            self.src.line(f"return ({shapes}{',' if len(self.table) == 1 else ''})")

    def dim(self, node_id: int, index: int) -> str:
        """One dim of a node's shape: a number, or (batch-dependent) a run-time expression."""
        return self._entry(self._dim(node_id, index))

    def shape(self, node_id: int) -> str:
        dims = [self._dim(node_id, i) for i in range(len(self.graph.node(node_id).shape))]
        return self._entry("(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")")

    def _dim(self, node_id: int, index: int) -> str:
        d = self.graph.node(node_id).shape[index]
        if isinstance(d, Sym):
            size = f"sizes[{text_literal(d.name)}]"
            return size if d.coeff == 1 else f"{size} * {d.coeff}"
        return str(d)

    def _entry(self, text: str) -> str:
        if self.table is None or "sizes[" not in text:
            return text
        if text not in self.table:
            self.table.append(text)
        return f"S[{self.table.index(text)}]"

    def allocate(self, node_id: int) -> str:
        """Emit the allocation of a node's output (or a slice of a concat) and name it."""
        if node_id in self.names:
            return self.names[node_id]
        name = f"v{node_id}"
        if node_id in self.in_place:
            concat, dim, offset = self.in_place[node_id]
            position = self.graph.node(concat).inputs.index(node_id)  # in place: once
            self.src.line(f"{name} = {views.piece(self, concat, position)}")
        elif self.free.get(self._reuse_key(node_id)):
            self.src.line(f"{name} = {self.free[self._reuse_key(node_id)].pop()}  "
                          "# a buffer no later launch reads")
        elif self._reuse_key(node_id)[1]:  # channels-last: strides once per batch size
            self.src.line(f"{name} = torch.empty_strided({self.shape(node_id)}, "
                          f"{self._channels_last_strides(node_id)}, device=device, "
                          "dtype=dtype)")
        else:
            self.src.line(f"{name} = torch.empty({self.shape(node_id)}, device=device, "
                          "dtype=dtype)")
        self.names[node_id] = name
        return name


def layout_of(graph: Graph, plan: Plan, node_id: int) -> str:
    """The memory-format argument a value's allocation takes (see Values.allocate)."""
    rank = len(graph.node(node_id).shape)
    if rank in (4, 5) and node_id not in read_flat(graph, plan):
        return ", memory_format=torch.channels_last" + ("_3d" if rank == 5 else "")
    return ""


def read_flat(graph: Graph, plan: Plan) -> set[int]:
    """Values read in flatten order (channel, then position): a reshape's input, and the
    input of a linear whose prologue pools every element by itself. They are allocated
    contiguous, so a reshape stays a view and the linear reads rows of memory; every other
    4-d and 5-d value is channels-last (NHWC / NDHWC), the layout the convolutions read."""
    flat = set()
    for step in plan.steps:
        if isinstance(step, View) and step.kind == "reshape":
            flat.add(graph.node(step.node).inputs[0])
        elif isinstance(step, Kernel) and step.kind == "linear" and step.prologue:
            pool = graph.node(step.prologue[0])
            source = graph.node(pool.inputs[0])
            if pool.shape[2:] == source.shape[2:]:
                flat.add(source.id)
    return flat


def emit_forward(src: Source, graph: Graph, mode: str, plan: Plan,
                  emitted: list[EmittedKernel], inputs: list[str],
                  index: dict[str, int]) -> None:
    """_forward_<mode>(P, S, device, dtype, inputs): the launches, reading parameters by
    position in P and output shapes from S; and _shapes_<mode>(sizes), which makes S."""
    with src.indent(f"def _forward_{mode}(self, P, S, device, dtype, {', '.join(inputs)}):"):
        values = Values(graph, plan, src, table=True)
        code_of = {id(k): e for k, e in zip(plan.kernels, emitted)}
        flags = _keyed_flags(src, emitted)
        reads = [[a.ref for a in code_of[id(s)].arguments if a.kind == "value"]
                 if isinstance(s, Kernel) else list(graph.node(s.node).inputs)
                 for s in plan.steps]
        aliased = {v for s, r in zip(plan.steps, reads) if isinstance(s, View) for v in r}
        values.plan_reuse(reads, aliased | {s.node for s in plan.steps if isinstance(s, View)})
        for i, step in enumerate(plan.steps):
            values.at_step(i)
            if isinstance(step, View):
                _emit_view(src, graph, step, values)
                continue
            code = code_of[id(step)]
            out = values.allocate(step.output)
            args = []
            for arg in code.arguments:
                if arg.kind == "value":
                    args.append(values.names[arg.ref])
                elif arg.kind == "stats":  # what a conv's launcher returned (below)
                    args.append(partials_variable(arg.ref))
                else:
                    args.append(f"P[{index[arg.ref]}]")
            given = [f"{name}={flags[expr]}" for name, expr in code.keyed.items()]
            kept = f"{partials_variable(step.anchor)} = " if step.bn_stats is not None else ""
            src.line(f"{kept}{code.launcher}({', '.join([out] + args + given)})")
        values.emit_return()
    values.emit_shapes(f"_shapes_{mode}")


def _keyed_flags(src: Source, emitted: list[EmittedKernel]) -> dict[str, str]:
    """Each distinct keyed flag of the plan's launchers (a dot's precision, which follows
    PyTorch's TF32 flags) computed once per forward from the compute dtype: expression ->
    the variable holding it."""
    flags: dict[str, str] = {}
    for code in emitted:
        for expr in code.keyed.values():
            if expr not in flags:
                flags[expr] = expr.split("(")[0] + "_now"
                src.line(f"{flags[expr]} = {expr.replace('(x)', '(dtype)')}  # once a forward")
    return flags


def _emit_view(src: Source, graph: Graph, step: View, values: Values) -> None:
    node = graph.node(step.node)
    if step.kind == "strided":  # permute, transpose, a chunk or split result: torch's view
        return views.emit_strided(src, graph, node.id, values)
    if step.kind == "reshape":
        source = values.names[node.inputs[0]]
        if views.reshape_copies(graph, values.plan, node.id, read_flat(graph, values.plan)):
            source = views.emit_reshape_copy(src, graph, node.id, values)
        name = f"v{node.id}"
        src.line(f"{name} = {source}.reshape({values.shape(node.id)})")
        values.names[node.id] = name
        return
    if step.kind == "shuffle":  # its concat's inputs were written into its slices
        values.allocate(node.id)
        return
    if node.id not in values.shuffled:
        values.allocate(node.id)
    for position, value in enumerate(node.inputs):
        if values.in_place.get(value, (None,))[0] != node.id \
                or node.inputs.index(value) != position:
            src.line(f"copy_into({views.piece(values, node.id, position)}, "
                     f"{values.names[value]})")
