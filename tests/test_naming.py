"""LANGUAGE.md's naming rules 4-6 against PyTorch modules written the way torchvision
writes them: `sequential`, quoted names, conditions and `op` arguments must give exactly
the twin's state_dict keys and shapes, and the same outputs once the twin's weights are
loaded. (Rules 1-3 are in test_frontend.py and test_torchvision_twins.py.)
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import cnnc


def _randomise(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial batch-norm statistics, so that outputs tell the layers apart."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@torch.no_grad()
def assert_twin(source: str, twin: nn.Module, input_shape: tuple, network: str | None = None):
    ours = cnnc.reference(source=source, network=network).eval()
    twin = twin.eval()
    _randomise(twin)
    theirs = twin.state_dict()
    assert list(ours.state_dict()) == list(theirs)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in theirs.items()}
    ours.load_state_dict(theirs)
    x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours(x), twin(x), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- rule 4


class Classifier(nn.Module):
    """MobileNetV2's head: classifier = nn.Sequential(Dropout, Linear)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 8, 3)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(8, 10))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def test_a_sequential_numbers_even_its_only_layer_with_parameters():
    source = """network M { input x: [N, 3, 8, 8]
        features = x -> conv2d(8, 3)
        classifier = features -> adaptive_avg_pool2d(1) -> flatten
            -> sequential(dropout(0.2), linear(10))
        output classifier }"""
    assert_twin(source, Classifier(), (3, 8, 8))


def conv_bn_act(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
                act: type | None = nn.ReLU6) -> nn.Sequential:
    """torchvision's Conv2dNormActivation: a Sequential of conv, bn and (if any) act."""
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: `self.conv` a Sequential whose first item is left out when
    there is no expansion (so the depthwise conv is then conv.0)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = [conv_bn_act(cin, hidden, 1)] if expand != 1 else []
        layers += [conv_bn_act(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetish(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_act(3, 8, stride=2), InvertedResidual(8, 8, 1, 1),
            InvertedResidual(8, 12, 2, 6), InvertedResidual(12, 12, 1, 6),
        )

    def forward(self, x):
        return self.features(x)


MOBILENETISH = """
block conv_bn_act(x: tensor, c: int, k: int = 3, stride: int = 1, groups: int = 1,
                  act: op = relu6) {
    return x -> conv2d(c, k, stride, (k - 1) // 2, groups=groups, bias=false)
        -> batch_norm -> act
}
block inverted_residual(x: tensor, c: int, stride: int, expand: int) {
    conv = x -> sequential(
        conv_bn_act(channels(x) * expand, 1) if expand != 1 else none,
        conv_bn_act(channels(x) * expand, 3, stride, channels(x) * expand),
        conv2d(c, 1, bias=false), batch_norm)
    return conv -> add(x) if stride == 1 and channels(x) == c else conv
}
network MobileNetish {
    input image: [N, 3, 16, 16]
    features = image -> sequential(conv_bn_act(8, stride=2), inverted_residual(8, 1, 1),
        inverted_residual(12, 2, 6), inverted_residual(12, 1, 6))
    output features
}
"""


def test_mobilenet_blocks_with_conditional_items_number_as_torchvision():
    assert_twin(MOBILENETISH, MobileNetish(), (3, 16, 16))


# --------------------------------------------------------------------------- rules 4, 5, 6


class Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


def test_nested_sequentials_repeats_blocks_and_headless_chains():
    """features = Sequential(Stem, Sequential(conv, Sequential(bn, relu, conv)), relu,
    relu, Sequential(conv)): `relu * 2` takes two numbers, a headless chain one."""
    twin = nn.Sequential(OrderedDict(features=nn.Sequential(
        Stem(),
        nn.Sequential(nn.Conv2d(8, 8, 1), nn.Sequential(nn.BatchNorm2d(8), nn.ReLU(),
                                                        nn.Conv2d(8, 4, 1))),
        nn.ReLU(), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 4, 3)),
    )))
    source = """
    block stem(x: tensor) { conv = x -> conv2d(8, 3, padding=1)
        return conv -> relu }
    network S { input x: [N, 3, 8, 8]
        features = x -> stem -> sequential(conv2d(8, 1), batch_norm -> relu -> conv2d(4, 1))
            -> relu * 2 -> sequential(conv2d(4, 3))
        output features }"""
    assert_twin(source, twin, (3, 8, 8))


