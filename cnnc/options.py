"""Options, and the only place that reads cnnc's environment variables."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from .errors import CompileError

DEFAULT_CACHE_MAX_MB = 256.0


@dataclass(frozen=True)
class Options:
    debug: bool = False  # CNNC_DEBUG=1: internal errors show their Python traceback
    cache_dir: str = ""  # CNNC_CACHE_DIR: where generated files live (default ~/.cache/cnnc)
    # CNNC_CACHE_MAX_MB: after a write, least recently used entries go until the cache fits
    cache_max_mb: float = DEFAULT_CACHE_MAX_MB
    # CNNC_CONFIG=family:FIELD=int,...;family:...: launch configs pinned per kernel family
    # (BLOCK_M=64,num_warps=4, ...), so a slow or wrong kernel can be bisected
    configs: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()

    @property
    def cache_max_bytes(self) -> int:
        return int(self.cache_max_mb * 1024 * 1024)

    @classmethod
    def from_environment(cls) -> Options:
        cache = os.environ.get("CNNC_CACHE_DIR") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cnnc")
        return cls(debug=os.environ.get("CNNC_DEBUG", "") not in ("", "0"), cache_dir=cache,
                   cache_max_mb=_megabytes("CNNC_CACHE_MAX_MB", DEFAULT_CACHE_MAX_MB),
                   configs=parse_configs(os.environ.get("CNNC_CONFIG", ""), "CNNC_CONFIG"))

    @property
    def pinned(self) -> dict[str, dict[str, int]]:
        return {family: dict(fields) for family, fields in self.configs}


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
CONFIG_FORM = "family:FIELD=int,FIELD=int;family:... (e.g. gemm:BLOCK_M=64,num_warps=4)"


def parse_configs(text: str, where: str = "config") -> tuple:
    """`gemm:BLOCK_M=64,num_warps=4;elementwise:BLOCK=256` -> ((family, ((field, value),
    ...)), ...). Only the form is checked here; which families and fields exist is the
    generated CONFIGS table's to say (cnnc.runtime.tuner.pin_configs)."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        family, colon, rest = part.partition(":")
        fields = []
        for item in filter(None, (i.strip() for i in rest.split(","))):
            name, equals, value = (x.strip() for x in item.partition("="))
            if not (equals and _NAME.match(name) and value.isdigit() and int(value) > 0):
                fields = None
                break
            fields.append((name, int(value)))
        if not (colon and _NAME.match(family.strip()) and fields):
            raise CompileError(f"{where}: cannot read {part!r}", help=f"write {CONFIG_FORM}")
        out.append((family.strip(), tuple(fields)))
    return tuple(out)


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
