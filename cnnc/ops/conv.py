"""conv1d, conv2d, conv3d: nn.ConvNd's arguments, shape rules, initialisation and numerics."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F

from ..errors import ShapeError
from ..ir.graph import ParamSpec
from ..ir.shapes import Shape, format_shape
from ..ir.values import Array
from . import arithmetic
from .common import channels_of, check_rank, spatial_of
from .registry import GradRule, Op, TensorInfo, register
from .signature import Arg, Bool, Choice, Either, Filter, Int, Ints, Optional, Tensor

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


@dataclass(frozen=True)
class ConvAttrs:
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...] | str  # per-dim ints, or "same" / "valid"
    dilation: tuple[int, ...]
    groups: int
    bias: bool
    padding_mode: str
    weight: Array | None  # a fixed filter (a buffer), or None for a learned weight


def conv_pads(attrs: ConvAttrs) -> tuple[tuple[int, int], ...]:
    """(left, right) zero/mode padding per spatial dim; "same" pads the extra one right,
    as PyTorch does for even kernels."""
    if attrs.padding == "valid":
        return tuple((0, 0) for _ in attrs.kernel_size)
    if attrs.padding == "same":
        pads = []
        for k, d in zip(attrs.kernel_size, attrs.dilation):
            total = d * (k - 1)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    return tuple((p, p) for p in attrs.padding)


def pad_arg_for_F(pads: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    """F.pad's order: the last dim first."""
    flat: list[int] = []
    for left, right in reversed(pads):
        flat += [left, right]
    return tuple(flat)


def check_mode_padding(mode: str, pads, sizes, label: str) -> None:
    """F.pad's limits for the reflect and circular modes."""
    for (left, right), size, dim in zip(pads, sizes, arithmetic.SPATIAL_NAMES[len(sizes)]):
        pad = max(left, right)
        if mode == "reflect" and pad >= size:
            raise ShapeError(
                f'padding_mode="reflect" needs padding smaller than the input: {dim} of {label} '
                f"is {size}, padding is {pad}",
                arg="padding",
                help="reflect padding mirrors the input without repeating its edge, so it "
                "cannot reach further than size - 1",
            )
        if mode == "circular" and pad > size:
            raise ShapeError(
                f'padding_mode="circular" cannot wrap around more than once: {dim} of {label} '
                f"is {size}, padding is {pad}",
                arg="padding",
            )


