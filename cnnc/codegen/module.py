"""The module emitter: one readable Python file holding a network's Triton kernels and an
nn.Module that launches them. It needs only torch and triton; `cnnc.compile` imports it,
`cnnc compile -o` writes it.

The file holds two plans (eval and training); `forward` runs the one for the module's
mode. Parameters are created under LANGUAGE.md's names with PyTorch's initialisation;
kernels read them as they are (nothing computed from them is cached between forwards).
"""

from __future__ import annotations

import ast
import builtins
import keyword
import re
from dataclasses import dataclass

from .. import __version__
from ..errors import CompileError
from ..ir.graph import Graph
from ..passes.plan import Kernel, Plan
from ..runtime.inputs import input_specs, parameter_specs
from . import backward, helpers, views
from .forward import (
    Values,
    emit_forward,
    emit_forward_empty,
    in_place_concat_inputs,
    input_variable,
    layout_of,
    read_flat,
)
from .kernel import EmitContext, EmittedKernel, safe_file_name
from .runtime_text import grad_source, support_source
from .source import Source, number, python_name, shown, text_literal
from .templates import TEMPLATES


@dataclass
class Emitted:
    source: str
    class_name: str
    eval_launches: list[dict]
    train_launches: list[dict]


def emit_module(graph: Graph, eval_plan: Plan, train_plan: Plan, origin: str,
                grad_plans: dict[str, Plan] | None = None) -> Emitted:
    kernels: list[EmittedKernel] = []
    headers: dict[str, list[str]] = {}
    plans = {}
    modes = [("eval", eval_plan, "k"), ("train", train_plan, "t")]
    for mode, plan in (grad_plans or {}).items():
        modes.append(("grad_" + mode, plan, backward.GRAD_PREFIX[mode]))
    for mode, plan, prefix in modes:
        emitted = []
        for kernel in plan.kernels:
            template = TEMPLATES.get(kernel.kind)
            if template is None:
                node = graph.node(kernel.anchor)
                raise CompileError(f"cnnc cannot generate a {kernel.kind} kernel yet "
                                   f"({node.op})", node.loc, trail=node.trail)
            ctx = EmitContext(plan.graph, kernel, prefix)
            emitted.append(template(ctx))
            headers[emitted[-1].name] = ctx.describe()
        kernels += emitted
        plans[mode] = (plan, emitted)
    groups = {}
    for mode in (grad_plans or {}):
        plan, emitted = plans.pop("grad_" + mode)
        groups[mode] = (plan, backward.plan_groups(plan, emitted, mode))
        for group in groups[mode][1]:
            if group.chain is not None:
                kernels.append(group.chain.kernel)
                headers[group.chain.kernel.name] = ["backward of: " + line for line in
                                                    headers[group.name]]

    src = Source()
    launches = {mode: _launch_table(plan.graph, plan, emitted) for mode, (plan, emitted)
                in plans.items()}
    src.line("import os")
    src.line("")
    src.line("import torch")
    src.line("")
    with src.indent("if not torch.cuda.is_available():"):
        src.line('os.environ.setdefault("TRITON_INTERPRET", "1")')
    src.line("")
    src.line("import triton  # noqa: E402")
    src.line("import triton.language as tl  # noqa: E402")
    src.line("")
    src.extend(support_source().rstrip("\n").splitlines())
    src.line("")
    src.line("")
    with src.indent("try:  # inside cnnc, raise cnnc's own InputError"):
        src.line("from cnnc.runtime.support import InputError  # noqa: F811")
    with src.indent("except ImportError:"):
        src.line("pass")
    src.line("")
    src.extend(helpers.RUNTIME.strip("\n").splitlines())
    src.line("LAUNCH_LOCK = launch_lock(INTERPRET)")
    src.line("")
    if groups:
        called = {name for plan, found in groups.values()
                  for row in backward.backward_table(plan, found) for name in row["kernels"]}
        src.extend(grad_source(called).rstrip("\n").splitlines())
        src.line("")
    used = set().union(*(k.helpers for k in kernels)) if kernels else set()
    for helper in sorted(used):
        src.extend(helpers.JIT[helper].strip("\n").splitlines())
        src.line("")
    src.line("")
    for jit, hosts in _distinct_bodies(kernels).items():
        first = hosts[0][0]
        shared = f"; one body for {len(hosts)} kernels" if hosts[1:] else ""
        src.line(f"# ---- {first.name}: from {safe_file_name(origin)}{shared}")
        for kernel, _, _ in hosts:
            src.line(f"#   {kernel.name}:")
            src.extend(f"#     {line}" for line in headers[kernel.name])
        src.extend(jit.replace(BLANK, first.name).rstrip("\n").splitlines())
        for _, _, kept in hosts:
            for text in kept:
                src.line("")
                src.line("")
                src.extend(text.rstrip("\n").splitlines())
        for _, host, _ in hosts:
            src.line("")
            src.line("")
            src.extend(host.rstrip("\n").splitlines())
        src.line("")
        src.line("")

    for mode, (plan, mode_groups) in groups.items():
        src.line(f"# ---- autograd units of the differentiable {mode} forward")
        backward.emit_group_functions(src, graph, plan, mode_groups,
                                      lambda v, p=plan: layout_of(p.graph, p, v))
    src.line(f"PARAMETERS = {_literal(parameter_specs(graph))}")
    src.line(f"INPUTS = {_literal(input_specs(graph))}")
    src.line(f"PLAN_EVAL = {_literal(launches['eval'])}")
    src.line(f"PLAN_TRAIN = {_literal(launches['train'])}")
    for mode, (plan, mode_groups) in groups.items():
        src.line(f"PLAN_GRAD_{mode.upper()} = "
                 f"{_literal(backward.forward_table(plan, mode_groups))}")
        src.line(f"BACKWARD_{mode.upper()} = "
                 f"{_literal(backward.backward_table(plan, mode_groups))}")
    src.line("")
    src.line("")
    name = class_name(graph.name, module_names(src.text()))
    _emit_class(src, graph, name, plans, groups)
    head = Source()
    head.line('"""' + f"Generated by cnnc {__version__} from {safe_file_name(origin)}: "
              f"network {name}.")
    head.line("")
    head.line("Kernels of one forward pass in eval mode:")
    for row in launches["eval"]:
        layers = ", ".join(shown(layer) for layer in row["layers"])
        head.line(f"  {row['kernel']:<28} {layers}: {' -> '.join(row['ops'])}")
    head.line("")
    head.line("Needs only torch and triton. Without a CUDA GPU the kernels run under Triton's")
    head.line("interpreter (TRITON_INTERPRET=1, set below before triton is first imported).")
    head.line('"""')
    return Emitted(head.text() + src.text(), name, launches["eval"], launches["train"])