def test_a_return_chain_is_named_after_the_instance():
    """Rule 5: `return x -> sequential(...)` names its items <instance>.<i>. (A headless
    chain with one op with parameters would be named <instance>.<i>.weight: a nested
    sequential spells <instance>.<i>.0.weight.)"""
    twin = nn.Sequential(OrderedDict(body=nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)))))
    source = """
    block pair(x: tensor) { return x -> sequential(sequential(conv2d(4, 1), relu),
                                                   conv2d(4, 1) -> batch_norm) }
    network P { input x: [N, 3, 8, 8]
        body = x -> pair
        output body }"""
    assert_twin(source, twin, (3, 8, 8))


@pytest.mark.parametrize("skipped", ["relu * 0", "(relu if false else none)", "act"])
def test_a_stage_that_adds_no_op_takes_no_number(skipped: str):
    """Rule 6: `s * 0`, a conditional picking none, an op argument that is none."""
    twin = nn.Sequential(OrderedDict(y=nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(),
                                                     nn.Conv2d(4, 4, 1))))
    source = f"""
    block b(x: tensor, act: op = none) {{
        return x -> conv2d(4, 1) -> {skipped} -> relu -> conv2d(4, 1) }}
    network R {{ input x: [N, 3, 8, 8]
        y = x -> b
        output y }}"""
    assert_twin(source, twin, (3, 8, 8))


def test_identity_is_an_op_and_takes_a_number():
    twin = nn.Sequential(OrderedDict(y=nn.Sequential(nn.Identity(), nn.Conv2d(3, 4, 1),
                                                     nn.Identity(), nn.Conv2d(4, 4, 1))))
    source = """network I { input x: [N, 3, 8, 8]
        y = x -> identity -> conv2d(4, 1) -> (identity if true else none) -> conv2d(4, 1)
        output y }"""
    assert_twin(source, twin, (3, 8, 8))


def test_an_op_arguments_parameters_are_named_by_its_position():
    """Rule 6: `act=conv2d(8, 1)` in `conv2d -> batch_norm -> act` gives `.2.weight`."""
    twin = nn.Sequential(OrderedDict(
        a=nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 1)),
        b=nn.Sequential(nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8), nn.LeakyReLU(0.2))))
    source = """
    block cba(x: tensor, c: int, act: op = relu) {
        return x -> conv2d(c, 3) -> batch_norm -> act }
    network O { input x: [N, 3, 16, 16]
        a = x -> cba(8, act=conv2d(8, 1))
        b = a -> cba(8, act=leaky_relu(negative_slope=0.2))
        output b }"""
    assert_twin(source, twin, (3, 16, 16))


# --------------------------------------------------------------------------- quoted names


class AnyStage(nn.Sequential):
    """RegNet's stage: blocks named `block1-0`, `block1-1`, ... in a Sequential."""

    def __init__(self, index: int, cin: int, cout: int, depth: int):
        super().__init__()
        for i in range(depth):
            self.add_module(f"block{index}-{i}", nn.Sequential(OrderedDict(
                f=nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1),
                proj=nn.BatchNorm2d(cout))))


