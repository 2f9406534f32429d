"""Chains of conv + training batch norm pairs as one autograd unit (codegen/backward_pair):
where a pair's output is read only by the next pair's conv, the next conv's gradient
launch also gives the earlier batch norm's coefficients (grad_conv's bn_input), so a
chain of n pairs takes n + 1 backward launches. Compiled networks against cnnc.reference
and autograd (two SGD-free steps: outputs, every gradient, running statistics), the
launches counted, and where a chain must not form."""

from __future__ import annotations

import pytest
import torch
from test_conv_batch_norm_backward import _blocks_step, _pair, _step

from cnnc.report.training import triton_launches

# A bottleneck: 1x1 -> grouped 3x3 stride 2 (relu6) -> depthwise 3x3 (no activation) ->
# 1x1 (no affine) + a strided residual, then relu: a chain of four pairs.
BOTTLENECK = """
network Bottleneck {
    input x: [N, 8, 9, 9]
    a = x -> conv2d(16, 1, bias=false) -> batch_norm -> relu
    b = a -> conv2d(16, 3, stride=2, padding=1, groups=4, bias=false) -> batch_norm -> relu6
    c = b -> conv2d(16, 3, padding=1, groups=16, bias=false) -> batch_norm
    down = x -> conv2d(8, 1, stride=2, bias=false) -> batch_norm
    d = c -> conv2d(8, 1) -> batch_norm(affine=false) -> add(down) -> relu
    output d
}
"""


def _units(net):
    return [row["kernels"] for row in net.backward_plan
            if row["kernels"][:1] == ["grad_batch_norm_coefficients"]]


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_chain_of_four_pairs_matches_autograd(channels_last):
    net, launched = _blocks_step(BOTTLENECK, (2, 8, 9, 9), 3, channels_last)
    units = _units(net)
    assert sorted(len(kernels) for kernels in units) == [2, 5], units  # down; a..d
    assert launched.count("_norm_sum_kernel") == 2
    assert launched.count("_conv_grad_kernel") == 5
    assert launched.count("_norm_apply_kernel") == 0


def test_no_chain_where_the_output_is_read_twice_or_returned():
    source = """
network T {
    input x: [N, 4, 6, 6]
    a = x -> conv2d(4, 3, padding=1, bias=false) -> batch_norm -> relu
    b = a -> conv2d(4, 3, padding=1, bias=false) -> batch_norm -> add(a) -> relu
    c = b -> conv2d(4, 1, bias=false) -> batch_norm -> relu
    d = c -> conv2d(4, 1, bias=false) -> batch_norm
    output d, c
}
"""
    net, ref = _pair(source)
    assert _units(net) == [["grad_batch_norm_coefficients", "grad_conv"]] * 4
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(4))
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (ya, ca), (yb, cb) = net(xa), ref(xb)
    with triton_launches() as launched:
        (ya.sum() + (ca * ca).sum()).backward()
    (yb.sum() + (cb * cb).sum()).backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=2e-4, atol=2e-5)
    assert launched.count("_norm_sum_kernel") == 4


def test_a_chain_after_a_residual_add_in_its_last_pair_and_the_plan_lists_it():
    """The chain's last pair adds the block's input (its gradient from masked_out), which
    the chain's first conv reads too."""
    source = """
network T {
    input x: [N, 6, 7, 7]
    a = x -> conv2d(6, 3, padding=1, bias=false) -> batch_norm -> relu
    b = a -> conv2d(6, 3, padding=1, bias=false) -> batch_norm -> add(x) -> relu
    output b
}
"""
    net, ref = _pair(source)
    assert [row["kernels"] for row in net.backward_plan] == [
        ["grad_batch_norm_coefficients", "grad_conv", "grad_conv"]]
    x = torch.randn(2, 6, 7, 7, generator=torch.Generator().manual_seed(5))
    launched = _step(net, ref, x, steps=1)
    assert launched == ["_norm_sum_kernel", "_conv_grad_kernel", "_conv_grad_kernel"]
