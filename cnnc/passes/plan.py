"""The result of fusion: the ordered kernel launches (and free views) of one forward pass."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Kernel:
    """One generated Triton kernel and the IR nodes it computes.

    kind       the template that generates it (conv, linear, pointwise, pool, ...)
    anchor     the main node (the conv, the linear, the first elementwise op, ...)
    prologue   nodes computed while loading the anchor's input (adaptive pool, flatten)
    folded_bn  an eval batch_norm joined to the anchor: its kernel applies scale and shift,
               computed from the live parameters, to each output channel
    epilogue   elementwise nodes applied to the anchor's result, in order
    pool       a max/avg pool applied to the (epilogue'd) result inside the same kernel
    bn_stats   (a conv, training plans) the batch norm that alone reads its output: the
               conv's epilogue stores per-(row tile, channel) partial statistics for it
    stats_from (a training batch norm) that conv's node: it merges the conv's partials
               rather than reading its input for them
    """

    kind: str
    anchor: int
    prologue: list[int] = field(default_factory=list)
    folded_bn: int | None = None
    epilogue: list[int] = field(default_factory=list)
    pool: int | None = None
    bn_stats: int | None = None
    stats_from: int | None = None
    index: int = -1  # position among the plan's kernels, set when the plan is complete

    @property
    def output(self) -> int:
        if self.pool is not None:
            return self.pool
        if self.epilogue:
            return self.epilogue[-1]
        if self.folded_bn is not None:
            return self.folded_bn
        return self.anchor

    @property
    def nodes(self) -> list[int]:
        fold = [self.folded_bn] if self.folded_bn is not None else []
        tail = [self.pool] if self.pool is not None else []
        return [*self.prologue, self.anchor, *fold, *self.epilogue, *tail]


@dataclass
class View:
    """A step that launches nothing: a reshape, or a concat whose inputs were written
    straight into slices of its output."""

    kind: str  # "reshape" or "concat"
    node: int

    @property
    def output(self) -> int:
        return self.node

    @property
    def nodes(self) -> list[int]:
        return [self.node]


@dataclass
class Refusal:
    node: int
    into: int | None
    reason: str


@dataclass
class Plan:
    training: bool
    graph: object = None  # the (simplified) graph the plan's node ids refer to
    steps: list[Kernel | View] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)

    @property
    def kernels(self) -> list[Kernel]:
        return [s for s in self.steps if isinstance(s, Kernel)]

    def step_of(self, node_id: int) -> Kernel | View | None:
        for step in self.steps:
            if node_id in step.nodes:
                return step
        return None
