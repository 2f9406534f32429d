"""Options, and the only place that reads cnnc's environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    debug: bool = False  # CNNC_DEBUG=1: internal errors show their Python traceback
    cache_dir: str = ""  # CNNC_CACHE_DIR: where generated files live (default ~/.cache/cnnc)

    @classmethod
    def from_environment(cls) -> Options:
        cache = os.environ.get("CNNC_CACHE_DIR") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cnnc")
        return cls(debug=os.environ.get("CNNC_DEBUG", "") not in ("", "0"), cache_dir=cache)
