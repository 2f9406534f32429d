"""The compiled module: plan, input checks, cache, standalone file, folded weights, layouts."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cnnc
from cnnc.cli import main

from compile_helpers import assert_same, inputs_for, pair

ROOT = Path(__file__).resolve().parents[1]

RESIDUAL = """
network Residual {
    input x: [N, 4, 10, 10]
    stem = x -> conv2d(8, 3, padding=1, bias=false) -> batch_norm -> relu
    body = stem -> conv2d(8, 3, padding=1) -> batch_norm
    out = body -> add(stem) -> relu -> max_pool2d(2)
    logits = out -> flatten -> linear(5)
    output logits
}
"""


def test_plan_names_kernels_and_layers():
    net = cnnc.compile(source=RESIDUAL).eval()
    # the pool cannot join conv1's kernel: its input (the add's result) is the epilogue's
    assert [(p["kernel"], p["ops"]) for p in net.plan] == [
        ("k0_conv2d", ["conv2d", "batch_norm", "relu"]),
        ("k1_conv2d", ["conv2d", "batch_norm", "add", "relu", "max_pool2d"]),
        ("k2_linear", ["linear"]),
    ]
    assert net.plan[0]["layers"] == ["stem"]
    assert net.plan[1]["lines"] == [5, 6]


def test_eval_matches_reference_and_refolds_after_parameter_changes():
    net, ref = pair(source=RESIDUAL)
    (x,) = inputs_for(ref)
    assert_same(net(x), ref(x))
    # load_state_dict changes the batch-norm statistics in place: folded weights follow.
    state = ref.state_dict()
    state["stem.1.running_var"] = state["stem.1.running_var"] * 3 + 1
    state["body.1.running_mean"] = state["body.1.running_mean"] - 0.5
    ref.load_state_dict(state)
    net.load_state_dict(state)
    assert_same(net(x), ref(x))
    # an optimiser step changes a conv weight in place: folded weights follow again.
    for module in (net, ref):
        optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
        for p in module.parameters():
            p.grad = torch.ones_like(p)
        optimizer.step()
    assert_same(net(x), ref(x))


def test_channels_last_input_gives_the_same_result():
    net, ref = pair(source=RESIDUAL)
    (x,) = inputs_for(ref)
    assert_same(net(x.to(memory_format=torch.channels_last)), ref(x))


def test_wrong_inputs_raise_clear_errors():
    net = cnnc.compile(source=RESIDUAL).eval()
    with pytest.raises(cnnc.InputError, match=r"input x must have shape \[N, 4, 10, 10\]; "
                                               r"got \[2, 4, 10, 11\]"):
        net(torch.randn(2, 4, 10, 11))
    with pytest.raises(cnnc.InputError, match=r"input x must be 4-d"):
        net(torch.randn(4, 10, 10))
    with pytest.raises(cnnc.InputError, match="float64; the network computes in torch.float32"):
        net(torch.randn(2, 4, 10, 10, dtype=torch.float64))
    with pytest.raises(cnnc.InputError, match="is on meta"):
        net(torch.empty(2, 4, 10, 10, device="meta"))
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'x'"):
        net()


def test_second_compile_reuses_the_cached_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    first = cnnc.compile(source=RESIDUAL)
    path = Path(first.source_path)
    stamp = path.stat().st_mtime_ns
    second = cnnc.compile(source=RESIDUAL)
    assert second.source_path == first.source_path
    assert path.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_generated_source_parses_and_carries_no_user_text(tmp_path):
    source = RESIDUAL.replace("network Residual {", "# zzz_SECRET_COMMENT \"'\nnetwork Residual {")
    out = tmp_path / "residual.py"
    assert main(["compile", str(_write(tmp_path / "r.cnn", source)), "-o", str(out), "-q"]) == 0
    text = out.read_text()
    ast.parse(text)
    assert "zzz_SECRET_COMMENT" not in text
    assert text.count("@triton.jit") >= 4
    assert "# ---- k1_conv2d: from r.cnn" in text


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


STANDALONE = r"""
import sys
sys.modules["cnnc"] = None  # cnnc must not be importable here
sys.path.insert(0, sys.argv[1])
import torch
from residual import Residual
net = Residual().eval()
net.load_state_dict(torch.load(sys.argv[2]))
x = torch.load(sys.argv[3])
torch.save(net(x), sys.argv[4])
print(len(net.plan))
"""


def test_compiled_file_runs_without_cnnc_and_matches(tmp_path):
    out = tmp_path / "residual.py"
    assert main(["compile", str(_write(tmp_path / "r.cnn", RESIDUAL)), "-o", str(out), "-q"]) == 0
    net, ref = pair(source=RESIDUAL)
    (x,) = inputs_for(ref)
    torch.save(net.state_dict(), tmp_path / "state.pt")
    torch.save(x, tmp_path / "x.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", STANDALONE, str(tmp_path), str(tmp_path / "state.pt"),
         str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.strip()) == len(net.plan)
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), net(x), rtol=0, atol=0)


def test_run_command_reports_error_launches_and_time(capsys):
    assert main(["run", str(ROOT / "examples" / "lenet5.cnn"), "--batch", "2",
                 "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "(ok)" in out
    assert "kernel launches: 5 (PyTorch eager: 12 operator calls)" in out
    assert "time per forward" in out


def test_names_python_reserves_do_not_break_the_generated_file():
    source = """network torch { input lambda: [N, 3] input v1: [N, 3] input self: [N, 3]
        y = lambda -> add(v1) -> add(self) -> relu
        output y }"""
    net = cnnc.compile(source=source)
    assert type(net).__name__ == "torchNetwork"
    a, b, c = torch.randn(3, 2, 3)
    torch.testing.assert_close(net(a, b, c), (a + b + c).relu())


def test_int64_index_path_gives_the_same_result(monkeypatch):
    # The path taken when a tensor reaches 2^31 elements, forced on small tensors.
    source = """network T {
        input x: [N, 3, 9, 9]
        y = x -> conv2d(4, 3, padding=1) -> relu -> max_pool2d(2)
        z = y -> flatten -> linear(5)
        d = x -> conv2d(3, 3, groups=3)
        output z, d
    }"""
    net, ref = pair(source=source)
    xs = inputs_for(ref)
    module = sys.modules[Path(net.source_path).stem]
    monkeypatch.setattr(module, "wide", lambda *tensors: True)
    assert_same(net(*xs), ref(*xs))


def test_triton_imported_first_without_interpreter_says_what_to_do():
    script = ("import os; os.environ.pop('TRITON_INTERPRET', None)\n"
              "import triton, cnnc\n"
              "try:\n"
              "    cnnc.compile(source='network T { input x: [N, 3] y = x -> relu output y }')\n"
              "except cnnc.runtime.device.DeviceError as e:\n"
              "    print('DeviceError:', e)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=120)
    if torch.cuda.is_available():
        pytest.skip("with a GPU, compiled Triton is used")
    assert "DeviceError: there is no CUDA GPU and triton was imported before cnnc" in \
        result.stdout, result.stderr[-1000:]
    assert "set TRITON_INTERPRET=1" in result.stdout


def test_integer_input_is_told_to_convert_the_input():
    for module in (cnnc.compile(source=RESIDUAL), cnnc.reference(source=RESIDUAL)):
        with pytest.raises(cnnc.InputError, match=r"input x must be a floating-point tensor; "
                                                   r"got torch.int64 \(convert it with "
                                                   r"\.to\(torch.float32\)\)"):
            module(torch.ones(2, 4, 10, 10, dtype=torch.int64))


EMPTY = """
network Empty {
    input x: [N, 4, 10, 10]
    stem = x -> conv2d(8, 3, padding=1) -> batch_norm -> relu -> max_pool2d(2)
    body = stem -> conv2d(8, 3, padding=1) -> batch_norm(momentum=none) -> dropout(0.3)
    pooled = body -> add(stem) -> adaptive_avg_pool2d(1) -> flatten
    logits = pooled -> linear(5) -> softmax
    output logits, body
}
"""


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_a_batch_of_zero_gives_empty_outputs_as_pytorch_does(mode):
    net, ref = pair(source=EMPTY)
    getattr(net, mode)()
    getattr(ref, mode)()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(0, 4, 10, 10)
    got, expected = net(x), ref(x)
    assert [t.shape for t in got] == [t.shape for t in expected] == [(0, 5), (0, 8, 5, 5)]
    assert all(t.dtype == torch.float32 for t in got)
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(net.state_dict()[key], value, msg=key)
    # PyTorch's training batch norm counts an empty batch and keeps its statistics
    bn = torch.nn.BatchNorm2d(8).train(mode == "train")
    bn(torch.randn(0, 8, 5, 5))
    counted = int(bn.num_batches_tracked)
    assert int(net.state_dict()["stem.1.num_batches_tracked"]) == int(
        before["stem.1.num_batches_tracked"]) + counted
    torch.testing.assert_close(net.state_dict()["body.1.running_var"],
                               before["body.1.running_var"])
    x = torch.randn(2, 4, 10, 10)  # and the next batch is as usual
    assert_same(net.eval()(x), ref.eval()(x))


def test_a_batch_of_zero_in_one_batch_size_only_is_refused():
    net = cnnc.compile(source="""network Two { input a: [N, 3]  input b: [M, 3]
        y = a -> linear(2)  z = b -> linear(2)  output y, z }""")
    with pytest.raises(cnnc.InputError, match="the inputs give N=0, M=2: a batch of 0 must "
                                               "be empty in every batch size"):
        net(torch.randn(0, 3), torch.randn(2, 3))
    y, z = net(torch.randn(0, 3), torch.randn(0, 3))
    assert (y.shape, z.shape) == ((0, 2), (0, 2))


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_is_refused_with_the_alternatives():
    net = cnnc.compile(source=RESIDUAL).eval()
    x = torch.randn(2, 4, 10, 10)
    expected = net(x)
    message = (r"TorchScript \(torch.jit.script, torch.jit.trace\) cannot hold a network "
               r"compiled by cnnc: .* torch.compile or torch.export")
    with pytest.raises(RuntimeError, match=message):
        torch.jit.script(net)
    with pytest.raises(RuntimeError, match=message):
        torch.jit.trace(net, x)
    torch.testing.assert_close(net(x), expected, rtol=0, atol=0)  # the lock was released
