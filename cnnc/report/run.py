"""`cnnc run`: compile, run on random input, compare with the reference backend, time it."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

import torch

from ..errors import CompileError
from ..ir.graph import Graph
from ..ir.shapes import concrete


@dataclass
class RunReport:
    network: str
    device: str
    batch: int
    max_abs_error: float
    max_rel_error: float
    launches: int
    torch_ops: int
    cnnc_ms: float
    torch_ms: float


def available_memory(device: str) -> int | None:
    """Bytes that can be allocated now on `device`, or None when that cannot be told."""
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(graph: Graph, batch: int, device: str) -> None:
    """Refuse a batch whose inputs and activations alone would not fit in memory."""
    from .summary import human_bytes, summarize

    needed = summarize(graph, batch).activation_bytes
    available = available_memory(device)
    if available is not None and needed > available:
        raise CompileError(
            f"batch {batch} needs about {human_bytes(needed)} for the inputs and activations "
            f"of {graph.name} (float32), but {human_bytes(available)} of memory is available "
            f"on {device}", help="use a smaller --batch")


def random_inputs(graph: Graph, batch: int, device, dtype, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(concrete(n.shape, batch), generator=generator).to(device, dtype)
            for n in graph.input_nodes()]


def _median_ms(fn, device: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run_and_compare(net, ref, graph: Graph, batch: int, device: str, repeat: int) -> RunReport:
    net.eval()
    ref.eval()
    ref.load_state_dict(net.state_dict())
    xs = random_inputs(graph, batch, device, torch.float32)
    with torch.no_grad():
        got = net(*xs)
        expected = ref(*xs)
        got = got if isinstance(got, tuple) else (got,)
        expected = expected if isinstance(expected, tuple) else (expected,)
        abs_err = max(float((a.float() - b.float()).abs().max()) for a, b in zip(got, expected))
        scale = max(float(b.float().abs().max()) for b in expected) or 1.0
        cnnc_ms = _median_ms(lambda: net(*xs), device, repeat)
        torch_ms = _median_ms(lambda: ref(*xs), device, repeat)
    torch_ops = sum(1 for n in graph.nodes() if n.op != "input")
    return RunReport(graph.name, device, batch, abs_err, abs_err / scale, len(net.plan),
                     torch_ops, cnnc_ms, torch_ms)
