"""The operator registry: every rule about one operator lives on its Op object.

An Op knows its signature, builds its attribute record, infers its output shape (raising
ShapeError with PyTorch's conditions), declares its parameters with PyTorch's
initialisation recipes, computes itself with torch.nn.functional (the reference backend), counts
its MACs and explains its arithmetic. Adding an operator means writing one Op subclass
and registering it; nothing else changes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..ir.graph import ParamSpec
from ..ir.shapes import Shape
from .signature import Arg


@dataclass(frozen=True)
class TensorInfo:
    """What shape rules see of an input: its shape and how the source names it."""

    shape: Shape
    label: str

    def __str__(self) -> str:
        from ..ir.shapes import format_shape

        return f"{self.label} {format_shape(self.shape)}"


@dataclass(frozen=True)
class GradRule:
    """An anchor's backward: `function(dy, *reads, **options, needs=...)` returns the
    gradients named by `results`, in order (None for those not needed).

    reads/results name "x" (input 0), "x1" (input 1, ...), "y" (the op's output) or a
    parameter's leaf name ("weight", "bias"); a read "stats" is what the forward kernel's
    launcher returned (batch norm's mean and invstd), kept for the backward and passed as
    `stats=`. options: numbers, strings, tuples and booleans only (they are written into
    generated code). needs: whether the function takes `needs=` (a bool per result);
    otherwise it returns one gradient, for "x".

    mask: the function takes `mask=(y, lo, hi)`, y the output of an activation the anchor's
    epilogue ends with, whose derivative is 0 where y <= lo or y >= hi and 1 elsewhere
    (Op.output_window): dy is then that activation's output gradient, and the function
    folds the derivative in on load (no chain kernel). masked_out: it also takes
    `masked_out=`, a tensor of dy's shape it fills with the activation's input gradient
    (the gradient of tensors the epilogue adds before the activation).
    """

    function: str
    reads: tuple[str, ...]
    results: tuple[str, ...] = ("x",)
    options: tuple[tuple[str, Any], ...] = ()
    needs: bool = False
    mask: bool = False
    masked_out: bool = False


class Op:
    name: str
    signature: tuple[Arg, ...]
    attrs_type: ClassVar[type]

    # ------------------------------------------------------------ building
    def make_attrs(self, args: dict[str, Any]) -> Any:
        """The attribute record from bound arguments (tensors replaced by TensorSlots)."""
        names = {f.name for f in dataclasses.fields(self.attrs_type)}
        return self.attrs_type(**{k: v for k, v in args.items() if k in names})

    def infer(self, attrs: Any, inputs: list[TensorInfo]) -> Shape:
        raise NotImplementedError

    def params(self, attrs: Any, inputs: list[TensorInfo]) -> tuple[ParamSpec, ...]:
        return ()

    def results(self, attrs: Any, inputs: list[TensorInfo]) -> list[Shape] | None:
        """For an op with several results (chunk, split): the shape of each, as many as
        torch returns. The builder then makes one node per result, its attrs record's
        `index` field set to the result's position; on such a node `infer` gives that
        result's shape and `reference` computes that result. None: one result."""
        return None

    # ------------------------------------------------------------ reference backend
    def reference(
        self, attrs: Any, xs: list[torch.Tensor], p: dict[str, torch.Tensor], training: bool
    ) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------ back-end traits
    # The fusion pass and the code generator ask these; they never switch on an op's name.
    fusion: ClassVar[str | None] = None
    """How the op joins a kernel. "anchor": it starts a kernel of kind `template`.
    "epilogue": elementwise, applied inside the kernel producing its input where that
    kernel has an epilogue slot, else in a pointwise kernel. "view": it launches nothing
    (`view` says which). None: no template can compute it yet."""
    template: ClassVar[str | None] = None  # the plan kind of the kernel an anchor starts
    view: ClassVar[str | None] = None  # "reshape" (a free reshape) or "concat" (a view)
    epilogue_slot: ClassVar[bool] = False  # its kernel applies following elementwise ops
    absorbs_batch_norm: ClassVar[bool] = False  # an eval batch norm after it joins its kernel
    absorbs_pool: ClassVar[bool] = False  # its kernel can pool its own output tile
    pool_in_conv: ClassVar[bool] = False  # a pool a conv's kernel can apply (absorbs_pool)
    pooled_prologue: ClassVar[bool] = False  # a pool that, with flatten, feeds a linear
    absorbs_pooled_prologue: ClassVar[bool] = False  # a GEMM that pools while loading
    combine: ClassVar[str | None] = None  # a binary epilogue op's Triton operator (+, *)
    draws_random: ClassVar[bool] = False  # random numbers: its own pointwise kernel
    pass_through: ClassVar[str | None] = None  # "always" or "eval": simplify removes it
    statistics_template: ClassVar[str | None] = None  # a kernel computing batch statistics
    folds_into_producer: ClassVar[bool] = False  # eval: joins an absorbs_batch_norm producer
    differentiable_view: ClassVar[bool] = False  # differentiable plans: torch views (view_expr)

    def kernel_template(self, attrs: Any) -> str | None:
        """The template that computes this use of an anchor, or None where none can yet
        (then `template_covers` says what its template does cover)."""
        return self.template

    template_covers: ClassVar[str | None] = None

    def uses_batch_statistics(self, attrs: Any, training: bool) -> bool:
        """Whether it normalises by the batch's statistics (then `statistics_template`)."""
        return False

    def output_channel_dim(self, rank: int) -> int:
        """The dim of its output that holds channels or features (1 for convs)."""
        return 1

    def triton_expr(self, attrs: Any, x: str) -> str | None:
        """For elementwise ops: a Triton expression of the float32 value `x` (else None)."""
        return None

    # ------------------------------------------------------------ backward
    def derivative(self, attrs: Any, g: str, x: str, y: str) -> str | None:
        """For elementwise ops: a Triton expression of dL/dinput from the upstream gradient
        `g`, the op's input `x` and output `y` (float32 values; it reads only the one
        `derivative_uses` names), with PyTorch autograd's values at kinks and for NaN.
        None: no derivative (yet)."""
        return None

    def output_window(self, attrs: Any) -> tuple[float, float] | None:
        """For elementwise ops whose derivative is 1 strictly inside a window of their output
        and 0 at or beyond its bounds: (lo, hi) (hi may be inf: no upper bound; relu's is
        (0, inf)), with `derivative` giving exactly that. None: no such window."""
        return None

    def derivative_uses(self, attrs: Any) -> str:
        """What `derivative` reads besides g: "output" (y only, so the forward keeps its
        output, which the next op may keep anyway) or "input" (x only)."""
        return "input"

    def grad_rule(self, attrs: Any) -> GradRule | None:
        """How an anchor's backward runs: a launcher of cnnc/runtime/grad and what it reads
        and returns (None: the op cannot be differentiated yet)."""
        return None

    # ------------------------------------------------------------ reporting
    def macs(self, attrs: Any, inputs: list[TensorInfo], out: Shape) -> int:
        """Multiply-accumulates per unit of batch."""
        return 0

    def explain(self, attrs: Any, inputs: list[TensorInfo], out: Shape) -> list[str]:
        """The lecture's arithmetic for this op, numbers substituted."""
        return []


OPS: dict[str, Op] = {}


def register(*ops: Op) -> None:
    for op in ops:
        if op.name in OPS:
            raise RuntimeError(f"operator {op.name} registered twice")
        OPS[op.name] = op


def get_op(name: str) -> Op | None:
    return OPS.get(name)