BLANK = "__cnnc_kernel__"  # a kernel's name inside its body, when bodies are compared


def _distinct_bodies(kernels: list[EmittedKernel]) -> dict[str, list]:
    """Kernels by jit functions: kernels whose main functions differ only in name share
    the first one's, and their launchers call it; a companion function (a batch norm's
    `..._stats`) is emitted once per distinct body too, whichever kernels carry it.
    -> {main body, name blanked: [(kernel, launcher text, companions to emit)]}."""
    bodies: dict[str, list] = {}
    companions: dict[str, str] = {}  # a companion's body, name blanked -> its first name
    for kernel in kernels:
        jit, host = kernel.parts()
        pieces = re.split(r"(?m)^(?=@triton\.jit)", jit)
        others = [f for f in pieces if f.startswith("@triton.jit")
                  and not re.search(rf"\bdef {kernel.name}\(", f)]
        main = "".join(f for f in pieces if f not in others)
        kept = []
        for text in others:
            name = re.search(r"\bdef (\w+)\(", text)[1]
            first = companions.setdefault(re.sub(rf"\b{name}\(", BLANK + "(", text), name)
            if first == name:
                kept.append(text)
            else:
                host = re.sub(rf"\b{name}(?=\[|\.run\()", first, host)
        body = re.sub(rf"\b{kernel.name}\(", BLANK + "(", main)
        users = bodies.setdefault(body, [])
        if users:
            host = re.sub(rf"\b{kernel.name}(?=\[|\.run\()", users[0][0].name, host)
        users.append((kernel, host, kept))
    return bodies


def module_names(text: str) -> set[str]:
    """The names a generated file binds at module level (imports, functions, classes,
    tables), including those bound inside a top-level if or try."""
    names: set[str] = set()
    pending = list(ast.parse(text).body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for target in targets for n in ast.walk(target)
                         if isinstance(n, ast.Name))
        elif isinstance(node, (ast.If, ast.Try)):
            pending += node.body + node.orelse + getattr(node, "finalbody", [])
            pending += [s for h in getattr(node, "handlers", []) for s in h.body]
    return names


