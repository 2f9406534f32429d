"""batch_norm over dim 1 of a 2- to 5-d tensor, as nn.BatchNorm1d/2d/3d."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ..errors import ShapeError
from ..ir.graph import ParamSpec
from ..ir.shapes import Shape
from .common import channels_of
from .registry import GradRule, Op, TensorInfo, register
from .signature import Arg, Bool, Float, Optional, Tensor


@dataclass(frozen=True)
class BatchNormAttrs:
    eps: float
    momentum: float | None  # none: a cumulative moving average, as in PyTorch
    affine: bool
    track_running_stats: bool


class BatchNorm(Op):
    name = "batch_norm"
    fusion = "epilogue"  # in eval: folded, or an affine y = x * scale + shift
    statistics_template = "batch_norm_train"
    folds_into_producer = True
    epilogue_slot = True  # the statistics kernel applies what follows

    def uses_batch_statistics(self, attrs, training: bool) -> bool:
        return training or not attrs.track_running_stats
    attrs_type = BatchNormAttrs
    signature = (
        Arg("input", Tensor()),
        Arg("eps", Float(0, strict_min=True), 1e-5),  # PyTorch: eps > 0 in training
        Arg("momentum", Optional(Float()), 0.1),
        Arg("affine", Bool(), True),
        Arg("track_running_stats", Bool(), True),
    )

    def infer(self, attrs: BatchNormAttrs, inputs: list[TensorInfo]) -> Shape:
        (x,) = inputs
        if not 2 <= len(x.shape) <= 5:
            raise ShapeError(
                f"batch_norm() expects a 2- to 5-d input [N, C, ...], found {x}"
            )
        channels_of(self.name, x)
        return x.shape

    def params(self, attrs: BatchNormAttrs, inputs) -> tuple[ParamSpec, ...]:
        c = (inputs[0].shape[1],)
        specs = []
        if attrs.affine:
            specs += [ParamSpec("weight", c, init=("fill", 1)), ParamSpec("bias", c)]
        if attrs.track_running_stats:
            specs += [
                ParamSpec("running_mean", c, trainable=False),
                ParamSpec("running_var", c, trainable=False, init=("fill", 1)),
                ParamSpec("num_batches_tracked", (), trainable=False, dtype="long"),
            ]
        return tuple(specs)

    def grad_rule(self, attrs: BatchNormAttrs) -> GradRule:
        """With batch statistics (training, or no running statistics), read from what the
        forward kept (templates/batch_norm_train.py); in eval a batch norm with running
        statistics is an affine in an elementwise chain."""
        return GradRule("grad_batch_norm", ("x", "weight", "stats"), ("x", "weight", "bias"),
                        (("eps", attrs.eps),), needs=True, mask=True, masked_out=True)

    def reference(self, attrs: BatchNormAttrs, xs, p, training):
        # nn.modules.batchnorm._BatchNorm.forward, step for step.
        momentum = 0.0 if attrs.momentum is None else attrs.momentum
        tracked = p.get("num_batches_tracked")
        if training and attrs.track_running_stats and tracked is not None:
            tracked.add_(1)
            if attrs.momentum is None:
                momentum = 1.0 / float(tracked)
        use_batch_stats = training or not attrs.track_running_stats
        return F.batch_norm(
            xs[0], p.get("running_mean"), p.get("running_var"), p.get("weight"), p.get("bias"),
            use_batch_stats, momentum, attrs.eps,
        )


register(BatchNorm())
