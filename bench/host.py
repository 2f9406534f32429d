"""cnnc's own Python per forward: the generated forward with every kernel launch stubbed.

    python bench/host.py                      # ResNet-18 b64, ResNet-50 b64, LeNet-5 b1
    python bench/host.py --baseline           # and the same at the commit before the
                                              # host-path work (issue 6's "today"), same run
    python bench/host.py --baseline REV --network ResNet18 --json out.json

What is left when launches cost nothing is the host path: input checks, parameter
lookups, output allocation and the launchers' own argument handling (tile choices, grids,
Triton's own call). The `launchers` column is the part spent inside the generated
launch_* functions (the forward timed again with them replaced by empty functions).

It runs without a GPU: tensors live on PyTorch's "meta" device (shapes only, so
allocation costs what a caching allocator's hit costs, not a page fault) and the Triton
launch is replaced by a no-op. The fixed reference in the same run is a loop of as
many empty Python calls as the forward has launches, so numbers from different machines
can be compared as a ratio. --baseline measures an older cnnc (a `git archive` of REV,
imported in a subprocess, its generated files in a temporary cache) on the same machine
in the same run, and prints each forward's time as a fraction of that one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# --import-root DIR (the baseline's subprocess): that cnnc, not this checkout's
_IMPORT = sys.argv[sys.argv.index("--import-root") + 1] if "--import-root" in sys.argv else ROOT
sys.path.insert(0, str(_IMPORT))

import torch  # noqa: E402

import cnnc  # noqa: E402

CASES = [("resnet.cnn", "ResNet18", 64), ("resnet.cnn", "ResNet50", 64),
         ("lenet5.cnn", "LeNet5", 1)]
# The last commit before the host-path work of issue 6, whose ResNet-18 forward the issue
# measured at 0.94 ms on its machine: the default --baseline.
ISSUE_BASELINE = "0d128e6b16fbac9d75bfe63185c8ea15c801bf0d"


class StubbedLaunches:
    """Every Triton launch (interpreted or compiled) returns at once, counted."""

    def __init__(self):
        self.count = 0

    def __enter__(self):
        from triton.runtime.interpreter import InterpretedFunction
        from triton.runtime.jit import JITFunction

        self.saved = [(cls, cls.run) for cls in (InterpretedFunction, JITFunction)]

        def run(fn, *args, grid, warmup, **kwargs):
            self.count += 1

        for cls, _ in self.saved:
            cls.run = run
        return self

    def __exit__(self, *exc):
        for cls, original in self.saved:
            cls.run = original


def empty_call():
    pass


def empty_launcher(*args, **kwargs):
    pass


def time_per_call(fn, repeat: int, inner: int) -> float:
    """Seconds per call: the fastest of `repeat` timings of `inner` calls (as timeit does:
    on a shared machine, the others measure its load more than the code)."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return min(samples)


def measure(file: str, network: str, batch: int, repeat: int, inner: int) -> dict:
    with torch.no_grad():  # an eval forward: with grad on, the differentiable one runs
        return _measure(file, network, batch, repeat, inner)