def class_name(network: str, taken: set[str]) -> str:
    """The nn.Module class: the network's name unless Python or the file already uses it
    (a class named `min` or `torch` would hide the global the code calls)."""
    name = python_name(network)
    if (keyword.iskeyword(name) or name in taken or hasattr(builtins, name)
            or name.startswith("_")):
        name += "Network"
    while name in taken:
        name += "_"
    return name


def parameter_name(name: str) -> str:
    """forward()'s parameter for an input: its name, unless Python reserves it (then one
    more `_`, also for names already so spelled: `self` and `self_` stay two names)."""
    name = python_name(name)
    base = name.rstrip("_")
    return f"{name}_" if keyword.iskeyword(base) or base == "self" else name


def _launch_table(graph: Graph, plan: Plan, emitted: list[EmittedKernel]) -> list[dict]:
    """One row per kernel launch, in order: generated kernels and concat copies."""
    code_of = {id(k): e for k, e in zip(plan.kernels, emitted)}
    in_place = in_place_concat_inputs(graph, plan)
    rows = []

    def row(name: str, nodes) -> dict:
        return {
            "kernel": name,
            "layers": list(dict.fromkeys(n.layer for n in nodes)),
            "ops": [n.op for n in nodes],
            "lines": sorted({n.loc.line for n in nodes if n.loc is not None}),
        }

    for step in plan.steps:
        if isinstance(step, Kernel):
            rows.append(row(code_of[id(step)].name, [graph.node(n) for n in step.nodes]))
        elif step.kind == "reshape" and views.reshape_copies(graph, plan, step.node,
                                                             read_flat(graph, plan)):
            rows.append(row("copy_into", [graph.node(step.node)]))
        elif step.kind == "concat":
            concat = graph.node(step.node)
            for position, value in enumerate(concat.inputs):
                if in_place.get(value, (None,))[0] != concat.id \
                        or concat.inputs.index(value) != position:
                    rows.append(row("copy_into", [concat]))
    return rows


