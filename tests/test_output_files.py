"""`cnnc compile -o`: what it writes, and what it refuses to replace."""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import pytest

from cnnc.cli import main

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "examples" / "lenet5.cnn"


@pytest.fixture
def net(tmp_path) -> Path:
    path = tmp_path / "net.cnn"
    path.write_text(LENET.read_text())
    return path


def _compile(net: Path, output: str, capsys=None) -> tuple[int, str]:
    code = main(["compile", str(net), "-o", output])
    return code, (capsys.readouterr().err if capsys is not None else "")


def _expected(net: Path) -> str:
    """The generated file, as written to a fresh path."""
    fresh = net.parent / "fresh" / "expected.py"
    assert main(["compile", str(net), "-o", str(fresh), "-q"]) == 0
    return fresh.read_text()


def test_refuses_to_overwrite_the_input(net, capsys):
    before = net.read_text()
    code, err = _compile(net, str(net), capsys)
    assert code == 1 and f"cannot write {net}: it is an input of this compile" in err
    assert net.read_text() == before


@pytest.mark.parametrize("link", [os.link, os.symlink])
def test_refuses_the_input_through_a_link(net, tmp_path, capsys, link):
    alias = tmp_path / "alias.py"
    link(net, alias)
    before = net.read_text()
    code, err = _compile(net, str(alias), capsys)
    assert code == 1 and "it is an input of this compile" in err and str(net) in err
    assert net.read_text() == before
    assert alias.is_symlink() == (link is os.symlink)


def test_refuses_a_file_the_network_imports(tmp_path, capsys):
    blocks = tmp_path / "blocks.cnn"
    blocks.write_text("block twice(x: tensor, k: int) {\n"
                      "  y = x -> conv2d(k, 3, padding=1) -> relu\n  return y\n}\n")
    main_file = tmp_path / "main.cnn"
    main_file.write_text('import "blocks.cnn"\nnetwork T {\n  input x: [N, 3, 8, 8]\n'
                         "  y = x -> twice(4)\n  output y\n}\n")
    before = blocks.read_text()
    code, err = _compile(main_file, str(blocks), capsys)
    assert code == 1 and "it is an input of this compile" in err
    assert blocks.read_text() == before


def test_refuses_a_fifo_and_a_symlink_to_one(net, tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "stdout-like"  # what /dev/stdout is when stdout is a pipe
    link.symlink_to(fifo)
    for target in (fifo, link):
        code, err = _compile(net, str(target), capsys)
        assert code == 1 and "is not a regular file (it is a FIFO)" in err
        assert "-o - writes to standard output" in err
    assert stat.S_ISFIFO(fifo.stat().st_mode) and link.is_symlink()


def test_refuses_a_device_node(net, tmp_path, capsys):
    node = tmp_path / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("cannot make a device node here")
    code, err = _compile(net, str(node), capsys)
    assert code == 1 and "is not a regular file (it is a character device)" in err
    assert stat.S_ISCHR(node.stat().st_mode)


@pytest.mark.parametrize("name", ["outdir", "outdir/", "newdir/", "."])
def test_refuses_a_directory(net, tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outdir").mkdir()
    code, err = _compile(net, name, capsys)
    assert code == 1 and ("is a directory" in err or "names a directory" in err)
    assert not (tmp_path / "newdir").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.cnn", "outdir"]


def test_says_which_parent_is_not_a_directory(net, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep")
    code, err = _compile(net, str(afile / "x.py"), capsys)
    assert code == 1 and f"{afile} is not a directory" in err and "File exists" not in err
    code, err = _compile(net, str(afile / ".." / "x.py"), capsys)
    assert code == 1 and f"{afile} is not a directory" in err
    assert afile.read_text() == "keep"


def test_an_empty_output_path_is_named_as_such(net, capsys):
    code, err = _compile(net, "", capsys)
    assert code == 1 and "the output path is empty" in err and "busy" not in err


@pytest.mark.parametrize("mode", [0o644, 0o755, 0o640])
def test_an_existing_file_keeps_its_mode(net, tmp_path, mode):
    out = tmp_path / "out.py"
    out.write_text("old")
    out.chmod(mode)
    assert main(["compile", str(net), "-o", str(out), "-q"]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == mode
    assert out.read_text() == _expected(net)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_a_new_file_gets_the_umask_mode(net, tmp_path, umask):
    out = tmp_path / "new.py"
    old = os.umask(umask)
    try:
        assert main(["compile", str(net), "-o", str(out), "-q"]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def test_a_symlink_is_written_through_and_kept(net, tmp_path):
    target = tmp_path / "real.py"
    target.write_text("old")
    link = tmp_path / "link.py"
    link.symlink_to(target)
    assert main(["compile", str(net), "-o", str(link), "-q"]) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == _expected(net)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_dangling_symlink_is_refused(net, tmp_path, capsys):
    link = tmp_path / "dangling.py"
    link.symlink_to(tmp_path / "nowhere" / "x.py")
    code, err = _compile(net, str(link), capsys)
    assert code == 1 and "which does not exist" in err
    assert link.is_symlink() and not (tmp_path / "nowhere").exists()


def test_dash_writes_standard_output(net, tmp_path, capsys):
    assert main(["compile", str(net), "-o", "-"]) == 0
    captured = capsys.readouterr()
    assert captured.out == _expected(net)
    assert "wrote standard output" in captured.err
    assert not (Path.cwd() / "-").exists()


@pytest.mark.parametrize("name", ["x[/red].py", "y[bold]z.py", "[link=file:///etc]a.py"])
def test_output_names_are_not_rich_markup(net, tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    code, err = _compile(net, name, capsys)
    assert code == 0 and err.startswith(f"wrote {name}: class LeNet5")
    assert (tmp_path / name).read_text() == _expected(net)


@pytest.mark.parametrize("name", ["foo.cnn.py", "my-net.py", "class.py", "net.txt", "9.py"])
def test_no_import_hint_that_is_not_valid_python(net, tmp_path, capsys, name):
    code, err = _compile(net, str(tmp_path / name), capsys)
    assert code == 0 and " import " not in err
    assert "importlib.util.spec_from_file_location" in err


def test_the_import_hint_imports_the_written_file(net, tmp_path, capsys, monkeypatch):
    code, err = _compile(net, str(tmp_path / "lenet_out.py"), capsys)
    hint = err[err.index("(") + 1: err.rindex(")")]
    assert code == 0 and hint == "from lenet_out import LeNet5"
    monkeypatch.syspath_prepend(str(tmp_path))
    scope: dict = {}
    exec(compile(ast.parse(hint), "<hint>", "exec"), scope)
    assert scope["LeNet5"]().plan
