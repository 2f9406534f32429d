"""The kernel builder: what every template would otherwise repeat.

A template says what its kernel reads (tensors, sizes, strides, shape constants), which
config family it belongs to, how its tiles follow from a config, and writes the body's
math into `body`. The builder writes the rest, the same way for every kernel:

- the signature, in commented groups (pointers, sizes, strides, shape constants, flags,
  tiles), as in Triton's matmul tutorial;
- one index-width policy: `INDEX_64` is `index_64(every tensor)` (the generated runtime,
  helpers.RUNTIME): int32 offsets unless a tensor can reach 2**31 elements; program ids
  come from `program_id`, which widens them only then;
- the grid, `(n + b - 1) // b` on the host, optionally in GROUP_M-grouped order;
- the launcher, which asks `choose_config` (pinned, fixed under the interpreter, tuned once
  on a GPU) for its config, and derives its tiles from it.

The launcher does that host work once per key: the dtype, the shapes and strides of the
tensors its sizes and strides are read from, and any keyed flag (a dot's precision, which
follows PyTorch's flags). Grid, constants, strides, tiles and index width are kept in the
generated PLANS table, so a launch builds one key tuple and calls the kernel's `run`
(what `kernel[grid](...)` calls). An index width kept for a key stays right for any tensor
of those shapes and strides: in-kernel offsets are relative to a tensor's data pointer and
bounded by its shape and strides.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .kernel import Argument, EmitContext, EmittedKernel, split_index
from .source import Source, identifier, number

PER_LINE = 6  # parameters per signature line


@dataclass
class _Group:
    comment: str
    params: list[str]  # kernel parameter names
    call: list[str]  # what the launcher passes for them (`*x.stride()` may stand for several)
    constexpr: bool = False
    per_call: bool = False  # evaluated at every launch (a random seed), never kept


def _ceil_div(n: str, b: str) -> str:
    return f"(({n} + {b} - 1) // {b})"


class KernelBuilder:
    """One kernel and its launcher. family: the config family (a key of the generated
    CONFIGS table); size: the launcher's expression of the problem size, which with the
    kernel's body and shape constants keys the tuning."""

    def __init__(self, ctx: EmitContext, family: str, doc: str, name: str | None = None):
        self.name = identifier(name or ctx.name)
        self.family = identifier(family)
        self.doc = doc
        self.groups: list[_Group] = []
        self.arguments: list[Argument] = []
        self.prelude: list[str] = []  # launcher lines computing sizes, before the config
        # launcher lines run first, before the key: a tensor argument replaced by the copy
        # the kernel reads (helpers.aligned_channels); applied to that copy, a no-op
        self.operands: list[str] = []
        self.size = "0"
        self.tile_lines: list[str] = []  # launcher lines deriving tiles from `config`
        self.tiles: list[str] = []  # tile constexprs, in signature order
        self.grid: list[str] = []
        self.body = Source()
        self.body.level = 1
        self.helpers: set[str] = set()
        self.keyed: dict[str, str] = {}  # launcher locals computed per launch, part of the key
        # values worked out with the plan that per-call arguments use (name -> expression)
        self.kept: dict[str, str] = {}
        # per-call launcher lines around the kernel's launch (they may use kept values)
        self.before: list[str] = []
        self.after: list[str] = []
        self.companions: list[str] = []  # other jit functions the launcher also launches
        # Index in int64 under Triton's interpreter too (helpers.wide): it checks every int32
        # addition and product for overflow, which costs a conv's index math more than the
        # conv (int64 it does not check). On a GPU the policy is the same as everywhere.
        self.wide_in_interpreter = False
        # num_warps and num_stages: the config's, unless the tile lines derive their own
        self.warps, self.stages = "config['num_warps']", "config['num_stages']"

    # ---------------------------------------------------------------- what is passed

    def argument(self, name: str, kind: str, ref: object) -> None:
        """A tensor the launcher takes from the forward (a node's value or a parameter)."""
        self.arguments.append(Argument(identifier(name), kind, ref))

    def group(self, comment: str, params: list[str], call: list[str] | None = None,
              per_call: bool = False, constexpr: bool = False) -> None:
        """Kernel parameters (pointers, sizes, strides) and what the launcher passes.
        per_call: values that change at every launch (a seed), never kept with the plan;
        constexpr: compile-time values (strides, so Triton knows what is contiguous)."""
        if params:
            self.groups.append(_Group(comment, params, list(params if call is None else call),
                                      constexpr, per_call))

    def constants(self, comment: str, consts: dict[str, int]) -> None:
        """Shape constants: compile-time sizes, the same at every launch."""
        if consts:
            self.groups.append(_Group(comment, list(consts),
                                      [number(v) for v in consts.values()], True))

    def flags(self, comment: str, flags: dict[str, str], keyed: bool = False) -> None:
        """Compile-time values the launcher computes from the problem (host expressions).
        keyed: computed at every launch and part of the key (they follow global state, as a
        dot's precision follows PyTorch's TF32 flags)."""
        if flags:
            if keyed:
                for expr in flags.values():
                    assert re.fullmatch(r"\w+\(x\)", expr), "a keyed flag is function(x)"
                self.keyed.update(flags)
            self.groups.append(_Group(comment, list(flags),
                                      list(flags) if keyed else list(flags.values()), True))

    # ---------------------------------------------------------------- tiles and grid

    def problem(self, lines: list[str], size: str) -> None:
        """Launcher lines computing the problem's sizes, and the one that keys tuning."""
        self.prelude += lines
        self.size = size

    def tile(self, name: str, extent: str, field: str | None = None) -> None:
        """Tile `name`: the config's cap `field` (default: name), clamped to `extent`."""
        self.tile_expr(name, f"tile({extent}, config[{field or name!r}])")

    def tile_expr(self, name: str, expr: str) -> None:
        """Tile `name` from any host expression of `config` and the problem sizes."""
        self.tile_lines.append(f"{name} = {expr}")
        self.tiles.append(name)

    def grid_dims(self, *dims: tuple[str, str | None]) -> None:
        """The grid: per axis (extent, tile) -> ceil(extent / tile), or (count, None)."""
        self.grid = [_ceil_div(n, b) if b else n for n, b in dims]

    def program_id(self, var: str, axis: int = 0) -> None:
        """`var = tl.program_id(axis)`, in int64 only where an offset may pass 2**31."""
        self.body.line(f"{var} = tl.program_id({axis})")
        with self.body.indent("if INDEX_64:  # some tensor can reach 2**31 elements"):
            self.body.line(f"{var} = {var}.to(tl.int64)")

    def grouped_program_ids(self, m: str, block_m: str, n: str, block_n: str,
                            host_n: str) -> None:
        """`pid_m`, `pid_n` from a 1-d grid in GROUP_M-grouped order: GROUP_M row tiles
        share each column tile while it is in the cache (Triton's matmul tutorial).
        m, n: the kernel's extents (m also the launcher's); host_n: n in the launcher."""
        self.tiles.append("GROUP_M")
        self.tile_lines.append("GROUP_M = config['GROUP_M']")
        self.grid = [f"{_ceil_div(m, block_m)} * {_ceil_div(host_n, block_n)}"]
        self.program_id("pid")
        b = self.body
        b.line(f"tiles_m = tl.cdiv({m}, {block_m})")
        b.line(f"tiles_n = tl.cdiv({n}, {block_n})")
        b.line("group = pid // (GROUP_M * tiles_n)")
        b.line("group_m = tl.minimum(tiles_m - group * GROUP_M, GROUP_M)")
        b.line("pid_m = group * GROUP_M + (pid % (GROUP_M * tiles_n)) % group_m")
        b.line("pid_n = (pid % (GROUP_M * tiles_n)) // group_m")

    def flat_elements(self, out_shape) -> None:
        """An elementwise kernel over `out`: one program per BLOCK of its elements; the
        body gets `offs` (flat indices), `mask` and the output index i0..i{rank-1} split
        from them (sizes past the batch are shape constants D1...)."""
        rank = len(out_shape)
        self.group("elements", ["total"])
        self.constants("output sizes", {f"D{d}": out_shape[d] for d in range(1, rank)})
        self.problem(["total = out.numel()"], "total")
        self.tile("BLOCK", "total")
        self.grid_dims(("total", "BLOCK"))
        self.program_id("pid")
        self.body.line("offs = pid * BLOCK + tl.arange(0, BLOCK)")
        self.body.line("mask = offs < total")
        self.body.line("# flat index -> (" + ", ".join(f"i{d}" for d in range(rank)) + ")")
        split_index(self.body, "offs", [f"i{d}" for d in range(1, rank)],
                    [f"D{d}" for d in range(1, rank)])
        self.body.line("i0 = rest")

    # ---------------------------------------------------------------- output

    def _signature(self, src: Source) -> None:
        src.line("@triton.jit")
        with src.indent(f"def {self.name}("):
            for g in self._all_groups():
                src.line(f"# {g.comment}")
                names = [f"{p}: tl.constexpr" if g.constexpr else p for p in g.params]
                for i in range(0, len(names), PER_LINE):
                    src.line(", ".join(names[i:i + PER_LINE]) + ",")
        src.line("):")

    def _all_groups(self) -> list[_Group]:
        tensors = ", ".join(["out"] + [a.name for a in self.arguments])
        policy = "wide" if self.wide_in_interpreter else "index_64"
        index = _Group("index width: int64 only where a tensor can reach 2**31 elements",
                       ["INDEX_64"], [f"force_int64 or {policy}({tensors})"], True)
        tiles = _Group("tiles, from the launch's config", self.tiles, list(self.tiles), True)
        if not any("tl.float32" in line for line in self.body.lines):
            return [*self.groups, index, tiles]
        acc = _Group("arithmetic: float64 for float64 tensors, else float32", ["ACC"],
                     ["tl.float64 if out.dtype == torch.float64 else tl.float32"], True)
        return [*self.groups, acc, index, tiles]

    def _key(self, tensors: list[str]) -> list[str]:
        """The launch's key: what its kept plan was computed from. The dtype; the shape and
        strides of the output and of every value (they vary with the batch and the layout);
        the strides of a parameter that the host code reads (not bare pointers); the keyed
        flags. The index width is left out (see the module docstring)."""
        host = "\n".join(self.prelude + self.tile_lines + [self.size] + [
            item for g in self.groups if not g.per_call for item in g.call
            if item not in tensors])
        values = {"out"} | {a.name for a in self.arguments if a.kind == "value"}
        key = [repr(self.name), "out.dtype"]
        for t in tensors:
            if t in values:
                key += [f"{t}.shape", f"{t}.stride()"]
            elif re.search(rf"\b{t}\b", host):
                key.append(f"{t}.stride()")
        return key + list(self.keyed)

    def _launch_call(self, tensors: list[str]) -> tuple[list[str], list[list[tuple]]]:
        """The kernel call's arguments in signature order: tensors and per-call values as
        they are, each run of kept values as one `*c<i>`; and those runs, as
        [(group comment, values)]."""
        call: list[str] = []
        runs: list[list[tuple[str, list[str]]]] = []
        open_run = False
        for g in self._all_groups():
            for item in g.call:
                if item in tensors or g.per_call:
                    call.append(item)
                    open_run = False
                    continue
                if not open_run:
                    call.append(f"*c{len(runs)}")
                    runs.append([])
                    open_run = True
                if not runs[-1] or runs[-1][-1][0] != g.comment:
                    runs[-1].append((g.comment, []))
                runs[-1][-1][1].append(item)
        return call, runs

    def jit(self) -> Source:
        """The @triton.jit function: the grouped signature, the docstring, the body."""
        jit = Source()
        self._signature(jit)
        with jit.indent():
            first, *rest = self.doc.split("\n")
            jit.line('"""' + first + ("" if rest else '"""'))
            if rest:
                jit.extend(rest + ['"""'])
        # templates write their arithmetic's dtype as tl.float32; ACC widens it for float64
        jit.lines += [line.replace("tl.float32", "ACC") for line in self.body.lines]
        return jit

    def launch_values(self, tensors: list[str]) -> tuple[list[str], list[str]]:
        """For a companion kernel launched by another's launcher: its call (tensors as they
        are, then `*<NAME>_ARGS`) and the kept values that name stands for."""
        call, runs = self._launch_call(tensors)
        assert len(runs) <= 1, "a companion kernel's kept values come after its tensors"
        values = [v for _, vs in (runs[0] if runs else []) for v in vs]
        return [c if c != "*c0" else f"*{self.name.upper()}_ARGS" for c in call], values

    def build(self) -> EmittedKernel:
        jit = self.jit()
        for companion in self.companions:
            jit.lines = companion.rstrip("\n").split("\n") + ["", ""] + jit.lines
        digest = hashlib.sha256(
            "\n".join(jit.lines).replace(f"def {self.name}(", "def _(", 1).encode()
            + repr(self._all_groups()[:-2]).encode()).hexdigest()[:16]

        host = Source()
        launcher = f"launch_{self.name}"
        params = ["out"] + [a.name for a in self.arguments]
        call, runs = self._launch_call(params)
        given = "".join(f", {name}=None" for name in self.keyed)
        host.line(f"def {launcher}({', '.join(params)}, config=None, force_int64=False"
                  f"{given}):")
        with host.indent():
            host.line(f'"""Launch {self.name}: grid, sizes, strides, constants and tiles are')
            host.line("worked out once per key (dtype, shapes, strides) and kept in PLANS.")
            host.line("config: a dict of the family's fields to launch with (default: "
                      "choose_config's);")
            if self.keyed:
                host.line("force_int64: index in int64 even where int32 suffices (tests);")
                host.line(", ".join(self.keyed) + ": as the forward worked it out (else here)."
                          '"""')
            else:
                host.line('force_int64: index in int64 even where int32 suffices (tests)."""')
            for name, expr in self.keyed.items():
                with host.indent(f"if {name} is None:"):
                    host.line(f"{name} = {expr}")
            host.extend(self.operands)
            key = self._key(params)
            with host.indent(f"key = ({', '.join(key[:4])},"):
                for k in range(4, len(key), 4):
                    host.line(", ".join(key[k:k + 4]) + ",")
            host.line(")")
            host.line("plan = None if config is not None or force_int64 else PLANS.get(key)")
            with host.indent("if plan is None:"):
                host.line("keep = config is None and not force_int64")
                host.extend(self.prelude)
                with host.indent("if config is None:"):
                    host.line(f"config = choose_config({self.family!r}, {digest!r}, {self.size}, "
                              "out, lambda c: " + launcher + "(")
                    with host.indent():
                        for k in range(0, len(params), PER_LINE):
                            host.line(", ".join(params[k:k + PER_LINE]) + ",")
                        host.line("config=c))")
                host.extend(self.tile_lines)
                host.line(f"plan = (({', '.join(self.grid)},),")
                with host.indent():
                    for run in runs:
                        with host.indent("("):
                            for comment, values in run:
                                host.line(f"# {comment}")
                                for k in range(0, len(values), PER_LINE):
                                    host.line(", ".join(values[k:k + PER_LINE]) + ",")
                        host.line("),")
                    host.line(", ".join([self.warps, self.stages, *self.kept.values()]) + ")")
                with host.indent("if keep:"):
                    host.line("remember(PLANS, key, plan)")
            unpacked = ["grid", *(f"c{i}" for i in range(len(runs))), "warps", "stages",
                        *self.kept]
            host.line(f"{', '.join(unpacked)} = plan")
            host.extend(self.before)
            # kernel.run(..., grid=, warmup=False) is what kernel[grid](...) calls, without
            # the lambda in between (a launch's arguments pass through one call, not two)
            with host.indent(f"{self.name}.run("):
                for i in range(0, len(call), PER_LINE):
                    host.line(", ".join(call[i:i + PER_LINE]) + ",")
                host.line("grid=grid, warmup=False, num_warps=warps, num_stages=stages,")
            host.line(")")
            host.extend(self.after)
        return EmittedKernel(self.name, jit.text() + "\n\n" + host.text(), launcher,
                             self.arguments, helpers=self.helpers, jit=jit.text(),
                             host=host.text(), keyed=dict(self.keyed))
