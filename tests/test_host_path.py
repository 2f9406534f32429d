"""The generated forward's own Python: what it does per call besides launching kernels.

Per forward it reads the parameters with one C-level map (no dict of getattr rebuilt),
checks the inputs without building messages, and takes output shapes from a table
computed once per batch size. Counted with the launchers stubbed, on the meta device.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.utils.prune

import cnnc

from compile_helpers import assert_same, pair

ROOT = Path(__file__).resolve().parents[1]

SMALL = """network T {
    input x: [N, 3, 8, 8]
    y = x -> conv2d(4, 3, padding=1) -> batch_norm -> relu -> flatten -> linear(5)
    output y
}"""


def _stubbed(net, monkeypatch) -> list[str]:
    """Replace the generated file's launchers by no-ops; return the list they append to."""
    module = sys.modules[type(net).__module__]
    called: list[str] = []
    for name in [n for n in vars(module) if n.startswith("launch_k")]:
        monkeypatch.setattr(module, name, lambda *args, _n=name, **kw: called.append(_n))
    return called


def _calls(fn) -> int:
    """Python and C function calls made while fn runs (a launch stub counts one)."""
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count


@pytest.fixture
def resnet18(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    return cnnc.compile(ROOT / "examples" / "resnet.cnn", "ResNet18", device="meta").eval()


def test_forward_calls_do_not_grow_with_the_parameters(resnet18, monkeypatch):
    # ResNet-18 has 122 parameters and buffers and 22 launches: a forward that looks each
    # parameter up (getattr through nn.Module.__getattr__) makes hundreds of calls.
    called = _stubbed(resnet18, monkeypatch)
    x = torch.empty(2, 3, 224, 224, device="meta")
    with torch.no_grad():  # the eval forward (with grad, the differentiable one runs)
        resnet18(x)
        launches = len(called)
        assert launches == len(resnet18.plan)
        calls = _calls(lambda: resnet18(x))
    assert calls <= 3 * launches + 60, calls  # a stub is 2 calls, an allocation 1


def test_shapes_are_computed_once_per_batch_size(resnet18, monkeypatch):
    _stubbed(resnet18, monkeypatch)
    cls = type(resnet18)
    computed = []
    original = cls._shapes_eval

    def counting(sizes):
        computed.append(dict(sizes))
        return original(sizes)

    monkeypatch.setattr(cls, "_shapes_eval", staticmethod(counting))
    monkeypatch.setattr(cls, "_cnnc_shapes", {})
    for batch in (2, 2, 5, 2, 5):
        with torch.no_grad():
            out = resnet18(torch.empty(batch, 3, 224, 224, device="meta"))
        assert out.shape == (batch, 1000)
    assert computed == [{"N": 2}, {"N": 5}]


def test_the_forward_source_holds_no_per_call_lookups(resnet18):
    text = Path(resnet18.source_path).read_text()
    body = text[text.index("    def _cnnc_forward("):]
    assert "getattr" not in body
    assert "triton.cdiv" not in body
    assert "P['" not in body  # parameters by position, not by name


def test_a_replaced_parameter_is_seen(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    net, ref = pair(source=SMALL)
    x = torch.randn(2, 3, 8, 8)
    assert_same(net(x), ref(x))
    fresh = torch.randn(5, 256)
    net.y[4].weight = torch.nn.Parameter(fresh.clone())
    ref.y[4].weight = torch.nn.Parameter(fresh.clone())
    assert_same(net(x), ref(x))


def test_a_deleted_parameter_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    net = cnnc.compile(source=SMALL)
    del net.y[4]._parameters["bias"]
    with pytest.raises(AttributeError, match=r"y\.4\.bias"):
        net(torch.randn(2, 3, 8, 8))


def test_input_errors_are_unchanged(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    net = cnnc.compile(source=SMALL)
    shape = r"must have shape \[N, 3, 8, 8\]; got \[2, 3, 8, 9\]"
    with pytest.raises(cnnc.InputError, match=shape):
        net(torch.randn(2, 3, 8, 9))
    with pytest.raises(cnnc.InputError, match="must be a floating-point tensor"):
        net(torch.ones(2, 3, 8, 8, dtype=torch.long))
    with pytest.raises(cnnc.InputError, match="the network computes in torch.float32"):
        net(torch.randn(2, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(cnnc.InputError, match=r"must be 4-d"):
        net(torch.randn(2, 3, 8))


def test_a_pruned_weight_is_read_where_prune_puts_it(tmp_path, monkeypatch):
    # prune takes `weight` out of _parameters and leaves the masked tensor as an attribute.
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    net, ref = pair(source=SMALL)
    x = torch.randn(2, 3, 8, 8)
    net(x)
    for model in (net, ref):
        torch.nn.utils.prune.l1_unstructured(model.y[4], "weight", amount=0.5)
    assert "weight" not in net.y[4]._parameters
    assert_same(net(x), ref(x))


class _StubbedTriton:
    """Every Triton launch returns at once (the launchers' own work still runs)."""

    def __enter__(self):
        from triton.runtime.interpreter import InterpretedFunction
        from triton.runtime.jit import JITFunction

        self.saved = [(cls, cls.run) for cls in (InterpretedFunction, JITFunction)]
        for cls, _ in self.saved:
            cls.run = lambda fn, *args, grid, warmup, **kwargs: None
        return self

    def __exit__(self, *exc):
        for cls, original in self.saved:
            cls.run = original


def test_launchers_plan_once_per_batch_size(resnet18, monkeypatch):
    # Grids, tiles, configs, strides and index widths are worked out at the first launch of
    # a batch size and kept: later forwards build a key and launch.
    module = sys.modules[type(resnet18).__module__]
    x = torch.empty(2, 3, 224, 224, device="meta")
    with _StubbedTriton(), torch.no_grad():
        resnet18(x)

        def planned(*args, **kwargs):
            raise AssertionError("a launch was planned again")

        for name in ("choose_config", "gemm_tiles", "tile", "index_64", "split_k"):
            monkeypatch.setattr(module, name, planned)
        launches = len(resnet18.plan)
        calls = _calls(lambda: resnet18(x))
        assert calls <= 16 * launches, calls  # the launcher, its key, Triton's call
        with pytest.raises(AssertionError, match="planned again"):
            resnet18(torch.empty(3, 3, 224, 224, device="meta"))  # a new batch size


def test_a_new_layout_or_batch_size_gets_its_own_plan(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    net, ref = pair(source=SMALL)
    net.eval(), ref.eval()
    module = sys.modules[type(net).__module__]
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert_same(net(x), ref(x))
        kept = len(module.PLANS)
        assert_same(net(x), ref(x))
        assert len(module.PLANS) == kept
        # A weight replaced by one in another layout, an input in another layout, another
        # batch size: each launch whose key changed is planned again, and computes right.
        weight = net.y[0].weight.detach().contiguous()
        net.y[0].weight = torch.nn.Parameter(weight)
        assert_same(net(x), ref(x))
        assert_same(net(x.contiguous(memory_format=torch.channels_last)), ref(x))
        x = torch.randn(5, 3, 8, 8)
        assert_same(net(x), ref(x))
        assert len(module.PLANS) > kept


def test_the_dot_precision_is_worked_out_once_a_forward(resnet18, monkeypatch):
    """PyTorch's TF32 flags are read once per forward, not once per launch, and each
    launcher is given what the forward found (it follows a change of the flags at the next
    forward: tests/test_precision.py)."""
    module = sys.modules[type(resnet18).__module__]
    given: dict[str, object] = {}
    for name in [n for n in vars(module) if n.startswith("launch_k")]:
        monkeypatch.setattr(module, name, lambda *args, _n=name, **kw: given.update(
            {_n: kw.get("DOT_PRECISION")}))
    asked = []
    for flag in ("conv_precision", "dot_precision"):
        original = getattr(module, flag)
        monkeypatch.setattr(module, flag, lambda x, _f=original, _n=flag: (
            asked.append(_n), _f(x))[1])
    with torch.no_grad():
        resnet18(torch.empty(2, 3, 224, 224, device="meta"))
    assert sorted(asked) == ["conv_precision", "dot_precision"]
    dots = {n: v for n, v in given.items() if "conv2d" in n or "linear" in n}
    assert len(dots) == 21 and set(dots.values()) == {"ieee"}  # the interpreter's
    assert given["launch_k1_max_pool2d"] is None


RESIDUAL = """network T {
    input x: [N, 4, 6, 6]
    a = x -> conv2d(4, 3, padding=1) -> batch_norm -> relu
    b = a -> conv2d(4, 3, padding=1) -> batch_norm -> add(a) -> relu
    c = b -> conv2d(4, 3, padding=1) -> batch_norm -> add(b) -> relu
    d = c -> conv2d(4, 3, padding=1) -> add(c) -> relu
    e = d -> conv2d(4, 3, padding=1) -> add(d)
    y = e -> flatten -> linear(3)
    output y, e
}"""


@pytest.mark.parametrize("training", [False, True])
def test_dead_buffers_are_reused_and_values_stay_right(tmp_path, monkeypatch, training):
    """Without autograd, a value is written into the buffer of one that no later kernel
    reads (same shape and layout): fewer allocations, and the outputs still equal
    PyTorch's, at two batch sizes, forward after forward; the two outputs are two buffers."""
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    net, ref = pair(source=RESIDUAL)
    net.train(training), ref.train(training)
    text = Path(net.source_path).read_text()
    method = "_forward_train" if training else "_forward_eval"
    body = text[text.index(f"    def {method}("):]
    body = body[:body.index("    @staticmethod")]
    assert "# a buffer no later launch reads" in body
    g = torch.Generator().manual_seed(0)
    for batch in (2, 3, 2):
        x = torch.randn(batch, 4, 6, 6, generator=g)
        with torch.no_grad():
            got, want = net(x), ref(x)
        for a, b in zip(got, want):
            assert_same(a, b)
        assert got[0].data_ptr() != got[1].data_ptr()
    if training:  # the running statistics, updated in the same forwards
        for name, buffer in ref.named_buffers():
            assert_same(net.get_buffer(name), buffer)


def test_resnet18_allocates_fourteen_buffers_for_its_22_kernels(resnet18):
    text = Path(resnet18.source_path).read_text()
    body = text[text.index("    def _forward_eval("):text.index("    def _shapes_eval(")]
    assert body.count("launch_k") == 22
    assert body.count("torch.empty") == 14
    assert body.count("# a buffer no later launch reads") == 8


def test_channels_last_strides_are_torchs():
    """The forward allocates channels-last values by torch.empty_strided with these
    strides: they must be what torch.empty(memory_format=...) gives, sizes 0 and 1 too."""
    import itertools

    from cnnc.runtime.support import channels_last_strides

    for shape in itertools.product([0, 1, 3], [0, 1, 3], [0, 1, 4], [1, 5]):
        got = channels_last_strides(shape)
        assert got == torch.empty(shape, memory_format=torch.channels_last).stride(), shape
    for shape in itertools.product([0, 2], [1, 3], [0, 1, 2], [1, 4], [1, 5]):
        got = channels_last_strides(shape)
        assert got == torch.empty(shape, memory_format=torch.channels_last_3d).stride(), shape
