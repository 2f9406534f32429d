"""Operators along the channels: chunk and split (several results), channel_shuffle.

An op with several results is one IR node per result: every node holds the same
arguments and its own `index` (not a user argument). `results` gives every result's
shape, `infer` the node's own, `reference` computes the node's own piece.

chunk and split launch nothing: each result is a narrow view of the input (`view =
"strided"`), which the consumers' kernels read through its strides; in a channels-last
tensor a channel slice is such a view. channel_shuffle is an index-map copy kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ShapeError
from ..ir.shapes import Shape, Sym
from ..ir.values import tuple_text
from .common import channels_of
from .registry import Op, TensorInfo, register
from .signature import Arg, Int, Tensor
from .size_kinds import Sizes


@dataclass(frozen=True)
class ChunkAttrs:
    chunks: int
    dim: int
    index: int = 0  # which result this node is (set by the front end, not by the user)


@dataclass(frozen=True)
class SplitAttrs:
    split_size_or_sections: int | tuple[int, ...]
    dim: int
    index: int = 0  # which result this node is (set by the front end, not by the user)


@dataclass(frozen=True)
class ChannelShuffleAttrs:
    groups: int


class SeveralResults(Op):
    """An op whose call gives a tuple of tensors: sizes along one dim, one node each."""

    fusion = "view"
    view = "strided"

    def sizes(self, attrs, size: int, x: TensorInfo) -> list[int]:
        raise NotImplementedError

    def _dim_and_size(self, attrs, x: TensorInfo) -> tuple[int, int]:
        rank = len(x.shape)
        if not -rank <= attrs.dim < rank:
            raise ShapeError(
                f"{self.name}() dim={attrs.dim} is out of range for {x} "
                f"(expected {-rank} to {rank - 1})",
                arg="dim",
            )
        dim = attrs.dim % rank
        size = x.shape[dim]
        if isinstance(size, Sym):
            raise ShapeError(
                f"{self.name}() along dim {dim} of {x} would split the batch, whose size is "
                "chosen at run time",
                arg="dim", help="split along a dim of fixed size (1, the channels, by default)",
            )
        return dim, size

    def results(self, attrs, inputs: list[TensorInfo]) -> list[Shape]:
        """Every result's shape, in order (what torch returns)."""
        (x,) = inputs
        dim, size = self._dim_and_size(attrs, x)
        return [(*x.shape[:dim], s, *x.shape[dim + 1:]) for s in self.sizes(attrs, size, x)]

    def infer(self, attrs, inputs: list[TensorInfo]) -> Shape:
        shapes = self.results(attrs, inputs)
        if not 0 <= attrs.index < len(shapes):
            raise ShapeError(
                f"{self.name}() gives {len(shapes)} results; there is no result {attrs.index}"
            )
        return shapes[attrs.index]

    def view_expr(self, attrs, x: str, shape: Shape) -> str:
        """The generated forward's expression of this result: a narrow view of `x`."""
        dim = attrs.dim % len(shape)
        sizes = self.sizes(attrs, shape[dim], TensorInfo(shape, "input"))
        offset = sum(sizes[:attrs.index])
        return f"{x}.narrow({dim}, {offset}, {sizes[attrs.index]})"

    def explain(self, attrs, inputs, out) -> list[str]:
        x = inputs[0]
        dim, size = self._dim_and_size(attrs, x)
        sizes = self.sizes(attrs, size, x)
        return [self._sizes_text(attrs, size, sizes) + f" (dim {dim}); this is result "
                f"{attrs.index}"]


