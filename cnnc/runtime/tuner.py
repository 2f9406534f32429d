"""Choosing a kernel's launch configuration: pinned, fixed, or tuned once and remembered.

Everything below the marker line is copied verbatim into every generated file (as
support.py is), so a file from `cnnc compile -o` tunes without cnnc; cnnc's tests import
the same code from here. Keep it to the standard library.

A config is a dict of tile caps (BLOCK_M, BLOCK_N, BLOCK_K, BLOCK, ...), GROUP_M and
SPLIT_K where the family has them, num_warps and num_stages. On a GPU the candidates of a
kernel's family are timed at the first launch of each key (the kernel's body and shape
constants, the problem size that the batch sets, the dtype, the device), and the fastest
is written to a JSON file beside the generated files, so a second process does not time
them again.
"""

def pin_configs(module, pins: dict, where: str = "config") -> None:
    """Make `pins` ({family: {field: value}}) the generated module's pinned configs (those
    of every network compiled from that file in this process: the last compile's win).
    Raises CompileError, naming `where` the pins came from, for a family or field its
    CONFIGS table does not have."""
    from ..errors import CompileError

    for family, fields in pins.items():
        known = module.CONFIGS.get(family)
        if known is None:
            raise CompileError(f"{where}: no kernel family {family!r}",
                               help="the families are " + ", ".join(sorted(module.CONFIGS)))
        unknown = sorted(set(fields) - set(known[0]))
        if unknown:
            raise CompileError(f"{where}: the {family} family has no field {unknown[0]!r}",
                               help="its fields are " + ", ".join(known[0]))
    module.PINNED.clear()
    module.PINNED.update({family: dict(fields) for family, fields in pins.items()})
    module.CHOSEN.clear()
    module.PLANS.clear()  # plans hold the configs they were worked out with


# ---- cnnc tuner (copied into generated files) ----
import json  # noqa: E402 (the copy starts at the marker)
import os  # noqa: E402
import tempfile  # noqa: E402


class Tuner:
    """Winners by key, kept in `path` (a JSON object: key -> config)."""

    def __init__(self, path):
        self.path = path
        self.winners = None  # read from `path` at the first choice

    def _read(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                table = json.load(f)
        except (OSError, ValueError):
            return {}
        return table if isinstance(table, dict) else {}

    def choose(self, key, candidates, bench):
        """The candidate that bench(config) -> seconds finds fastest; a candidate that fails
        to compile or run is passed over. A winner remembered for `key` is reused as long as
        it is still a candidate (a changed table retunes)."""
        if self.winners is None:
            self.winners = self._read()
        known = self.winners.get(key)
        if known in candidates:
            return known
        timings = []
        for config in candidates:
            try:
                timings.append(float(bench(config)))
            except Exception:  # noqa: BLE001 - a config the GPU cannot take is not a winner
                timings.append(float("inf"))
        best = candidates[min(range(len(candidates)), key=timings.__getitem__)]
        self.winners[key] = best
        self._save(key, best)
        return best

    def _save(self, key, config):
        """Merge into what is on disk (another process may have tuned other keys) and
        replace the file atomically; a cache that cannot be written only costs a retune."""
        try:
            table = self._read()
            table[key] = config
            folder = os.path.dirname(self.path) or "."
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".cnnc_tuning", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(table, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError:
            pass
