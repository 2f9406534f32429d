"""adaptive_avg_pool1/2/3d and adaptive_max_pool1/2/3d: a fixed output size, any input size."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ..ir.shapes import Shape
from .common import check_rank, spatial_of
from .registry import GradRule, Op, TensorInfo, register
from .signature import Arg, SizesOrNone, Tensor


@dataclass(frozen=True)
class AdaptivePoolAttrs:
    output_size: tuple[int | None, ...]  # none keeps the input's size in that dim


def adaptive_sizes(attrs: AdaptivePoolAttrs, sizes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(s if o is None else o for o, s in zip(attrs.output_size, sizes))


class AdaptivePool(Op):
    fusion = "anchor"
    template = "adaptive_pool"
    attrs_type = AdaptivePoolAttrs

    def __init__(self, kind: str, dims: int):
        self.kind, self.dims = kind, dims
        self.name = f"adaptive_{kind}_pool{dims}d"
        self.pooled_prologue = kind == "avg"  # a mean a GEMM can take while loading
        self.signature = (Arg("input", Tensor()), Arg("output_size", SizesOrNone(dims)))
        self._fn = getattr(F, self.name)

    def infer(self, attrs: AdaptivePoolAttrs, inputs: list[TensorInfo]) -> Shape:
        (x,) = inputs
        check_rank(self.name, x, self.dims)
        return (*x.shape[:2], *adaptive_sizes(attrs, spatial_of(self.name, x)))

    def grad_rule(self, attrs: AdaptivePoolAttrs) -> GradRule:
        # output_size may hold None (the input's size): the launcher reads dy's shape
        return GradRule(f"grad_adaptive_{self.kind}_pool", ("x",), ("x",),
                        (("output_size", attrs.output_size),))

    def reference(self, attrs: AdaptivePoolAttrs, xs, p, training):
        size = adaptive_sizes(attrs, tuple(xs[0].shape[2:]))
        return self._fn(xs[0], size if self.dims > 1 else size[0])

    def explain(self, attrs, inputs, out) -> list[str]:
        sizes = inputs[0].shape[2:]
        parts = []
        for s, o in zip(sizes, out[2:]):
            start_end = "fixed windows" if s % o == 0 else "windows of varying size"
            parts.append(f"{s} -> {o} ({start_end}: start floor(i*{s}/{o}), "
                         f"end ceil((i+1)*{s}/{o}))")
        return ["adaptive: " + "; ".join(parts)]


register(*(AdaptivePool(k, d) for k in ("avg", "max") for d in (1, 2, 3)))
