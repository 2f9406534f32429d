"""Pickling of compiled networks: torch.save, copy.deepcopy, multiprocessing.

cnnc.compile imports generated files from the cache under the name `cnnc_<hash>`, which
no other process can import. So each class of such a module is registered with copyreg:
its objects pickle as (the generated source, the class name, their state), and
unpickling loads the source through the cache (regenerating the file if the cache is
empty or on another machine) before restoring the state. A file written by `cnnc compile
-o` and imported by its own name is left alone: it pickles by reference, like any module.
"""

from __future__ import annotations

import copyreg
import functools
from pathlib import Path
from types import ModuleType

from .loader import load_generated

# Generated source -> (module, path), for the modules this process has loaded.
_LOADED: dict[str, tuple[ModuleType, Path]] = {}


def load_cached(source: str, cache_dir: str) -> tuple[ModuleType, Path, bool]:
    """load_generated, and make the module's objects picklable."""
    module, path, cached = load_generated(source, cache_dir)
    if _LOADED.get(source, (None,))[0] is not module:
        reduce = functools.partial(_reduce, source)
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == module.__name__:
                copyreg.pickle(value, reduce)
        _LOADED[source] = (module, path)
    return module, path, cached


def _reduce(source: str, obj) -> tuple:
    getstate = getattr(obj, "__getstate__", None)  # object has none before Python 3.11
    state = getstate() if getstate is not None else dict(obj.__dict__)
    # Where the kernels live is decided where the object is loaded.
    relocated = isinstance(state, dict) and "source_path" in state
    if relocated:
        state = {k: v for k, v in state.items() if k != "source_path"}
    return rebuild, (source, type(obj).__qualname__, relocated), state


def rebuild(source: str, class_name: str, relocated: bool = False):
    """An empty object of a generated class; pickle then restores its state."""
    if source not in _LOADED:
        from ..options import Options
        from .device import require_triton

        require_triton()
        load_cached(source, Options.from_environment().cache_dir)
    module, path = _LOADED[source]
    cls = getattr(module, class_name)
    obj = cls.__new__(cls)
    if relocated:
        obj.__dict__["source_path"] = str(path)
    return obj