class RegNetish(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk_output = nn.Sequential(OrderedDict(
            block1=AnyStage(1, 3, 4, 2), block2=AnyStage(2, 4, 8, 1)))

    def forward(self, x):
        return self.trunk_output(x)


def test_quoted_names_spell_regnets_block_names():
    source = """
    block res(x: tensor, c: int) { f = x -> conv2d(c, 3, padding=1)
        proj = f -> batch_norm
        return proj }
    block stage1(x: tensor) { `block1-0` = x -> res(4)
        `block1-1` = `block1-0` -> res(4)
        return `block1-1` }
    block stage2(x: tensor) { `block2-0` = x -> res(8)
        return `block2-0` }
    block trunk(x: tensor) { block1 = x -> stage1
        block2 = block1 -> stage2
        return block2 }
    network `RegNet-ish` { input x: [N, 3, 8, 8]
        trunk_output = x -> trunk
        output trunk_output }"""
    assert_twin(source, RegNetish(), (3, 8, 8))


class Efficientish(nn.Module):
    """EfficientNet's MBConv keeps its layers in `self.block`: a reserved word in .cnn."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(conv_bn_act(4, 8, 1, act=nn.SiLU),
                                   conv_bn_act(8, 4, 1, act=None))

    def forward(self, x):
        return self.block(x) + x


def test_a_reserved_word_quoted_is_a_name():
    source = """
    block cba(x: tensor, c: int, act: op = silu) {
        return x -> conv2d(c, 1, bias=false) -> batch_norm -> act }
    block mbconv(x: tensor) {
        `block` = x -> sequential(cba(8), cba(4, act=none))
        return `block` -> add(x) }
    network E { input `input`: [N, 4, 8, 8]
        y = `input` -> mbconv
        output y }"""
    ours = cnnc.reference(source=source)
    assert [k for k in ours.state_dict()][:2] == ["y.block.0.0.weight", "y.block.0.1.weight"]
    twin = nn.Sequential(OrderedDict(y=Efficientish()))
    assert_twin(source, twin, (4, 8, 8))


# --------------------------------------------------------------------------- property

ITEMS = {
    "conv": ("conv2d(4, 1)", lambda: [nn.Conv2d(4, 4, 1)]),
    "relu": ("relu", lambda: [nn.ReLU()]),
    "bn": ("batch_norm", lambda: [nn.BatchNorm2d(4)]),
    "twice": ("conv2d(4, 1) * 2", lambda: [nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)]),
    "never": ("conv2d(4, 1) * 0", lambda: []),
    "none": ("(relu if false else none)", lambda: []),
    "chain": ("conv2d(4, 1) -> relu -> batch_norm",
              lambda: [nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU(), nn.BatchNorm2d(4))]),
    "nested": ("sequential(relu, conv2d(4, 1))",
               lambda: [nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 1))]),
}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(sorted(ITEMS)), min_size=1, max_size=6))
def test_any_sequential_has_the_keys_of_the_same_nn_sequential(items):
    modules = [m for item in items for m in ITEMS[item][1]()]
    twin = nn.Sequential(OrderedDict(s=nn.Sequential(*modules)))
    text = ", ".join(ITEMS[item][0] for item in items)
    source = f"network Q {{ input x: [N, 4, 4, 4]\n y = x -> relu\n" \
             f" s = y -> relu -> sequential({text})\n output s }}"
    ours = cnnc.reference(source=source).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == \
        {k: tuple(v.shape) for k, v in twin.state_dict().items()}


# --------------------------------------------------------------------------- conditions

RESNET18 = """
block basic(x: tensor, planes: int, stride: int = 1) {
    conv1 = x -> conv2d(planes, 3, stride=stride, padding=1, bias=false)
    bn1 = conv1 -> batch_norm -> relu
    conv2 = bn1 -> conv2d(planes, 3, padding=1, bias=false)
    bn2 = conv2 -> batch_norm
    downsample = x -> conv2d(planes, 1, stride=stride, bias=false) -> batch_norm
        if stride != 1 or channels(x) != planes else x
    return bn2 -> add(downsample) -> relu
}
network ResNet18 {
    input image: [N, 3, 64, 64]
    conv1 = image -> conv2d(64, 7, stride=2, padding=3, bias=false)
    bn1 = conv1 -> batch_norm -> relu
    maxpool = bn1 -> max_pool2d(3, stride=2, padding=1)
    layer1 = maxpool -> basic(64) * 2
    layer2 = layer1 -> basic(128, stride=2) -> basic(128)
    layer3 = layer2 -> basic(256, stride=2) -> basic(256)
    layer4 = layer3 -> basic(512, stride=2) -> basic(512)
    avgpool = layer4 -> adaptive_avg_pool2d(1) -> flatten
    fc = avgpool -> linear(1000)
    output fc
}
"""


def test_one_basic_block_with_a_conditional_shortcut_is_torchvisions_resnet18():
    """LANGUAGE.md's `shortcut = ... if stride != 1 or channels(x) != planes else x`:
    torchvision's BasicBlock has a downsample exactly where the condition holds."""
    from torch_models import resnet18

    assert_twin(RESNET18, resnet18(), (3, 64, 64))
