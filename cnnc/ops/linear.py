"""linear: nn.Linear on the last dim, in_features taken from the input."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ShapeError
from ..ir.graph import ParamSpec
from ..ir.shapes import Shape, Sym, per_sample_numel
from .registry import Op, TensorInfo, register
from .signature import Arg, Bool, Int, Tensor


@dataclass(frozen=True)
class LinearAttrs:
    out_features: int
    bias: bool


class Linear(Op):
    name = "linear"
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
        specs = [ParamSpec("weight", (attrs.out_features, inputs[0].shape[-1]))]
        if attrs.bias:
            specs.append(ParamSpec("bias", (attrs.out_features,)))
        return tuple(specs)

    def init_params(self, attrs, tensors) -> None:
        weight = tensors["weight"]
        torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        if "bias" in tensors:
            fan_in = weight.shape[1]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            torch.nn.init.uniform_(tensors["bias"], -bound, bound)

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
