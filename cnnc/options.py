"""Options, and the only place that reads cnnc's environment variables."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .errors import CompileError

DEFAULT_CACHE_MAX_MB = 256.0


@dataclass(frozen=True)
class Options:
    debug: bool = False  # CNNC_DEBUG=1: internal errors show their Python traceback
    cache_dir: str = ""  # CNNC_CACHE_DIR: where generated files live (default ~/.cache/cnnc)
    # CNNC_CACHE_MAX_MB: after a write, least recently used entries go until the cache fits
    cache_max_mb: float = DEFAULT_CACHE_MAX_MB

    @property
    def cache_max_bytes(self) -> int:
        return int(self.cache_max_mb * 1024 * 1024)

    @classmethod
    def from_environment(cls) -> Options:
        cache = os.environ.get("CNNC_CACHE_DIR") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cnnc")
        return cls(debug=os.environ.get("CNNC_DEBUG", "") not in ("", "0"), cache_dir=cache,
                   cache_max_mb=_megabytes("CNNC_CACHE_MAX_MB", DEFAULT_CACHE_MAX_MB))


def _megabytes(variable: str, default: float) -> float:
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise CompileError(f"{variable} must be a number of megabytes (0 or more), "
                           f"found {text!r}", help=f"unset {variable} for {default:g} MB")
    return value
