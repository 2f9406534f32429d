"""The cache of generated files: what is in it, how big it is, and keeping it bounded.

Only files cnnc names are ever touched: entries `cnnc_<24 hex>.py`, the temporary files
they are written through (`cnnc_<hex>.py<random>.tmp`) and the bytecode older versions of
cnnc left in `__pycache__` (`cnnc_<hex>.<tag>.pyc`). Anything else in the directory stays.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import CompileError

ENTRY = re.compile(r"cnnc_([0-9a-f]{24})\.py")
_TEMP = re.compile(r"cnnc_([0-9a-f]{24})\.py.*\.tmp")
_BYTECODE = re.compile(r"cnnc_([0-9a-f]{24})\..*\.pyc")
STALE_TEMP_S = 3600  # a temporary file this old belongs to a writer that died
RECENT_S = 60  # an entry used this recently may be about to be imported by another process


@dataclass
class _Entry:
    key: str  # the hash its files share
    files: list[Path]
    bytes: int
    last_used_ns: int  # the later of access and modification: a hit bumps the access time
    has_source: bool


@dataclass(frozen=True)
class CacheStats:
    directory: Path
    entries: int
    bytes: int


def _scan(directory: Path) -> dict[str, _Entry]:
    found: dict[str, _Entry] = {}

    def add(folder: Path, pattern: re.Pattern, source: bool, min_age_s: float = 0) -> None:
        try:
            items = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        now = time.time_ns()
        for item in items:
            match = pattern.fullmatch(item.name)
            if match is None or not item.is_file(follow_symlinks=False):
                continue
            with contextlib.suppress(FileNotFoundError):  # another process pruned it
                st = item.stat(follow_symlinks=False)
                used = max(st.st_atime_ns, st.st_mtime_ns)
                if now - st.st_mtime_ns < min_age_s * 1e9:
                    continue
                entry = found.setdefault(match[1], _Entry(match[1], [], 0, 0, False))
                entry.files.append(Path(item.path))
                entry.bytes += st.st_size
                entry.last_used_ns = max(entry.last_used_ns, used)
                entry.has_source |= source

    add(directory, ENTRY, True)
    add(directory, _TEMP, False, min_age_s=STALE_TEMP_S)
    add(directory / "__pycache__", _BYTECODE, False)
    return found


def _require_directory(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise CompileError(f"the cache directory {directory} is not a directory",
                           help="set CNNC_CACHE_DIR to a directory, or remove that file")


def stats(directory: Path) -> CacheStats:
    """How many entries the cache holds and how many bytes cnnc's files in it take."""
    _require_directory(directory)
    entries = _scan(directory).values()
    return CacheStats(directory, sum(e.has_source for e in entries),
                      sum(e.bytes for e in entries))


def clear(directory: Path) -> CacheStats:
    """Remove every entry (and cnnc's leftovers); returns what was removed."""
    _require_directory(directory)
    entries = list(_scan(directory).values())
    for entry in entries:
        for path in entry.files:
            try:
                path.unlink(missing_ok=True)
            except OSError as e:
                raise CompileError(f"cannot remove {path}: {e.strerror}",
                                   help="check the permissions of the cache directory") from None
    with contextlib.suppress(OSError):  # only if nothing else lives there
        (directory / "__pycache__").rmdir()
    return CacheStats(directory, sum(e.has_source for e in entries),
                      sum(e.bytes for e in entries))


def prune(directory: Path, max_bytes: int, keep: Path) -> int:
    """Remove least recently used entries until cnnc's files fit in max_bytes; never `keep`,
    nor an entry used in the last RECENT_S seconds.

    Best effort: a file that cannot be removed (or that another process removed first)
    is passed over. Returns the number of entries removed.
    """
    entries = _scan(directory)
    total = sum(e.bytes for e in entries.values())
    kept = ENTRY.fullmatch(keep.name)
    recent = time.time_ns() - RECENT_S * 10**9
    removed = 0
    for entry in sorted(entries.values(), key=lambda e: e.last_used_ns):
        if total <= max_bytes or entry.last_used_ns > recent:
            break
        if kept is not None and entry.key == kept[1]:
            continue
        for path in entry.files:
            with contextlib.suppress(OSError):
                path.unlink()
        total -= entry.bytes
        removed += entry.has_source
    return removed


def mark_used(path: Path) -> None:
    """Record a cache hit in the access time (the modification time says when it was written)."""
    with contextlib.suppress(OSError):
        st = path.stat()
        os.utime(path, ns=(time.time_ns(), st.st_mtime_ns))
