"""DistributedDataParallel wraps a compiled module unchanged: two CPU processes over gloo,
each on half a batch, end with the gradients one process computes over the whole batch.

Without batch norm that is the full batch's gradient (the loss is a mean, and DDP averages
the two halves' gradients). With batch norm each process normalises its half with its own
statistics, so the gradients are the mean of the two halves' gradients, each computed as
one process would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.functional import cross_entropy
from torch.nn.parallel import DistributedDataParallel

import cnnc

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2
TIMEOUT_S = 180  # the whole spawn; a stuck rendezvous or collective must not hang CI

PLAIN = """
network Plain {
    input x: [N, 2, 6, 6]
    conv = x -> conv2d(4, 3, padding=1) -> relu -> max_pool2d(2)
    fc = conv -> flatten -> linear(3)
    output fc
}
"""
NORMED = """
network Normed {
    input x: [N, 2, 6, 6]
    conv = x -> conv2d(4, 3, padding=1, bias=false)
    bn = conv -> batch_norm -> relu
    fc = bn -> adaptive_avg_pool2d(1) -> flatten -> linear(3)
    output fc
}
"""
NETWORKS = {"Plain": PLAIN, "Normed": NORMED}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data(batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(batch, 2, 6, 6, generator=generator),
            torch.randint(0, 3, (batch,), generator=generator))


def _grads(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in net.named_parameters()}


def _worker(rank: int, port: int, states: dict, out: str) -> None:
    """One DDP process: its half of the batch through each network, gradients to a file."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    try:
        x, y = _data()
        x, y = x.chunk(WORLD)[rank], y.chunk(WORLD)[rank]
        found = {}
        for name, source in NETWORKS.items():
            net = cnnc.compile(source=source, network=name)
            net.load_state_dict(states[name])
            model = DistributedDataParallel(net)
            cross_entropy(model(x), y).backward()
            found[name] = _grads(net)
        torch.save(found, Path(out) / f"rank{rank}.pt")
        # Neither process tears its connections down while the other still uses them.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _spawn(states: dict, out: Path) -> None:
    context = mp.spawn(_worker, args=(_free_port(), states, str(out)), nprocs=WORLD,
                       join=False)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not context.join(timeout=5):
            if time.monotonic() > deadline:
                pytest.fail(f"the DDP processes did not finish in {TIMEOUT_S} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()


def test_ddp_gradients_equal_one_process_over_the_whole_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path / "cache"))  # the workers inherit it
    nets = {name: cnnc.compile(source=source, network=name) for name, source in
            NETWORKS.items()}
    states = {name: net.state_dict() for name, net in nets.items()}
    _spawn(states, tmp_path)

    x, y = _data()
    cross_entropy(nets["Plain"](x), y).backward()
    expected = {"Plain": _grads(nets["Plain"])}
    halves = []
    for xh, yh in zip(x.chunk(WORLD), y.chunk(WORLD)):
        nets["Normed"].zero_grad()
        cross_entropy(nets["Normed"](xh), yh).backward()
        halves.append(_grads(nets["Normed"]))
    expected["Normed"] = {k: (halves[0][k] + halves[1][k]) / WORLD for k in halves[0]}

    for rank in range(WORLD):
        found = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for name, grads in expected.items():
            assert found[name].keys() == grads.keys()
            for key, grad in grads.items():
                assert grad.abs().sum() > 0, f"{name}.{key}: no gradient to compare"
                torch.testing.assert_close(found[name][key], grad, rtol=1e-4, atol=1e-6,
                                           msg=f"rank {rank}, {name}.{key}")


def test_the_torchrun_example_trains_on_two_cpu_processes(tmp_path):
    """examples/train_ddp.py as the README runs it, with gloo on the CPU."""
    env = {**os.environ, "CNNC_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={WORLD}", str(ROOT / "examples" / "train_ddp.py"),
               "--steps", "3", "--batch-size", "4", "--out", str(tmp_path / "ddp.pt")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "world size 2 (gloo)" in done.stdout and "step 3/3" in done.stdout
    state = torch.load(tmp_path / "ddp.pt", weights_only=True)
    cnnc.reference(ROOT / "examples" / "digits.cnn", "Digits").load_state_dict(state)
