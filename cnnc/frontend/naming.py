"""Parameter names (LANGUAGE.md, "Parameter names"): the state_dict keys PyTorch would give.

A chain or a `sequential` numbers the ops it applies from 0, as nn.Sequential numbers
what was appended; a stage that adds no op takes no number. Each op's parameters are
named below its number (`features.3.weight`) until the chain is done; then a statement
whose chain holds exactly one op with parameters drops that number (`c1.weight`, rule 1).
A `sequential` never drops its numbers (rule 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import Location
from ..ir.graph import Graph


@dataclass
class Unit:
    """One numbered op of a chain or sequential (an op, a block instance, a sequential, a
    headless chain) and every node it created."""

    prefix: str
    loc: Location
    nodes: list[int] = field(default_factory=list)


class Numbering:
    """The numbered ops of one chain or sequential, whose names go below `base`."""

    def __init__(self, base: str):
        self.base = base
        self.units: list[Unit] = []

    def next(self, loc: Location) -> Unit:
        index = str(len(self.units))
        unit = Unit(f"{self.base}.{index}" if self.base else index, loc)
        self.units.append(unit)
        return unit

    def with_params(self, graph: Graph) -> list[Unit]:
        return [u for u in self.units if any(graph.node(n).params for n in u.nodes)]


def name_chain(graph: Graph, numbering: Numbering) -> None:
    """Rule 1: a chain holding exactly one op with parameters names them right below its
    base (`c1.weight`, not `c1.0.weight`)."""
    with_params = numbering.with_params(graph)
    if len(with_params) != 1:
        return
    unit, base = with_params[0], numbering.base
    for n in unit.nodes:
        node = graph.node(n)
        if node.scope == unit.prefix or node.scope.startswith(unit.prefix + "."):
            node.scope = (base + node.scope[len(unit.prefix):]).lstrip(".")


