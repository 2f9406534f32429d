"""Forward-pass speed: cnnc against PyTorch eager and torch.compile, in one run, one device.

    python bench/forward.py                 # GPU: the issue's table; CPU: toy sizes
    python bench/forward.py --json out.json

Cases (GPU): LeNet-5 at batch 1 and 256, ResNet-18 at batch 1 and 64, VGG-16 at batch 16,
each in float32 and bfloat16. PyTorch eager is the reference backend (torch.nn.functional
calls, the same math as a torchvision model); torch.compile runs it with the default
mode and with max-autotune. Ratios > 1 mean cnnc is faster. TFLOP/s counts 2 FLOPs per
MAC; the fraction of peak uses the device's dense peak for the precision the convs and
linears actually compute in: bf16/fp16 tensor cores for those dtypes; for float32, TF32
tensor cores when the TF32 flags are on (the default here, --no-tf32 turns them off: both
torch.backends.cudnn.allow_tf32, which convs follow in PyTorch and cnnc, and
torch.backends.cuda.matmul.allow_tf32, which linears follow, are set and printed), else
IEEE float32 (peaks: cnnc/report/inspect.py; the timing loop: cnnc/report/bench.py,
shared with `cnnc bench`). At batch 1 (GPU) a second row per dtype runs cnnc with cuda_graphs=True
against torch.compile's mode="reduce-overhead" (which also replays CUDA graphs).

On a CPU (no CUDA) the kernels run in Triton's interpreter: the script runs toy sizes
only, to show that it works; its timings say nothing about GPU speed.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import os  # noqa: E402

import torch  # noqa: E402

import cnnc  # noqa: E402
from cnnc.report.bench import timed  # noqa: E402
from cnnc.report.inspect import PEAKS as ARCH_PEAKS  # noqa: E402
from cnnc.report.summary import summarize  # noqa: E402

GPU_CASES = [
    ("lenet5.cnn", "LeNet5", 1, None), ("lenet5.cnn", "LeNet5", 256, None),
    ("resnet.cnn", "ResNet18", 1, None), ("resnet.cnn", "ResNet18", 64, None),
    ("vgg16.cnn", "VGG16", 16, None),
]
CPU_CASES = [
    ("lenet5.cnn", "LeNet5", 1, None), ("lenet5.cnn", "LeNet5", 4, None),
    ("resnet.cnn", "ResNet18", 1, 32),
]
# Dense peak TFLOP/s (no sparsity) by device name fragment and precision, from the
# per-architecture figures `cnnc inspect` uses.
ARCHITECTURE = {"H100": "sm_90", "H200": "sm_90", "A100": "sm_80"}
PEAKS = {name: {"fp32": ARCH_PEAKS[arch].fp32 / 1e12, "tf32": ARCH_PEAKS[arch].tf32 / 1e12,
                "bf16": ARCH_PEAKS[arch].bf16 / 1e12, "fp16": ARCH_PEAKS[arch].bf16 / 1e12}
         for name, arch in ARCHITECTURE.items()}


def source_for(file: str, network: str, size: int | None) -> str:
    text = (ROOT / "examples" / file).read_text()
    if size is not None:
        text = re.sub(r"(input \w+: \[N, 3, )224, 224\]", rf"\g<1>{size}, {size}]", text)
    return text


def precision(dtype, cuda: bool = True) -> str:
    """What the convs and linears compute in: bf16/fp16 on tensor cores, float32 as TF32
    on CUDA when both TF32 flags allow it (this script sets them together), else IEEE."""
    if dtype == torch.bfloat16:
        return "bf16"
    if dtype == torch.float16:
        return "fp16"
    if cuda and torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "fp32"


def peak(device_name: str | None, dtype) -> float | None:
    """The device's dense peak TFLOP/s for the precision actually used (None: unknown)."""
    for key, table in PEAKS.items():
        if device_name and key in device_name:
            return table.get(precision(dtype))
    return None


def set_tf32(on: bool) -> None:
    torch.backends.cudnn.allow_tf32 = on
    torch.backends.cuda.matmul.allow_tf32 = on


