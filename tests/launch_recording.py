"""Recording a generated module's kernel launches: a stand-in for a jit function that
sees every launch, whichever way the launcher makes it (`kernel[grid](...)`, or the
builder's `kernel.run(..., grid=grid, warmup=False)`, which is what `[grid]` calls)."""

from __future__ import annotations


class Recording:
    """Stands in for the jit function `real`: on_launch(grid, arguments by name) at each
    launch, then the real launch unless launch=False."""

    def __init__(self, real, on_launch, launch: bool = True):
        self.real, self.on_launch, self.launch = real, on_launch, launch
        self.arg_names = real.arg_names

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.run(*args, grid=grid, warmup=False, **kwargs)

    def run(self, *args, grid, warmup, **kwargs):
        # launchers pass a kernel's constants positionally: name them
        self.on_launch(grid, {**dict(zip(self.arg_names, args)), **kwargs})
        if self.launch:
            return self.real.run(*args, grid=grid, warmup=warmup, **kwargs)
        return None


def grids_into(grids: list):
    """on_launch for a Recording that keeps only each launch's grid."""
    return lambda grid, arguments: grids.append(grid)