class Chunk(SeveralResults):
    name = "chunk"
    attrs_type = ChunkAttrs
    signature = (Arg("input", Tensor()), Arg("chunks", Int(1)), Arg("dim", Int(), 1))

    def sizes(self, attrs: ChunkAttrs, size: int, x: TensorInfo) -> list[int]:
        # torch.chunk: pieces of ceil(size / chunks), the last one smaller; so fewer
        # pieces than asked where ceil rounds up enough (chunk(4) of 6: 2, 2, 2).
        step = -(-size // attrs.chunks)
        return [min(step, size - start) for start in range(0, size, step)]

    def _sizes_text(self, attrs: ChunkAttrs, size: int, sizes: list[int]) -> str:
        step = sizes[0]
        text = f"ceil({size}/{attrs.chunks}) = {step} per chunk: {', '.join(map(str, sizes))}"
        if len(sizes) != attrs.chunks:
            text += f" ({len(sizes)} chunks, not {attrs.chunks})"
        return text

    def reference(self, attrs: ChunkAttrs, xs, p, training):
        return torch.chunk(xs[0], attrs.chunks, attrs.dim)[attrs.index]


class Split(SeveralResults):
    name = "split"
    attrs_type = SplitAttrs
    signature = (
        Arg("input", Tensor()),
        Arg("split_size_or_sections", Sizes()),
        Arg("dim", Int(), 1),
    )

    def sizes(self, attrs: SplitAttrs, size: int, x: TensorInfo) -> list[int]:
        sections = attrs.split_size_or_sections
        if isinstance(sections, int):
            return [min(sections, size - start) for start in range(0, size, sections)]
        if sum(sections) != size:
            raise ShapeError(
                f"split() sections {tuple_text(sections)} add up to {sum(sections)}, but dim "
                f"{attrs.dim % len(x.shape)} of {x} has {size}",
                arg="split_size_or_sections",
            )
        return list(sections)

    def _sizes_text(self, attrs: SplitAttrs, size: int, sizes: list[int]) -> str:
        if isinstance(attrs.split_size_or_sections, int):
            return (f"{size} in pieces of {attrs.split_size_or_sections}: "
                    f"{', '.join(map(str, sizes))}")
        return f"{size} = {' + '.join(map(str, sizes))}"

    def reference(self, attrs: SplitAttrs, xs, p, training):
        return torch.split(xs[0], attrs.split_size_or_sections, attrs.dim)[attrs.index]


class ChannelShuffle(Op):
    """ShuffleNet's shuffle: view channels as [groups, C/groups], transpose, flatten."""

    name = "channel_shuffle"
    fusion = "anchor"
    template = "channel_shuffle"
    epilogue_slot = True
    attrs_type = ChannelShuffleAttrs
    signature = (Arg("input", Tensor()), Arg("groups", Int(1)))

    def infer(self, attrs: ChannelShuffleAttrs, inputs: list[TensorInfo]) -> Shape:
        (x,) = inputs
        if len(x.shape) < 3:
            raise ShapeError(
                f"channel_shuffle() expects an input of 3 or more dims [N, C, ...], found {x}"
            )
        c = channels_of(self.name, x)
        if c % attrs.groups:
            raise ShapeError(
                f"channel_shuffle() groups={attrs.groups} does not divide the {c} channels "
                f"of {x}",
                arg="groups",
            )
        return x.shape

    def reference(self, attrs: ChannelShuffleAttrs, xs, p, training):
        return F.channel_shuffle(xs[0], attrs.groups)

    differentiable_view = True  # a differentiable forward writes it as torch views

    def view_expr(self, attrs: ChannelShuffleAttrs, x: str, shape: Shape) -> str:
        """Views and one copy, whose backward autograd knows (the inverse shuffle)."""
        channels = shape[1]
        return (f"{x}.unflatten(1, ({attrs.groups}, {channels // attrs.groups}))"
                f".transpose(1, 2).flatten(1, 2)")

    def concat_slices(self, attrs: ChannelShuffleAttrs, channels: int,
                      pieces: list[int]) -> list[tuple[int, int, int]] | None:
        """After a concat of `pieces` channels: where each piece lies in the shuffled
        output, as (start, stop, step) channel slices, or None where a piece spans two
        groups (it would need two slices). Shuffled channel k * G + g holds concat channel
        g * C/G + k, so a piece inside group g is every G-th channel from k0 * G + g."""
        per, g_count = channels // attrs.groups, attrs.groups
        slices, offset = [], 0
        for size in pieces:
            g, k0 = divmod(offset, per)
            if (offset + size - 1) // per != g:
                return None
            slices.append((k0 * g_count + g, (k0 + size - 1) * g_count + g + 1, g_count))
            offset += size
        return slices

    def explain(self, attrs: ChannelShuffleAttrs, inputs, out) -> list[str]:
        c, g = inputs[0].shape[1], attrs.groups
        per = c // g
        return [f"{c} channels as {g} groups of {per}, transposed to {per} x {g}: "
                f"channel i goes to (i % {per})*{g} + i // {per}"]


register(Chunk(), Split(), ChannelShuffle())
