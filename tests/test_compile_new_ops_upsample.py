"""Compiled upsample in every mode F.interpolate has (by size or scale_factor, with and
without align_corners) against F.interpolate, on inputs with NaN and ±Inf."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
