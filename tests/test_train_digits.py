"""examples/train_digits.py: a short real training run of the compiled module on
scikit-learn's digits learns, and its saved state_dict reloads into cnnc.reference."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import cnnc

pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "train_digits.py"


def _script():
    spec = importlib.util.spec_from_file_location("train_digits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_short_run_learns_and_its_weights_reload_into_the_reference(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path / "cache"))
    script = _script()
    out = tmp_path / "digits.pt"
    limit, batch = 256, 16
    result = script.main(["--epochs", "2", "--limit", str(limit), "--batch-size", str(batch),
                          "--out", str(out), "--device", "cpu"])
    first, last = result["history"]
    assert last["loss"] < 0.8 * first["loss"], result["history"]
    # chance is 0.1; the test set is scored with running statistics that have seen only
    # 32 batches, most of them from a network still far from trained
    assert last["train_accuracy"] >= 0.6 and result["test_accuracy"] >= 0.4, result
    printed = capsys.readouterr().out
    assert "epoch 2/2" in printed and "test accuracy" in printed

    # the saved weights, in a fresh reference module, predict what the trained module did
    state = torch.load(out, weights_only=True)
    assert state["bn1.num_batches_tracked"].item() == 2 * (limit // batch)
    reference = cnnc.reference(ROOT / "examples" / "digits.cnn", "Digits")
    reference.load_state_dict(state)  # strict: the same keys and shapes
    _, _, x_test, y_test = script.digits(0, limit)
    with torch.no_grad():
        accuracy = (reference.eval()(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy == pytest.approx(result["test_accuracy"])
    assert result["same_predictions"] == result["test_images"] == len(x_test)
    assert result["logit_gap"] < 1e-4


def test_it_refuses_a_batch_that_batch_norm_cannot_train_on(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _script().main(["--batch-size", "1"])
    assert exit_info.value.code == 2
    assert "--batch-size at least 2" in capsys.readouterr().err


def test_it_refuses_a_batch_larger_than_the_training_set():
    with pytest.raises(SystemExit) as exit_info:
        _script().main(["--limit", "4", "--batch-size", "8"])
    assert "--batch-size 8 is more than the 4 training images" in str(exit_info.value.code)
