"""The cache of generated files: corrupt entries regenerate, trouble is a diagnostic or a
fallback with a warning, and the cache is bounded (`cnnc cache`, CNNC_CACHE_MAX_MB)."""

from __future__ import annotations

import errno
import importlib.util
import marshal
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

import cnnc
from cnnc.cli import main
from cnnc.report.summary import human_bytes
from cnnc.runtime import loader
from cnnc.runtime.loader import CacheWarning, cache_path, load_generated

ROOT = Path(__file__).resolve().parents[1]
LENET = str(ROOT / "examples" / "lenet5.cnn")


def _source(size: int = 0) -> str:
    """A module of its own (a fresh name: nothing of it is in sys.modules yet)."""
    return f"VALUE = {uuid.uuid4().hex!r}\n" + "#" * size + "\n"


def _value(source: str) -> str:
    return source.split("'")[1]


def _load_fresh(source: str, cache_dir: Path, **kw):
    """load_generated as a new process would see it: the module not yet imported."""
    sys.modules.pop(cache_path(source, cache_dir).stem, None)
    return load_generated(source, cache_dir, **kw)


@pytest.mark.parametrize("damage", [b"\xff\xfe not utf-8", b"", b"VALUE = ("])
def test_a_damaged_entry_is_regenerated(tmp_path, damage):
    source = _source()
    module, path, cached = _load_fresh(source, tmp_path)
    assert not cached
    path.write_bytes(damage)
    module, path2, cached = _load_fresh(source, tmp_path)
    assert (path2, cached) == (path, False)
    assert path.read_text() == source and module.VALUE == _value(source)
    assert _load_fresh(source, tmp_path)[2]  # and the rewritten entry is a hit


