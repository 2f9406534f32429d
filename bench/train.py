"""Training-step speed: cnnc against PyTorch eager and torch.compile, in one run, one device.

    python bench/train.py                    # GPU: LeNet-5 b256, ResNet-18 b64 at 224 px
    python bench/train.py --toy              # CPU (forced there): batch 2, ResNet at 32 px
    python bench/train.py --network LeNet5 --json out.json

One step is forward + cross-entropy + backward + an SGD step with momentum, in training
mode (batch statistics, running statistics updated), timed as the median of --repeat
steps after warm-up. PyTorch eager is the reference module (`cnnc.reference`: the
torch.nn.functional calls a torchvision model makes); torch.compile compiles it with the
default mode. float32 runs with the TF32 flags on (--no-tf32 turns them off), as in
bench/forward.py; bfloat16 modules are compiled for bfloat16 (`dtype=`), the reference is
cast to it.

Kernels per step count one forward + backward (the SGD step's few foreach kernels and the
loss are the same for everyone and left out): on a GPU, the CUDA kernels torch.profiler
sees; on a CPU, cnnc's Triton launches and eager's ATen compute ops (a TorchDispatchMode;
cnnc/report/training.py). Saved MiB is what autograd keeps for the backward, over unique
storages. Peak MiB is what a step allocates at its peak (torch.cuda.max_memory_allocated)
above the weights and the optimiser's state (GPU only).

On a GPU the results also go to bench/results/train-<date>.json with the device, the
versions, the date and the command. On a CPU cnnc's kernels run in Triton's interpreter:
the times are interpreter times and say nothing about GPU speed.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import os  # noqa: E402

import torch  # noqa: E402
from forward import precision, set_tf32, source_for  # noqa: E402

import cnnc  # noqa: E402
from cnnc.report.bench import CPU_NOTE, timed  # noqa: E402
from cnnc.report.run import random_inputs  # noqa: E402
from cnnc.report.training import cnnc_step_cost, eager_step_cost  # noqa: E402

GPU_CASES = [("lenet5.cnn", "LeNet5", 256, None), ("resnet.cnn", "ResNet18", 64, None)]
TOY_CASES = [("lenet5.cnn", "LeNet5", 2, None), ("resnet.cnn", "ResNet18", 2, 32)]
MiB = 2 ** 20


class Variant:
    """One module with its own SGD optimiser, fixed inputs and labels."""

    def __init__(self, module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
        self.module, self.x, self.y = module.train(), x, y
        self.optimizer = torch.optim.SGD(module.parameters(), lr=1e-3, momentum=0.9)

    def forward_backward(self) -> None:
        loss = torch.nn.functional.cross_entropy(self.module(self.x).float(), self.y)
        loss.backward()

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.forward_backward()
        self.optimizer.step()


def cuda_kernels(variant: Variant) -> int:
    """CUDA kernels of one forward + backward, as torch.profiler records them; the loss (a
    sum) and its gradient are made between the two, as cnnc/report/training.py does."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    def launched(fn) -> tuple[object, int]:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            result = fn()
            torch.cuda.synchronize()
        return result, sum(1 for e in prof.events() if e.device_type == DeviceType.CUDA
                           and not e.name.startswith(("Memcpy", "Memset")))

    variant.optimizer.zero_grad(set_to_none=True)
    out, forward = launched(lambda: variant.module(variant.x))
    grad = torch.ones_like(out)
    _, backward = launched(lambda: out.backward(grad))
    return forward + backward


def peak_mib(variant: Variant) -> float:
    """What one step allocates at its peak above the weights and the optimiser's state."""
    variant.optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    variant.step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / MiB


def measure(source, network, batch, size, dtype, device, repeat, use_compile) -> dict:
    net = cnnc.compile(source=source, network=network, dtype=dtype, device=device)
    reference = cnnc.reference(source=source, network=network).to(device, dtype)
    reference.load_state_dict(net.state_dict())
    graph = cnnc.load(source=source, network=network)
    (x,) = random_inputs(graph, batch, device, dtype)
    (classes,) = {shape[-1] for shape in graph.output_shapes(batch)}
    y = torch.randint(0, classes, (batch,), device=device)
    row = {"network": network, "batch": batch, "input": size or graph.input_nodes()[0].shape[-1],
           "dtype": str(dtype).split(".")[-1], "precision": precision(dtype, device == "cuda")}
    cuda = device == "cuda"
    mine = cnnc_step_cost(net, [x])
    eager = eager_step_cost(reference, [x])
    row["cnnc_saved_mib"], row["eager_saved_mib"] = (mine.saved_bytes / MiB,
                                                     eager.saved_bytes / MiB)
    variants = {"cnnc": Variant(net, x, y), "eager": Variant(reference, x, y)}
    if use_compile:
        torch._dynamo.reset()
        variants["compile"] = Variant(torch.compile(copy.deepcopy(reference)), x, y)
    warmup = 3 if cuda else 1
    for name in ("cnnc", "eager", "compile"):
        variant = variants.get(name)
        row[f"{name}_ms"] = timed(variant.step, device, warmup, repeat) if variant else None
        row[f"{name}_peak_mib"] = peak_mib(variant) if variant and cuda else None
        if cuda and variant:
            row[f"{name}_kernels"] = cuda_kernels(variant)
        else:
            row[f"{name}_kernels"] = {"cnnc": mine.kernels, "eager": eager.kernels}.get(name)
    return row


