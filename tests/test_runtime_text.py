"""A generated file carries the backward kernel families its backward calls (and those
they use), not all of them."""

from __future__ import annotations

import cnnc
from cnnc.codegen.runtime_text import grad_families
from cnnc.compiler import generate

CONV_POOL_LINEAR = """
network Net {
    input x: [N, 3, 8, 8]
    y = x -> conv2d(4, 3, padding=1) -> relu -> max_pool2d(2) -> flatten -> linear(5)
    output y
}
"""

LINEAR_ONLY = """
network Net {
    input x: [N, 6]
    y = x -> linear(5) -> relu
    output y
}
"""


def _launchers(source: str) -> set[str]:
    text = generate(cnnc.load(source=source)).source
    return {name for name in ("grad_conv", "grad_linear", "grad_max_pool", "grad_batch_norm",
                              "grad_group_norm", "grad_sum_to", "_conv_accumulator")
            if f"def {name}(" in text}


def test_a_file_holds_the_families_its_backward_calls():
    # (conv's kernel can take a batch norm's sums, conv_bn, with norm's coefficients: the
    # norm family comes with conv)
    assert _launchers(CONV_POOL_LINEAR) == {"grad_conv", "grad_linear", "grad_max_pool",
                                            "grad_batch_norm", "grad_sum_to",
                                            "_conv_accumulator"}


def test_a_family_brings_the_families_whose_names_it_uses():
    # grad_linear sums into conv's accumulators and reads dy through conv_tile's mask:
    # both families come along, and conv's own (conv_bn's batch-norm sums, with norm's
    # coefficients)
    assert grad_families({"grad_linear"}) == ["tensor", "norm", "conv_tile", "conv_bn",
                                              "conv", "linear"]
    assert _launchers(LINEAR_ONLY) == {"grad_conv", "grad_linear", "grad_batch_norm",
                                       "grad_sum_to", "_conv_accumulator"}
    assert grad_families({"grad_group_norm"}) == ["tensor", "group_norm"]
