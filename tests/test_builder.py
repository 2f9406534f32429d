"""The kernel builder: one jit function per distinct body, headers citing file:line, one
index-width policy, launchers without per-call host work."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import torch

import cnnc
from cnnc.passes import plan as make_plan

from launch_recording import Recording, grids_into

ROOT = Path(__file__).resolve().parent.parent
RESNET = ROOT / "examples" / "resnet.cnn"

# Every template on the builder, in one network (linear, pointwise, pool, adaptive pool,
# softmax, upsample).
PORTED = """network Ported {
    input x: [N, 3, 6, 6]
    input r: [N, 3, 12, 12]
    u = x -> upsample(scale_factor=2)
    s = u -> add(r) -> sigmoid -> max_pool2d(2) -> avg_pool2d(3, 1, 1)
    y = s -> adaptive_avg_pool2d(2) -> flatten -> linear(5) -> tanh
    z = y -> softmax(dim=1)
    w = s -> adaptive_max_pool2d(1) -> flatten -> linear(4)
    output z, w
}
"""


def jit_functions(source: str) -> dict[str, str]:
    """name -> source of every @triton.jit function, its name blanked."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and any(
                ast.unparse(d) == "triton.jit" for d in node.decorator_list):
            text = ast.get_source_segment(source, node)
            found[node.name] = text.replace(f"def {node.name}(", "def _(", 1)
    return found


def headers(source: str) -> dict[str, list[str]]:
    """kernel name -> the lines of its header (`#   name:` then `#     op ... file:line`)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in source.splitlines():
        m = re.fullmatch(r"#   (\w+):", line)
        if m:
            current = out.setdefault(m[1], [])
        elif current is not None and line.startswith("#     "):
            current.append(line)
        else:
            current = None
    return out


@pytest.fixture(scope="module")
def resnet():
    graph = cnnc.load(RESNET, "ResNet18")
    return graph, cnnc.generate(graph).source


def test_resnet18_holds_one_jit_function_per_distinct_body(resnet):
    _, source = resnet
    functions = jit_functions(source)
    assert len(set(functions.values())) == len(functions)
    # Every training batch norm of ResNet18 reads a conv's output that only it reads: its
    # statistics come from the conv's epilogue, no statistics kernel (a companion of the
    # apply kernel) is left.
    assert sum(name.endswith("_stats") for name in functions) == 0
    # The eval plan's 22 generated kernels have 6 distinct bodies (the stem's conv+bn+relu,
    # which loops over blocks of taps for its 3 input channels, conv+bn+relu, conv+bn,
    # conv+bn+add+relu, the max pool, pool+linear): each is one jit function.
    launched = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and re.fullmatch(r"launch_k\d+_\w+", node.name):
            launched[node.name] = {  # kernel.run(..., grid=grid) or kernel[grid](...)
                n.value.id for n in ast.walk(node) if isinstance(n, (ast.Subscript, ast.Attribute))
                and isinstance(n.value, ast.Name) and n.value.id in functions}
    assert len(launched) == 22 and all(len(v) == 1 for v in launched.values())
    assert len(set().union(*launched.values())) == 6


def test_every_kernel_header_cites_file_and_line_of_each_op(resnet):
    graph, source = resnet
    found = headers(source)
    for training, prefix in ((False, "k"), (True, "t")):
        plan = make_plan(graph, training=training)
        for kernel in plan.kernels:
            name = f"{prefix}{kernel.index}_{plan.graph.node(kernel.anchor).op}"
            lines = found[name]
            assert len(lines) == len(kernel.nodes), name
            for line, node_id in zip(lines, kernel.nodes):
                node = plan.graph.node(node_id)
                cited = f"{Path(node.loc.file).name}:{node.loc.line}"
                assert line.endswith(cited) and f" {node.op} " in line, (name, line, cited)
    # A node written in a block file names that file, not the network's.
    block_line = next(i for i, text in enumerate(
        (ROOT / "examples/blocks/resnet_blocks.cnn").read_text().splitlines(), 1)
        if "conv2d" in text)
    assert any(line.endswith(f"resnet_blocks.cnn:{block_line}")
               for lines in found.values() for line in lines)


def test_header_file_names_are_sanitised(tmp_path):
    path = tmp_path / "evil name; import os.cnn"
    path.write_text("network T {\n    input x: [N, 3]\n    y = x -> relu\n    output y\n}\n")
    source = cnnc.generate(cnnc.load(path)).source
    assert "evil" not in source and "import os.cnn" not in source
    assert "a .cnn source:3" in source


def test_launchers_do_no_host_work_they_need_not(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    source = cnnc.generate(cnnc.load(source=PORTED)).source
    assert "cdiv(" not in source.split("class Ported")[0].replace("tl.cdiv(", "")
    assert ".contiguous()" not in source
    functions = jit_functions(source)
    for name, text in functions.items():
        if name.startswith("_"):  # the runtime's copy kernel, jit helpers, backward kernels
            continue
        # One index-width policy for every kernel, in a commented signature.
        assert "INDEX_64: tl.constexpr" in text and "    # tiles, from the launch's config" in text
        assert "force_int64 or index_64(out, " in source.split(f"def launch_{name}(")[1]


def test_int64_indexing_computes_the_same(tmp_path, monkeypatch):
    """The INDEX_64 variant of every builder kernel agrees with the int32 one."""
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    net = cnnc.compile(source=PORTED).eval()
    module = sys.modules[type(net).__module__]
    x, r = torch.randn(2, 3, 6, 6), torch.randn(2, 3, 12, 12)
    expected = net(x, r)
    launchers = [name for name in vars(module) if name.startswith("launch_k")]
    assert len(launchers) == 8
    for name in launchers:
        launcher = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _launch=launcher, **k: _launch(
            *a, force_int64=True, **k))
    got = net(x, r)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    reference = cnnc.reference(source=PORTED).eval()
    reference.load_state_dict(net.state_dict())
    for a, b in zip(got, reference(x, r)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_batch_norms_with_different_epilogues_share_one_statistics_kernel(monkeypatch):
    """Two training batch norms (one with relu fused, one with an add): one `_stats` jit
    function, launched by both in the GPU's chunked launch shape, and both outputs right."""
    source = """network Two {
        input x: [N, 8, 9, 10]
        a = x -> batch_norm -> relu
        b = x -> batch_norm -> add(a)
        output b
    }"""
    net = cnnc.compile(source=source).train()
    ref = cnnc.reference(source=source).train()
    ref.load_state_dict(net.state_dict())
    module = sys.modules[type(net).__module__]
    stats = [n for n in vars(module) if n.endswith("_stats")]
    assert len(stats) == 1
    monkeypatch.setattr(module, "INTERPRET", False)  # the GPU's chunked launch
    monkeypatch.setitem(module.CONFIGS, "batch_norm", [dict(BLOCK=64, num_warps=4,
                                                            num_stages=1)])
    monkeypatch.setattr(module, "PLANS", {})
    kernel, launches = getattr(module, stats[0]), []

    monkeypatch.setattr(module, stats[0], Recording(kernel, grids_into(launches)))
    x = torch.randn(4, 8, 9, 10)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), rtol=1e-4, atol=1e-4)
    assert len(launches) == 2 and all(grid[1] > 1 for grid in launches)
