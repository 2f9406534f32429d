"""The newer example networks against their PyTorch twins (tests/torch_models_more.py).

The reference module's state_dict has exactly the twin's keys, in the twin's order and
with its shapes, nothing renamed; parameter counts equal the twin's and torchvision's
published ones. With the twin's weights and randomised batch-norm statistics moved in by
`load_state_dict`, eval outputs agree within 1e-4, from the reference backend at 64 px
and from compiled kernels (Triton's interpreter) at 32 px; training-mode forwards update
the running statistics alike (MobileNetV3's momentum 0.01 included).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import cnnc
from cnnc.cli import main
from cnnc.report.summary import summarize

from compile_helpers import assert_same, randomize_buffers
from torch_models_more import CNN_EXAMPLES, MODELS, PUBLISHED_PARAMS

ROOT = Path(__file__).resolve().parents[1]
NAMES = list(MODELS)

# Examples with an operator that has no Triton kernel yet: cnnc.compile raises
# CompileError naming one of the listed operators (test_needing_kernels_is_refused...),
# and their compiled tests here and in test_compile_examples.py / test_gpu.py are strict
# xfails. When the kernels land those xfails pass, which fails them: delete the entry.
NEEDS_KERNELS: dict[str, tuple[str, ...]] = {}  # network -> the operators it waits for


def needs_kernels_mark(network: str) -> list[pytest.MarkDecorator]:
    """A strict xfail expecting CompileError, for a network listed in NEEDS_KERNELS."""
    if network not in NEEDS_KERNELS:
        return []
    return [pytest.mark.xfail(raises=cnnc.CompileError, strict=True,
                              reason=f"no kernel yet for {' / '.join(NEEDS_KERNELS[network])}")]


def source_at(path: str | Path, size: int) -> str:
    """The example's text with its image input resized to size x size, nothing else changed."""
    text = (ROOT / path).read_text()
    resized, count = re.subn(r"(input \w+: \[N, 3, )\d+, \d+\]", rf"\g<1>{size}, {size}]", text)
    assert count >= 1, f"{path}: no image input line to resize"
    return resized


def _load(name: str, size: int, compiled: bool = False) -> torch.nn.Module:
    path, network = CNN_EXAMPLES[name]
    build = cnnc.compile if compiled else cnnc.reference
    return build(source=source_at(path, size), network=network,
                 include_dirs=[ROOT / "examples"])


def _twin(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    twin = MODELS[name]()
    randomize_buffers(twin, seed)  # running statistics and gammas far from 0 and 1
    return twin


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_keys_order_and_shapes_equal_the_twin(name):
    ours = cnnc.reference(*CNN_EXAMPLES[name]).state_dict()
    theirs = MODELS[name]().state_dict()
    assert list(ours) == list(theirs)
    assert [tuple(v.shape) for v in ours.values()] == [tuple(v.shape) for v in theirs.values()]


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_equal_the_twin_and_torchvision(name, capsys):
    path, network = CNN_EXAMPLES[name]
    count = sum(p.numel() for p in MODELS[name]().parameters())
    assert summarize(cnnc.load(path, network)).params == count
    assert PUBLISHED_PARAMS.get(name, count) == count
    assert main(["check", path, "--network", network]) == 0
    assert main(["summary", path, "--network", network]) == 0
    assert re.search(rf"total params: {count:,}\b", capsys.readouterr().out)


@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_reference_matches_the_twin_in_eval_mode(name):
    twin = _twin(name, seed=1).eval()
    ours = _load(name, 64).eval()
    ours.load_state_dict(twin.state_dict())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    assert_same(ours(x), twin(x), rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_training_forward_updates_running_statistics_like_the_twin(name):
    # dropout (EfficientNet, MobileNetV3) draws at random in training, but only in the
    # classifier, after every batch norm: the statistics still compare.
    twin = _twin(name, seed=3).train()
    ours = _load(name, 64).train()
    ours.load_state_dict(twin.state_dict())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    twin(x)
    ours(x)
    theirs = twin.state_dict()
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(value, theirs[key], rtol=1e-4, atol=1e-5, msg=key)


def _compiled_cases():
    for name in NAMES:
        network = CNN_EXAMPLES[name][1]
        yield pytest.param(name, marks=needs_kernels_mark(network), id=name)


@pytest.mark.parametrize("name", list(_compiled_cases()))
@torch.no_grad()
def test_compiled_matches_the_twin_in_eval_mode(name, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    twin = _twin(name, seed=5).eval()
    net = _load(name, 32, compiled=True).eval()
    net.load_state_dict(twin.state_dict())
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    assert_same(net(x), twin(x), rtol=1e-4)
