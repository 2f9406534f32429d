"""Reading .cnn files, and which files an `import` may name.

A .cnn file comes from anywhere (a download, a student's submission), so what it makes
cnnc read is bounded: a file is read only if it is a regular file (never a FIFO, which
would block, a device such as /dev/zero, which never ends, or a directory), and at most
MAX_SOURCE_BYTES + 1 bytes of it. An import names a `.cnn` file that resolves, symlinks
followed, inside one of the *roots*: the directory of the file being compiled (the
working directory for source text) and the include directories the user names
(`--include DIR`, `include_dirs=[...]`). Anything else is refused before it is opened.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from ..errors import CompileError, Location, Source, escape, quote
from . import ast
from .parser import BOM, MAX_SOURCE_BYTES, too_long

SUFFIX = ".cnn"
SEARCH_ORDER = ("import paths are relative to the importing file, then to each include "
                "directory in order (--include DIR, include_dirs=[...])")


def display_path(path: str | os.PathLike) -> str:
    """A path as diagnostics show it: relative to the working directory where that is
    short, with unprintable characters escaped (a file name can hold any of them)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        rel = str(path)
    return escape(rel if not rel.startswith(".." + os.sep + "..") else str(path))


def _os_reason(error: BaseException) -> str:
    reason = getattr(error, "strerror", None) or str(error)
    return reason[:1].lower() + reason[1:]


def _not_regular(mode: int) -> str | None:
    """Why a file of this mode is not read, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a .cnn file"
    if stat.S_ISFIFO(mode):
        return "is a pipe (FIFO), not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file"
    return "is not a regular file"


def read_source(path: str | os.PathLike, at: Location | None = None) -> Source:
    """The text of a .cnn file, a leading byte-order mark dropped; a CompileError (located
    at `at`, the import that names the file, if any) for anything that is not a regular
    UTF-8 file of at most MAX_SOURCE_BYTES, found without reading more than that."""
    shown = display_path(path)

    def fail(reason: str) -> CompileError:
        return CompileError(reason, at)

    try:
        # Before opening: opening a FIFO waits for a writer, opening a device may act.
        problem = _not_regular(os.stat(path).st_mode)
    except FileNotFoundError:
        raise fail(f"no such file: {shown}") from None
    except (OSError, ValueError) as e:  # a NUL in the name, too long, no permission, ...
        raise fail(f"cannot read {shown}: {_os_reason(e)}") from None
    if problem:
        raise fail(f"{shown} {problem}")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise fail(f"cannot read {shown}: {_os_reason(e)}") from None
    with open(fd, "rb") as file:
        info = os.fstat(fd)  # the file may have been replaced since the stat
        problem = _not_regular(info.st_mode)
        if problem:
            raise fail(f"{shown} {problem}")
        if info.st_size > MAX_SOURCE_BYTES:  # a sparse file of terabytes reads as zeros
            raise too_long(shown, info.st_size, at)
        try:
            # st_size can be 0 or stale (/proc, a file being written): read one byte more
            # than the limit to know whether there is more.
            data = file.read(MAX_SOURCE_BYTES + 1)
        except OSError as e:
            raise fail(f"cannot read {shown}: {_os_reason(e)}") from None
    if len(data) > MAX_SOURCE_BYTES:
        raise too_long(shown, None, at)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise fail(f"{shown} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    return Source(shown, strip_bom(text))


def strip_bom(text: str) -> str:
    """Editors on Windows begin UTF-8 files with U+FEFF; it is not part of the program."""
    return text[1:] if text.startswith(BOM) else text


def include_directories(dirs: Iterable[str | os.PathLike] | str | os.PathLike
                        ) -> tuple[Path, ...]:
    """The include directories, resolved; each must exist and be a directory."""
    if isinstance(dirs, (str, os.PathLike)):  # one directory, not its characters
        dirs = [dirs]
    found = []
    for d in dirs:
        shown = display_path(d)
        try:
            mode = os.stat(d).st_mode
        except FileNotFoundError:
            raise CompileError(f"include directory {shown} does not exist") from None
        except (OSError, ValueError) as e:
            raise CompileError(f"cannot use include directory {shown}: {_os_reason(e)}") from None
        if not stat.S_ISDIR(mode):
            raise CompileError(f"include directory {shown} is not a directory")
        found.append(Path(d).resolve())
    return tuple(found)


def resolve_import(imp: ast.Import, base: Path, roots: tuple[Path, ...],
                   includes: tuple[Path, ...]) -> Path:
    """The file an import names, searched next to the importing file (`base`) and then in
    each include directory; a CompileError if none is a .cnn file inside the roots
    (roots[0]: the directory of the compiled file, or the working directory)."""
    def fail(reason: str, help: str | None = SEARCH_ORDER) -> CompileError:
        return CompileError(f'cannot import "{quote(imp.path, 80)}": {reason}', imp.loc,
                            help=help)

    if "\x00" in imp.path:
        raise fail("a path cannot hold a NUL character")
    if not imp.path.endswith(SUFFIX):
        raise fail(f"only {SUFFIX} files can be imported",
                   help="an import brings in the consts and blocks of another .cnn file")
    named = Path(imp.path)
    candidates = [named] if named.is_absolute() else [base / named] + [d / named for d in includes]
    outside, missing = None, []
    for candidate in candidates:
        try:
            target = candidate.resolve()
            if not any(target.is_relative_to(root) for root in roots):
                outside = outside or target
                continue  # not even looked at
            os.stat(target)
            exists = True
        except (FileNotFoundError, NotADirectoryError):
            exists = False
        except (OSError, ValueError, RuntimeError) as e:  # too long, a symlink loop, ...
            raise fail(_os_reason(e)) from None
        if not exists:
            missing.append(target)
        elif target.suffix != SUFFIX:  # a link named x.cnn to some other file
            raise fail(f"{display_path(candidate)} links to {display_path(target)}, "
                       f"not to a {SUFFIX} file")
        else:
            return target  # read_source refuses a directory, a FIFO, a device
    if outside is not None:
        allowed = ", ".join(display_path(root) + os.sep for root in roots)
        raise fail(f"{display_path(outside)} is outside the directories imports may read "
                   f"({allowed})",
                   help="imports stay inside the directory of the file being compiled (for "
                   "source text: the working directory); add a directory with --include DIR "
                   "(include_dirs=[...] in Python)")
    raise fail("no file " + " or ".join(display_path(m) for m in missing))
