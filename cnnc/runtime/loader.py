"""Generated files: written once into a content-hashed cache (atomically), then imported.

Triton needs its kernels in real source files, so every compiled network is a file
named by the hash of its text; a second compile of the same network finds it there.
An entry whose bytes are not exactly the expected text (truncated, edited, not UTF-8) is
rewritten, and entries are imported from their source, never from `__pycache__`, so what
runs is what was generated. A cache directory that cannot be written is replaced, for
this process, by a temporary one, with a warning.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from types import ModuleType

from ..errors import CompileError
from . import cache


class CacheWarning(UserWarning):
    """The cache directory could not be used; generated files went to a temporary one."""


def cache_path(source: str, cache_dir: str | os.PathLike) -> Path:
    digest = hashlib.sha256(source.encode()).hexdigest()[:24]
    return Path(cache_dir) / f"cnnc_{digest}.py"


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same directory, so readers see all or nothing."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_generated(source: str, cache_dir: str | os.PathLike, *,
                   max_bytes: int | None = None) -> tuple[ModuleType, Path, bool]:
    """Import generated source through the cache; returns (module, path, was_cached).

    After a write the cache is pruned to `max_bytes` (default: CNNC_CACHE_MAX_MB).
    """
    directory = Path(cache_dir)
    try:
        path, cached = _store(source, directory)
    except OSError as e:
        path, cached = _store_elsewhere(source, directory, e)
    else:
        if not cached:
            if max_bytes is None:
                from ..options import Options

                max_bytes = Options.from_environment().cache_max_bytes
            cache.prune(directory, max_bytes, keep=path)
    return _import(path), path, cached


def _store_elsewhere(source: str, directory: Path, error: OSError) -> tuple[Path, bool]:
    """The entry in this process's temporary directory, with a warning saying why."""
    named = error.filename is not None and not str(error.filename).endswith(".tmp")
    where = f" ({error.filename})" if named and Path(error.filename) != directory else ""
    reason = f"{directory}{where}: {error.strerror or error}"
    fix = "set CNNC_CACHE_DIR to a writable directory"
    try:
        fallback = _fallback_directory()
        stored = _store(source, fallback)
    except OSError as e:
        raise CompileError(f"cannot write to the cache directory {reason}, nor to a temporary "
                           f"directory: {e.strerror or e}", help=fix) from None
    warnings.warn(f"cannot write to the cache directory {reason}; the generated file goes to "
                  f"{fallback}, removed when this process exits. Make {directory} writable, or "
                  f"{fix}", CacheWarning, stacklevel=4)  # the caller of cnnc.compile
    return stored


def _store(source: str, directory: Path) -> tuple[Path, bool]:
    """The entry for `source` in `directory`, written unless it already holds exactly it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        culprit = _not_a_directory(directory)
        problem = "is not a directory" if culprit == directory else (
            f"cannot be created: {culprit} is not a directory")
        raise CompileError(
            f"the cache directory {directory} {problem}",
            help=f"remove or rename {culprit}, or set CNNC_CACHE_DIR to a directory") from None
    path = cache_path(source, directory)
    try:
        cached = path.read_bytes() == source.encode()
    except FileNotFoundError:
        cached = False
    if cached:
        cache.mark_used(path)
    else:
        write_atomic(path, source)
    return path, cached


def _not_a_directory(directory: Path) -> Path:
    """The first existing path on the way to `directory` that is not a directory."""
    for candidate in [*reversed(directory.parents), directory]:
        if os.path.lexists(candidate) and not candidate.is_dir():
            return candidate
    return directory


_fallback: Path | None = None


def _fallback_directory() -> Path:
    global _fallback
    if _fallback is None:
        _fallback = Path(tempfile.mkdtemp(prefix="cnnc-cache-"))
        atexit.register(shutil.rmtree, _fallback, ignore_errors=True)
    return _fallback


class _SourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles the entry's source every time: stale or corrupt bytecode can't stand in."""

    def get_code(self, fullname: str):
        return self.source_to_code(self.get_data(self.path), self.path)


def _import(path: Path) -> ModuleType:
    name = path.stem
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(name, path,
                                                  loader=_SourceLoader(name, str(path)))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
