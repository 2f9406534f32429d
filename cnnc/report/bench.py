"""`cnnc bench` (and bench/forward.py): one network's forward pass (or, with --training,
one training step: forward + backward of a sum of the outputs) timed with cnnc's kernels,
with PyTorch eager (the reference backend: the same torch.nn.functional calls a
torchvision model makes) and with `torch.compile` of that reference, in one run, on one
device, with the same weights and inputs. TFLOP/s count 2 FLOPs per MAC (the MACs of
`cnnc summary`; a training step counts three times the forward's: the forward, the data
gradients and the weight gradients); the fraction of peak uses the dense tensor-core (or
FP32) peak of the GPU's architecture, from report/inspect.py.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..ir.graph import Graph
from .run import random_inputs
from .summary import summarize

CPU_NOTE = ("on a CPU, cnnc's kernels run in Triton's interpreter (numpy, one block after "
            "another): these are interpreter times and say nothing about GPU speed")
TRAINING_NOTE = ("--training times one training step: the training-mode forward (batch "
                 "statistics, running statistics updated) and the backward of the sum of "
                 "the outputs, without an optimiser step (bench/train.py adds SGD)")


def timed(fn: Callable[[], object], device: str, warmup: int, repeat: int) -> float:
    """The median time of `fn()` in milliseconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(repeat):
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def device_peak(dtype: torch.dtype) -> tuple[str, float] | None:
    """(what, FLOP/s): the dense peak this GPU's architecture reaches in `dtype`, or None
    (no CUDA, or an architecture report/inspect.py has no figures for)."""
    from .inspect import PEAKS

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    peak = PEAKS.get(f"sm_{major}{minor}")
    if peak is None:
        return None
    if dtype in (torch.bfloat16, torch.float16):
        return f"{peak.name} dense 16-bit tensor-core peak", peak.bf16
    from ..runtime.support import allows_tf32

    if allows_tf32("conv"):  # convolutions hold a CNN's FLOPs; they follow cudnn's flag
        return f"{peak.name} dense TF32 tensor-core peak", peak.tf32
    return f"{peak.name} FP32 peak", peak.fp32


@dataclass
class Timing:
    name: str
    ms: float | None  # None: it could not run (`error` says why)
    error: str | None = None


@dataclass
class BenchResult:
    network: str
    batch: int
    dtype: torch.dtype
    device: str
    training: bool
    kernels: int  # cnnc's launches per forward (per step with training)
    macs: int
    repeat: int
    timings: list[Timing]  # cnnc first
    max_abs_diff: float  # cnnc's outputs against eager's, once
    backward: bool = True  # (training) False: no trainable parameter, no backward

    @property
    def flop(self) -> int:
        """2 FLOPs per MAC; a training step: the forward's three times over."""
        return 2 * self.macs * (3 if self.training and self.backward else 1)

    @property
    def tflops(self) -> float:
        return self.flop / max(self.timings[0].ms / 1e3, 1e-12) / 1e12

    def lines(self) -> list[str]:
        """The report, as printed by `cnnc bench`."""
        dtype = str(self.dtype).removeprefix("torch.")
        where = self.device + (" (Triton interpreter)" if self.device == "cpu" else "")
        mode = "eval-mode forward"
        if self.training:
            mode = ("training step (forward + backward)" if self.backward else
                    "training step (a training-mode forward: no trainable parameters, "
                    "no backward)")
        unit = "step" if self.training else "forward"
        cnnc_ms = self.timings[0].ms
        out = [f"{self.network}: batch {self.batch}, {dtype}, {mode}, on {where}; "
               f"median of {self.repeat}",
               f"  {'':24} {'ms per ' + unit:>14}   {'cnnc speed-up':>13}"]
        for t in self.timings:
            if t.ms is None:
                out.append(f"  {t.name:24} {'-':>14}   {'-':>13}  ({t.error})")
                continue
            ratio = "" if t is self.timings[0] else f"{t.ms / cnnc_ms:.3g}x"
            out.append(f"  {t.name:24} {t.ms:14.3f}   {ratio:>13}")
        per = ("per training step (2 FLOPs per MAC, 3x the forward's)"
               if self.training and self.backward else
               f"per {unit} (2 FLOPs per MAC)")
        line = (f"  cnnc: {self.flop / 1e9:.4g} GFLOP {per} in "
                f"{cnnc_ms:.3f} ms = {self.tflops:.3g} TFLOP/s")
        peak = device_peak(self.dtype) if self.device == "cuda" else None
        if peak is not None:
            line += f" = {100 * self.tflops * 1e12 / peak[1]:.1f}% of the {peak[0]}"
        out += [line, "  (speed-up > 1: cnnc is faster; eager and torch.compile run the "
                      "reference module, with cnnc's weights and inputs)",
                f"  max |cnnc - eager| over the outputs: {self.max_abs_diff:.3g}"]
        return out


