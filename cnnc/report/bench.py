"""`cnnc bench` (and bench/forward.py): one network's forward pass timed with cnnc's
kernels, with PyTorch eager (the reference backend: the same torch.nn.functional calls a
torchvision model makes) and with `torch.compile` of that reference, in one run, on one
device, with the same weights and inputs. TFLOP/s count 2 FLOPs per MAC (the MACs of
`cnnc summary`); the fraction of peak uses the dense tensor-core (or FP32) peak of the
GPU's architecture, from report/inspect.py.
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
TRAINING_NOTE = ("--training times the training-mode forward only (batch statistics, "
                 "running statistics updated); backward is not timed yet")


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
    kernels: int  # cnnc's launches per forward
    macs: int
    repeat: int
    timings: list[Timing]  # cnnc first
    max_abs_diff: float  # cnnc's outputs against eager's, once

    @property
    def tflops(self) -> float:
        return 2 * self.macs / max(self.timings[0].ms / 1e3, 1e-12) / 1e12

    def lines(self) -> list[str]:
        """The report, as printed by `cnnc bench`."""
        dtype = str(self.dtype).removeprefix("torch.")
        where = self.device + (" (Triton interpreter)" if self.device == "cpu" else "")
        mode = "training-mode forward" if self.training else "eval-mode forward"
        cnnc_ms = self.timings[0].ms
        out = [f"{self.network}: batch {self.batch}, {dtype}, {mode}, on {where}; "
               f"median of {self.repeat}",
               f"  {'':24} {'ms per forward':>14}   {'cnnc speed-up':>13}"]
        for t in self.timings:
            if t.ms is None:
                out.append(f"  {t.name:24} {'-':>14}   {'-':>13}  ({t.error})")
                continue
            ratio = "" if t is self.timings[0] else f"{t.ms / cnnc_ms:.3g}x"
            out.append(f"  {t.name:24} {t.ms:14.3f}   {ratio:>13}")
        flop = 2 * self.macs
        line = (f"  cnnc: {flop / 1e9:.4g} GFLOP per forward (2 FLOPs per MAC) in "
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
        timings = [Timing(f"cnnc ({len(net.plan)} kernels)", timed(lambda: net(*xs), device,
                                                                    warmup, repeat)),
                   Timing("PyTorch eager", timed(lambda: eager(*xs), device, warmup, repeat))]
        timings.append(_compiled(eager, xs, device, warmup, repeat) if use_compile
                       else Timing("torch.compile", None, "not run"))
    return BenchResult(graph.name, batch, dtype, device, training, len(net.plan),
                       summarize(graph, batch).macs, repeat, timings, diff)


def _compiled(eager: torch.nn.Module, xs, device: str, warmup: int, repeat: int) -> Timing:
    """torch.compile of the reference; its failure (no C++ compiler, say) is reported, not
    raised: it is PyTorch's tool, and cnnc's numbers stand without it."""
    name = "torch.compile(eager)"
    torch._dynamo.reset()
    compiled = torch.compile(eager)
    try:
        return Timing(name, timed(lambda: compiled(*xs), device, max(warmup, 2), repeat))
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
