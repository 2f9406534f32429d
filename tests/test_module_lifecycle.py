"""A compiled module outside the forward call: torch.save / torch.load in a fresh process
(from the cache or from a `cnnc compile -o` file), deepcopy, another process through
torch.multiprocessing, and forward from several threads at once."""

from __future__ import annotations

import copy
import importlib
import os
import pickle
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import cnnc
from cnnc.cli import main

from compile_helpers import assert_same, inputs_for, pair

NET = """
network Pickled {
    input x: [N, 3, 8, 8]
    stem = x -> conv2d(6, 3, padding=1) -> batch_norm -> relu -> max_pool2d(2)
    body = stem -> conv2d(6, 3, padding=1, bias=false) -> batch_norm -> add(stem) -> relu
    head = body -> adaptive_avg_pool2d(1) -> flatten -> linear(4)
    output head
}
"""

OTHER = """
network Other {
    input x: [N, 6]
    h = x -> linear(8) -> relu -> linear(3) -> softmax
    output h
}
"""


def _trained_net():
    """A compiled net whose state differs from a fresh one: loaded weights, running
    statistics moved by a training step, float64, eval mode, an attribute of its own."""
    net, ref = pair(source=NET)
    (x,) = inputs_for(ref, batch=3)
    net.train()(x)
    net = net.to(torch.float64).eval()
    net.note = "kept"
    return net, x.double()


CHILD = r"""
import os, pickle, sys
from pathlib import Path
import torch
if sys.argv[2] == "import-cnnc-first":
    import cnnc
assert ("cnnc" in sys.modules) == (sys.argv[2] == "import-cnnc-first")
blob = torch.load(sys.argv[1], weights_only=False)
net = blob["net"]
again = pickle.loads(pickle.dumps(net))  # loaded here, it pickles again
torch.save({"y": net(blob["x"]), "again": again(blob["x"]), "state": net.state_dict(),
            "training": net.training, "note": net.note, "dtype": net._anchor.dtype,
            "source_path": net.source_path}, sys.argv[3])
"""


@pytest.mark.parametrize("first", ["import-cnnc-first", "torch-only"])
def test_torch_save_loads_in_a_fresh_process_with_an_empty_cache(tmp_path, first):
    net, x = _trained_net()
    torch.save({"net": net, "x": x}, tmp_path / "net.pt")
    cache = tmp_path / "child-cache"
    env = dict(os.environ, CNNC_CACHE_DIR=str(cache))
    result = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "net.pt"), first,
                             str(tmp_path / "out.pt")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt")
    expected = net(x)
    torch.testing.assert_close(out["y"], expected, rtol=0, atol=0)
    torch.testing.assert_close(out["again"], expected, rtol=0, atol=0)
    assert out["state"].keys() == net.state_dict().keys()
    for key, value in net.state_dict().items():
        torch.testing.assert_close(out["state"][key], value, rtol=0, atol=0, msg=key)
    assert (out["training"], out["note"], out["dtype"]) == (False, "kept", torch.float64)
    # the kernels were regenerated into the child's own (empty) cache
    assert Path(out["source_path"]).parent == cache
    assert Path(out["source_path"]).name == Path(net.source_path).name


def test_deepcopy_is_an_independent_equal_module():
    net, x = _trained_net()
    twin = copy.deepcopy(net)
    assert type(twin) is type(net) and twin.note == "kept" and not twin.training
    torch.testing.assert_close(twin(x), net(x), rtol=0, atol=0)
    assert twin.source_path == net.source_path
    # nothing shared: a training step on the copy leaves the original as it was
    before = {k: v.clone() for k, v in net.state_dict().items()}
    twin.train()(x * 2 + 1)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)
    key = "stem.1.running_mean"
    assert not torch.equal(twin.state_dict()[key], net.state_dict()[key])


def _forward_in_child(net, x, results, done):
    """Runs in a spawned process: forward, a training step, and the net sent back."""
    y = net(x)
    net.train()(x)
    results.put((y.tolist(), sorted(os.listdir(os.environ["CNNC_CACHE_DIR"])), net))
    done.wait(120)  # the parent must receive the tensors before this process ends


