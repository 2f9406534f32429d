"""What the builder knows where it is: the names in scope, op-typed block arguments, and
the statement and block instantiations around it."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import CompileError, Frame, Location, quote
from ..ir.values import Callable, TensorValue
from ..ops import OPS
from . import ast
from .arguments import Given

if TYPE_CHECKING:
    from .builder import Builder

BUILTIN_CALLS = ("channels", "size")  # the calls an expression may hold


@dataclass(frozen=True)
class OpValue:
    """The value of an `op` block parameter: an operator or block with the arguments that
    follow its first tensor (`leaky_relu(0.2)`), evaluated where it was written; or none,
    which adds no stage."""

    name: str | None  # an operator or block; None for `none`
    loc: Location  # where it is written
    trail: tuple[Frame, ...] = ()  # the block instantiations around that place
    args: tuple[Given, ...] = ()
    kwargs: tuple[tuple[str, Given, Location], ...] = ()

    def text(self) -> str:
        return self.loc.text()


class PlacedError(CompileError):
    """An error whose trail is final: about an op argument, placed where the argument was
    written, even when it comes to light inside the block that applies it."""

    def with_trail(self, trail: tuple[Frame, ...]) -> CompileError:
        return self


def placed(error: CompileError, trail: tuple[Frame, ...]) -> PlacedError:
    d = error.diagnostic
    return PlacedError(d.message, d.location, trail=trail, help=d.help, notes=d.notes)


def op_as_value(name: str, loc: Location) -> CompileError:
    return CompileError(
        f"`{name}` is an op parameter: it can only be used as a stage (`-> {name}`)", loc,
        help=f"apply it to a tensor: `y = x -> {name}`",
    )


def op_called(name: str, loc: Location) -> CompileError:
    return CompileError(
        f"`{name}` is an op parameter and cannot be called", loc,
        help=f"give its arguments where the block is used (`{name}=leaky_relu(0.2)`) and "
        f"apply it as a stage: `-> {name}`",
    )


@dataclass
class Scope:
    """The names bound in a network or in one block instance, over the program's consts."""

    builder: Builder
    names: dict[str, tuple[Any, Location]] = field(default_factory=dict)
    params: set[str] = field(default_factory=set)  # block parameters (never rebound)

    def lookup(self, name: ast.Name) -> Any:
        """The value of a name used in an expression."""
        if name.name in self.names:
            value = self.names[name.name][0]
            if isinstance(value, OpValue):
                raise op_as_value(name.name, name.loc)
            return value
        if name.name in self.builder.program.consts:
            return self.builder.const(name.name)
        if name.name in OPS:
            return Callable(name.name, "operator")
        if name.name in self.builder.program.blocks:
            return Callable(name.name, "block")
        raise self._undefined(name)

    def op_param(self, name: str) -> OpValue | None:
        """The value of an `op` parameter of this block called `name`, if there is one."""
        value = self.names.get(name, (None,))[0]
        return value if isinstance(value, OpValue) else None

    def check_bound(self, name: ast.Name, call: bool = False) -> None:
        """Refuses a name that nothing binds (in a branch that is not built)."""
        known = (self.names, self.builder.program.consts, OPS, self.builder.program.blocks)
        if any(name.name in k for k in known) or (call and name.name in BUILTIN_CALLS):
            return
        raise self._undefined(name)

    def _undefined(self, name: ast.Name) -> CompileError:
        visible = list(self.names) + list(self.builder.program.consts)
        close = difflib.get_close_matches(name.name, visible, n=1)
        return CompileError(
            f"`{name.name}` is not defined",
            name.loc,
            help=f"did you mean `{close[0]}`?" if close else None,
        )

    def bind(self, name: str, value: Any, loc: Location) -> None:
        if name in self.params:
            raise CompileError(
                f"`{name}` is a parameter of this block and cannot be rebound", loc,
                notes=[f"the parameter is declared at {self.names[name][1]}"],
                help="choose another name",
            )
        if name in self.names:
            raise CompileError(
                f"`{name}` is already bound", loc,
                notes=[f"first bound at {self.names[name][1]}"],
                help="each name is bound once; choose another name",
            )
        if name in self.builder.program.consts:
            raise CompileError(
                f"`{name}` is already a const", loc,
                notes=[f"the const is defined at {self.builder.program.consts[name].name_loc}"],
                help="choose another name",
            )
        self.names[name] = (value, loc)


@dataclass(frozen=True)
class Context:
    """Where the builder is: the layer (network statement), block trail, statement."""

    layer: str
    trail: tuple[Frame, ...]
    statement: Location
    active_blocks: tuple[str, ...] = ()


def chain_start_hint(call: ast.Call, what: str, scope: Scope) -> str:
    """`image -> conv2d(3, 3)`: how a call at the head of a chain gets its tensor (the
    tensor named last in scope stands in for the one the user meant)."""
    tensors = [n for n, (v, _) in scope.names.items() if isinstance(v, TensorValue)]
    start = tensors[-1] if tensors else "x"
    call_text = quote(call.loc.text(), 80)
    return f"a chain starts from a tensor: `{start} -> {call_text}` applies {what} to {start}"
