"""What cnnc reads: only regular files, at most the source limit of each, whatever a path or
an import names; a byte-order mark; a file name that looks like source.

Reads that once hung or ran out of memory run in a bounded child process (bounded_cli).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bounded_cli import cnnc_cli

import cnnc
from cnnc.frontend.parser import MAX_SOURCE_BYTES

NET = "network A {\n input x: [N, 3]\n y = x -> relu\n output y\n}\n"
needs_posix = pytest.mark.skipif(os.name != "posix", reason="FIFOs and /dev are POSIX")


def _importer(tmp_path: Path, target: str) -> Path:
    main = tmp_path / "main.cnn"
    main.write_text(f'import "{target}"\n' + NET)
    return main


# --------------------------------------------------------------------------- not a file

@needs_posix
def test_dev_zero_is_refused_without_reading():
    result = cnnc_cli("check", "/dev/zero")
    assert result.returncode == 1, result.stderr
    assert "error: /dev/zero is a device, not a regular file" in result.stderr


@needs_posix
def test_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.cnn")  # opening it to read would wait for a writer
    result = cnnc_cli("check", "pipe.cnn", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "error: pipe.cnn is a pipe (FIFO), not a regular file" in result.stderr


@needs_posix
def test_an_imported_fifo_is_refused_at_the_import(tmp_path):
    os.mkfifo(tmp_path / "pipe.cnn")
    _importer(tmp_path, "pipe.cnn")
    result = cnnc_cli("check", "main.cnn", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "error: pipe.cnn is a pipe (FIFO), not a regular file" in result.stderr
    assert "--> main.cnn:1:1" in result.stderr


def test_a_directory_is_refused(tmp_path):
    (tmp_path / "lib.cnn").mkdir()
    _importer(tmp_path, "lib.cnn")
    with pytest.raises(cnnc.CompileError, match="lib.cnn is a directory, not a .cnn file"):
        cnnc.load(tmp_path / "lib.cnn")
    with pytest.raises(cnnc.CompileError) as info:
        cnnc.load(tmp_path / "main.cnn")
    assert "is a directory, not a .cnn file" in info.value.message
    assert (info.value.location.line, info.value.location.col) == (1, 1)


# --------------------------------------------------------------------------- too long

@needs_posix
@pytest.mark.parametrize("through", ["directly", "through an import"])
def test_a_sparse_4_gb_file_is_refused_by_its_size(tmp_path, through: str):
    huge = tmp_path / "huge.cnn"
    with open(huge, "wb") as f:
        f.truncate(4 << 30)  # sparse: no disk space, but 4 GiB of zeros to a reader
    name = "huge.cnn" if through == "directly" else _importer(tmp_path, "huge.cnn").name
    result = cnnc_cli("check", name, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert ("error: huge.cnn is 4,294,967,296 bytes long; cnnc reads files of at most "
            f"{MAX_SOURCE_BYTES:,}") in result.stderr
    assert ("--> main.cnn:1:1" in result.stderr) == (through != "directly")


def test_one_byte_over_the_limit_is_refused_and_the_limit_itself_is_not(tmp_path):
    body = NET + "#"
    at_limit = tmp_path / "at.cnn"
    at_limit.write_text(body + "x" * (MAX_SOURCE_BYTES - len(body) - 1) + "\n")
    assert at_limit.stat().st_size == MAX_SOURCE_BYTES
    assert cnnc.load(at_limit).name == "A"
    over = tmp_path / "over.cnn"
    over.write_text(body + "x" * (MAX_SOURCE_BYTES - len(body)) + "\n")
    with pytest.raises(cnnc.CompileError, match=f"is {MAX_SOURCE_BYTES + 1:,} bytes long"):
        cnnc.load(over)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_a_file_whose_size_says_nothing_is_read_as_far_as_the_limit():
    """/proc files report a size of 0; they are read up to the limit, no further."""
    assert os.stat("/proc/self/status").st_size == 0
    with pytest.raises(cnnc.CompileError) as info:
        cnnc.load(Path("/proc/self/status"))  # read, then a parse error on line 1
    assert info.value.location.line == 1 and "proc/self/status" in info.value.location.file


# --------------------------------------------------------------------------- encoding

def test_a_byte_order_mark_begins_a_file_and_an_import(tmp_path):
    bom = "\ufeff"
    (tmp_path / "lib.cnn").write_text(bom + "const width = 4\n", encoding="utf-8")
    main = tmp_path / "main.cnn"
    main.write_text(bom + 'import "lib.cnn"\n' + NET.replace("relu", "linear(width)"),
                    encoding="utf-8")
    assert cnnc.load(main).output_shapes(batch=2) == [(2, 4)]
    assert cnnc.load(source=bom + NET).name == "A"


def test_a_byte_order_mark_elsewhere_is_named_and_shown():
    source = NET.replace("y = x", "y = \ufeffx")
    with pytest.raises(cnnc.CompileError) as info:
        cnnc.load(source=source)
    text = str(info.value)
    assert "\ufeff" not in text
    assert "unexpected character `\\ufeff` (U+FEFF ZERO WIDTH NO-BREAK SPACE)" in text
    assert "help: a byte-order mark may only begin a file" in text
    assert "3 |  y = \\ufeffx -> relu" in text
    assert text.split("\n")[4] == "  |      ^^^^^^"  # under the whole escape


# --------------------------------------------------------------------------- paths

@pytest.mark.parametrize("name", ["net{v2}.cnn", "a\nb.cnn"])
def test_a_file_name_that_looks_like_source_is_a_file(tmp_path, name: str):
    if os.name != "posix" and "\n" in name:
        pytest.skip("not a file name there")
    (tmp_path / name).write_text(NET)
    result = cnnc_cli("check", name, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert cnnc.load(name).name == "A"  # an existing file wins over the guess
    finally:
        os.chdir(old)


def test_source_text_is_still_source():
    assert cnnc.load(NET).name == "A"
    assert cnnc.load("network A { input x: [N, 3] output x }").name == "A"


def test_a_missing_file_name_with_a_brace_is_reported_missing(tmp_path):
    with pytest.raises(cnnc.CompileError, match="no such file: .*net{v3}.cnn"):
        cnnc.load(str(tmp_path / "net{v3}.cnn"))