def _cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def print_row(row: dict) -> None:
    def ratio(key):
        return _cell(row[key] / row["cnnc_ms"] if row[key] else None, ".3g")

    print(f"{row['network']:9} {row['batch']:>5} {row['input']:>5} {row['dtype']:8} "
          f"{row['precision']:4} {_cell(row['cnnc_ms'], '.2f'):>10} "
          f"{_cell(row['eager_ms'], '.2f'):>10} {_cell(row['compile_ms'], '.2f'):>10} "
          f"{ratio('eager_ms'):>7} {ratio('compile_ms'):>9} "
          f"{_cell(row['cnnc_kernels'], 'd'):>6} {_cell(row['eager_kernels'], 'd'):>6} "
          f"{_cell(row['compile_kernels'], 'd'):>7} "
          f"{row['cnnc_saved_mib']:>8.2f} {row['eager_saved_mib']:>8.2f} "
          f"{_cell(row['cnnc_peak_mib'], '.0f'):>6} {_cell(row['eager_peak_mib'], '.0f'):>6} "
          f"{_cell(row['compile_peak_mib'], '.0f'):>7}", flush=True)


HEADER = (f"{'network':9} {'batch':>5} {'px':>5} {'dtype':8} {'prec':4} {'cnnc ms':>10} "
          f"{'eager ms':>10} {'compile ms':>10} {'x eager':>7} {'x compile':>9} "
          f"{'k cnnc':>6} {'k eagr':>6} {'k compl':>7} {'sv cnnc':>8} {'sv eagr':>8} "
          f"{'pk cnnc':>6} {'pk eagr':>6} {'pk compl':>7}")
LEGEND = ("k: kernels of one forward + backward (GPU: CUDA kernels; CPU: cnnc's Triton "
          "launches, eager's ATen compute ops); sv: MiB saved for backward; pk: a step's "
          "peak MiB above weights and optimiser state (GPU); x: how many times faster cnnc is")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", action="store_true",
                        help="batch 2, ResNet at 32 px (always on a CPU)")
    parser.add_argument("--network", choices=["LeNet5", "ResNet18"], action="append",
                        help="only this network (may be repeated)")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--json", type=Path, help="write the results here (GPU default: "
                        "bench/results/train-<date>.json)")
    parser.add_argument("--no-torch-compile", action="store_true")
    parser.add_argument("--torch-compile", action="store_true",
                        help="on the CPU too (slow to compile)")
    parser.add_argument("--no-tf32", action="store_true",
                        help="float32 convs and linears in IEEE fp32 (default: TF32)")
    args = parser.parse_args(argv)
    set_tf32(not args.no_tf32)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    os.chdir(ROOT / "examples")  # imports in the examples are relative to them
    cases = TOY_CASES if args.toy or not cuda else GPU_CASES
    cases = [c for c in cases if not args.network or c[1] in args.network]
    dtypes = [torch.float32, torch.bfloat16] if cuda else [torch.float32]
    repeat = args.repeat or (20 if cuda else 2)
    use_compile = (cuda and not args.no_torch_compile) or args.torch_compile
    name = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    print(f"device: {name}  torch {torch.__version__}  triton {__import__('triton').__version__}"
          f"  cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}"
          f"  matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}")
    if not cuda:
        print(f"toy sizes; {CPU_NOTE}")
    print(LEGEND)
    print(HEADER)
    results = []
    for file, network, batch, size in cases:
        source = source_for(file, network, size)
        for dtype in dtypes:
            row = measure(source, network, batch, size, dtype, device, repeat, use_compile)
            results.append(row)
            print_row(row)
    out = args.json or (ROOT / "bench" / "results" / f"train-{date.today().isoformat()}.json"
                        if cuda else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"date": date.today().isoformat(), "device": device, "device_name": name,
                "torch": torch.__version__, "triton": __import__("triton").__version__,
                "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                "command": " ".join(["python", "bench/train.py", *sys.argv[1:]])}
        out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
        print(f"results: {out}")


if __name__ == "__main__":
    main()
