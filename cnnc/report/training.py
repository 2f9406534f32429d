"""What one training step costs: kernels launched and bytes saved for the backward, for a
compiled network and for PyTorch eager (the reference module), measured by running one
forward + backward on random inputs.

- cnnc's kernels: every Triton launch (JITFunction.run, or the interpreter's), counted;
- eager's compute ops: every ATen op a TorchDispatchMode sees, less views, allocations
  and metadata (what would launch a kernel on a GPU);
- saved bytes: the tensors autograd keeps (saved_tensors_hooks), over unique storages.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# ATen ops that launch nothing (views, metadata, allocation) or only fill memory.
_FREE = ("view", "_unsafe_view", "reshape", "expand", "permute", "transpose", "t",
         "as_strided", "squeeze", "unsqueeze", "slice", "select", "narrow", "alias",
         "detach", "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided",
         "zeros", "zeros_like", "new_zeros", "ones", "ones_like", "fill", "zero",
         "_to_copy", "lift_fresh", "clone", "split", "chunk", "unbind", "_reshape_alias",
         "set_", "resize_", "_local_scalar_dense", "is_same_size", "sym_size", "sym_stride",
         "sym_numel", "size", "stride", "numel", "dim", "contiguous", "copy_", "copy")


@dataclass
class StepCost:
    kernels: int  # launches (cnnc) or compute ops (eager) of one forward + backward
    saved_bytes: int  # what autograd keeps for the backward, unique storages


class ComputeOps(TorchDispatchMode):
    """Records the ATen ops that compute (names, in order)."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__.rstrip("_")
        if name not in _FREE:
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def triton_launches():
    """Counts Triton kernel launches (a list, one entry per launch: the kernel's name)."""
    import triton.runtime.interpreter as interpreter
    import triton.runtime.jit as jit

    launched: list[str] = []
    originals = {}
    for cls in (jit.JITFunction, interpreter.InterpretedFunction):
        original = cls.run
        originals[cls] = original

        def run(self, *args, _original=original, **kwargs):
            if not kwargs.get("warmup", False):
                launched.append(getattr(self, "__name__", None) or self.fn.__name__)
            return _original(self, *args, **kwargs)

        cls.run = run
    try:
        yield launched
    finally:
        for cls, original in originals.items():
            cls.run = original


@contextlib.contextmanager
def saved_storages():
    """The storages autograd saves while the block runs: {storage pointer: bytes}."""
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield storages


def _step(module, inputs, measure) -> None:
    """Forward and backward inside `measure()`, the loss (a sum) and its seed outside."""
    module.train()
    with measure():
        outputs = module(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    if not any(o.requires_grad for o in outputs):  # nothing to train: no backward
        return
    loss = sum(o.float().sum() for o in outputs)
    grads = torch.autograd.grad(loss, outputs)
    with measure():
        torch.autograd.backward(outputs, grads)


def cnnc_step_cost(net, inputs) -> StepCost:
    """One forward + backward of a compiled network: Triton launches and saved bytes."""
    with triton_launches() as launched, saved_storages() as storages:
        _step(net, inputs, contextlib.nullcontext)
    return StepCost(len(launched), sum(storages.values()))


def eager_step_cost(reference, inputs) -> StepCost:
    """The same step in PyTorch eager: compute ops and saved bytes."""
    mode = ComputeOps()
    with saved_storages() as storages:
        _step(reference, inputs, lambda: mode)
    return StepCost(len(mode.ops), sum(storages.values()))


def training_lines(path, network: str, batch: int, include_dirs=()) -> list[str]:
    """`cnnc summary --training`: one step of the compiled network next to eager's."""
    import cnnc

    from .run import random_inputs
    from .summary import human_bytes, refusal_lines

    net = cnnc.compile(path, network, include_dirs=include_dirs)
    reference = cnnc.reference(path, network, include_dirs=include_dirs)
    reference.load_state_dict(net.state_dict())
    graph = cnnc.load(path, network, include_dirs=include_dirs)
    inputs = random_inputs(graph, batch, "cpu", torch.float32)
    mine = cnnc_step_cost(net, [x.clone().requires_grad_(False) for x in inputs])
    eager = eager_step_cost(reference, inputs)
    if graph.parameter_count() == 0:
        return [f"one training step (batch {batch}): network {graph.name} has no trainable "
                "parameters, so the step is its training-mode forward, with no backward:",
                f"  cnnc:          {mine.kernels} kernels",
                f"  PyTorch eager: {eager.kernels} compute ops"]
    lines = [f"one training step (forward + backward, batch {batch}):",
             f"  cnnc:          {mine.kernels} kernels, {human_bytes(mine.saved_bytes)} "
             "saved for backward",
             f"  PyTorch eager: {eager.kernels} compute ops, {human_bytes(eager.saved_bytes)} "
             "saved for backward"]
    from ..passes import plan as make_plan

    refused = refusal_lines(make_plan(graph, training=True, differentiable=True))
    kept = [line for line in refused if "differentiable" in line or "gradient" in line]
    if kept:
        lines.append("fusions a differentiable forward refuses (the backward's trade-offs):")
        lines += [f"  {line}" for line in kept]
    return lines
