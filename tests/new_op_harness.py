"""Shared by the tests of the issue-9 operators: inputs holding NaN and ±Inf, the shape
harness's property with such inputs, and operators called directly (for chunk and split,
which the front end cannot destructure yet).

`check_values` is shape_harness.check where the values may hold NaN (compared equal to
NaN) and where, given `case.info["make"]`, cnnc's initial parameters must be exactly
the ones PyTorch's layer starts with.
"""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import strategies as st
from shape_harness import checked_shape

import cnnc
from cnnc.ops.registry import Op
from cnnc.ops.signature import REQUIRED

from strategies import Case

SPECIALS = [float("nan"), float("inf"), float("-inf"), 1e30, -1e30, 0.0, -0.0, 88.0, -88.0,
            20.0, -20.0]


@st.composite
def with_specials(draw, x: torch.Tensor) -> torch.Tensor:
    """x with some entries (maybe none) replaced by NaN, ±Inf, huge values or kinks."""
    flat = x.clone().reshape(-1)
    count = draw(st.integers(0, min(4, flat.numel())))
    for _ in range(count):
        at = draw(st.integers(0, flat.numel() - 1))
        flat[at] = draw(st.sampled_from(SPECIALS))
    return flat.reshape(x.shape)


def check_values(case: Case) -> None:
    """PyTorch raises -> CompileError; an empty result -> CompileError; else the same
    shape at batch BATCH, the same initial parameters, and the same values (NaN == NaN)."""
    accepted = checked_shape(case)
    if accepted is None:
        return
    expected, module = accepted
    ref = cnnc.reference(source=case.src)
    ours = ref.state_dict()
    if "make" in case.info:  # PyTorch's initialisation, exactly
        theirs = {f"{case.prefix}.{k}": v for k, v in case.info["make"]().state_dict().items()}
        assert sorted(ours) == sorted(theirs), case.src
        for k in theirs:
            torch.testing.assert_close(ours[k], theirs[k], msg=lambda m: f"{k}: {m}\n{case.src}")
    if module is not None:
        ref.load_state_dict({f"{case.prefix}.{k}": v for k, v in module.state_dict().items()})
    else:
        assert not ours, sorted(ours)
    ref.eval()
    with torch.no_grad():
        got = ref(*case.inputs)
    torch.testing.assert_close(got, expected, equal_nan=True,
                               msg=lambda m: f"{m}\n{case.src}")


# ---------------------------------------------------------------- operators called directly

OMITTED = object()


def bind(op: Op, **given: Any):
    """The attribute record of `op` for arguments given by name (what the front end does:
    each value converted by its signature kind, defaults filled in). Raises ArgError for
    a value of the wrong kind."""
    args = {}
    for arg in op.signature[1:]:
        value = given.pop(arg.name, OMITTED)
        if value is OMITTED:
            assert arg.default is not REQUIRED, f"{op.name}() needs {arg.name}"
            value = arg.default
        args[arg.name] = arg.kind.convert(value)
    assert not given, f"{op.name}() has no arguments {sorted(given)}"
    return op.make_attrs(args)