def test_multiprocessing_spawn_round_trip(tmp_path, monkeypatch):
    net, x = _trained_net()
    expected = net(x)
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path / "spawned"))  # empty for the child
    ctx = mp.get_context("spawn")
    results, done = ctx.Queue(), ctx.Event()
    child = ctx.Process(target=_forward_in_child, args=(net, x, results, done))
    child.start()
    try:
        while True:
            try:
                y, cache_entries, back = results.get(timeout=1)
                break
            except queue.Empty:
                assert child.is_alive(), f"the child process ended: exit code {child.exitcode}"
    finally:
        done.set()
        child.join(60)
    assert child.exitcode == 0
    torch.testing.assert_close(torch.tensor(y, dtype=torch.float64), expected, rtol=0, atol=0)
    assert Path(net.source_path).name in cache_entries
    # the child's training step came back with the module
    net.train()(x)
    assert type(back) is type(net) and back.training
    for key, value in net.state_dict().items():
        torch.testing.assert_close(back.state_dict()[key], value, msg=key)


STANDALONE_CHILD = r"""
import sys
sys.modules["cnnc"] = None  # only the compiled file and torch
sys.path.insert(0, sys.argv[1])
import torch
blob = torch.load(sys.argv[2], weights_only=False)
torch.save(blob["net"](blob["x"]), sys.argv[3])
"""


def test_standalone_file_module_pickles_by_reference(tmp_path, monkeypatch):
    source = tmp_path / "pickled.cnn"
    source.write_text(NET)
    assert main(["compile", str(source), "-o", str(tmp_path / "lifecycle_net.py"), "-q"]) == 0
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = importlib.import_module("lifecycle_net")
        net, ref = pair(source=NET)
        standalone = module.Pickled().eval()
        standalone.load_state_dict(ref.state_dict())
        (x,) = inputs_for(ref)
        torch.save({"net": standalone, "x": x}, tmp_path / "net.pt")
    finally:
        sys.modules.pop("lifecycle_net", None)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", STANDALONE_CHILD, str(tmp_path),
                             str(tmp_path / "net.pt"), str(tmp_path / "y.pt")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), net(x), rtol=0, atol=0)


def test_forward_from_several_threads_matches_one_thread(tmp_path, monkeypatch):
    """Triton's interpreter is not thread-safe: launches take turns, across two networks
    from the cache and one from a standalone file (each carries its own support code)."""
    source = tmp_path / "other.cnn"
    source.write_text(OTHER)
    assert main(["compile", str(source), "-o", str(tmp_path / "threads_net.py"), "-q"]) == 0
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        standalone = importlib.import_module("threads_net").Other().eval()
    finally:
        sys.modules.pop("threads_net", None)
    a, ref = pair(source=NET)
    b = cnnc.compile(source=OTHER).eval()
    standalone.load_state_dict(b.state_dict())
    (xa,) = inputs_for(ref)
    xb = torch.randn(4, 6)
    work = [(a, xa), (b, xb), (standalone, xb)]
    expected = [net(x) for net, x in work]
    failures: list[str] = []
    count = 9
    start = threading.Barrier(count)

    def run(index: int) -> None:
        net, x = work[index % len(work)]
        try:
            start.wait(60)
            for _ in range(5):
                if not torch.equal(net(x), expected[index % len(work)]):
                    failures.append(f"thread {index}: a different result")
        except Exception as error:  # noqa: BLE001 - reported below
            failures.append(f"thread {index}: {type(error).__name__}: {error}"[:300])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert failures == []
    assert_same(a(xa), ref(xa))


def test_pickle_keeps_shared_tensors_shared():
    """An optimiser pickled with its network still holds the network's parameters."""
    net, _ = _trained_net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    net2, optimizer2 = pickle.loads(pickle.dumps((net, optimizer)))
    assert [id(p) for p in net2.parameters()] == [
        id(p) for group in optimizer2.param_groups for p in group["params"]]
