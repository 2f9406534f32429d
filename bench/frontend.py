"""Front-end speed: time from .cnn text to checked graph IR.

    python bench/frontend.py [--repeat 20]

Reports the median over repeats (after one warm-up that builds the Lark parser) for
ResNet-50 (examples/resnet.cnn, with its import) and a generated network of 500 block
instances. The issue's aim: ResNet-50 under 50 ms on the development machine's CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cnnc  # noqa: E402


def generated_network(blocks: int) -> str:
    lines = [
        "block residual(x: tensor, width: int) {",
        "    body = x -> conv2d(width, 3, padding=1, bias=false) -> batch_norm -> relu",
        "    return body -> conv2d(width, 3, padding=1) -> add(x) -> relu",
        "}",
        "network Generated {",
        "    input x: [N, 3, 32, 32]",
        "    s0 = x -> conv2d(16, 3, padding=1)",
    ]
    lines += [f"    s{i + 1} = s{i} -> residual(16)" for i in range(blocks)]
    lines += [f"    output s{blocks}", "}"]
    return "\n".join(lines) + "\n"


def timed(fn, repeat: int) -> tuple[float, object]:
    result = fn()  # warm-up: builds the parser once
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    cases = [
        ("ResNet-50 (examples/resnet.cnn)",
         lambda: cnnc.load(ROOT / "examples" / "resnet.cnn", "ResNet50")),
        ("generated, 500 block instances",
         lambda text=generated_network(500): cnnc.load(source=text)),
    ]
    print(f"{'network':36} {'nodes':>6} {'median ms':>10} {'per node us':>12}")
    for name, fn in cases:
        seconds, graph = timed(fn, args.repeat)
        print(f"{name:36} {len(graph):>6} {seconds * 1e3:>10.1f} "
              f"{seconds * 1e6 / len(graph):>12.1f}")


if __name__ == "__main__":
    main()
