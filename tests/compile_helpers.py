"""Shared by the compiler tests: compile a network and its reference with equal weights."""

from __future__ import annotations

import torch

import cnnc
from cnnc.ir.shapes import concrete


def randomize_buffers(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial batch-norm statistics, so folding is really tested."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buffer in module.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.1)
            elif name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)
        for name, param in module.named_parameters():
            if name.endswith("weight") and param.dim() == 1:  # batch-norm gamma
                param.copy_(torch.rand(param.shape, generator=generator) + 0.5)


def pair(source: str | None = None, path=None, network=None):
    """(compiled, reference) in eval mode with identical state."""
    if source is not None:
        net, ref = cnnc.compile(source=source, network=network), cnnc.reference(
            source=source, network=network)
    else:
        net, ref = cnnc.compile(path, network), cnnc.reference(path, network)
    randomize_buffers(ref)
    net.load_state_dict(ref.state_dict())
    return net.eval(), ref.eval()


def inputs_for(ref, batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(concrete(n.shape, batch), generator=generator)
            for n in ref.graph.input_nodes()]


def assert_same(got, expected, rtol: float = 1e-4) -> None:
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.shape == b.shape
        a, b = a.detach(), b.detach()
        finite = b[b.isfinite()]  # inputs may hold NaN and inf: scale by the finite values
        scale = max(float(finite.abs().max()), 1e-3) if finite.numel() else 1e-3
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * scale, equal_nan=True)


def assert_close_to_scale(actual, expected, what: str, tol: float) -> None:
    """Largest difference, relative to expected's largest magnitude (at least 1)."""
    scale = expected.abs().max().clamp_min(1.0)
    err = (actual.float() - expected.float()).abs().max() / scale
    assert err <= tol, f"{what}: relative error {err:.2e}"
