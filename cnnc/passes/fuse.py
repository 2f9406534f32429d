"""Fusion: the simplified graph becomes an ordered plan of kernels (passes/plan.py).

Expects: a graph from `simplify` (no identities; in eval no dropout) and, in eval mode,
from `fold_batch_norm` (which batch norms fold). Guarantees: every
non-input node is covered by exactly one plan step; steps are in an order where each
reads only what earlier steps wrote; every fusion refused is in `plan.refusals` with
its reason. Decisions are functions of early returns: None means "fuse", a string is
the reason not to.

Groups, in eval mode:
- conv / linear + folded batch_norm + bias + elementwise chain (activations, add/mul
  with another tensor or a number, batch-norm affine) in the GEMM epilogue;
- a max or avg pool right after a conv group, inside the conv's kernel, when its windows
  do not overlap (overlapping windows would recompute the conv: refused, with the factor);
- adaptive avg pool + flatten + linear as one kernel;
- remaining elementwise chains as one pointwise kernel; softmax as a row kernel;
- flatten as a free reshape, concat as a view its producers write into;
- a channel_shuffle of such a concat as a view too: the producers write into strided
  slices of the shuffled output (op.concat_slices says where), so neither copies.
In training mode batch norm is not folded: it runs as a kernel of its own that computes
the batch statistics, with the following elementwise chain in its epilogue. Where its
input is a conv's output (no epilogue, no pool) that only it reads, the conv's epilogue
computes partial statistics of its tiles (Kernel.bn_stats / stats_from), so the batch
norm reads the conv's output once.

Differentiable plans (the forward of a module whose outputs carry an autograd graph) fuse
only what the backward can differentiate from the tensors a group keeps: its inputs and
its output. An anchor's epilogue takes adds and scalar products, and last an activation
whose derivative its output gives (relu, sigmoid, tanh, ...); a pool stays a kernel of its
own (its backward reads its input, which a fused kernel never stores); an eval batch norm
does not fold (its weight's gradient needs the conv's output). A pointwise group keeps
its inputs and recomputes its chain in the backward, so it takes every elementwise op.
"""

from __future__ import annotations

from ..errors import CompileError
from ..ir.graph import Graph, Node
from ..ops import OPS
from .plan import Kernel, Plan, Refusal, View


