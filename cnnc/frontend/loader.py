"""Files and imports: a Program is one file's networks with every const and block in scope.

`import "path"` is relative to the importing file (files.py says which files it may name);
the imported file's consts and blocks (and those it imports) join the importer's scope.
A cycle, a missing file, or two definitions of one name are errors naming both places.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CompileError, Location, Source
from . import ast
from .files import display_path, include_directories, read_source, resolve_import, strip_bom
from .parser import parse_source

MAX_IMPORT_DEPTH = 64


@dataclass
class Program:
    main: Source
    networks: tuple[ast.NetworkDef, ...]
    consts: dict[str, ast.ConstDef] = field(default_factory=dict)
    blocks: dict[str, ast.BlockDef] = field(default_factory=dict)

    def network(self, name: str | None) -> ast.NetworkDef:
        """The network called `name`, or the only one when no name is given."""
        if name is None:
            if len(self.networks) == 1:
                return self.networks[0]
            if not self.networks:
                raise CompileError(f"{self.main.path} defines no network")
            names = ", ".join(n.name for n in self.networks)
            raise CompileError(
                f"{self.main.path} defines several networks ({names}); say which one",
                help="pass --network NAME on the command line, or network=NAME to the API",
            )
        for net in self.networks:
            if net.name == name:
                return net
        names = ", ".join(n.name for n in self.networks) or "none"
        raise CompileError(f"{self.main.path} has no network {name} (it has: {names})")


def load_program(path: str | os.PathLike | None = None, *, text: str | None = None,
                 include_dirs: Iterable[str | os.PathLike] = ()) -> Program:
    """Parse a file (or source text) and everything it imports.

    Imports resolve inside the directory of `path` (the working directory for `text`) or
    an include directory, and are searched next to the importing file, then in each
    include directory in order.
    """
    includes = include_directories(include_dirs)
    if text is not None:
        main = Source("<source>", strip_bom(text))
        base = Path.cwd().resolve()
        origin = None
    else:
        main = read_source(path)
        origin = Path(path).resolve()
        base = origin.parent
    module = parse_source(main)
    _check_network_names(module)
    program = Program(main, module.networks)
    _Merger(program, (base, *includes), includes).merge(module, base, origin, stack=())
    return program


def _check_network_names(module: ast.Module) -> None:
    """Two networks of one file may not share a name: --network could not pick one."""
    seen: dict[str, Location] = {}
    for net in module.networks:
        if net.name in seen:
            raise CompileError(
                f"network `{net.name}` is defined twice", net.name_loc,
                notes=[f"first defined at {seen[net.name]}"],
                help="give each network its own name",
            )
        seen[net.name] = net.name_loc


class _Merger:
    def __init__(self, program: Program, roots: tuple[Path, ...], includes: tuple[Path, ...]):
        self.program = program
        self.roots = roots  # where imported files may be
        self.includes = includes  # where imports are searched after the importer's directory
        self.done: set[Path] = set()
        self.defined: dict[str, Location] = {}

    def merge(self, module: ast.Module, base: Path, origin: Path | None,
              stack: tuple[tuple[Path | None, Location], ...]) -> None:
        if origin is not None:
            self.done.add(origin)
        for item in module.consts:
            self._define(item.name, item.name_loc)
            self.program.consts[item.name] = item
        for item in module.blocks:
            self._define(item.name, item.name_loc)
            self.program.blocks[item.name] = item
        for imp in module.imports:
            target = resolve_import(imp, base, self.roots, self.includes)
            # `stack`: each file on the way here with the import it made; then this one.
            chain = [p for p, _ in stack] + [origin]
            if target in chain:
                files = chain[chain.index(target):] + [target]
                cycle = " -> ".join(display_path(p) for p in files if p is not None)
                # Each earlier file of the cycle, the file it imports, and where.
                imported = [p for p, _ in stack[1:]] + [origin]
                raise CompileError(
                    f"import cycle: {cycle}",
                    imp.loc,
                    notes=[f"{display_path(p)} imports {display_path(q)} at {loc}"
                           for (p, loc), q in zip(stack, imported)
                           if p is not None and p in files and q is not None],
                )
            if target in self.done:
                continue
            if len(stack) >= MAX_IMPORT_DEPTH:
                raise CompileError(f"imports nest more than {MAX_IMPORT_DEPTH} deep", imp.loc)
            source = read_source(target, at=imp.loc)
            sub = parse_source(source)
            self.merge(sub, target.parent, target, stack + ((origin, imp.loc),))

    def _define(self, name: str, loc: Location) -> None:
        from ..ops import get_op

        if name in self.defined:
            raise CompileError(
                f"`{name}` is defined twice", loc, notes=[f"first defined at {self.defined[name]}"]
            )
        if get_op(name) is not None or name in ("channels", "size"):
            raise CompileError(
                f"`{name}` is the name of a built-in operator", loc, help="choose another name"
            )
        self.defined[name] = loc
