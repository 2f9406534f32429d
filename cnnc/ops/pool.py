"""max_pool1/2/3d and avg_pool1/2/3d with PyTorch's arguments and output-size rules."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ..errors import ShapeError
from ..ir.shapes import Shape
from . import arithmetic
from .common import check_rank, spatial_of
from .registry import GradRule, Op, TensorInfo, register
from .signature import INT32_MAX, Arg, Bool, Int, Ints, Optional, Tensor


@dataclass(frozen=True)
class MaxPoolAttrs:
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    ceil_mode: bool


@dataclass(frozen=True)
class AvgPoolAttrs:
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    ceil_mode: bool
    count_include_pad: bool
    divisor_override: int | None

    @property
    def dilation(self) -> tuple[int, ...]:
        return (1,) * len(self.kernel_size)


class Pool(Op):
    """What max and average pooling share: windows, padding limits, output sizes."""

    fusion = "anchor"
    template = "pool"
    pool_in_conv = True
    kind = ""

    def recompute_factor(self, attrs) -> float:
        """A conv kernel that pools its own tile computes the conv once per window tap:
        kernel/stride times per dim what the conv alone computes (1 when the windows
        tile the input, 2.25 for a 3x3 stride-2 pool, less than 1 when they skip input)."""
        factor = 1.0
        for k, s in zip(attrs.kernel_size, attrs.stride):
            factor *= k / s
        return factor

    def __init__(self, dims: int):
        self.dims = dims
        self.name = f"{self.kind}_pool{dims}d"

    def make_attrs(self, args):
        if args.get("stride") is None:  # stride defaults to the window
            args = {**args, "stride": args["kernel_size"]}
        return super().make_attrs(args)

    def infer(self, attrs, inputs: list[TensorInfo]) -> Shape:
        (x,) = inputs
        check_rank(self.name, x, self.dims)
        sizes = spatial_of(self.name, x)
        for k, p in zip(attrs.kernel_size, attrs.padding):
            if p > k // 2:
                raise ShapeError(
                    f"{self.name}() padding {p} is more than half the window {k}",
                    arg="padding",
                    help="PyTorch allows padding of at most kernel_size // 2",
                )
        self._check_window_fits_unpadded(attrs, x, sizes)
        out = []
        for size, k, s, p, d in zip(
            sizes, attrs.kernel_size, attrs.stride, attrs.padding, attrs.dilation
        ):
            n = arithmetic.pool_output_size(size, k, s, p, d, attrs.ceil_mode)
            if n < 1:
                raise ShapeError(
                    f"{self.name}() window {'x'.join(map(str, attrs.kernel_size))} does not fit "
                    f"in {x} (padded size {size + 2 * p}, output would be {n})",
                    help="use a smaller window or a larger input",
                )
            out.append(n)
        return (*x.shape[:2], *out)

    def _check_window_fits_unpadded(self, attrs, x: TensorInfo, sizes) -> None:
        """Only PyTorch's avg_pool3d also needs the window to fit the input before padding."""

    def explain(self, attrs, inputs, out) -> list[str]:
        sizes = inputs[0].shape[2:]
        pads = tuple((p, p) for p in attrs.padding)
        return arithmetic.explain_sizes(
            sizes, attrs.kernel_size, attrs.stride, pads, attrs.dilation, out[2:], attrs.ceil_mode
        )


class MaxPool(Pool):
    kind = "max"
    attrs_type = MaxPoolAttrs

    def __init__(self, dims: int):
        super().__init__(dims)
        # PyTorch's max_pool2d/3d take their windows as 32-bit ints; max_pool1d as 64-bit.
        limit = {"max": INT32_MAX} if dims > 1 else {}
        self.signature = (
            Arg("input", Tensor()),
            Arg("kernel_size", Ints(dims, **limit)),
            Arg("stride", Optional(Ints(dims, **limit)), None),
            Arg("padding", Ints(dims, min=0, **limit), 0),
            Arg("dilation", Ints(dims, **limit), 1),
            Arg("ceil_mode", Bool(), False),
        )
        self._fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[dims]

    def grad_rule(self, attrs: MaxPoolAttrs) -> GradRule:
        return GradRule("grad_max_pool", ("x",), ("x",), (
            ("kernel_size", attrs.kernel_size), ("stride", attrs.stride),
            ("padding", attrs.padding), ("dilation", attrs.dilation),
            ("ceil_mode", attrs.ceil_mode)))

    def reference(self, attrs: MaxPoolAttrs, xs, p, training):
        return self._fn(
            xs[0], attrs.kernel_size, attrs.stride, attrs.padding, attrs.dilation,
            ceil_mode=attrs.ceil_mode,
        )


class AvgPool(Pool):
    kind = "avg"
    attrs_type = AvgPoolAttrs

    def __init__(self, dims: int):
        super().__init__(dims)
        # PyTorch's avg_pool*d take their windows as 32-bit ints.
        self.signature = (
            Arg("input", Tensor()),
            Arg("kernel_size", Ints(dims, max=INT32_MAX)),
            Arg("stride", Optional(Ints(dims, max=INT32_MAX)), None),
            Arg("padding", Ints(dims, min=0, max=INT32_MAX), 0),
            Arg("ceil_mode", Bool(), False),
            Arg("count_include_pad", Bool(), True),
            Arg("divisor_override", Optional(Int(1)), None),
        )

    def _check_window_fits_unpadded(self, attrs, x: TensorInfo, sizes) -> None:
        if self.dims != 3:
            return
        for dim, size, k in zip(("D", "H", "W"), sizes, attrs.kernel_size):
            if size < k:
                raise ShapeError(
                    f"avg_pool3d() window {'x'.join(map(str, attrs.kernel_size))} is larger "
                    f"than {x} in {dim} ({size} < {k}), before padding",
                    help="PyTorch's avg_pool3d needs every input size to be at least the "
                    "window, whatever the padding: use a smaller window",
                )

    def grad_rule(self, attrs: AvgPoolAttrs) -> GradRule:
        return GradRule("grad_avg_pool", ("x",), ("x",), (
            ("kernel_size", attrs.kernel_size), ("stride", attrs.stride),
            ("padding", attrs.padding), ("ceil_mode", attrs.ceil_mode),
            ("count_include_pad", attrs.count_include_pad),
            ("divisor_override", attrs.divisor_override)))

    def reference(self, attrs: AvgPoolAttrs, xs, p, training):
        x = xs[0]
        if self.dims == 1:
            # F.avg_pool1d has no divisor_override; a 1-row avg_pool2d computes the same.
            y = F.avg_pool2d(
                x.unsqueeze(-2), (1, *attrs.kernel_size), (1, *attrs.stride),
                (0, *attrs.padding), attrs.ceil_mode, attrs.count_include_pad,
                attrs.divisor_override,
            )
            return y.squeeze(-2)
        fn = {2: F.avg_pool2d, 3: F.avg_pool3d}[self.dims]
        return fn(
            x, attrs.kernel_size, attrs.stride, attrs.padding, attrs.ceil_mode,
            attrs.count_include_pad, attrs.divisor_override,
        )


register(*(MaxPool(d) for d in (1, 2, 3)), *(AvgPool(d) for d in (1, 2, 3)))
