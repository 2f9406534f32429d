"""The front end on small programs: naming rules, blocks, consts, imports, the API.

Shapes are compared with what torch computes; names with LANGUAGE.md's rules, which
are the rules nn.Sequential and nested nn.Modules follow.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import cnnc
from cnnc.ir.printer import print_graph

DATA = Path(__file__).parent / "data"


def names(source: str, network: str | None = None) -> list[str]:
    return [n for n, _, _ in cnnc.load(source=source, network=network).parameters()]


def test_one_parametrised_op_names_the_statement():
    src = "network T { input x: [N, 3, 8, 8]\n c1 = x -> conv2d(6, 5) -> relu\n output c1 }"
    assert names(src) == ["c1.weight", "c1.bias"]


def test_several_ops_are_indexed_like_nn_sequential():
    src = """network T { input x: [N, 3, 16, 16]
        features = x -> conv2d(64, 3) -> relu -> max_pool2d(2) -> conv2d(128, 3)
        output features }"""
    assert names(src) == ["features.0.weight", "features.0.bias",
                          "features.3.weight", "features.3.bias"]
    reference = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.ReLU(),
                                    torch.nn.MaxPool2d(2), torch.nn.Conv2d(64, 128, 3))
    assert names(src) == [f"features.{k}" for k in reference.state_dict()]


BLOCKS = """
block basic(x: tensor, planes: int, stride: int = 1) {
    conv1 = x -> conv2d(planes, 3, stride=stride, padding=1, bias=false)
    bn1 = conv1 -> batch_norm -> relu
    conv2 = bn1 -> conv2d(planes, 3, padding=1, bias=false)
    bn2 = conv2 -> batch_norm
    return bn2 -> add(x) -> relu
}
block down(x: tensor, planes: int) {
    conv1 = x -> conv2d(planes, 3, stride=2, padding=1, bias=false)
    bn1 = conv1 -> batch_norm -> relu
    conv2 = bn1 -> conv2d(planes, 3, padding=1, bias=false)
    bn2 = conv2 -> batch_norm
    downsample = x -> conv2d(planes, 1, stride=2, bias=false) -> batch_norm
    return bn2 -> add(downsample) -> relu
}
network T {
    input x: [N, 64, 16, 16]
    layer1 = x -> basic(64) * 2
    layer2 = layer1 -> down(128) -> basic(128)
    output layer2
}
"""


def test_block_instances_nest_names():
    got = names(BLOCKS)
    assert got[:2] == ["layer1.0.conv1.weight", "layer1.0.bn1.weight"]
    assert "layer1.1.bn2.running_mean" in got
    assert "layer2.0.downsample.0.weight" in got
    assert "layer2.0.downsample.1.num_batches_tracked" in got
    assert "layer2.1.bn2.running_var" in got
    assert cnnc.load(source=BLOCKS).output_shapes(batch=2) == [(2, 128, 8, 8)]


def test_return_chain_names_directly_under_the_instance():
    src = """block cbr(x: tensor, c: int) { return x -> conv2d(c, 3, bias=false) -> batch_norm }
    block one(x: tensor) { return x -> conv2d(4, 1) -> relu }
    network T { input x: [N, 3, 8, 8]
        features = x -> cbr(8) -> one
        head = features -> one
        output head }"""
    assert names(src) == [
        "features.0.0.weight", "features.0.1.weight", "features.0.1.bias",
        "features.0.1.running_mean", "features.0.1.running_var",
        "features.0.1.num_batches_tracked", "features.1.weight", "features.1.bias",
        "head.weight", "head.bias",
    ]


def test_ops_without_parameters_still_count_for_the_index():
    src = """network T { input x: [N, 3, 8, 8]
        f = x -> conv2d(4, 3) -> batch_norm(affine=false, track_running_stats=false)
            -> conv2d(4, 1)
        output f }"""
    assert names(src) == ["f.0.weight", "f.0.bias", "f.2.weight", "f.2.bias"]


def test_channels_and_expressions():
    src = """const base = 4
    block widen(x: tensor, factor: int) { return x -> conv2d(channels(x) * factor, 1) }
    network T { input x: [N, base * 2 - 5, 6, 6]
        y = x -> widen(2) -> conv2d(channels(x) + base // 3, (3, 1), padding=(1, 0))
        output y }"""
    assert cnnc.load(source=src).output_shapes(batch=1) == [(1, 4, 6, 6)]


def test_block_defaults_may_use_earlier_parameters_and_keywords():
    src = """block b(x: tensor, c: int, out: int = c * 2, slope: float = 1) {
        return x -> conv2d(out, 1) -> leaky_relu(slope) }
    network T { input x: [N, 3, 4, 4]
        y = x -> b(3)
        z = x -> b(c=1, slope=0.5)
        output y, z }"""
    g = cnnc.load(source=src)
    assert g.output_shapes(batch=1) == [(1, 6, 4, 4), (1, 2, 4, 4)]
    leaky = [n for n in g.nodes() if n.op == "leaky_relu"]
    assert [n.attrs.negative_slope for n in leaky] == [1.0, 0.5]


def test_fixed_filter_const_is_a_buffer_and_computes_like_conv2d():
    src = """const sobel_x = [[1, 0, -1], [2, 0, -2], [1, 0, -1]]
    const gauss = [[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16
    network T { input x: [N, 1, 8, 8]
        gx = x -> conv2d(1, 3, padding=1, weight=sobel_x, bias=false)
        g = x -> conv2d(2, 3, weight=gauss, bias=false)
        output gx, g }"""
    model = cnnc.reference(source=src)
    assert list(dict(model.named_parameters())) == []
    assert set(dict(model.named_buffers())) == {"gx.weight", "g.weight"}
    x = torch.randn(2, 1, 8, 8)
    sobel = torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]]).view(1, 1, 3, 3)
    gauss = (torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16).expand(2, 1, 3, 3)
    gx, g = model(x)
    torch.testing.assert_close(gx, F.conv2d(x, sobel, padding=1))
    torch.testing.assert_close(g, F.conv2d(x, gauss))


def test_imports_are_relative_and_a_diamond_is_fine():
    g = cnnc.load(DATA / "imports" / "diamond.cnn")
    assert g.output_shapes(batch=1) == [(1, 8, 8, 8), (1, 4, 8, 8)]
    assert names_of(g) == ["a.weight", "a.bias", "b.weight", "b.bias"]


def names_of(graph) -> list[str]:
    return [n for n, _, _ in graph.parameters()]


def test_duplicate_definition_across_files_names_both_places():
    with pytest.raises(cnnc.CompileError) as e:
        cnnc.load(DATA / "imports" / "dup.cnn")
    text = str(e.value)
    assert "`width` is defined twice" in text
    assert "dup.cnn:2:7" in text and "common.cnn:1:7" in text


def test_import_cycle_names_the_cycle():
    with pytest.raises(cnnc.CompileError) as e:
        cnnc.load(DATA / "imports" / "cycle_a.cnn")
    assert "import cycle" in e.value.message
    assert "cycle_a.cnn" in e.value.message and "cycle_b.cnn" in e.value.message
    assert e.value.location.file.endswith("cycle_b.cnn") and e.value.location.line == 1


def test_several_networks_need_a_name():
    src = ("network A { input x: [N, 1, 4, 4] y = x -> relu output y }\n"
           "network B { input x: [N, 1, 4, 4] y = x -> tanh output y }")
    with pytest.raises(cnnc.CompileError, match="several networks"):
        cnnc.load(source=src)
    assert cnnc.load(source=src, network="B").name == "B"
    with pytest.raises(cnnc.CompileError, match="no network C"):
        cnnc.load(source=src, network="C")


def test_path_or_source_and_pathlike(tmp_path):
    src = "network A { input x: [N, 1, 4, 4] y = x -> relu output y }"
    f = tmp_path / "a.cnn"
    f.write_text(src)
    assert cnnc.load(f).name == cnnc.load(str(f)).name == cnnc.load(src).name == "A"
    with pytest.raises(cnnc.CompileError, match="no such file"):
        cnnc.load(str(tmp_path / "missing.cnn"))


def test_repeat_expands_and_symbolic_dims_flow():
    src = """network T { input x: [B, 2, 4, 4]
        y = x -> relu * 3 -> flatten(0)
        z = concat(x, x, dim=0)
        output y, z }"""
    g = cnnc.load(source=src)
    assert [n.op for n in g.nodes()].count("relu") == 3
    assert [str(d) for d in g.output_shapes()[0]] == ["B*32"]
    assert [str(d) for d in g.output_shapes()[1]] == ["B*2", "2", "4", "4"]
    model = cnnc.reference(source=src)
    x = torch.randn(3, 2, 4, 4)
    y, z = model(x)
    assert tuple(y.shape) == (96,) and tuple(z.shape) == (6, 2, 4, 4)


def test_printer_is_stable_and_verifier_idempotent():
    src = ("network T { input x: [N, 3, 8, 8]\n y = x -> conv2d(4, 3, padding=1) -> relu\n"
           " output y }")
    g = cnnc.load(source=src)
    text = print_graph(g)
    assert text.splitlines() == [
        "graph T {",
        "  %0 = input x : [N, 3, 8, 8]",
        '  %1 = conv2d(%0, out_channels=4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), '
        'dilation=(1, 1), groups=1, bias=true, padding_mode="zeros", weight=none) : '
        "[N, 4, 8, 8]  # y [y] @ <source>:2:11",
        "  %2 = relu(%1) : [N, 4, 8, 8]  # y @ <source>:2:38",
        "  output %2 (y)",
        "}",
    ]
    from cnnc.passes.verify import verify

    verify(g)
    verify(g)
    assert print_graph(g) == text


def test_reference_checks_its_inputs():
    model = cnnc.reference(source="network T { input x: [N, 3, 8, 8] y = x -> relu output y }")
    with pytest.raises(cnnc.InputError, match=r"input x must have shape \[N, 3, 8, 8\]; got "
                                               r"\[2, 3, 8, 9\]"):
        model(torch.randn(2, 3, 8, 9))
    with pytest.raises(cnnc.InputError, match="4-d"):
        model(torch.randn(3, 8, 8))
    with pytest.raises(cnnc.InputError, match="floating-point"):
        model(torch.zeros(2, 3, 8, 8, dtype=torch.long))
    with pytest.raises(cnnc.InputError, match="takes 1 input"):
        model(torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8))


def test_dropout_follows_train_and_eval():
    model = cnnc.reference(source="network T { input x: [N, 100] y = x -> dropout(0.5) output y }")
    x = torch.ones(4, 100)
    assert torch.equal(model.eval()(x), x)
    y = model.train()(x)
    assert set(y.unique().tolist()) <= {0.0, 2.0} and (y == 0).any()


def test_batch_norm_momentum_none_is_a_cumulative_average():
    src = "network T { input x: [N, 3, 4, 4] y = x -> batch_norm(momentum=none) output y }"
    model = cnnc.reference(source=src).train()
    twin = torch.nn.BatchNorm2d(3, momentum=None).train()
    for _ in range(3):
        x = torch.randn(5, 3, 4, 4)
        torch.testing.assert_close(model(x), twin(x))
    for key, value in twin.state_dict().items():
        torch.testing.assert_close(model.state_dict()[f"y.{key}"], value)
