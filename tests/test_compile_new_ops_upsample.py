"""Compiled upsample in every mode F.interpolate has (by size or scale_factor, with and
without align_corners) against F.interpolate, on inputs with NaN and ±Inf."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnc

from compile_helpers import pair
from strategies import BATCH, dims_text, plant, seeds, special_values

SETTINGS = settings(max_examples=10, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
MODES = {1: ["nearest", "linear"], 2: ["nearest", "bilinear", "bicubic"],
         3: ["nearest", "trilinear"]}
SCALES = [0.5, 0.6, 1, 1.5, 1.7, 2, 2.5, 3]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))


def text(value) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(map(str, value)) + ")"
    return str(value)


@st.composite
def upsample_cases(draw):
    spatial = draw(st.integers(1, 3))
    sizes = tuple(draw(st.integers(1, 5 if spatial < 3 else 3)) for _ in range(spatial))
    mode = draw(st.sampled_from(MODES[spatial]))
    args, kw = [f'mode="{mode}"'], {"mode": mode}
    if draw(st.booleans()):
        size = tuple(draw(st.integers(1, 7)) for _ in range(spatial))
        size = size if spatial > 1 or draw(st.booleans()) else size[0]
        args += [f"size={text(size)}", "scale_factor=none"]
        kw["size"] = size
    else:
        scale = tuple(draw(st.sampled_from(SCALES)) for _ in range(spatial))
        if draw(st.booleans()):
            scale = scale[0]
        kw["scale_factor"] = scale
        args.append(f"scale_factor={text(scale)}")
        per_dim = scale if isinstance(scale, tuple) else (scale,) * spatial
        # an output of no element is a diagnostic, tested elsewhere
        sizes = tuple(max(s, 2) if f < 1 else s for s, f in zip(sizes, per_dim))
    if mode != "nearest" and draw(st.booleans()):
        corners = draw(st.booleans())
        args.append(f"align_corners={str(corners).lower()}")
        kw["align_corners"] = corners
    return sizes, args, kw, draw(seeds), draw(special_values())


@given(upsample_cases())
@SETTINGS
def test_upsample_is_f_interpolate(case):
    sizes, args, kw, seed, special = case
    c = 2
    src = (f"network n {{\n input x: {dims_text(['N', c, *sizes])}\n"
           f" y = x -> upsample({', '.join(args)})\n output y\n}}")
    x = plant(torch.randn((BATCH, c, *sizes), generator=torch.Generator().manual_seed(seed)),
              special)
    net, ref = pair(src)
    expected = F.interpolate(x, **kw)
    with torch.no_grad():
        got = net(x)
        torch.testing.assert_close(got, expected, equal_nan=True)
        torch.testing.assert_close(got, ref(x), equal_nan=True)
    assert [row["ops"] for row in net.plan] == [["upsample"]]


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("corners", [False, True])
def test_decoder_upsampling_of_a_channels_last_conv_output(mode, corners):
    """A segmentation decoder's step: a conv (channels-last output) upsampled by 2 and by a
    size, the bicubic taps reaching past the border (clamped, as PyTorch clamps them)."""
    how = f'mode="{mode}", align_corners={str(corners).lower()}'
    src = f"""
network n {{
    input x: [N, 3, 5, 4]
    a = x -> conv2d(4, 1)
    y = a -> upsample({how})
    z = a -> upsample(size=(7, 9), scale_factor=none, {how})
    output y, z
}}
"""
    net, ref = pair(src)
    x = torch.randn(BATCH, 3, 5, 4)
    with torch.no_grad():
        a = F.conv2d(x, net.state_dict()["a.weight"], net.state_dict()["a.bias"])
        y, z = net(x)
    torch.testing.assert_close(y, F.interpolate(a, scale_factor=2, mode=mode,
                                                align_corners=corners))
    torch.testing.assert_close(z, F.interpolate(a, size=(7, 9), mode=mode,
                                                align_corners=corners))


@pytest.mark.parametrize("mode,dims,corners", [
    *((m, d, c) for m, d in (("linear", 1), ("bilinear", 2), ("bicubic", 2), ("trilinear", 3))
      for c in (False, True)),
    ("nearest", 2, False)])
def test_float64_source_coordinates_are_double_as_atens(mode, dims, corners):
    """In float64 ATen computes the interpolating modes' coordinates in double (its
    opmath), nearest's in float32: sizes whose ratios float32 does not hold exactly (7 ->
    9, 5 -> 12, scale 1.7) give PyTorch's float64 values to float64 rounding, in the
    forward and (cnnc/runtime/grad/tensor.py) the backward."""
    sizes, size = (7, 5, 3)[:dims], (9, 12, 5)[:dims]
    args = [f'mode="{mode}"', f"size={text(size)}", "scale_factor=none"]
    kw = {"mode": mode, "size": size}
    if mode != "nearest":
        args.append(f"align_corners={str(corners).lower()}")
        kw["align_corners"] = corners
    src = (f"network n {{\n input x: {dims_text(['N', 2, *sizes])}\n"
           f" y = x -> upsample({', '.join(args)})\n output y\n}}")
    net = cnnc.compile(source=src, dtype=torch.float64)
    x = torch.randn((2, 2, *sizes), dtype=torch.float64,
                    generator=torch.Generator().manual_seed(3)).requires_grad_()
    expected = F.interpolate(x, **kw)
    got = net(x)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(expected)
    (want,) = torch.autograd.grad(expected, x, dy)
    (dx,) = torch.autograd.grad(got, x, dy)
    torch.testing.assert_close(dx, want, rtol=1e-12, atol=1e-12)
