"""Where the command line's output goes: a file named by `-o`, or standard output.

A file is written whole through a temporary file beside it, so a reader never sees half
of it, and only when that cannot clobber what it should not: never an input of the
compile (also through a symlink or a hard link), never a directory, FIFO or device. An
existing file keeps its permissions; a new one gets the umask's. A symlink to a regular
file is written through: its target gets the new text and the link stays. `-o -` means
standard output. A failed write to standard output is an OutputError, a diagnostic.
"""

from __future__ import annotations

import contextlib
import keyword
import os
import secrets
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import CompileError

STDOUT = "-"


class OutputError(CompileError):
    """Standard output cannot be written: closed, full, or failing."""


@dataclass(frozen=True)
class Target:
    """Where `-o NAME` writes: `path` None for standard output."""

    name: str  # as the user gave it, for messages
    path: Path | None
    existing: os.stat_result | None  # the file replaced, whose mode and owner are kept


def output_target(name: str, inputs: Iterable[str | os.PathLike]) -> Target:
    """Check `-o NAME` before anything is generated; a CompileError says what is wrong."""
    if name == STDOUT:
        return Target(name, None, None)
    hint = "give a file name, e.g. -o net.py, or -o - for standard output"
    if not name:
        raise CompileError("the output path is empty", help=hint)
    if "\x00" in name:
        raise CompileError("the output path holds a NUL character", help=hint)
    if name.endswith((os.sep, os.sep + ".", os.sep + "..")) or name in (".", ".."):
        raise CompileError(f"the output path {name} names a directory", help=hint)
    path = Path(name)
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise CompileError(f"{name} is a symbolic link to {os.readlink(path)}, which does "
                               "not exist", help="remove the link, or give another path") from None
        _check_parents(path)
        return Target(name, path, None)
    except NotADirectoryError:
        _check_parents(path)
        raise CompileError(f"cannot write {name}: a part of it is not a directory") from None
    except OSError as e:
        raise CompileError(f"cannot write {name}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise CompileError(f"{name} is a directory",
                           help=f"name a file in it, e.g. -o {path / 'net.py'}")
    if not stat.S_ISREG(st.st_mode):
        raise CompileError(f"{name} is not a regular file (it is {_kind(st.st_mode)})",
                           help="cnnc writes only regular files; -o - writes to standard output")
    for source in inputs:
        with contextlib.suppress(OSError):
            other = os.stat(source)
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                what = "" if str(source) == name else f" ({source})"
                raise CompileError(
                    f"cannot write {name}: it is an input of this compile{what}",
                    help="give the output another name, e.g. -o net.py")
    return Target(name, Path(os.path.realpath(path)), st)


def _check_parents(path: Path) -> None:
    """Every existing parent must be a directory (missing ones are created on writing)."""
    for parent in reversed(path.parents):
        if os.path.lexists(parent) and not parent.is_dir():
            raise CompileError(f"cannot write {path}: {parent} is not a directory")


def _kind(mode: int) -> str:
    kinds = [(stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]
    return next((text for test, text in kinds if test(mode)), "not a file")


def write(target: Target, text: str | bytes) -> None:
    """Write `text` (or bytes: a picture) where `target` says; CompileError (OutputError
    for stdout) on failure."""
    if target.path is None:
        if isinstance(text, bytes):
            raise CompileError("cannot write a binary file to standard output",
                               help="give a file name with -o")
        stream = stdout()
        stream.write(text)
        stream.flush()
        return
    path = target.path
    tmp = path.with_name(f".cnnc-{secrets.token_hex(6)}.tmp")  # short: any name stays legal
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        try:
            if target.existing is not None:
                _keep_owner_and_mode(fd, target.existing)
            binary = isinstance(text, bytes)
            with os.fdopen(fd, "wb" if binary else "w",
                           encoding=None if binary else "utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as e:
        raise CompileError(f"cannot write {target.name}: {e.strerror or e}") from None


def _keep_owner_and_mode(fd: int, st: os.stat_result) -> None:
    if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
        with contextlib.suppress(OSError):  # only root may give a file away
            os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))


def import_hint(name: str, class_name: str) -> str:
    """How to use the written file from Python, valid as Python."""
    if name == STDOUT:
        return f"class {class_name}"
    path = Path(name)
    stem = path.stem
    if path.suffix == ".py" and stem.isidentifier() and not keyword.iskeyword(stem):
        return f"class {class_name} (from {stem} import {class_name})"
    return (f"class {class_name} (its file name is not a Python module name: load it with "
            "importlib.util.spec_from_file_location)")


class _CheckedStream:
    """A text stream whose failed writes are OutputErrors, so the CLI says what happened.

    A broken pipe stays a BrokenPipeError: the reader left, which is not an error.
    """

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._call(self._stream.write, text)

    def flush(self) -> None:
        self._call(self._stream.flush)

    def _call(self, method, *args):
        try:
            return method(*args)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise OutputError(f"cannot write to standard output: {e.strerror or e}") from None

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def stdout() -> _CheckedStream:
    if sys.stdout is None:
        raise OutputError("cannot write to standard output: it is closed")
    return _CheckedStream(sys.stdout)


def stdout_console():
    """A rich Console on standard output, reporting write failures as OutputError."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich's own exits 1; a pipe reader leaving is not
            self.quiet = True
            raise BrokenPipeError

    stream = stdout()
    return _Console(file=stream, width=None if stream.isatty() else 140)


def discard_stdout() -> None:
    """After stdout failed, point it at /dev/null so the exit-time flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