def measure(source, network, graph, batch, size, dtype, device, graphs, repeat,
            use_compile) -> dict:
    """One row: cnnc (with or without CUDA graphs) against eager and torch.compile (with
    graphs: mode="reduce-overhead" in the compile column, as torch.compile's own graphs)."""
    net = cnnc.compile(source=source, network=network, dtype=dtype, device=device,
                       cuda_graphs=graphs).eval()
    eager = cnnc.reference(source=source, network=network).to(device, dtype).eval()
    eager.load_state_dict(net.state_dict())
    xs = [torch.randn(cnnc.ir.shapes.concrete(n.shape, batch), device=device, dtype=dtype)
          for n in graph.input_nodes()]
    row = {"network": network, "batch": batch, "dtype": str(dtype).split(".")[-1],
           "precision": precision(dtype, device == "cuda"), "cuda_graphs": graphs,
           "input": size or 224, "kernels": len(net.plan)}
    with torch.no_grad():
        row["cnnc_ms"] = timed(lambda: net(*xs), device, 3, repeat)
        row["eager_ms"] = timed(lambda: eager(*xs), device, 3, repeat)
        modes = (("reduce-overhead", "compile_ms"), ("max-autotune", "autotune_ms"))
        if not graphs:
            modes = (("default", "compile_ms"), ("max-autotune", "autotune_ms"))
        for mode, key in modes:
            if not use_compile or (mode != "default" and device != "cuda"):
                row[key] = None
                continue
            torch._dynamo.reset()
            compiled = torch.compile(eager, mode=mode)
            row[key] = timed(lambda: compiled(*xs), device, 3, repeat)
    return row


def print_row(row: dict) -> None:
    def ratio(key):
        return f"{row[key] / row['cnnc_ms']:.2f}" if row[key] else "-"

    def ms(key):
        return f"{row[key]:.3f}" if row[key] else "-"

    frac = f"{100 * row['peak_fraction']:.1f}" if row["peak_fraction"] else "-"
    print(f"{row['network']:10} {row['batch']:>5} {row['dtype']:9} {row['precision']:4} "
          f"{'yes' if row['cuda_graphs'] else 'no':6} {ms('cnnc_ms'):>9} "
          f"{ms('eager_ms'):>9} {ms('compile_ms'):>10} {ms('autotune_ms'):>11} "
          f"{ratio('eager_ms'):>8} {ratio('compile_ms'):>9} {ratio('autotune_ms'):>10} "
          f"{row['kernels']:>7} {row['tflops']:>8.3f} {frac:>7}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--no-torch-compile", action="store_true")
    parser.add_argument("--torch-compile", action="store_true",
                        help="on the CPU too (slow to compile; toy sizes)")
    parser.add_argument("--quick", action="store_true", help="LeNet-5 at batch 1 only")
    parser.add_argument("--no-tf32", action="store_true",
                        help="float32 convs and linears in IEEE fp32 (default: TF32)")
    args = parser.parse_args()
    set_tf32(not args.no_tf32)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    os.chdir(ROOT / "examples")  # imports in the examples are relative to them
    cases = GPU_CASES if cuda else CPU_CASES
    if args.quick:
        cases = cases[:1]
    dtypes = [torch.float32, torch.bfloat16] if cuda else [torch.float32]
    repeat = args.repeat or (50 if cuda else 3)
    use_compile = (cuda and not args.no_torch_compile) or args.torch_compile
    results = []
    header = (f"{'network':10} {'batch':>5} {'dtype':9} {'prec':4} {'graphs':6} {'cnnc ms':>9} "
              f"{'eager ms':>9} "
              f"{'compile ms':>10} {'autotune ms':>11} {'x eager':>8} {'x compile':>9} "
              f"{'x autotune':>10} {'kernels':>7} {'TFLOP/s':>8} {'% peak':>7}")
    print(f"device: {torch.cuda.get_device_name() if cuda else platform.processor() or 'cpu'}"
          f"  torch {torch.__version__}  triton {__import__('triton').__version__}")
    print(f"torch.backends.cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}  "
          f"torch.backends.cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}")
    print(header)
    name = torch.cuda.get_device_name() if cuda else None
    for file, network, batch, size in cases:
        source = source_for(file, network, size)
        graph = cnnc.load(source=source, network=network)
        macs = summarize(graph, batch).macs
        for dtype in dtypes:
            for graphs in (False, True) if cuda and batch == 1 else (False,):
                row = measure(source, network, graph, batch, size, dtype, device, graphs,
                              repeat, use_compile)
                seconds = row["cnnc_ms"] / 1e3
                row["tflops"] = 2 * macs / seconds / 1e12
                p = peak(name, dtype)
                row["peak_fraction"] = row["tflops"] / p if p else None
                results.append(row)
                print_row(row)
    if args.json:
        meta = {"date": date.today().isoformat(), "device": device,
                "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                "device_name": torch.cuda.get_device_name() if cuda else platform.processor(),
                "torch": torch.__version__, "triton": __import__("triton").__version__,
                "command": " ".join(sys.argv)}
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
