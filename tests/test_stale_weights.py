"""Eval-mode batch norm follows every change of a parameter or buffer.

`.data` changes a tensor in place without bumping its version counter (EMA updates,
pruning and init code work that way), so nothing derived from parameter values may be
cached between forwards. Each test runs a forward, changes one tensor through `.data`,
runs again and compares with cnnc.reference holding the same state and with
torch.nn.functional written out by hand.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from compile_helpers import assert_same, pair

CONV_BN_RELU = """network T {
    input x: [N, 3, 6, 6]
    y = x -> conv2d(4, 3, padding=1) -> batch_norm -> relu
    output y
}"""

LINEAR_BN = """network T {
    input x: [N, 5]
    y = x -> linear(4) -> batch_norm
    output y
}"""

# Batch norms the fold pass refuses: an affine in a conv's epilogue, and in a pointwise kernel.
AFFINE_EPILOGUE = """network T {
    input x: [N, 3, 6, 6]
    y = x -> conv2d(4, 3, padding=1, bias=false) -> relu -> batch_norm
    output y
}"""

POINTWISE_AFFINE = """network T {
    input x: [N, 3, 6, 6]
    y = x -> max_pool2d(2) -> batch_norm -> relu
    output y
}"""

# A batch norm over dim 1 of a rank-3 linear output (not its features), and one after a
# batch norm that uses batch statistics: affines computed element by element.
LINEAR_RANK3_BN = """network T {
    input x: [N, 3, 5]
    y = x -> linear(4) -> batch_norm -> relu
    output y
}"""

AFTER_BATCH_STATS = """network T {
    input x: [N, 3, 6, 6]
    y = x -> batch_norm(track_running_stats=false) -> batch_norm -> relu
    output y
}"""

SOURCES = {"conv_bn_relu": CONV_BN_RELU, "linear_bn": LINEAR_BN,
           "affine_epilogue": AFFINE_EPILOGUE, "pointwise_affine": POINTWISE_AFFINE,
           "linear_rank3_bn": LINEAR_RANK3_BN, "after_batch_stats": AFTER_BATCH_STATS}
SHAPES = {LINEAR_BN: (2, 5), LINEAR_RANK3_BN: (2, 3, 5)}

MUTATIONS = {
    "mul_": lambda t: t.data.mul_(2.0),
    "copy_": lambda t: t.data.copy_(torch.rand(t.shape, generator=torch.Generator()
                                               .manual_seed(t.numel())) + 0.25),
    "fill_": lambda t: t.data.fill_(0.7),
    "add_": lambda t: t.data.add_(0.3),
}


def by_hand(source: str, state: dict, x: torch.Tensor) -> torch.Tensor:
    """The network of `source` in torch.nn.functional, from a state dict."""
    bn = {leaf: state[f"y.1.{leaf}"] for leaf in
          ("weight", "bias", "running_mean", "running_var")}

    def norm(v):
        return F.batch_norm(v, bn["running_mean"], bn["running_var"], bn["weight"],
                            bn["bias"], False, 0.1, 1e-5)

    if source is CONV_BN_RELU:
        return F.relu(norm(F.conv2d(x, state["y.0.weight"], state["y.0.bias"], padding=1)))
    return norm(F.linear(x, state["y.0.weight"], state["y.0.bias"]))


def tensors(net) -> list[str]:
    return [name for name, value in net.state_dict().items() if value.is_floating_point()]


@pytest.mark.parametrize("mutation", list(MUTATIONS))
@pytest.mark.parametrize("name", list(SOURCES))
def test_changes_through_data_are_seen(name, mutation):
    source = SOURCES[name]
    net, ref = pair(source=source)
    shape = SHAPES.get(source, (2, 3, 6, 6))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    assert_same(net(x), ref(x))  # the first forward, whatever it may cache
    names = tensors(net)
    assert any(name.endswith("running_var") for name in names)
    for name in names:
        *path, leaf = name.split(".")
        MUTATIONS[mutation](getattr(net.get_submodule(".".join(path)), leaf))
        ref.load_state_dict(net.state_dict())
        got = net(x)
        assert_same(got, ref(x))
        if source in (CONV_BN_RELU, LINEAR_BN):
            assert_same(got, by_hand(source, net.state_dict(), x))


def test_replaced_data_and_no_grad_changes_are_seen():
    """The other ways PyTorch offers: assigning `.data`, and in-place under no_grad."""
    net, ref = pair(source=CONV_BN_RELU)
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    net(x)
    bn = net.get_submodule("y.1")
    bn.running_mean.data = torch.full_like(bn.running_mean, 0.4)
    with torch.no_grad():
        net.get_submodule("y.0").weight.mul_(-1.5)
        bn.weight.add_(1.0)
    ref.load_state_dict(net.state_dict())
    assert_same(net(x), ref(x))
    assert_same(net(x), by_hand(CONV_BN_RELU, net.state_dict(), x))


def test_generated_source_caches_nothing():
    """No derived tensor, no cache keyed on versions or pointers in the generated file."""
    net, _ = pair(source=CONV_BN_RELU)
    text = open(net.source_path).read()
    for needle in ("._version", "data_ptr", "DerivedTensors", "self._derived"):
        assert needle not in text
