"""The harness of the shape property tests: run a case in PyTorch and in cnnc, compare.

See tests/test_shape_properties.py for what the tests check."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from hypothesis import HealthCheck, event, settings
from hypothesis.control import currently_in_test_context
from torch import nn

import cnnc

from strategies import (
    BATCH,
    Case,
)

EXAMPLES = int(os.environ.get("CNNC_PROPERTY_EXAMPLES", "60"))

settings.register_profile(
    "cnnc-shapes",
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large],
)
PROFILE = settings.get_profile("cnnc-shapes")



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: threads only cost time (on the 2-core CI machine, too)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ================================================================ the harness


def outcome(text: str) -> None:
    """Counted in --hypothesis-show-statistics (outside Hypothesis tests: nothing)."""
    if currently_in_test_context():
        event(text)


def expect_compile_error(src: str, why: str) -> cnnc.CompileError:
    try:
        cnnc.load(source=src)
    except cnnc.CompileError as e:
        return e
    except Exception as e:  # noqa: BLE001 - anything but CompileError escaping is the bug
        pytest.fail(f"cnnc raised {type(e).__name__} (not CompileError): {e}\n"
                    f"expected a CompileError because {why}\n{src}")
    pytest.fail(f"cnnc accepted a network it must reject: {why}\n{src}")


def run_torch(case: Case):
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return case.torch_fn()


def check(case: Case) -> None:
    """The core property (see the module docstring)."""
    accepted = checked_shape(case)
    if accepted is not None:
        check_reference(case, *accepted)


def checked_shape(case: Case) -> tuple[torch.Tensor, nn.Module | None] | None:
    """PyTorch rejects (or gives an empty result) -> cnnc raises CompileError, and None;
    else cnnc accepts with PyTorch's shape, and (PyTorch's result, its module)."""
    if case.stricter:
        outcome("cnnc deliberately stricter")
        expect_compile_error(case.src, f"cnnc is deliberately stricter: {case.stricter}")
        return
    try:
        expected, module = run_torch(case)
    except Exception as e:  # noqa: BLE001 - PyTorch rejecting the configuration, any way
        outcome("PyTorch rejects")
        first_line = (str(e).splitlines() or [""])[0]
        expect_compile_error(case.src, f"PyTorch raises {type(e).__name__}: {first_line}")
        return
    if expected.numel() == 0:
        outcome("PyTorch gives an empty result")
        expect_compile_error(case.src, f"PyTorch's result {tuple(expected.shape)} is empty")
        return
    outcome("PyTorch accepts")
    try:
        graph = cnnc.load(source=case.src)
    except cnnc.CompileError as e:
        pytest.fail(f"cnnc rejects a network PyTorch accepts (giving {tuple(expected.shape)}):"
                    f"\n{case.src}\n{e}")
    got_shape = graph.output_shapes(batch=BATCH)[0]
    assert got_shape == tuple(expected.shape), (
        f"cnnc infers {got_shape}, PyTorch gives {tuple(expected.shape)}\n{case.src}")
    return expected, module


def check_reference(case: Case, expected: torch.Tensor, module: nn.Module | None) -> None:
    ref = cnnc.reference(source=case.src)
    if module is not None:
        state = {f"{case.prefix}.{k}": v for k, v in module.state_dict().items()}
        ref.load_state_dict(state)  # strict: the same keys and shapes as PyTorch's layer
    else:
        assert not ref.state_dict(), sorted(ref.state_dict())
    ref.eval()
    with torch.no_grad():
        got = ref(*case.inputs)
    assert tuple(got.shape) == tuple(expected.shape), case.src
    torch.testing.assert_close(got, expected, msg=lambda m: f"{m}\n{case.src}")


def evaluated(module: nn.Module, *xs: torch.Tensor):
    module.eval()
    return module(*xs), module


