"""A stand-in `chunk` for testing `a, b = x -> chunk(2)` before the real operator lands.

It follows the protocol of Op.results (cnnc/ops/registry.py): `results` gives the shape of
each result, as many as torch.chunk returns; the builder makes one node per result with
the attrs record's `index` set; `infer` and `reference` give that one result. Where the
registry already has a `chunk`, `chunk_available()` leaves it alone, so these tests then
check the real operator.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from cnnc.ops import OPS, Op
from cnnc.ops.signature import Arg, Int, Tensor


@dataclass(frozen=True)
class ChunkAttrs:
    chunks: int
    dim: int = 1
    index: int = 0


class StandInChunk(Op):
    name = "chunk"
    attrs_type = ChunkAttrs
    signature = (Arg("input", Tensor()), Arg("chunks", Int(1)), Arg("dim", Int(), 1))

    def results(self, attrs, inputs):
        shape = inputs[0].shape
        size = shape[attrs.dim]
        step = -(-size // attrs.chunks)  # torch.chunk: ceil(size / chunks) each, the last less
        return [tuple(min(step, size - start) if d == attrs.dim % len(shape) else s
                      for d, s in enumerate(shape))
                for start in range(0, size, step)]

    def infer(self, attrs, inputs):
        return self.results(attrs, inputs)[attrs.index]

    def reference(self, attrs, xs, p, training):
        return torch.chunk(xs[0], attrs.chunks, attrs.dim)[attrs.index]


@contextlib.contextmanager
def chunk_available():
    if "chunk" in OPS:
        yield
        return
    OPS["chunk"] = StandInChunk()
    try:
        yield
    finally:
        del OPS["chunk"]
