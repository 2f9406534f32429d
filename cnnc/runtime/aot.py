"""Compiling a generated module's kernels ahead of time for a GPU that is not here.

Triton compiles for any target it has a backend for; only the launch needs the GPU. So
the generated file is imported a second time with the interpreter off (its kernels are
then real `JITFunction`s and its tile choice is the GPU one), a stand-in driver answers
"device 0, target sm_XX", and one forward pass runs on CPU tensors whose launches are
replaced by `JITFunction.warmup` (in `JITFunction.run`, which `kernel[grid](...)` calls
and the generated launchers call directly): Triton specialises the arguments exactly as
a real launch would and compiles TTIR -> TTGIR -> PTX -> cubin, and nothing executes. The
cubin's registers, stack and local memory come from the `cuobjdump` shipped in the
triton wheel.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

TARGETS = {"sm_80": 80, "sm_90": 90}


class AotError(RuntimeError):
    """Ahead-of-time compilation cannot run here (no CUDA backend in this triton)."""


@dataclass
class Launch:
    """One kernel launch of the forward pass, compiled for the target."""

    kernel: str  # the plan kernel whose launcher launched it (k3_conv2d), or the jit name
    function: str  # the jit function launched (kernels of one body share one)
    grid: tuple[int, ...]
    tensor_bytes: int  # bytes of every distinct tensor it is given (read or written once)
    error: str | None = None  # the compiler's message when compilation failed
    registers: int = 0
    spill_bytes: int = 0  # stack + local memory per thread
    shared_bytes: int = 0
    num_warps: int = 0
    num_stages: int = 0
    pipelined: str = "-"  # the dot loop's operand loads: "all" async/TMA, "some", "none"
    tensor_cores: bool = False  # mma / wgmma in the PTX
    has_dot: bool = False
    backward: bool = False  # launched by the backward of a training step
    switches: dict | None = None  # the launch's boolean keyword arguments (HAS_DX=True)


class _StandInDriver:
    """What Triton's JIT asks of the active driver before it compiles; nothing launches."""

    def __init__(self, target):
        self.target = target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target

    def get_active_torch_device(self):
        return torch.device("cpu")


@contextlib.contextmanager
def _compiling_for(arch: int):
    """Triton's JIT aimed at an absent GPU. Only in a process whose triton was imported
    with the interpreter off (the worker below): an interpreting triton's own library
    functions are not JITFunctions, and its compiler refuses them."""
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver as driver_config
    from triton.runtime.jit import JITFunction

    saved_driver = driver_config._active
    saved_run = JITFunction.run
    driver_config.set_active(_StandInDriver(GPUTarget("cuda", arch, 32)))
    try:
        yield JITFunction
    finally:
        JITFunction.run = saved_run
        driver_config._active = saved_driver


def _tensor_bytes(values) -> int:
    seen, total = set(), 0
    for v in values:
        if isinstance(v, torch.Tensor) and v.data_ptr() not in seen:
            seen.add(v.data_ptr())
            total += v.numel() * v.element_size()
    return total


