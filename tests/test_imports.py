"""Which files an `import` may read (LANGUAGE.md, "Items of a file"): a .cnn file inside the
directory of the file being compiled (the working directory for source text) or inside an
include directory, symlinks followed; anything else is refused without being read, so no
diagnostic ever quotes it. Imports are searched next to the importing file, then in each
include directory in order; `--include DIR` and `include_dirs=` reach every entry point.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from bounded_cli import cnnc_cli

import cnnc
from cnnc import compiler
from cnnc.frontend import load_program
from cnnc.frontend.files import display_path

SECRET = "root:x:0:0:SECRET-TOKEN:/root:/bin/bash\n"  # what a file outside must never show
needs_posix = pytest.mark.skipif(os.name != "posix", reason="symlinks and FIFOs")


def net(imports: str, width: str = "width") -> str:
    return (f"{imports}\nnetwork A {{\n input x: [N, 3]\n y = x -> linear({width})\n"
            " output y\n}\n")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """tmp/proj (the compiled file's directory), tmp/outside (a secret), tmp/inc1, tmp/inc2."""
    for name in ("proj", "outside", "inc1", "inc2"):
        (tmp_path / name).mkdir()
    (tmp_path / "outside" / "secret.cnn").write_text(SECRET)
    (tmp_path / "outside" / "secret.txt").write_text(SECRET)
    (tmp_path / "outside" / "widths.cnn").write_text("const width = 2\n")
    return tmp_path


def _refusal(path: Path, **kwargs) -> cnnc.CompileError:
    with pytest.raises(cnnc.CompileError) as info:
        cnnc.load(path, **kwargs)
    error = info.value
    assert "SECRET" not in str(error), str(error)
    assert (error.location.file, error.location.line) == (display_path(path), 1), str(error)
    return error


# --------------------------------------------------------------------------- refused

@pytest.mark.parametrize("path", ["../outside/secret.cnn", "../../../../../../../etc/passwd",
                                  "../outside/secret.txt"])
def test_an_import_cannot_climb_out_of_the_tree(tree: Path, path: str):
    main = tree / "proj" / "main.cnn"
    main.write_text(net(f'import "{path}"'))
    error = _refusal(main)
    assert error.message.startswith(f'cannot import "{path}": ')


def test_a_relative_path_outside_says_where_imports_may_read(tree: Path):
    main = tree / "proj" / "main.cnn"
    main.write_text(net('import "../outside/secret.cnn"'))
    error = _refusal(main)
    outside = display_path(tree / "outside" / "secret.cnn")
    assert f"{outside} is outside the directories imports may read" in error.message
    assert "--include DIR" in str(error)


def test_an_absolute_path_is_refused_unless_inside_an_include_dir(tree: Path):
    main = tree / "proj" / "main.cnn"
    main.write_text(net(f'import "{tree / "outside" / "widths.cnn"}"'))
    assert "is outside the directories imports may read" in _refusal(main).message
    graph = cnnc.load(main, include_dirs=[tree / "outside"])
    assert graph.output_shapes(batch=1) == [(1, 2)]


def test_a_file_that_is_not_dot_cnn_is_refused_even_inside(tree: Path):
    (tree / "proj" / "notes.txt").write_text(SECRET)
    main = tree / "proj" / "main.cnn"
    main.write_text(net('import "notes.txt"'))
    assert "only .cnn files can be imported" in _refusal(main).message


@needs_posix
def test_a_symlink_out_of_the_tree_is_refused(tree: Path):
    (tree / "proj" / "lib.cnn").symlink_to(tree / "outside" / "secret.cnn")
    main = tree / "proj" / "main.cnn"
    main.write_text(net('import "lib.cnn"'))
    assert "is outside the directories imports may read" in _refusal(main).message


@needs_posix
def test_a_symlink_named_dot_cnn_to_another_kind_of_file_is_refused(tree: Path):
    (tree / "proj" / "notes.txt").write_text(SECRET)
    (tree / "proj" / "lib.cnn").symlink_to(tree / "proj" / "notes.txt")
    main = tree / "proj" / "main.cnn"
    main.write_text(net('import "lib.cnn"'))
    assert "not to a .cnn file" in _refusal(main).message


@needs_posix
def test_a_symlink_inside_the_tree_is_followed(tree: Path):
    (tree / "proj" / "real").mkdir()
    (tree / "proj" / "real" / "widths.cnn").write_text("const width = 5\n")
    (tree / "proj" / "lib.cnn").symlink_to(tree / "proj" / "real" / "widths.cnn")
    main = tree / "proj" / "main.cnn"
    main.write_text(net('import "lib.cnn"'))
    assert cnnc.load(main).output_shapes(batch=1) == [(1, 5)]


@needs_posix
def test_a_fifo_outside_is_refused_without_opening_it(tree: Path):
    """Opening a FIFO blocks until a writer comes: a refusal that returns proves cnnc did
    not open it."""
    os.mkfifo(tree / "outside" / "pipe.cnn")
    (tree / "proj" / "main.cnn").write_text(net('import "../outside/pipe.cnn"'))
    result = cnnc_cli("check", "main.cnn", cwd=tree / "proj")
    assert result.returncode == 1, result.stderr
    assert "is outside the directories imports may read" in result.stderr


def test_source_text_imports_from_the_working_directory(tree: Path, monkeypatch):
    (tree / "proj" / "widths.cnn").write_text("const width = 3\n")
    monkeypatch.chdir(tree / "proj")
    assert cnnc.load(source=net('import "widths.cnn"')).output_shapes(batch=1) == [(1, 3)]
    with pytest.raises(cnnc.CompileError, match="is outside the directories imports may read"):
        cnnc.load(source=net('import "../outside/widths.cnn"'))


# --------------------------------------------------------------------------- search order

def test_imports_are_searched_next_to_the_importer_then_in_each_include_dir(tree: Path):
    main = tree / "proj" / "main.cnn"
    main.write_text(net('import "widths.cnn"'))
    for directory, width in (("proj", 4), ("inc1", 8), ("inc2", 16)):
        (tree / directory / "widths.cnn").write_text(f"const width = {width}\n")
    incs = [tree / "inc1", tree / "inc2"]

    def width(include_dirs) -> int:
        return cnnc.load(main, include_dirs=include_dirs).output_shapes(batch=1)[0][1]

    assert width(incs) == 4  # next to the importing file first
    (tree / "proj" / "widths.cnn").unlink()
    assert width(incs) == 8  # then the include dirs, in order
    assert width(incs[::-1]) == 16
    assert width([str(p) for p in incs]) == 8  # strings as well as paths


def test_a_file_in_an_include_dir_imports_next_to_itself_first(tree: Path):
    (tree / "inc1" / "blocks.cnn").write_text('import "widths.cnn"\n')
    (tree / "inc1" / "widths.cnn").write_text("const width = 6\n")
    (tree / "inc2" / "widths.cnn").write_text("const width = 7\n")
    main = tree / "proj" / "main.cnn"
    main.write_text(net('import "blocks.cnn"'))
    graph = cnnc.load(main, include_dirs=[tree / "inc2", tree / "inc1"])
    assert graph.output_shapes(batch=1) == [(1, 6)]


def test_a_missing_import_names_every_place_searched(tree: Path):
    main = tree / "proj" / "main.cnn"
    main.write_text(net('import "widths.cnn"'))
    with pytest.raises(cnnc.CompileError) as info:
        cnnc.load(main, include_dirs=[tree / "inc1"])
    shown = [display_path(tree / d / "widths.cnn") for d in ("proj", "inc1")]
    assert info.value.message == f'cannot import "widths.cnn": no file {shown[0]} or {shown[1]}'
    assert "then to each include directory in order" in str(info.value)


@pytest.mark.parametrize("kind", ["missing", "a file"])
def test_an_include_dir_must_be_a_directory(tree: Path, kind: str):
    main = tree / "proj" / "main.cnn"
    main.write_text(net("const width = 1"))
    bad = tree / "inc1" / ("nothing" if kind == "missing" else "file.cnn")
    if kind == "a file":
        bad.write_text("const w = 1\n")
    expected = "does not exist" if kind == "missing" else "is not a directory"
    with pytest.raises(cnnc.CompileError, match=f"include directory .* {expected}"):
        cnnc.load(main, include_dirs=[bad])
    result = cnnc_cli("check", str(main), "--include", str(bad))
    assert result.returncode == 1 and expected in result.stderr, result.stderr


# --------------------------------------------------------------------------- every entry point

@pytest.fixture
def included(tree: Path) -> tuple[Path, Path]:
    """proj/main.cnn needs inc1/widths.cnn (width 4)."""
    (tree / "inc1" / "widths.cnn").write_text("const width = 4\n")
    main = tree / "proj" / "main.cnn"
    main.write_text(net('import "widths.cnn"'))
    return main, tree / "inc1"


def test_every_api_entry_point_takes_include_dirs(included, tmp_path, monkeypatch):
    main, inc = included
    with pytest.raises(cnnc.CompileError, match="no file"):
        cnnc.load(main)
    assert load_program(main, include_dirs=[inc]).networks[0].name == "A"
    assert compiler.load(main, include_dirs=[inc]).name == "A"
    assert cnnc.parse(main, include_dirs=[inc]).output_shapes(batch=1) == [(1, 4)]
    ref = cnnc.reference(main, include_dirs=[inc])
    x = torch.randn(2, 3)
    params = dict(ref.named_parameters())
    torch.testing.assert_close(ref(x), F.linear(x, params["y.weight"], params["y.bias"]))
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path / "cache"))
    compiled = cnnc.compile(main, include_dirs=[inc])
    compiled.load_state_dict(ref.state_dict())
    torch.testing.assert_close(compiled(x), ref(x))


@pytest.mark.parametrize("command", [("check",), ("summary",), ("compile", "-o", "out.py")])
def test_every_command_takes_include(included, command):
    main, inc = included
    cwd = main.parent
    refused = cnnc_cli(command[0], "main.cnn", *command[1:], cwd=cwd)
    assert refused.returncode == 1 and "no file" in refused.stderr, refused.stderr
    result = cnnc_cli(command[0], "main.cnn", *command[1:], "--include", "../nowhere",
                      "--include", str(inc), cwd=cwd)
    assert result.returncode == 1 and "nowhere does not exist" in result.stderr
    result = cnnc_cli(command[0], "main.cnn", *command[1:], "--include", str(inc), cwd=cwd)
    assert result.returncode == 0, result.stderr
    if command[0] == "summary":
        assert "[1, 4]" in result.stdout
    if command[0] == "compile":
        assert "class A" in (cwd / "out.py").read_text()
