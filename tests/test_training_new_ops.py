"""The operators of the language-breadth issue train: each one's gradients (input and
parameters) equal PyTorch autograd's through the reference backend, in float32 and, for a
tight comparison, float64."""

from __future__ import annotations

import pytest
import torch
from test_training import _close

import cnnc

# (name, the chain after a conv, the input's channels and size)
CASES = [
    ("chunk", "a, b = c -> chunk(2)\n    y = b -> relu", 4, 6),
    ("split", "a, b, d = c -> split((1, 2, 1))\n    y = d -> add(a) -> sigmoid", 4, 6),
    ("channel_shuffle", "y = c -> channel_shuffle(2) -> relu", 4, 6),
    ("reshape", "y = c -> reshape((-1, 2, 72)) -> tanh", 4, 6),
    ("permute", "y = c -> permute((0, 2, 3, 1)) -> relu", 4, 6),
    ("transpose", "y = c -> transpose(2, 3) -> relu", 4, 6),
    ("upsample_bilinear", "y = c -> upsample(2, mode=\"bilinear\") -> relu", 4, 5),
    ("upsample_bicubic_corners",
     "y = c -> upsample(size=(7, 9), mode=\"bicubic\", align_corners=true)", 4, 5),
    ("upsample_nearest", "y = c -> upsample(scale_factor=3) -> relu", 4, 5),
    ("layer_norm", "y = c -> layer_norm((6, 6)) -> relu", 4, 6),
    ("group_norm", "y = c -> group_norm(2) -> relu", 4, 6),
    ("prelu", "y = c -> prelu(4)", 4, 6),
    ("prelu_one", "y = c -> prelu -> add(c)", 4, 6),
    ("softplus", "y = c -> softplus(2.0, 1.0)", 4, 6),
    ("mish", "y = c -> mish", 4, 6),
    ("hardtanh", "y = c -> hardtanh(-0.5, 0.5)", 4, 6),
]


def _source(chain: str, channels: int, size: int) -> str:
    # a layer norm over each channel's map is blind to that channel's bias: its gradient
    # is 0 plus rounding, nothing to compare, so that conv has none
    bias = ", bias=false" if "layer_norm" in chain else ""
    return (f"network Net {{\n    input x: [N, 3, {size}, {size}]\n"
            f"    c = x -> conv2d({channels}, 3, padding=1{bias})\n    {chain}\n"
            "    output y\n}\n")


FLOAT64 = ("layer_norm", "group_norm", "upsample_bicubic_corners", "prelu")


def _cases():
    for case in CASES:
        yield pytest.param(*case, torch.float32, id=f"{case[0]}-fp32")
        if case[0] in FLOAT64:  # the reductions, once more where rounding cannot hide
            yield pytest.param(*case, torch.float64, id=f"{case[0]}-fp64")


@pytest.mark.parametrize("name,chain,channels,size,dtype", list(_cases()))
def test_new_operator_gradients_equal_autograd(name, chain, channels, size, dtype):
    source = _source(chain, channels, size)
    torch.manual_seed(0)
    net = cnnc.compile(source=source, dtype=dtype).train()
    ref = cnnc.reference(source=source).to(dtype).train()
    with torch.no_grad():  # slopes of both signs, so both of prelu's branches learn
        for key, p in net.named_parameters():
            if key.endswith("weight") and p.dim() == 1 and "prelu" in name:
                p.uniform_(-1, 1)
    ref.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, size, size, dtype=dtype)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = net(xa), ref(xb)
    _close(ya.detach(), yb.detach(), "output")
    w = torch.randn_like(yb)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    _close(xa.grad, xb.grad, "input gradient")
    mine = dict(net.named_parameters())
    for key, p in ref.named_parameters():
        _close(mine[key].grad, p.grad, key)
