"""Files and imports: a Program is one file's networks with every const and block in scope.

`import "path"` is relative to the importing file; the imported file's consts and blocks
(and those it imports) join the importer's scope. A cycle, a missing file, or two
definitions of one name are errors naming both places.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CompileError, Location, Source
from . import ast
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


def display_path(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith(".." + os.sep + "..") else str(path)


def read_source(path: str | os.PathLike) -> Source:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CompileError(f"no such file: {p}") from None
    except IsADirectoryError:
        raise CompileError(f"{p} is a directory, not a .cnn file") from None
    except UnicodeDecodeError as e:
        raise CompileError(f"{p} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise CompileError(f"cannot read {p}: {e.strerror}") from None
    return Source(display_path(p), text)


def load_program(path: str | os.PathLike | None = None, *, text: str | None = None) -> Program:
    """Parse a file (or source text) and everything it imports."""
    if text is not None:
        main = Source("<source>", text)
        base = Path.cwd()
        origin = None
    else:
        main = read_source(path)
        base = Path(path).resolve().parent
        origin = Path(path).resolve()
    module = parse_source(main)
    _check_network_names(module)
    program = Program(main, module.networks)
    _Merger(program).merge(module, base, origin, stack=())
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


def _quoted_path(path: str, limit: int = 80) -> str:
    """An import path as shown in a diagnostic: control characters escaped, long ones cut."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in path)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _resolve_import(base: Path, imp: ast.Import) -> Path:
    """The file an import names, or a CompileError saying why it cannot be one."""
    def fail(reason: str) -> CompileError:
        return CompileError(
            f'cannot import "{_quoted_path(imp.path)}": {reason}', imp.loc,
            help="import paths are relative to the importing file",
        )

    if "\x00" in imp.path:
        raise fail("a path cannot hold a NUL character")
    try:
        target = (base / imp.path).resolve()
        is_file = target.is_file()
    except (OSError, ValueError, RuntimeError) as e:  # too long, a symlink loop, ...
        reason = getattr(e, "strerror", None) or str(e)
        raise fail(reason[:1].lower() + reason[1:]) from None
    if not is_file:
        if target.exists():
            raise fail(f"{display_path(target)} is not a file")
        raise fail(f"no file {display_path(target)}")
    return target


class _Merger:
    def __init__(self, program: Program):
        self.program = program
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
            target = _resolve_import(base, imp)
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
            source = read_source(target)
            sub = parse_source(source)
            self.merge(sub, target.parent, target, stack + ((origin, imp.loc),))

    def _define(self, name: str, loc: Location) -> None:
        from ..ops import get_op

        if name in self.defined:
            raise CompileError(
                f"`{name}` is defined twice", loc, notes=[f"first defined at {self.defined[name]}"]
            )
        if get_op(name) is not None or name == "channels":
            raise CompileError(
                f"`{name}` is the name of a built-in operator", loc, help="choose another name"
            )
        self.defined[name] = loc