def _write_bytecode(path: Path, code: bytes) -> None:
    """A __pycache__ file whose header matches `path` as Python checks it (mtime, size)."""
    st = path.stat()
    header = (importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little")
              + (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
              + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little"))
    pyc = Path(importlib.util.cache_from_source(str(path)))
    pyc.parent.mkdir(exist_ok=True)
    pyc.write_bytes(header + code)


def test_corrupt_bytecode_is_never_imported(tmp_path):
    source = _source()
    _, path, _ = _load_fresh(source, tmp_path)
    _write_bytecode(path, b"\x00 not marshal data")
    assert _load_fresh(source, tmp_path)[0].VALUE == _value(source)


def test_stale_bytecode_cannot_stand_in_for_the_entry(tmp_path):
    source = _source()
    _, path, _ = _load_fresh(source, tmp_path)
    _write_bytecode(path, marshal.dumps(compile("VALUE = 'stale'", str(path), "exec")))
    assert _load_fresh(source, tmp_path)[0].VALUE == _value(source)


def test_a_cache_directory_under_a_regular_file_is_a_diagnostic(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep")
    for directory in (afile / "cache", afile):
        with pytest.raises(cnnc.CompileError) as info:
            load_generated(_source(), directory)
        assert f"{afile} is not a directory" in str(info.value)
        assert "CNNC_CACHE_DIR" in str(info.value)
    assert afile.read_text() == "keep"


def test_the_cli_says_so_with_exit_1(tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path / "afile" / "cache"))
    assert main(["run", LENET, "--repeat", "1"]) == 1
    err = capsys.readouterr().err
    assert "afile is not a directory" in err and "internal error" not in err


def _unwritable(monkeypatch, directory: Path) -> None:
    """Writing into `directory` fails as it does for a user without write permission."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == directory:
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(loader.tempfile, "mkstemp", mkstemp)


def test_an_unwritable_cache_falls_back_to_a_temporary_directory(tmp_path, monkeypatch):
    _unwritable(monkeypatch, tmp_path)
    source = _source()
    with pytest.warns(CacheWarning, match="Permission denied") as record:
        module, path, cached = _load_fresh(source, tmp_path)
    message = str(record[0].message)
    assert str(tmp_path) in message and "CNNC_CACHE_DIR" in message
    assert module.VALUE == _value(source) and not cached
    assert path.parent != tmp_path and path.read_text() == source
    assert list(tmp_path.iterdir()) == []


def test_nowhere_to_write_is_a_diagnostic(tmp_path, monkeypatch):
    def mkstemp(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(dir))

    monkeypatch.setattr(loader.tempfile, "mkstemp", mkstemp)
    with pytest.raises(cnnc.CompileError) as info:
        _load_fresh(_source(), tmp_path)
    assert f"cannot write to the cache directory {tmp_path}: Read-only file system, nor to a " \
        "temporary directory: Read-only file system" in str(info.value)
    assert "CNNC_CACHE_DIR" in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_cache_directory_falls_back(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.warns(CacheWarning, match="Permission denied"):
            module, path, _ = _load_fresh(_source(), tmp_path)
    finally:
        tmp_path.chmod(0o755)
    assert path.parent != tmp_path


def test_the_cli_prints_the_fallback_as_a_warning(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("CNNC_CACHE_DIR", str(cache))
    _unwritable(monkeypatch, cache)
    sys.modules.pop(cache_path(cnnc.generate(cnnc.load(LENET)).source, cache).stem, None)
    assert main(["run", LENET, "--repeat", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith(f"warning: cannot write to the cache directory {cache}")
    assert "(ok)" in captured.out


def _entries(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def test_pruning_removes_the_least_recently_used_entries(tmp_path):
    foreign = {"notes.txt", "cnnc_notahash.py", "cnnc_" + "0" * 24 + ".py.bak"}
    for name in foreign:
        (tmp_path / name).write_text("x" * 5000)
    a, b, c = (_source(1000) for _ in range(3))
    size = len(a.encode())
    _, path_a, _ = load_generated(a, tmp_path, max_bytes=3 * size)
    _, path_b, _ = load_generated(b, tmp_path, max_bytes=3 * size)
    os.utime(path_a, (1_000_000, 1_000_000))
    os.utime(path_b, (2_000_000, 2_000_000))
    assert load_generated(a, tmp_path, max_bytes=3 * size)[2]  # a hit: a is used again
    _, path_c, _ = load_generated(c, tmp_path, max_bytes=2 * size)
    assert _entries(tmp_path) == foreign | {path_a.name, path_c.name}


def _age(path: Path, seconds: float) -> None:
    when = time.time() - seconds
    os.utime(path, (when, when))


def test_the_entry_just_written_stays_even_over_the_bound(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_MAX_MB", "0")
    paths = []
    for _ in range(3):
        paths.append(load_generated(_source(), tmp_path)[1])
        _age(paths[-1], 120)
    assert _entries(tmp_path) == {paths[-1].name}


def test_an_entry_used_a_moment_ago_stays(tmp_path):
    """Another process may have just written it and not yet imported it."""
    old, recent, new = (load_generated(_source(), tmp_path)[1] for _ in range(3))
    _age(old, 120)
    load_generated(_source(), tmp_path, max_bytes=0)
    assert old.name not in _entries(tmp_path)
    assert {recent.name, new.name} <= _entries(tmp_path)


@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
def test_a_bad_cache_bound_is_a_diagnostic(tmp_path, monkeypatch, capsys, value):
    monkeypatch.setenv("CNNC_CACHE_MAX_MB", value)
    assert main(["cache"]) == 1
    assert f"CNNC_CACHE_MAX_MB must be a number of megabytes (0 or more), found {value!r}" \
        in capsys.readouterr().err


def test_cache_command_shows_and_clears_only_cnnc_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CNNC_CACHE_MAX_MB", "64")
    paths = [load_generated(_source(300), tmp_path)[1] for _ in range(2)]
    _write_bytecode(paths[0], b"old cnnc left this")
    stale = tmp_path / (paths[0].name + "k3j4.tmp")  # a writer that died long ago
    stale.write_text("partial")
    os.utime(stale, (1_000_000, 1_000_000))
    (tmp_path / "mine.txt").write_text("keep")
    cnnc_files = [*paths, stale, *(tmp_path / "__pycache__").iterdir()]
    total = sum(p.stat().st_size for p in cnnc_files)

    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert f"cache directory: {tmp_path}\n" in out
    assert f"entries: 2 ({human_bytes(total)})" in out and "above 64 MB" in out

    assert main(["cache", "clear"]) == 0
    assert capsys.readouterr().out == f"removed 2 entries ({human_bytes(total)}) from {tmp_path}\n"
    assert _entries(tmp_path) == {"mine.txt"}
    assert main(["cache"]) == 0 and "entries: 0 (0 B)" in capsys.readouterr().out


def test_cache_command_on_a_file_is_a_diagnostic(tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("keep")
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path / "afile"))
    for args in (["cache"], ["cache", "clear"]):
        assert main(args) == 1
        assert "is not a directory" in capsys.readouterr().err
    assert (tmp_path / "afile").read_text() == "keep"
