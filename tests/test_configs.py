"""Launch configs: pinned ones are used, the interpreter has one fixed config, and the
tuner picks the fastest candidate and remembers it across processes."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch

import cnnc
from cnnc.options import Options
from cnnc.runtime.tuner import Tuner

from launch_recording import Recording

NET = """network T {
    input x: [N, 40]
    y = x -> linear(24) -> relu
    output y
}
"""


def recorded_launch(net, x, kernel="k0_linear"):
    """One forward; its one launch of `kernel`: (module, output, (grid, arguments by name))."""
    module = sys.modules[type(net).__module__]
    launches = []
    recorder = Recording(getattr(module, kernel), lambda *launch: launches.append(launch))
    setattr(module, kernel, recorder)
    try:
        y = net(x)
    finally:
        setattr(module, kernel, recorder.real)
    (launch,) = launches
    return module, y, launch


def test_a_pinned_config_is_the_one_launched(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    net = cnnc.compile(source=NET, config="gemm:BLOCK_M=16,BLOCK_N=16,BLOCK_K=16,num_warps=2")
    ref = cnnc.reference(source=NET)
    ref.load_state_dict(net.state_dict())
    x = torch.randn(5, 40)
    _, y, (grid, kwargs) = recorded_launch(net.eval(), x)
    assert (kwargs["BLOCK_M"], kwargs["BLOCK_N"], kwargs["BLOCK_K"]) == (16, 16, 16)
    assert kwargs["num_warps"] == 2
    assert grid == (1 * 2, 1)  # 5 rows in one tile of 16, 24 features in two; no split-K
    torch.testing.assert_close(y, ref.eval()(x), rtol=1e-4, atol=1e-5)


def test_cnnc_config_pins_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CNNC_CONFIG", "elementwise:BLOCK=32; gemm:BLOCK_K=16")
    assert Options.from_environment().pinned == {"elementwise": {"BLOCK": 32},
                                                 "gemm": {"BLOCK_K": 16}}
    net = cnnc.compile(source=NET).eval()
    _, _, (_, kwargs) = recorded_launch(net, torch.randn(3, 40))
    assert kwargs["BLOCK_K"] == 16 and kwargs["BLOCK_M"] == 16  # 3 rows: the smallest tile


@pytest.mark.parametrize("text, message", [
    ("gemm", "cannot read 'gemm'"),
    ("gemm:BLOCK_M=sixty", "cannot read"),
    ("gemm:BLOCK_M=0", "cannot read"),
    ("convs:BLOCK_M=64", "no kernel family 'convs'"),
    ("gemm:BLOCK=64", "no field 'BLOCK'"),
])
def test_a_bad_config_is_a_compile_error(tmp_path, monkeypatch, text, message):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    with pytest.raises(cnnc.CompileError, match=message) as e:
        cnnc.compile(source=NET, config=text)
    assert e.value.message.startswith("config: ")
    monkeypatch.setenv("CNNC_CONFIG", text)
    with pytest.raises(cnnc.CompileError, match=message) as e:
        cnnc.compile(source=NET)
    assert e.value.message.startswith("CNNC_CONFIG: ")
    assert "family:FIELD=int" in str(e.value) or " are " in str(e.value)


def test_the_interpreter_uses_its_one_large_tile_config(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    net = cnnc.compile(source=NET).eval()
    module, _, (_, kwargs) = recorded_launch(net, torch.randn(700, 40))
    assert module.INTERPRET and not module.PINNED
    assert all(len(configs) == 1 for configs in module.CONFIGS.values())
    (gemm,) = module.CONFIGS["gemm"]
    assert gemm["BLOCK_M"] >= 1024 and gemm["BLOCK_K"] >= 512
    # Tiles are the config's caps clamped to the problem: 700 rows, 24 features, 40 inputs.
    assert (kwargs["BLOCK_M"], kwargs["BLOCK_N"], kwargs["BLOCK_K"]) == (1024, 32, 64)


# ------------------------------------------------------------------ the tuner

A = {"BLOCK": 64, "num_warps": 4}
B = {"BLOCK": 128, "num_warps": 8}
C = {"BLOCK": 256, "num_warps": 8}


def fake_bench(timings, calls):
    def bench(config):
        calls.append(config["BLOCK"])
        if timings[config["BLOCK"]] is None:
            raise RuntimeError("out of resources")  # a config the GPU cannot take
        return timings[config["BLOCK"]]
    return bench


def test_the_tuner_picks_the_fastest_and_remembers_it(tmp_path):
    path = tmp_path / "cnnc_tuning.json"
    calls = []
    tuner = Tuner(str(path))
    assert tuner.choose("k:1", [A, B, C], fake_bench({64: 3.0, 128: 1.0, 256: None}, calls)) == B
    assert calls == [64, 128, 256]
    assert tuner.choose("k:1", [A, B, C], fake_bench({}, calls)) == B  # timed once
    assert json.loads(path.read_text()) == {"k:1": B}
    # A second process reads the winner and times nothing.
    again = []
    assert Tuner(str(path)).choose("k:1", [A, B, C], fake_bench({}, again)) == B
    assert again == []
    # Another key is timed, and both are kept.
    other = Tuner(str(path))
    assert other.choose("k:2", [A, B], fake_bench({64: 0.5, 128: 1.0}, again)) == A
    assert json.loads(path.read_text()) == {"k:1": B, "k:2": A}
    # A remembered winner that is no longer a candidate (the table changed) is retimed.
    assert Tuner(str(path)).choose("k:1", [A, C], fake_bench({64: 2.0, 256: 1.0}, [])) == C


def test_a_corrupt_or_unwritable_tuning_file_costs_only_a_retune(tmp_path):
    path = tmp_path / "cnnc_tuning.json"
    path.write_text("{not json")
    assert Tuner(str(path)).choose("k", [A, B], fake_bench({64: 2.0, 128: 1.0}, [])) == B
    missing = tmp_path / "no" / "such" / "dir" / "cnnc_tuning.json"
    assert Tuner(str(missing)).choose("k", [A, B], fake_bench({64: 1.0, 128: 2.0}, [])) == A


def test_choose_config_tunes_on_a_gpu_once_per_key(tmp_path, monkeypatch):
    """The generated choose_config, as on a GPU: timed through triton.testing.do_bench,
    remembered per (kernel, size, dtype, device), persisted beside the generated file."""
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    net = cnnc.compile(source=NET)
    module = sys.modules[type(net).__module__]
    import triton.testing

    monkeypatch.setattr(module, "INTERPRET", False)
    monkeypatch.setattr(module, "CONFIGS", {"elementwise": [A, B, C]})
    monkeypatch.setattr(module, "CHOSEN", {})
    monkeypatch.setattr(module, "TUNER", Tuner(str(tmp_path / "cnnc_tuning.json")))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "FakeGPU")
    monkeypatch.setattr(triton.testing, "do_bench", lambda fn, **kw: fn())
    out = types.SimpleNamespace(is_cuda=True, dtype=torch.float16, device="cuda:0")
    calls = []
    run = fake_bench({64: 2.0, 128: 3.0, 256: 1.0}, calls)
    assert module.choose_config("elementwise", "abc", 4096, out, run) == C
    assert module.choose_config("elementwise", "abc", 4096, out, run) == C
    assert calls == [64, 128, 256]
    saved = json.loads((tmp_path / "cnnc_tuning.json").read_text())
    assert saved == {"elementwise:abc:4096:torch.float16:FakeGPU": C}
    # Another batch size is another key; a pin overrides tuning.
    assert module.choose_config("elementwise", "abc", 8192, out, run) == C
    assert calls == [64, 128, 256] * 2
    monkeypatch.setattr(module, "PINNED", {"elementwise": {"BLOCK": 512}})
    assert module.choose_config("elementwise", "abc", 4096, out, run)["BLOCK"] == 512
