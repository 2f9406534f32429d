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

    # ------------------------------------------------------------ reference backend
    def reference(
        self, attrs: Any, xs: list[torch.Tensor], p: dict[str, torch.Tensor], training: bool
    ) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------ code generation
    def triton_expr(self, attrs: Any, x: str) -> str | None:
        """For elementwise ops: a Triton expression of the float32 value `x` (else None)."""
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