def _literal(value) -> str:
    """A Python literal of numbers, identifiers, tuples, lists and dicts (no user text)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, (int, float)):
        return number(value)
    if isinstance(value, str):
        return text_literal(value)
    if isinstance(value, tuple):
        inner = ", ".join(_literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot emit {value!r}")


# ------------------------------------------------------------------ the nn.Module class


def _emit_class(src: Source, graph: Graph, name: str, plans: dict, groups: dict) -> None:
    params = [parameter_name(n.attrs.name) for n in graph.input_nodes()]
    inputs = [input_variable(n.attrs.name) for n in graph.input_nodes()]
    index = {spec[0]: i for i, spec in enumerate(parameter_specs(graph))}
    train = plans["train"][0]
    # CUDA graphs refuse a training forward with dropout: its seed is a host value.
    dropout = any(node.op == "dropout" and node.attrs.p > 0
                  for node in (train.graph.node(n) for k in train.kernels for n in k.nodes))
    with src.indent(f"class {name}(NamedModule):"):
        src.line(f'"""Network {name}: forward({", ".join(params)}) with cnnc\'s kernels."""')
        src.line("")
        src.line("_cnnc_shapes = {}  # (training, *batch sizes) -> output shapes (batch_shapes)")
        src.line("")
        with src.indent("def __init__(self, dtype=torch.float32, device=None):"):
            src.line("super().__init__()")
            src.line("# Follows .to(): the dtype and device the network computes in. Registered")
            src.line("# before the layers, which may take any name, _anchor too.")
            src.line('self.register_buffer("_anchor", torch.empty(0, dtype=dtype, device=device),'
                     " persistent=False)")
            src.line("make_parameters(self, PARAMETERS, dtype, device)")
            src.line("self._slots = parameter_slots(self, PARAMETERS)")
            src.line("self._cnnc_graphs = None  # a CudaGraphs when compiled with cuda_graphs")
        src.line("")
        src.line("@property")
        with src.indent("def plan(self):"):
            src.line('"""The kernel launches of one forward pass in the current mode, as under '
                     'no_grad."""')
            src.line("return PLAN_TRAIN if self.training else PLAN_EVAL")
        src.line("")
        src.line("@property")
        with src.indent("def grad_plan(self):"):
            src.line('"""The launches of a forward that records an autograd graph (grad '
                     'enabled, some')
            src.line('parameter or input requiring grad): it fuses only what its backward '
                     'can differentiate."""')
            src.line("return PLAN_GRAD_TRAIN if self.training else PLAN_GRAD_EVAL" if groups
                     else "return self.plan")
        src.line("")
        src.line("@property")
        with src.indent("def backward_plan(self):"):
            src.line('"""The backward of the current mode\'s differentiable forward: per '
                     'kernel group, last')
            src.line('first, the kernels that compute its gradients."""')
            src.line("return BACKWARD_TRAIN if self.training else BACKWARD_EVAL" if groups
                     else "return []")
        src.line("")
        with src.indent(f"def forward(self, {', '.join(params)}):"):
            src.line("# Only the inputs are named here: an input may be called P, torch, ...")
            src.line(f"return self._cnnc_forward({', '.join(params)})")
        src.line("")
        src.line("@opaque_to_dynamo")
        with src.indent("def _cnnc_forward(self, *inputs):"):
            src.line("refuse_tracing()")
            src.line('anchor = self._buffers["_anchor"]')
            src.line(f"sizes = check_inputs({text_literal(graph.name)}, INPUTS, inputs, "
                     "anchor.dtype, anchor.device)")
            src.line("P = current_tensors(self._slots)")
            if groups:
                with src.indent("if needs_graph(inputs, P) and not empty_batch(sizes):"):
                    src.line("# outputs carrying an autograd graph: one unit per kernel group")
                    with src.indent("with LAUNCH_LOCK:"):
                        src.line("return self._cnnc_grad(P, sizes, *inputs)")
            with src.indent("with torch.no_grad(), LAUNCH_LOCK:"):
                src.line("if empty_batch(sizes):")
                src.line("    return self._forward_empty(P, sizes, *inputs)")
                src.line("if self._cnnc_graphs is not None:")
                src.line(f"    return self._cnnc_graphs.run(self._cnnc_launch, self.training, "
                         f"{dropout}, P, sizes, inputs, anchor.is_cuda)")
                src.line("return self._cnnc_launch(self.training, P, sizes, *inputs)")
        src.line("")
        with src.indent("def _cnnc_launch(self, training, P, sizes, *inputs):"):
            src.line("# S: the output shapes, computed once per batch size (batch_shapes).")
            src.line('anchor = self._buffers["_anchor"]')
            src.line("if training:")
            src.line("    S = batch_shapes(self._cnnc_shapes, (True, *sizes.values()), "
                     "self._shapes_train, sizes)")
            src.line("    return self._forward_train(P, S, anchor.device, anchor.dtype, *inputs)")
            src.line("S = batch_shapes(self._cnnc_shapes, (False, *sizes.values()), "
                     "self._shapes_eval, sizes)")
            src.line("return self._forward_eval(P, S, anchor.device, anchor.dtype, *inputs)")
        src.line("")
        if groups:
            with src.indent("def _cnnc_grad(self, P, sizes, *inputs):"):
                src.line('anchor = self._buffers["_anchor"]')
                src.line("if self.training:")
                src.line("    S = batch_shapes(self._cnnc_shapes, ('grad', True, *sizes.values()), "
                         "self._shapes_grad_train, sizes)")
                src.line("    return self._grad_train(P, S, anchor.device, anchor.dtype, *inputs)")
                src.line("S = batch_shapes(self._cnnc_shapes, ('grad', False, *sizes.values()), "
                         "self._shapes_grad_eval, sizes)")
                src.line("return self._grad_eval(P, S, anchor.device, anchor.dtype, *inputs)")
            src.line("")
        with src.indent("def __prepare_scriptable__(self):"):
            src.line("raise RuntimeError(NO_TORCHSCRIPT)")
        src.line("")
        emit_forward_empty(src, graph, inputs, index)
        for mode in ("eval", "train"):
            plan, emitted = plans[mode]
            src.line("")
            emit_forward(src, plan.graph, mode, plan, emitted, inputs, index)
        for mode, (plan, mode_groups) in groups.items():
            src.line("")
            values = Values(plan.graph, plan, src, table=True)
            values.in_place = {}
            backward.emit_grad_method(src, mode, plan, mode_groups, values, index, inputs)
