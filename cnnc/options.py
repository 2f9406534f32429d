"""Options, and the only place that reads cnnc's environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    debug: bool = False  # CNNC_DEBUG=1: internal errors show their Python traceback

    @classmethod
    def from_environment(cls) -> Options:
        return cls(debug=os.environ.get("CNNC_DEBUG", "") not in ("", "0"))
