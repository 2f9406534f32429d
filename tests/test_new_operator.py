"""Adding an operator touches one place: its Op. These tests register operators the
language does not have, in this file alone, and compile networks that use them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import cnnc
from cnnc.ops import OPS
from cnnc.ops.common import NoAttrs
from cnnc.ops.registry import Op, register
from cnnc.ops.signature import Arg, Tensor


class Softsign(Op):
    """x / (1 + |x|), elementwise: all the back end needs is its Triton expression."""

    name = "softsign_test"
    attrs_type = NoAttrs
    signature = (Arg("input", Tensor()),)
    fusion = "epilogue"

    def infer(self, attrs, inputs):
        return inputs[0].shape

    def reference(self, attrs, xs, p, training):
        return F.softsign(xs[0])

    def triton_expr(self, attrs, x):
        return f"({x} / (1.0 + tl.abs({x})))"


class Cumulative(Op):
    """An operator with a shape rule and a reference but no kernel template yet."""

    name = "cummax_test"
    attrs_type = NoAttrs
    signature = (Arg("input", Tensor()),)

    def infer(self, attrs, inputs):
        return inputs[0].shape

    def reference(self, attrs, xs, p, training):
        return torch.cummax(xs[0], dim=1).values


@pytest.fixture
def registered():
    ops = [Softsign(), Cumulative()]
    register(*ops)
    yield
    for op in ops:
        del OPS[op.name]


SOURCE = """
network Net {
    input x: [N, 3, 8, 8]
    c = x -> conv2d(4, 3, padding=1) -> softsign_test
    s = c -> max_pool2d(2) -> softsign_test
    output s
}
"""


def test_a_new_elementwise_op_fuses_and_computes(registered, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    net = cnnc.compile(source=SOURCE).eval()
    ref = cnnc.reference(source=SOURCE).eval()
    ref.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(net(x), ref(x), rtol=1e-4, atol=1e-5)
    expected = F.softsign(F.max_pool2d(F.softsign(F.conv2d(x, net.c.weight, net.c.bias,
                                                           padding=1)), 2))
    torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-5)
    # conv + softsign (its epilogue) + the pool in one kernel; a pool has no epilogue
    # slot, so the second softsign is a pointwise kernel
    assert [row["ops"] for row in net.plan] == [["conv2d", "softsign_test", "max_pool2d"],
                                                ["softsign_test"]]


def test_an_op_without_a_template_is_a_compile_error(registered):
    source = "network Net {\n    input x: [N, 3, 8, 8]\n    y = x -> cummax_test\n    output y\n}\n"
    cnnc.load(source=source)  # the front end accepts it: it has a shape rule
    with pytest.raises(cnnc.CompileError) as caught:
        cnnc.compile(source=source)
    assert "cummax_test" in str(caught.value) and "template" in str(caught.value)
    assert caught.value.location.line == 3
