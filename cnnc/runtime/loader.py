"""Generated files: written once into a content-hashed cache (atomically), then imported.

Triton needs its kernels in real source files, so every compiled network is a file
named by the hash of its text; a second compile of the same network finds it there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType


def cache_path(source: str, cache_dir: str) -> Path:
    digest = hashlib.sha256(source.encode()).hexdigest()[:24]
    return Path(cache_dir) / f"cnnc_{digest}.py"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_generated(source: str, cache_dir: str) -> tuple[ModuleType, Path, bool]:
    """Import generated source through the cache; returns (module, path, was_cached)."""
    path = cache_path(source, cache_dir)
    cached = path.is_file() and path.read_text(encoding="utf-8") == source
    if not cached:
        write_atomic(path, source)
    name = path.stem
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return module, path, cached
