"""Output-size arithmetic shared by convolution and pooling, and its lecture-style spelling.

These are PyTorch's formulas (ATen's conv_output_size and pooling_output_shape); the
shape rules, the explanations and later the code generator all use them, so each
formula exists once.
"""

from __future__ import annotations

SPATIAL_NAMES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}
UNIT = {"L": "step", "H": "row", "W": "column", "D": "slice"}


def effective_kernel(kernel: int, dilation: int) -> int:
    return dilation * (kernel - 1) + 1


def conv_output_size(size: int, kernel: int, stride: int, pad_l: int, pad_r: int,
                     dilation: int) -> int:
    return (size + pad_l + pad_r - effective_kernel(kernel, dilation)) // stride + 1


def pool_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int,
                     ceil_mode: bool) -> int:
    """ATen's pooling_output_shape: with ceil_mode, a last window starting in the padding
    is dropped."""
    span = size + 2 * pad - effective_kernel(kernel, dilation) + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def transposed_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int,
                           output_padding: int) -> int:
    return (size - 1) * stride - 2 * pad + dilation * (kernel - 1) + output_padding + 1


def _kernel_text(kernel: int, dilation: int) -> str:
    return str(kernel) if dilation == 1 else f"({dilation}*({kernel} - 1) + 1)"


def _pad_text(pad_l: int, pad_r: int) -> str:
    return f"2*{pad_l}" if pad_l == pad_r else f"{pad_l} + {pad_r}"


def size_formula(size, kernel, stride, pad_l, pad_r, dilation, result, ceil_mode=False) -> str:
    """`(32 - 5 + 2*2)//1 + 1 = 32`, the lecture's (W - F + 2P)/S + 1 with numbers."""
    inner = f"{size} - {_kernel_text(kernel, dilation)} + {_pad_text(pad_l, pad_r)}"
    if ceil_mode:
        text = f"ceil(({inner})/{stride}) + 1"
        plain = -(-(size + pad_l + pad_r - effective_kernel(kernel, dilation)) // stride) + 1
        if plain != result:
            text += f" = {plain}, less the window that would start in the padding"
        return f"{text} = {result}"
    return f"({inner})//{stride} + 1 = {result}"


def unused_note(dims: list[str], size: int, kernel: int, stride: int, pad_l: int, pad_r: int,
                dilation: int) -> str | None:
    """Says when floor division leaves input rows or columns unused (the stride-3 case)."""
    span = size + pad_l + pad_r - effective_kernel(kernel, dilation)
    rest = span % stride
    if span < 0 or rest == 0:
        return None
    units = [f"{rest} {UNIT[d]}{'s' if rest > 1 else ''}" for d in dims]
    verb = "is" if len(dims) == 1 and rest == 1 else "are"
    return (
        f"{', '.join(dims)}: {size} + {_pad_text(pad_l, pad_r)} - {_kernel_text(kernel, dilation)}"
        f" = {span} is not a multiple of the stride {stride}: the last "
        f"{' and '.join(units)} of the padded input {verb} never used"
    )


def explain_sizes(sizes, kernels, strides, pads, dilations, outs, ceil_mode=False) -> list[str]:
    """One line per spatial dim (dims with identical arithmetic share a line)."""
    names = SPATIAL_NAMES[len(sizes)]
    groups: dict[tuple, list[str]] = {}
    for i, name in enumerate(names):
        key = (sizes[i], kernels[i], strides[i], pads[i], dilations[i], outs[i])
        groups.setdefault(key, []).append(name)
    lines = []
    for (size, kernel, stride, (pad_l, pad_r), dilation, out), dims in groups.items():
        formula = size_formula(size, kernel, stride, pad_l, pad_r, dilation, out, ceil_mode)
        lines.append(f"{', '.join(dims)}: {formula}")
        if not ceil_mode:
            note = unused_note(dims, size, kernel, stride, pad_l, pad_r, dilation)
            if note:
                lines.append(note)
    return lines


def product_text(factors: list[int]) -> str:
    return "*".join(str(f) for f in factors)