def _measure(file: str, network: str, batch: int, repeat: int, inner: int) -> dict:
    net = cnnc.compile(str(ROOT / "examples" / file), network, device="meta").eval()
    spec = net.plan
    generated = sys.modules[type(net).__module__]
    # The GPU's host path, not the interpreter's: tile choices, index widths and the
    # precision checks a CUDA launch makes (the launch itself is stubbed).
    generated.INTERPRET = False
    getattr(generated, "PLANS", {}).clear()  # (a baseline's file may have none)
    declared = generated.INPUTS
    inputs = [torch.empty([batch * d[1] if isinstance(d, tuple) else d for d in dims],
                          device="meta") for _, dims in declared]
    with StubbedLaunches() as stub:
        net(*inputs)  # warm: shapes for this batch size computed once
        launches, stub.count = stub.count, 0
        forward = time_per_call(lambda: net(*inputs), repeat, inner)
    module = sys.modules[type(net).__module__]
    saved = {n: f for n, f in vars(module).items() if n.startswith("launch_")}
    try:
        for name in saved:
            setattr(module, name, empty_launcher)
        without = time_per_call(lambda: net(*inputs), repeat, inner)
    finally:
        for name, fn in saved.items():
            setattr(module, name, fn)

    def reference():
        for _ in range(launches):
            empty_call()

    empty = time_per_call(reference, repeat, inner)
    return {"network": network, "batch": batch, "launches": launches, "plan_rows": len(spec),
            "forward_us": forward * 1e6, "per_launch_us": forward * 1e6 / max(launches, 1),
            "launchers_us": max(forward - without, 0.0) * 1e6,
            "empty_calls_us": empty * 1e6, "ratio_to_empty_calls": forward / empty}


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def baseline_rows(rev: str, repeat: int, inner: int, networks: list[str]) -> list[dict]:
    """The same measurement for cnnc at git revision `rev` of this checkout, in a
    subprocess importing that revision's package (its examples are this checkout's)."""
    with tempfile.TemporaryDirectory(prefix="cnnc-baseline-") as tmp:
        archive = Path(tmp) / "rev.tar"
        with archive.open("wb") as f:
            subprocess.run(["git", "-C", str(ROOT), "archive", rev, "cnnc", "grammar"],
                           stdout=f, check=True, stderr=subprocess.PIPE)
        with tarfile.open(archive) as tar:
            # the "data" filter where this Python has it (3.12, and 3.10.12 / 3.11.4 on)
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(Path(tmp) / "src", **safe)
        out = Path(tmp) / "rows.json"
        env = {**os.environ, "CNNC_CACHE_DIR": str(Path(tmp) / "cache")}
        subprocess.run([sys.executable, __file__, "--import-root", str(Path(tmp) / "src"),
                        "--repeat", str(repeat), "--inner", str(inner), "--rows-json", str(out),
                        *(a for n in networks for a in ("--network", n))],
                       check=True, env=env)
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--inner", type=int, default=50)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--baseline", metavar="REV", nargs="?", const=ISSUE_BASELINE,
                        help="also measure cnnc at this git revision, in the same run "
                             f"(default: {ISSUE_BASELINE[:7]}, before issue 6's host path)")
    parser.add_argument("--network", action="append", metavar="NAME",
                        choices=[n for _, n, _ in CASES],
                        help="only this network (repeatable; default: all three)")
    parser.add_argument("--import-root", help=argparse.SUPPRESS)
    parser.add_argument("--rows-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    networks = args.network or [n for _, n, _ in CASES]
    cases = [case for case in CASES if case[1] in networks]
    before = {}
    if args.baseline:  # first: a revision it cannot measure fails before the long part
        try:
            before = {r["network"]: r for r in baseline_rows(args.baseline, args.repeat,
                                                             args.inner, networks)}
        except (OSError, subprocess.CalledProcessError) as e:
            detail = getattr(e, "stderr", b"") or b""
            sys.exit(f"bench/host.py: cannot measure revision {args.baseline}: {e} "
                     f"{detail.decode(errors='replace').strip()}")
    rows = [measure(f, n, b, args.repeat, args.inner) for f, n, b in cases]
    if args.rows_json:  # the baseline's subprocess
        Path(args.rows_json).write_text(json.dumps(rows))
        return
    where = platform.processor() or platform.machine()
    print(f"cnnc host time per eval forward, launches stubbed ({where}, "
          f"Python {platform.python_version()}, torch {torch.__version__})")
    print(f"{'network':<10} {'batch':>5} {'launches':>8} {'forward':>10} {'launchers':>10} "
          f"{'per launch':>11} {'empty calls':>12} {'ratio':>7}")
    for r in rows:
        print(f"{r['network']:<10} {r['batch']:>5} {r['launches']:>8} "
              f"{r['forward_us']:>8.1f}us {r['launchers_us']:>8.1f}us {r['per_launch_us']:>9.2f}us "
              f"{r['empty_calls_us']:>10.2f}us {r['ratio_to_empty_calls']:>7.0f}")
    if before:
        print(f"\nthe same at {args.baseline[:12]}, in this run (ratio: forward / empty calls)")
        print(f"{'network':<10} {'launches':>8} {'forward':>10} {'empty calls':>12} "
              f"{'ratio':>7} {'now / then':>11}")
        for r in rows:
            b = before[r["network"]]
            r["baseline"] = {k: b[k] for k in ("launches", "forward_us", "empty_calls_us",
                                               "ratio_to_empty_calls")}
            r["fraction_of_baseline"] = r["forward_us"] / b["forward_us"]
            print(f"{r['network']:<10} {b['launches']:>8} {b['forward_us']:>8.1f}us "
                  f"{b['empty_calls_us']:>10.2f}us {b['ratio_to_empty_calls']:>7.0f} "
                  f"{r['fraction_of_baseline']:>11.3f}")
    if args.json:
        import triton

        meta = {"date": date.today().isoformat(), "python": platform.python_version(),
                "torch": torch.__version__, "triton": triton.__version__,
                "machine": platform.machine(), "platform": platform.platform(),
                "processor": _cpu_model() or where, "cpus": os.cpu_count(),
                "device": "none: the host path alone (meta tensors, launches stubbed)",
                "command": " ".join(["python", *sys.argv]), "baseline": args.baseline}
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