class _Fuser:
    def __init__(self, graph: Graph, training: bool, differentiable: bool = False):
        self.graph = graph
        self.training = training
        self.differentiable = differentiable
        self.plan = Plan(training, graph)
        self.producer: dict[int, Kernel | View] = {}  # node id -> the step computing it

    def run(self) -> Plan:
        for node in self.graph.nodes():
            if node.op != "input":
                self.place(node)
        steps = {id(s): s for s in self.producer.values()}
        self.plan.steps = sorted(steps.values(), key=lambda s: s.output)
        for i, kernel in enumerate(self.plan.kernels):
            kernel.index = i
        return self.plan

    # ------------------------------------------------------------ placing one node
    def place(self, node: Node) -> None:
        op = OPS[node.op]
        if op.fusion == "view":
            return self.add(View(op.view, node.id))
        if self.differentiable and op.differentiable_view:
            return self.add(View("strided", node.id))
        if op.uses_batch_statistics(node.attrs, self.training):
            # batch statistics: a kernel of its own (without running stats, eval too)
            kernel = Kernel(op.statistics_template, node.id)
            self.add(kernel)
            return self.try_statistics_from_conv(node, kernel)
        if op.folds_into_producer and self.try_fold(node):
            return
        if getattr(op, "concat_slices", None) and not self.differentiable \
                and self.try_concat_view(node):
            return
        if op.fusion == "epilogue":
            return self.elementwise(node)
        if op.pool_in_conv and self.try_pool(node):
            return
        if op.absorbs_pooled_prologue and self.try_pooled_linear(node):
            return
        template = op.kernel_template(node.attrs) if op.fusion == "anchor" else None
        if template is None:
            covers = (f"its template computes {op.template_covers} only" if op.template_covers
                      else "its operator has no template")
            raise CompileError(f"cnnc cannot generate a kernel for {node.op} yet: {covers}",
                               node.loc, trail=node.trail,
                               help="cnnc.reference computes it with torch.nn.functional")
        self.add(Kernel(template, node.id))

    def anchor_op(self, step: Kernel):
        return OPS[self.graph.node(step.anchor).op]

    def add(self, step: Kernel | View) -> None:
        for n in step.nodes:
            self.producer[n] = step

    def refuse(self, node: Node, into: int | None, reason: str) -> None:
        self.plan.refusals.append(Refusal(node.id, into, reason))

    # ------------------------------------------------------------ decisions
    def sole_consumer(self, value: int, node: Node) -> str | None:
        consumers = self.graph.consumers(value)
        if value in self.graph.outputs:
            return "its input is also a network output"
        if [c.id for c in consumers] != [node.id]:
            names = ", ".join(sorted({c.label for c in consumers if c.id != node.id}))
            return f"its input is also used by {names}"
        return None

    def epilogue_refusal(self, node: Node, value: int) -> str | None:
        step = self.producer.get(value)
        if not isinstance(step, Kernel) or step.output != value:
            return "its input is not the result of a kernel"
        anchor = self.anchor_op(step)
        if not (anchor.epilogue_slot or anchor.fusion == "epilogue"):
            return f"a {step.kind} kernel has no epilogue"
        if step.pool is not None:
            return "the pool fused into that kernel ends it"
        if OPS[node.op].draws_random:
            return f"{node.op} draws random numbers; it runs as a pointwise kernel"
        if node.shape != self.graph.node(value).shape:
            return "broadcasting makes the result larger than the kernel's output"
        if self.differentiable and step.kind != "pointwise":
            reason = self.differentiable_refusal(step, node)
            if reason is not None:
                return reason
        return self.sole_consumer(value, node)

    def differentiable_refusal(self, step: Kernel, node: Node) -> str | None:
        """Whether an anchor kernel's backward can differentiate its epilogue with `node`
        from the group's output alone (the values inside the epilogue are never stored)."""
        chain = [self.graph.node(n) for n in step.epilogue]
        if any(OPS[n.op].triton_expr(n.attrs, "v") is not None for n in chain):
            return (f"in a differentiable forward an activation ends a fused epilogue: "
                    f"{node.op}'s derivative would need the activation's input")
        op = OPS[node.op]
        if op.combine == "+":
            return None
        if op.combine == "*":
            if sum(1 for i in node.inputs) == 1:
                return None
            return ("in a differentiable forward a product with a tensor does not join an "
                    "epilogue: its gradient needs the kernel's value before it")
        if op.triton_expr(node.attrs, "v") is None:
            return f"in a differentiable forward {node.op} does not join an epilogue"
        if op.derivative(node.attrs, "g", "x", "y") is not None \
                and op.derivative_uses(node.attrs) == "output":
            return None
        what = "needs its input" if op.derivative(node.attrs, "g", "x", "y") else "is unknown"
        return (f"in a differentiable forward {node.op} does not join the epilogue: its "
                f"derivative {what}, and only the kernel's output is kept")

    def elementwise(self, node: Node) -> None:
        tensors = [i for i in dict.fromkeys(node.inputs)]
        reasons = []
        for value in tensors:
            reason = self.epilogue_refusal(node, value)
            if reason is None:
                step = self.producer[value]
                step.epilogue.append(node.id)
                self.producer[node.id] = step
                return
            reasons.append((value, reason))
        for value, reason in reasons[:1]:
            self.refuse(node, value, reason)
        self.add(Kernel("pointwise", node.id))

    def try_fold(self, bn: Node) -> bool:
        """Fold as fold_batch_norm decided (the pass has the conditions and reasons)."""
        value = bn.meta.get("fold_into")
        step = self.producer.get(value) if value is not None else None
        if not isinstance(step, Kernel) or step.anchor != value or step.output != value:
            self.refuse(bn, bn.inputs[0], "not folded: " + bn.meta.get(
                "fold_refused", "run fold_batch_norm before fuse"))
            return False
        if self.differentiable:
            self.refuse(bn, value, "not folded in a differentiable forward: the gradient of "
                        "its weight needs the conv's output, which a folded kernel never "
                        "stores")
            return False
        step.folded_bn = bn.id
        self.producer[bn.id] = step
        return True

    def try_statistics_from_conv(self, bn: Node, kernel: Kernel) -> None:
        """A training batch norm of a conv's output that only it reads: the conv's epilogue
        computes the partial statistics, so the batch norm reads its input once."""
        value = bn.inputs[0]
        step = self.producer.get(value)
        if not self.training or not isinstance(step, Kernel) or step.kind != "conv":
            return  # nothing to pair with: not a refusal worth reporting
        reason = self.sole_consumer(value, bn)
        if reason is None and (step.epilogue or step.pool is not None
                               or step.folded_bn is not None):
            reason = "the conv's kernel has an epilogue or a pool"
        if reason is not None:
            self.refuse(bn, value, f"statistics not from the conv's epilogue: {reason}")
            return
        step.bn_stats, kernel.stats_from = bn.id, step.anchor

    def try_concat_view(self, node: Node) -> bool:
        """A shuffle of a concat's channels that only it reads: a View of kind "shuffle"
        (module.py allocates its output and hands the concat's inputs strided slices)."""
        concat = self.graph.node(node.inputs[0])
        step = self.producer.get(concat.id)
        if not isinstance(step, View) or step.kind != "concat" \
                or concat.attrs.dim % len(concat.shape) != 1:
            return False
        reason = self.sole_consumer(concat.id, node)
        pieces = [self.graph.node(i).shape[1] for i in concat.inputs]
        if reason is None and OPS[node.op].concat_slices(
                node.attrs, concat.shape[1], pieces) is None:
            reason = "a piece of the concat spans two groups"
        if reason is not None:
            self.refuse(node, concat.id, f"not a view of the concat: {reason}")
            return False
        self.add(View("shuffle", node.id))
        return True

    def try_pool(self, pool: Node) -> bool:
        value = pool.inputs[0]
        step = self.producer.get(value)
        if not isinstance(step, Kernel) or step.output != value \
                or not self.anchor_op(step).absorbs_pool:
            return False  # nothing to fuse with: not a refusal worth reporting
        reason = self.sole_consumer(value, pool)
        if reason is None and step.pool is not None:
            reason = "the conv already holds a pool"
        recompute = OPS[pool.op].recompute_factor(pool.attrs)
        if reason is None and self.differentiable:
            reason = ("not fused in a differentiable forward: the pool's backward reads the "
                      "conv's output, which a fused kernel never stores; storing it would "
                      "cost the memory traffic the fusion saves")
        if reason is None and recompute > 1:
            window = "x".join(map(str, pool.attrs.kernel_size))
            stride = "x".join(map(str, pool.attrs.stride))
            reason = (f"its {window} windows at stride {stride} overlap: pooling inside the "
                      f"conv would compute the conv {recompute:.2f} times over; a separate pool "
                      "reads the conv's output once")
        if reason is not None:
            self.refuse(pool, value, reason)
            return False
        step.pool = pool.id
        self.producer[pool.id] = step
        return True

    def try_pooled_linear(self, linear: Node) -> bool:
        flat = self.graph.node(linear.inputs[0])
        if flat.op == "input" or OPS[flat.op].view != "reshape" or len(flat.shape) != 2:
            return False
        pooled = self.graph.node(flat.inputs[0])
        if pooled.op == "input" or not OPS[pooled.op].pooled_prologue \
                or flat.shape[0] != pooled.shape[0]:
            return False
        reason = self.sole_consumer(flat.id, linear) or self.sole_consumer(pooled.id, flat)
        if reason is None and self.differentiable:
            reason = ("the linear's weight gradient reads the pooled values, which the fused "
                      "kernel never stores")
        if reason is not None:
            self.refuse(linear, pooled.id, f"pool + flatten not fused: {reason}")
            return False
        for n in (pooled.id, flat.id):
            del self.producer[n]
        self.add(Kernel(OPS[linear.op].template, linear.id, prologue=[pooled.id, flat.id]))
        return True


def fuse(graph: Graph, training: bool = False, differentiable: bool = False) -> Plan:
    return _Fuser(graph, training, differentiable).run()