class Conv(Op):
    fusion = "anchor"
    template = "conv"
    epilogue_slot = True
    absorbs_batch_norm = True
    absorbs_pool = True
    attrs_type = ConvAttrs

    def __init__(self, dims: int):
        self.dims = dims
        self.name = f"conv{dims}d"
        self.signature = (
            Arg("input", Tensor()),
            Arg("out_channels", Int(1)),
            Arg("kernel_size", Ints(dims)),
            Arg("stride", Ints(dims), 1),
            Arg("padding", Either(Ints(dims, min=0), Choice("same", "valid")), 0),
            Arg("dilation", Ints(dims), 1),
            Arg("groups", Int(1), 1),
            Arg("bias", Bool(), True),
            Arg("padding_mode", Choice(*PADDING_MODES), "zeros"),
            Arg("weight", Optional(Filter()), None),
        )
        self._conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]

    # ------------------------------------------------------------ shapes
    def infer(self, attrs: ConvAttrs, inputs: list[TensorInfo]) -> Shape:
        (x,) = inputs
        check_rank(self.name, x, self.dims)
        in_channels = channels_of(self.name, x)
        groups = attrs.groups
        if in_channels % groups:
            raise ShapeError(
                f"{self.name}() groups={groups} does not divide the {in_channels} input "
                f"channels of {x}",
                arg="groups",
            )
        if attrs.out_channels % groups:
            raise ShapeError(
                f"{self.name}() groups={groups} does not divide out_channels="
                f"{attrs.out_channels}",
                arg="groups",
            )
        if attrs.padding == "same" and any(s != 1 for s in attrs.stride):
            raise ShapeError(
                f'{self.name}() padding="same" is not supported with stride '
                f"{_tuple_text(attrs.stride)}",
                arg="padding",
                help="PyTorch allows it only for stride 1; give the padding as numbers",
            )
        sizes = spatial_of(self.name, x)
        pads = conv_pads(attrs)
        if attrs.padding_mode != "zeros":
            check_mode_padding(attrs.padding_mode, pads, sizes, x.label)
        out = []
        for size, k, s, (pl, pr), d in zip(
            sizes, attrs.kernel_size, attrs.stride, pads, attrs.dilation
        ):
            if arithmetic.effective_kernel(k, d) > size + pl + pr:
                raise ShapeError(
                    f"{self.name}() kernel {_kernel_text(attrs)} is larger than the padded "
                    f"input {_padded_text(sizes, pads)} of {x.label}",
                    help="use a smaller kernel or dilation, more padding, or a larger input",
                )
            out.append(arithmetic.conv_output_size(size, k, s, pl, pr, d))
        self._check_filter(attrs, in_channels)
        return (x.shape[0], attrs.out_channels, *out)

    def _check_filter(self, attrs: ConvAttrs, in_channels: int) -> None:
        if attrs.weight is None:
            return
        full = (attrs.out_channels, in_channels // attrs.groups, *attrs.kernel_size)
        if attrs.weight.shape not in (tuple(attrs.kernel_size), full):
            raise ShapeError(
                f"{self.name}() weight has shape {format_shape(attrs.weight.shape)}; expected the "
                f"kernel's {format_shape(attrs.kernel_size)} or the full "
                f"{format_shape(full)}",
                arg="weight",
                help="a const with only the spatial dims is used for every (out, in) pair",
            )

    # ------------------------------------------------------------ parameters
    def params(self, attrs: ConvAttrs, inputs: list[TensorInfo]) -> tuple[ParamSpec, ...]:
        in_channels = inputs[0].shape[1]
        weight = (attrs.out_channels, in_channels // attrs.groups, *attrs.kernel_size)
        if attrs.weight is None:
            specs = [ParamSpec("weight", weight, init=("kaiming_uniform",))]
        else:
            specs = [ParamSpec("weight", weight, trainable=False,
                               init=("const", attrs.weight.shape, attrs.weight.values))]
        if attrs.bias:
            fan_in = math.prod(weight[1:])
            specs.append(ParamSpec("bias", (attrs.out_channels,), init=("uniform", fan_in ** -0.5)))
        return tuple(specs)

    # ------------------------------------------------------------ numerics
    def grad_rule(self, attrs: ConvAttrs) -> GradRule:
        return GradRule("grad_conv", ("x", "weight"), ("x", "weight", "bias"), (
            ("stride", attrs.stride), ("pads", conv_pads(attrs)),
            ("dilation", attrs.dilation), ("groups", attrs.groups),
            ("padding_mode", attrs.padding_mode), ("has_bias", attrs.bias)), needs=True,
            mask=True)  # grad_conv(mask=(y, lo, hi)): a relu-like epilogue folded in

    def reference(self, attrs: ConvAttrs, xs, p, training):
        (x,) = xs
        pads = conv_pads(attrs)
        symmetric = all(left == right for left, right in pads)
        if attrs.padding_mode == "zeros" and symmetric:
            padding = tuple(left for left, _ in pads)
        else:
            mode = "constant" if attrs.padding_mode == "zeros" else attrs.padding_mode
            x = F.pad(x, pad_arg_for_F(pads), mode=mode)
            padding = 0
        return self._conv(
            x, p["weight"], p.get("bias"), attrs.stride, padding, attrs.dilation, attrs.groups
        )

    # ------------------------------------------------------------ reporting
    def macs(self, attrs: ConvAttrs, inputs, out) -> int:
        per_output = (inputs[0].shape[1] // attrs.groups) * math.prod(attrs.kernel_size)
        return math.prod(out[1:]) * per_output

    def explain(self, attrs: ConvAttrs, inputs, out) -> list[str]:
        x = inputs[0]
        sizes = x.shape[2:]
        lines = arithmetic.explain_sizes(
            sizes, attrs.kernel_size, attrs.stride, conv_pads(attrs), attrs.dilation, out[2:]
        )
        if attrs.padding in ("same", "valid"):
            lines.insert(0, f'padding="{attrs.padding}": {_pads_text(conv_pads(attrs))}')
        in_channels = x.shape[1]
        per_filter = [*attrs.kernel_size, in_channels // attrs.groups]
        formula = f"{arithmetic.product_text(per_filter)}*{attrs.out_channels}"
        total = math.prod(per_filter) * attrs.out_channels
        if attrs.bias:
            formula += f" + {attrs.out_channels}"
            total += attrs.out_channels
        what = "fixed weights" if attrs.weight is not None else "params"
        line = f"{what}: {formula} = {total:,}"
        if attrs.groups > 1:
            line += (
                f"  (groups={attrs.groups}: each filter sees {in_channels}/{attrs.groups} = "
                f"{in_channels // attrs.groups} channels)"
            )
        lines.append(line)
        return lines


def _tuple_text(values) -> str:
    return str(values[0]) if len(set(values)) == 1 else "(" + ", ".join(map(str, values)) + ")"


def _kernel_text(attrs: ConvAttrs) -> str:
    eff = [arithmetic.effective_kernel(k, d) for k, d in zip(attrs.kernel_size, attrs.dilation)]
    text = "x".join(map(str, attrs.kernel_size))
    if eff != list(attrs.kernel_size):
        text += f" (dilated to {'x'.join(map(str, eff))})"
    return text


def _padded_text(sizes, pads) -> str:
    return "x".join(str(s + left + right) for s, (left, right) in zip(sizes, pads))


def _pads_text(pads) -> str:
    return ", ".join(f"{left} + {right}" for left, right in pads)


register(Conv(1), Conv(2), Conv(3))
