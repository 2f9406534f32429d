"""Whole-forward CUDA graphs for cnnc.compile(..., cuda_graphs=True).

Kept out of the support code copied into generated files: a graph is keyed on the
tensors' storage (data_ptr), which generated files never cache on (see
tests/test_stale_weights.py), and a file from `cnnc compile -o` launches its kernels as
they are. The generated forward calls `self._cnnc_graphs.run(...)` when cnnc.compile has
set one.
"""

from __future__ import annotations

import operator

import torch

GRAPHS_WITH_DROPOUT = ("cuda_graphs=True cannot replay a training-mode forward with dropout: "
                       "its random seed is drawn on the host at each launch, so a replay "
                       "would reuse one mask. Call .eval(), or compile without cuda_graphs "
                       "for training")


def needs_capture(entry: tuple | None, params: tuple) -> bool:
    """Whether a captured graph no longer reads the module's tensors: a parameter or buffer
    was replaced (another object) or given new storage (`.data = t`, `.to()`: another
    data_ptr). In-place changes (optimizer steps, load_state_dict, `.data.copy_()`) keep
    both, and the replay reads the new values: kernels read parameters where they are."""
    if entry is None:
        return True
    captured, pointers = entry[3], entry[4]
    return (len(captured) != len(params) or not all(map(operator.is_, captured, params))
            or pointers != tuple(map(torch.Tensor.data_ptr, params)))


def graph_key(training: bool, inputs) -> tuple:
    """What one captured graph is valid for: the mode, each input's shape, strides, dtype
    and device, and the TF32 flags the launchers read when they are captured."""
    from .support import allows_tf32  # the legacy getters raise once the APIs are mixed

    return (training, allows_tf32("matmul"), allows_tf32("conv"),
            tuple((x.shape, x.stride(), x.dtype, x.device) for x in inputs))


class CudaGraphs:
    """Whole-forward CUDA graphs, one per graph_key (batch size, input layout, dtype, mode).
    An entry is (graph, static inputs, static outputs, parameters, their data_ptrs).

    The first call for a key runs eagerly (Triton compiles its kernels there, never during
    a capture) and then captures the same launches reading static input buffers; later
    calls copy the inputs in, replay, and return clones of the static outputs (fresh
    tensors, as an eager forward gives). Not pickled: a copy captures again."""

    def __init__(self):
        self.entries = {}
        self.pool = None
        self.captures = 0

    def __reduce__(self):
        return (CudaGraphs, ())

    def run(self, launch, training, has_dropout, params, sizes, inputs, cuda):
        """The forward's outputs: launched as they are off CUDA, else through a graph."""
        if training and has_dropout:
            raise RuntimeError(GRAPHS_WITH_DROPOUT)
        if not cuda:
            return launch(training, params, sizes, *inputs)
        key = graph_key(training, inputs)
        entry = self.entries.get(key)
        if needs_capture(entry, params):
            self.entries.pop(key, None)  # free the old graph's buffers before capturing
            outputs = launch(training, params, sizes, *inputs)
            self.entries[key] = self.capture(launch, training, params, sizes, inputs)
            return outputs
        graph, static_inputs, static_outputs = entry[:3]
        for buffer, x in zip(static_inputs, inputs):
            buffer.copy_(x)
        graph.replay()
        if isinstance(static_outputs, tuple):
            return tuple(o.clone() for o in static_outputs)
        return static_outputs.clone()

    def capture(self, launch, training, params, sizes, inputs):
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        static_inputs = [x.clone() for x in inputs]
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            static_outputs = launch(training, params, sizes, *static_inputs)
        pointers = tuple(map(torch.Tensor.data_ptr, params))
        self.captures += 1
        return graph, static_inputs, static_outputs, params, pointers
