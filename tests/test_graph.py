"""`cnnc graph`: DOT read back by a parser, SVG read back as XML, and the command's files
and exit codes, with and without Graphviz."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import cnnc
from cnnc.cli import main
from cnnc.errors import escape
from cnnc.ir.shapes import format_shape
from cnnc.passes import plan
from cnnc.report.graph import drawing, to_dot
from cnnc.report.svg import to_svg

ROOT = Path(__file__).resolve().parents[1]
RESNET = str(ROOT / "examples" / "resnet.cnn")
SVG = "{http://www.w3.org/2000/svg}"
NASTY = 'a"b\\N\\n<c>&d\x07\u202e`x`'  # quotes, escapes DOT reads, markup, control chars


@pytest.fixture(scope="module")
def resnet18():
    return cnnc.load(RESNET, "ResNet18")


# ------------------------------------------------------------------ a small DOT reader
TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<id>[A-Za-z0-9_.#]+)'
                   r'|(?P<op>->|[{}\[\];,=]))', re.S)


def _tokens(text: str) -> list[str]:
    out, at = [], 0
    while text[at:].strip():
        m = TOKEN.match(text, at)
        assert m, f"cannot read DOT at {text[at:at + 40]!r}"
        out.append(m.group(m.lastgroup))
        at = m.end()
    return out


def _unquote(token: str) -> str:
    """The text Graphviz shows for a quoted label: \\\\ is a backslash, \\" a quote and
    \\n, \\l line ends."""
    assert token.startswith('"') and token.endswith('"')
    return re.sub(r'\\(.)', lambda m: {"n": "\n", "l": "\n"}.get(m[1], m[1]), token[1:-1])


def read_dot(text: str) -> dict:
    """Nodes (id -> label), edges, and clusters (name -> its node ids) of our DOT files."""
    tokens = _tokens(text)
    assert tokens[:2] == ["digraph", tokens[1]] and tokens[2] == "{" and tokens[-1] == "}"
    nodes, edges, clusters, stack = {}, [], {}, []
    i = 3
    while i < len(tokens) - 1:
        t = tokens[i]
        if t == "subgraph":
            stack.append(tokens[i + 1])
            clusters[tokens[i + 1]] = []
            assert tokens[i + 2] == "{"
            i += 3
        elif t == "}":
            stack.pop()
            i += 1
        elif t == ";":
            i += 1
        elif tokens[i + 1] == "=":  # label=...; inside a cluster
            i += 3
        elif tokens[i + 1] == "->":
            edges.append((tokens[i], tokens[i + 2]))
            i = _skip_attrs(tokens, i + 3, {})
        else:
            attrs = {}
            i = _skip_attrs(tokens, i + 1, attrs)
            if t not in ("graph", "node", "edge"):
                nodes[t] = _unquote(attrs["label"])
                for name in stack:
                    clusters[name].append(t)
    assert not stack
    return {"nodes": nodes, "edges": edges, "clusters": clusters}


def _skip_attrs(tokens: list[str], i: int, attrs: dict) -> int:
    if tokens[i] != "[":
        return i
    i += 1
    while tokens[i] != "]":
        if tokens[i] == ",":
            i += 1
            continue
        assert tokens[i + 1] == "=", tokens[i:i + 3]
        attrs[tokens[i]] = tokens[i + 2]
        i += 3
    return i + 1


# ------------------------------------------------------------------ DOT
def test_dot_has_every_node_and_edge_and_a_cluster_per_block_instance(resnet18):
    dot = read_dot(to_dot(drawing(resnet18)))
    assert len(dot["nodes"]) == len(resnet18) == 70
    expected = {(f"n{a}", f"n{b}") for a, b in resnet18.to_networkx().edges}
    assert len(dot["edges"]) == len(expected) and set(dot["edges"]) == expected
    # [2, 2, 2, 2] blocks, each instance its own cluster (layer1's `basic(64) * 2` too):
    # 5 basic (7 ops) and 3 basic_down (9 ops: the 1x1 shortcut's conv and batch norm)
    assert len(dot["clusters"]) == 8
    assert sorted(len(members) for members in dot["clusters"].values()) == [7] * 5 + [9] * 3
    conv = next(n for n in resnet18.nodes() if n.scope == "layer1.1.conv1")
    assert dot["nodes"][f"n{conv.id}"] == f"conv2d 3x3\nlayer1.1.conv1\n{format_shape(conv.shape)}"


@pytest.mark.parametrize("training", [False, True])
def test_fused_dot_has_a_cluster_per_kernel_and_lists_the_refusals(resnet18, training):
    the_plan = plan(resnet18, training)
    text = to_dot(drawing(resnet18, fused=True, training=training))
    dot = read_dot(text)
    assert len(dot["clusters"]) == len(the_plan.kernels) >= 22
    for kernel in the_plan.kernels:
        assert sorted(dot["clusters"][f"cluster_k{kernel.index}"]) == sorted(
            f"n{n}" for n in kernel.nodes)
    assert len(dot["nodes"]) == len(the_plan.graph)
    assert len(dot["edges"]) == the_plan.graph.to_networkx().number_of_edges()
    if not training:
        assert "max_pool2d (layer maxpool, line 36) not fused: its 3x3 windows" in text


def test_user_text_is_escaped_in_dot_and_svg(resnet18):
    graph = resnet18.copy()
    graph.name = NASTY
    node = next(n for n in graph.nodes() if n.scope == "layer1.0.conv1")
    node.scope = NASTY
    d = drawing(graph)
    dot = read_dot(to_dot(d))
    assert dot["nodes"][f"n{node.id}"].split("\n")[1] == escape(NASTY)
    root = ET.fromstring(to_svg(d))  # well-formed: no raw < & or control character
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert escape(NASTY) in texts and f"{escape(NASTY)}: 70 operators, as written" in texts


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graphviz_reads_the_dot_file(resnet18, tmp_path):
    plain = subprocess.run(["dot", "-Tplain"], input=to_dot(drawing(resnet18, fused=True)),
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert sum(line.startswith("node ") for line in plain) == len(resnet18)
    assert sum(line.startswith("edge ") for line in plain) == \
        resnet18.to_networkx().number_of_edges()


# ------------------------------------------------------------------ SVG without Graphviz
def test_svg_is_xml_with_a_box_and_the_shape_of_every_node(resnet18):
    root = ET.fromstring(to_svg(drawing(resnet18)))
    boxes = [g for g in root.iter(f"{SVG}g") if g.get("class") == "node"]
    assert len(boxes) == len(resnet18)
    for node in resnet18.nodes():
        (box,) = [g for g in boxes if g.get("id") == f"n{node.id}"]
        assert len(box.findall(f"{SVG}rect")) == 1
        assert format_shape(node.shape) in [t.text for t in box.findall(f"{SVG}text")]
    edges = [g for g in root.iter(f"{SVG}g") if g.get("class") == "edge"]
    assert len(edges) == resnet18.to_networkx().number_of_edges()
    assert all(e.find(f"{SVG}text").text.startswith("[N, ") for e in edges)
    clusters = [g for g in root.iter(f"{SVG}g") if g.get("class") == "cluster"]
    assert len(clusters) == 8


def test_svg_boxes_do_not_overlap_and_clusters_enclose_their_members(resnet18):
    root = ET.fromstring(to_svg(drawing(resnet18, fused=True)))

    def rect(g):
        r = g.find(f"{SVG}rect")
        x, y = float(r.get("x")), float(r.get("y"))
        return x, y, x + float(r.get("width")), y + float(r.get("height"))

    boxes = {g.get("id"): rect(g) for g in root.iter(f"{SVG}g") if g.get("class") == "node"}
    values = list(boxes.values())
    for i, a in enumerate(values):
        for b in values[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    the_plan = plan(resnet18, False)
    frames = {g.get("id"): rect(g) for g in root.iter(f"{SVG}g") if g.get("class") == "cluster"}
    assert len(frames) == len(the_plan.kernels)
    for kernel in the_plan.kernels:
        x0, y0, x1, y1 = frames[f"cluster_k{kernel.index}"]
        for n in kernel.nodes:
            bx0, by0, bx1, by1 = boxes[f"n{n}"]
            assert x0 < bx0 and bx1 < x1 and y0 < by0 and by1 < y1


# ------------------------------------------------------------------ the command
def cli(capsys, monkeypatch, *args: str, path: str | None = None):
    """`cnnc graph ARGS` in this process: (exit code, stdout, stderr)."""
    if path is not None:
        monkeypatch.setenv("PATH", path)
    try:
        code = main(["graph", *args])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_svg_is_written_without_graphviz(tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.svg"
    code, _, err = cli(capsys, monkeypatch, RESNET, "--network", "ResNet18", "-o", str(out),
                       "--fused", path=str(tmp_path))
    assert code == 0, err
    assert f"wrote {out} (laid out by cnnc; Graphviz's dot was not used)" in err
    root = ET.fromstring(out.read_text())
    assert sum(g.get("class") == "cluster" for g in root.iter(f"{SVG}g")) == 22


def test_png_without_graphviz_says_what_to_install(tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.png"
    code, _, err = cli(capsys, monkeypatch, RESNET, "--network", "ResNet18", "-o", str(out),
                       path=str(tmp_path))
    assert code == 1 and "Traceback" not in err
    assert "needs Graphviz's `dot` program" in err
    assert "apt-get install graphviz" in err and not out.exists()


def test_a_failing_graphviz_falls_back_to_the_builtin_layout(tmp_path, capsys, monkeypatch):
    fake = tmp_path / "dot"
    fake.write_text("#!/bin/sh\necho 'Error: something broke' >&2\nexit 3\n")
    fake.chmod(0o755)
    out = tmp_path / "r.svg"
    code, _, err = cli(capsys, monkeypatch, RESNET, "--network", "ResNet18", "-o", str(out),
                       path=str(tmp_path))
    assert code == 0, err
    assert "warning: Graphviz's dot failed (exit 3): Error: something broke" in err
    assert ET.fromstring(out.read_text()).tag == f"{SVG}svg"


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_png_and_svg_through_graphviz(tmp_path, capsys, monkeypatch):
    for name in ("r.png", "r.svg"):
        code, _, err = cli(capsys, monkeypatch, RESNET, "--network", "ResNet18", "-o",
                           str(tmp_path / name), "--fused")
        assert code == 0 and "laid out by Graphviz" in err
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ET.parse(tmp_path / "r.svg").getroot().tag == f"{SVG}svg"


@pytest.mark.parametrize("name", ["r.pdf", "r", "r.svg.txt"])
def test_an_unknown_extension_is_a_usage_error_naming_the_allowed_ones(tmp_path, capsys,
                                                                       monkeypatch, name):
    code, _, err = cli(capsys, monkeypatch, RESNET, "-o", str(tmp_path / name))
    assert code == 2 and "usage:" in err
    assert "expected a name ending in .svg, .dot or .png" in err
    assert not (tmp_path / name).exists()


def test_training_without_fused_is_a_usage_error(tmp_path, capsys, monkeypatch):
    code, _, err = cli(capsys, monkeypatch, RESNET, "--network", "ResNet18", "-o",
                       str(tmp_path / "r.dot"), "--training")
    assert code == 2 and "add --fused" in err


def test_the_input_is_never_overwritten(tmp_path, capsys, monkeypatch):
    source = tmp_path / "net.dot"  # a .cnn file may have any name
    text = (ROOT / "examples" / "lenet5.cnn").read_text()
    source.write_text(text)
    code, _, err = cli(capsys, monkeypatch, str(source), "-o", str(source))
    assert code == 1 and "it is an input of this compile" in err
    assert source.read_text() == text


def test_dash_writes_dot_to_standard_output():
    result = subprocess.run([sys.executable, "-m", "cnnc", "graph", "examples/lenet5.cnn",
                             "-o", "-", "--fused"], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    dot = read_dot(result.stdout)
    assert len(dot["nodes"]) == len(cnnc.load(ROOT / "examples" / "lenet5.cnn")) == 13
    assert len(dot["clusters"]) == 5


def test_a_file_of_several_networks_needs_network(tmp_path, capsys, monkeypatch):
    code, _, err = cli(capsys, monkeypatch, RESNET, "-o", str(tmp_path / "r.svg"))
    assert code == 1 and "pass --network NAME" in err
