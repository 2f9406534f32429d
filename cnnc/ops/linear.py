"""linear: nn.Linear on the last dim, in_features taken from the input."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ..errors import ShapeError
from ..ir.graph import ParamSpec
from ..ir.shapes import Shape, Sym, per_sample_numel
from .registry import GradRule, Op, TensorInfo, register
from .signature import Arg, Bool, Int, Tensor


@dataclass(frozen=True)
class LinearAttrs:
    out_features: int
    bias: bool


class Linear(Op):
    name = "linear"
    fusion = "anchor"
    template = "linear"
    epilogue_slot = True
    absorbs_batch_norm = True
    absorbs_pooled_prologue = True

    def output_channel_dim(self, rank: int) -> int:
        return rank - 1  # features are the last dim
    attrs_type = LinearAttrs
    signature = (
        Arg("input", Tensor()),
        Arg("out_features", Int(1)),
        Arg("bias", Bool(), True),
    )

    def infer(self, attrs: LinearAttrs, inputs: list[TensorInfo]) -> Shape:
        (x,) = inputs
        if isinstance(x.shape[-1], Sym):
            raise ShapeError(
                f"linear() acts on the last dim, which must be fixed; found {x}",
                help="flatten from dim 1 (the default) keeps the batch dim apart",
            )
        return (*x.shape[:-1], attrs.out_features)

    def params(self, attrs: LinearAttrs, inputs) -> tuple[ParamSpec, ...]:
        fan_in = inputs[0].shape[-1]
        specs = [ParamSpec("weight", (attrs.out_features, fan_in), init=("kaiming_uniform",))]
        if attrs.bias:
            specs.append(ParamSpec("bias", (attrs.out_features,), init=("uniform", fan_in ** -0.5)))
        return tuple(specs)

    def grad_rule(self, attrs: LinearAttrs) -> GradRule:
        return GradRule("grad_linear", ("x", "weight"), ("x", "weight", "bias"),
                        (("has_bias", attrs.bias),), needs=True,
                        mask=True)  # grad_linear(mask=(y, lo, hi)): relu-like epilogue folded

    def reference(self, attrs, xs, p, training):
        return F.linear(xs[0], p["weight"], p.get("bias"))

    def macs(self, attrs: LinearAttrs, inputs, out) -> int:
        return per_sample_numel(out) * inputs[0].shape[-1]

    def explain(self, attrs: LinearAttrs, inputs, out) -> list[str]:
        n_in = inputs[0].shape[-1]
        formula = f"{n_in}*{attrs.out_features}"
        total = n_in * attrs.out_features
        if attrs.bias:
            formula += f" + {attrs.out_features}"
            total += attrs.out_features
        return [f"params: {formula} = {total:,}"]


register(Linear())