def _resource_usage(cubin: bytes, name: str) -> dict[str, int]:
    """REG / STACK / SHARED / LOCAL of one function, read by the wheel's cuobjdump."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not tool.is_file():
        raise AotError(f"no cuobjdump in the triton wheel ({tool})")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([str(tool), "-res-usage", f.name], capture_output=True,
                             text=True, check=True).stdout
    usage: dict[str, int] = {}
    block = out.split(f"Function {name}:", 1)[-1]
    for key in ("REG", "STACK", "SHARED", "LOCAL"):
        m = re.search(rf"\b{key}:(\d+)", block)
        usage[key] = int(m.group(1)) if m else 0
    return usage


ASYNC_LOAD = re.compile(r"ttg\.async_copy_global_to_local|async_tma_copy|tma_load|"
                        r"ttng\.async_tma|ttng\.tma_load")
TILE_LOAD = re.compile(r"= tt\.load .*: tensor<\d+x\d+x")  # a 2-d tile read synchronously
DOT = re.compile(r"\btt\.dot\b|ttng\.warp_group_dot\b|ttng\.tc_gen5_mma\b")
TENSOR_CORE_PTX = re.compile(r"\b(wgmma\.mma_async|mma\.sync)\b")


def pipelining(ttgir: str) -> str:
    """How the loops around the dots load their operands: "all" tiles through async copies
    or TMA (a software pipeline) in every such loop, "some" (some tiles read synchronously,
    or a loop without async copies beside one with), or "none"; "no loop" when every dot
    is a single step (nothing to pipeline); "-" when there is no dot. A kernel may hold
    several dot loops (a fused data + weight gradient): each is judged."""
    lines = ttgir.splitlines()
    dots = [i for i, line in enumerate(lines) if DOT.search(line)]
    if not dots:
        return "-"
    loops = sorted({loop for d in dots if (loop := _enclosing_loop(lines, d)) is not None})
    if not loops:
        return "no loop"
    verdicts, previous_end = [], 0
    for start, end in loops:
        # Loads issued before the loop (a pipeline's prologue) belong to it too.
        window = lines[max(previous_end, start - 40):end]
        asynchronous = sum(1 for line in window if ASYNC_LOAD.search(line))
        synchronous = sum(1 for line in lines[start:end] if TILE_LOAD.search(line))
        verdicts.append("none" if asynchronous == 0 else "some" if synchronous else "all")
        previous_end = end
    if all(v == "all" for v in verdicts):
        return "all"
    return "none" if all(v == "none" for v in verdicts) else "some"


def _enclosing_loop(lines: list[str], line: int) -> tuple[int, int] | None:
    """(first, last line) of the innermost scf.for whose body holds `line`, by braces (an
    scf.if's region is looked through), or None."""
    balance = 0
    for i in range(line - 1, -1, -1):
        balance += lines[i].count("{") - lines[i].count("}")
        if balance > 0:  # line i opens a region around `line`
            if "scf.for" in lines[i]:
                depth = 0
                for j in range(i, len(lines)):
                    depth += lines[j].count("{") - lines[j].count("}")
                    if depth <= 0:
                        return i, j
                return i, len(lines)
            if "tt.func" in lines[i]:
                return None
            balance = 0
    return None


def _describe(launch: Launch, compiled) -> None:
    asm = compiled.asm
    usage = _resource_usage(asm["cubin"], compiled.metadata.name)
    launch.registers = usage["REG"]
    launch.spill_bytes = usage["STACK"] + usage["LOCAL"]
    launch.shared_bytes = compiled.metadata.shared
    launch.num_warps = compiled.metadata.num_warps
    launch.num_stages = compiled.metadata.num_stages
    ttgir = asm.get("ttgir", "")
    launch.has_dot = DOT.search(ttgir) is not None
    launch.pipelined = pipelining(ttgir)
    launch.tensor_cores = TENSOR_CORE_PTX.search(asm.get("ptx", "")) is not None


def compile_plan(source: str, class_name: str, target: str, dtype: torch.dtype, batch: int,
                 training: bool, progress=None, backward: bool = False) -> list[Launch]:
    """Compile every launch of one forward pass of a generated file for `target`, in a
    worker process whose triton does not interpret; with `backward`, of one training step
    (the differentiable forward and the backward of a sum of the outputs). progress(i,
    name) is called as each compilation starts (a progress bar's hook)."""
    if target not in TARGETS:
        raise AotError(f"unknown target {target}; expected one of {', '.join(TARGETS)}")
    with tempfile.TemporaryDirectory(prefix="cnnc_aot_") as folder:
        path = Path(folder) / "cnnc_aot_module.py"  # Triton reads kernels from real files
        path.write_text(source, encoding="utf-8")
        request = {"path": str(path), "class": class_name, "arch": TARGETS[target],
                   "dtype": str(dtype).replace("torch.", ""), "batch": batch,
                   "training": training or backward, "backward": backward,
                   "tf32": _tf32_flags()}
        env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1")
        worker = subprocess.Popen([sys.executable, "-m", "cnnc.runtime.aot", json.dumps(request)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env)
        launches: list[Launch] = []
        for line in worker.stdout:
            message = json.loads(line)
            if "progress" in message and progress is not None:
                progress(message["progress"], message["kernel"])
            if "launch" in message:
                launches.append(Launch(**message["launch"]))
        errors = worker.stderr.read()
        if worker.wait() != 0:
            last = errors.strip().splitlines()[-1] if errors.strip() else "no message"
            raise AotError(f"the ahead-of-time compiler stopped: {last}")
    return launches


def _compile_in_worker(request: dict) -> None:
    """The worker: import the generated file with real JITFunctions, run one forward
    whose launches compile instead of running, print one JSON line per launch."""
    if "nvidia" not in __import__("triton.backends", fromlist=["backends"]).backends:
        raise AotError("this triton has no NVIDIA backend, so it cannot compile for sm_XX")
    torch.backends.cuda.matmul.allow_tf32 = request["tf32"]["matmul"]
    torch.backends.cudnn.allow_tf32 = request["tf32"]["conv"]
    dtype = getattr(torch, request["dtype"])
    spec = importlib.util.spec_from_file_location("cnnc_aot_module", request["path"])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # inspect and dataclasses look modules up by name
    spec.loader.exec_module(module)
    count = 0

    def emit(message: dict) -> None:
        print(json.dumps(message), flush=True)

    with _compiling_for(request["arch"]) as jit_function:
        compile_only = jit_function.run

        def record(fn, *args, grid, warmup, **kwargs):
            """JITFunction.run, which kernel[grid](...) calls and the builder's launchers
            call directly: compile (warmup), describe, never launch."""
            nonlocal count
            if warmup:  # fn.warmup below
                return compile_only(fn, *args, grid=grid, warmup=True, **kwargs)
            kernel, in_backward = _launcher(sys._getframe(1))
            entry = Launch(kernel or fn.__name__, fn.__name__, tuple(grid),
                           _tensor_bytes(list(args) + list(kwargs.values())),
                           backward=in_backward,
                           switches={k: v for k, v in kwargs.items() if type(v) is bool})
            emit({"progress": count, "kernel": fn.__name__})
            count += 1
            try:
                _describe(entry, fn.warmup(*args, grid=grid, **kwargs))
            except Exception as e:  # a compiler rejection is a finding, not a crash
                lines = str(e).strip().splitlines() or [""]
                entry.error = f"{type(e).__name__}: {lines[-1]}"
            emit({"launch": vars(entry)})

        jit_function.run = record
        net = getattr(module, request["class"])(dtype=dtype).train(request["training"])
        inputs = _inputs(module, request["batch"], dtype)
        if request.get("backward"):  # nothing runs: the values are never read
            outputs = net(*inputs)
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            torch.autograd.backward(outputs, [torch.zeros_like(y) for y in outputs])
        else:
            with torch.no_grad():
                net(*inputs)


def _launcher(frame) -> tuple[str | None, bool]:
    """The plan kernel a launch belongs to: the generated `launch_<kernel>` function on the
    stack (one per plan kernel, even where kernels share a jit function or one launcher
    starts two kernels), else the autograd unit `_bw_<kernel>` whose backward launches a
    backward kernel of cnnc/runtime/grad; and whether it is part of a backward."""
    kernel = None
    while frame is not None:
        name = frame.f_code.co_name
        if kernel is None and name.startswith("launch_") and name != "launch_lock":
            kernel = name[len("launch_"):]
        if name.startswith("_bw_"):
            return kernel or name[len("_bw_"):], True
        frame = frame.f_back
    return kernel, False


def _tf32_flags() -> dict[str, bool]:
    """PyTorch's float32 precision choices here, for the worker, whose generated kernels
    ask them as they would on a CUDA device (conv_precision, dot_precision)."""
    from .support import allows_tf32

    return {kind: allows_tf32(kind) for kind in ("conv", "matmul")}


def _inputs(module, batch: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """Uninitialised CPU tensors of the declared input shapes at this batch size."""
    tensors = []
    for _, dims in module.INPUTS:
        shape = [batch * d[1] if isinstance(d, tuple) else d for d in dims]
        tensors.append(torch.empty(shape, dtype=dtype))
    return tensors


if __name__ == "__main__":
    _compile_in_worker(json.loads(sys.argv[1]))
