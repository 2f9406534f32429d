"""Split-K: for a small problem with a long reduction (batch-1 late layers: M=49, K=4608),
SPLIT_K programs share each tile's reduction and the last to finish applies the epilogue.
Under the interpreter with a pinned config, values equal PyTorch's."""

from __future__ import annotations

import sys

import pytest
import torch

import cnnc

from compile_helpers import assert_same
from launch_recording import Recording

CONV = """network T {
    input x: [N, 32, 5, 5]
    input r: [N, 16, 5, 5]
    y = x -> conv2d(16, 3, padding=1) -> batch_norm -> add(r) -> relu
    z = x -> conv2d(16, 3, padding=1, groups=2, bias=false)
    output y, z
}"""

LINEAR = """network T {
    input x: [N, 128]
    y = x -> linear(24) -> relu
    output y
}"""


def _grids(net, *inputs) -> dict[str, tuple]:
    """Each generated kernel's grid at one forward."""
    module = sys.modules[type(net).__module__]
    grids = {}
    names = [n for n in vars(module) if n.startswith(("k0_", "k1_"))]
    real = {n: getattr(module, n) for n in names}
    try:
        for n in names:
            setattr(module, n, Recording(real[n], lambda grid, _, n=n: grids.__setitem__(n, grid)))
        with torch.no_grad():
            out = net(*inputs)
    finally:
        for n, fn in real.items():
            setattr(module, n, fn)
    return grids, out


@pytest.mark.parametrize("batch", [1, 3])
def test_split_k_convs_equal_pytorch(tmp_path, monkeypatch, batch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    # y: 16-channel blocks of 32 input channels over 9 taps, 18 steps: 4 programs per tile;
    # z: 16 channels per group, 9 steps: 2 (each program gets at least 4 steps)
    net = cnnc.compile(source=CONV, config="conv:BLOCK_M=16,BLOCK_N=16,K_BYTES=64,SPLIT_K=4")
    with torch.no_grad():  # batch norm statistics that are not the identity
        net.get_buffer("y.1.running_mean").uniform_(-1, 1)
        net.get_buffer("y.1.running_var").uniform_(0.5, 2)
    ref = cnnc.reference(source=CONV)
    ref.load_state_dict(net.state_dict())
    net.eval(), ref.eval()
    x, r = torch.randn(batch, 32, 5, 5), torch.randn(batch, 16, 5, 5)
    grids, got = _grids(net, x, r)
    assert grids["k0_conv2d"][2] == 4 and grids["k1_conv2d"][2] == 2 * 2  # groups * SPLIT_K
    with torch.no_grad():
        assert_same(got, ref(x, r))


@pytest.mark.parametrize("batch", [1, 5])
def test_split_k_linears_equal_pytorch(tmp_path, monkeypatch, batch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    # 128 inputs in blocks of 16: 8 steps, shared by 2 programs per tile (4-way, each
    # program would get 2 steps, under the 4 it needs, so split_k halves it)
    net = cnnc.compile(source=LINEAR,
                       config="gemm:BLOCK_M=16,BLOCK_N=16,BLOCK_K=16,SPLIT_K=4").eval()
    ref = cnnc.reference(source=LINEAR).eval()
    ref.load_state_dict(net.state_dict())
    x = torch.randn(batch, 128)
    grids, got = _grids(net, x)
    assert grids["k0_linear"] == (1 * 2, 2)  # 2 tiles of features, each split in 2
    with torch.no_grad():
        assert_same(got, ref(x))


def test_split_k_only_where_few_tiles_share_a_long_reduction(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    net = cnnc.compile(source=CONV)
    module = sys.modules[type(net).__module__]
    config = {"SPLIT_K": 8}
    assert module.split_k(config, tiles=4, steps=144) == 8  # M=49, K=4608: 144 steps of 32
    assert module.split_k(config, tiles=4, steps=9) == 2  # each program at least 4 steps
    assert module.split_k(config, tiles=500, steps=144) == 1  # the grid fills the GPU
    assert module.split_k({}, tiles=1, steps=1000) == 1  # a family without the field
    # The interpreter's own config does not split: its tiles are large.
    assert module.CONFIGS["conv"][0]["SPLIT_K"] == 1
    x, r = torch.randn(1, 32, 5, 5), torch.randn(1, 16, 5, 5)
    grids, _ = _grids(net.eval(), x, r)
    assert grids["k0_conv2d"][2] == 1 and grids["k1_conv2d"][2] == 2