def bench(graph: Graph, net: torch.nn.Module, eager: torch.nn.Module, batch: int,
          dtype: torch.dtype, device: str, training: bool, repeat: int,
          use_compile: bool = True) -> BenchResult:
    """Time `net` (cnnc), `eager` (the reference) and torch.compile(eager) on one input."""
    net.train(training)
    eager.train(training)
    eager.load_state_dict(net.state_dict())
    xs = random_inputs(graph, batch, device, dtype)
    warmup = 3 if device == "cuda" else 1  # the interpreter: a slow, cold first call too
    with torch.no_grad():
        got, expected = _outputs(net(*xs)), _outputs(eager(*xs))
        diff = max(float((a.float() - b.float()).abs().max()) for a, b in zip(got, expected))
    if training:
        from .training import cnnc_step_cost

        kernels = cnnc_step_cost(net, xs).kernels  # one step, counted (a warm-up too)
        timings = [Timing(f"cnnc ({kernels} kernels)", timed(_step(net, xs), device, warmup,
                                                             repeat)),
                   Timing("PyTorch eager", timed(_step(eager, xs), device, warmup, repeat))]
    else:
        kernels = len(net.plan)
        with torch.no_grad():
            timings = [Timing(f"cnnc ({kernels} kernels)", timed(lambda: net(*xs), device,
                                                                 warmup, repeat)),
                       Timing("PyTorch eager", timed(lambda: eager(*xs), device, warmup,
                                                     repeat))]
    timings.append(_compiled(eager, xs, device, warmup, repeat, training) if use_compile
                   else Timing("torch.compile", None, "not run"))
    return BenchResult(graph.name, batch, dtype, device, training, kernels,
                       summarize(graph, batch).macs, repeat, timings, diff,
                       backward=graph.parameter_count() > 0)


def _step(module: torch.nn.Module, xs) -> Callable[[], None]:
    """One training step of `module` without an optimiser: forward, backward of a sum
    (none where nothing requires a gradient: a network without trainable parameters)."""
    def step():
        for p in module.parameters():
            p.grad = None
        loss = sum(y.float().sum() for y in _outputs(module(*xs)))
        if loss.requires_grad:
            loss.backward()
    return step


def _compiled(eager: torch.nn.Module, xs, device: str, warmup: int, repeat: int,
              training: bool = False) -> Timing:
    """torch.compile of the reference; its failure (no C++ compiler, say) is reported, not
    raised: it is PyTorch's tool, and cnnc's numbers stand without it."""
    name = "torch.compile(eager)"
    torch._dynamo.reset()
    compiled = torch.compile(eager)
    if training:
        fn = _step(compiled, xs)
    else:
        def fn():
            with torch.no_grad():
                compiled(*xs)
    try:
        return Timing(name, timed(fn, device, max(warmup, 2), repeat))
    except Exception as e:  # noqa: BLE001 - any failure inside PyTorch's compiler
        first = str(e).strip().splitlines()[:1]
        return Timing(name, None, f"torch.compile failed: {type(e).__name__}"
                      + (f": {first[0][:200]}" if first else ""))
    finally:
        torch._dynamo.reset()


def _outputs(y) -> tuple[torch.Tensor, ...]:
    return y if isinstance(y, tuple) else (y,)


__all__ = ["CPU_NOTE", "TRAINING_NOTE", "BenchResult", "Timing", "bench", "device_peak",
           "timed"]
