"""cnnc.compile(..., cuda_graphs=True): when a captured graph is still valid, what happens
without CUDA, the refusal of dropout in training mode (all on CPU), and replays against
eager forwards and PyTorch on a CUDA GPU (marked gpu)."""

from __future__ import annotations

import pytest
import torch

import cnnc
from cnnc.runtime.graphs import GRAPHS_WITH_DROPOUT, CudaGraphs, graph_key, needs_capture

from compile_helpers import assert_same, inputs_for, randomize_buffers

CONV = """network T {
    input x: [N, 3, 8, 8]
    y = x -> conv2d(4, 3, padding=1) -> batch_norm -> relu -> flatten -> linear(5)
    output y
}"""

DROPOUT = """network D {
    input x: [N, 6]
    y = x -> linear(4) -> dropout(0.5)
    output y
}"""


def _entry(params):
    """A captured entry as CudaGraphs keeps it, without a graph (only the check reads it)."""
    return (None, [], None, params, tuple(t.data_ptr() for t in params))


def test_a_first_call_captures():
    assert needs_capture(None, (torch.ones(2),))


def test_in_place_changes_replay_without_capture():
    w, b = torch.ones(3, 2), torch.zeros(3)
    entry = _entry((w, b))
    w.data.mul_(2)  # .data edits: no version bump, same storage
    b.copy_(torch.arange(3.0))  # load_state_dict's copy: a version bump, same storage
    assert not needs_capture(entry, (w, b))


def test_new_storage_or_a_new_tensor_captures_again():
    w, b = torch.ones(3, 2), torch.zeros(3)
    entry = _entry((w, b))
    w.data = torch.ones(3, 2)  # same object, new storage: the graph reads the old one
    assert needs_capture(entry, (w, b))
    entry = _entry((w, b))
    assert needs_capture(entry, (torch.nn.Parameter(w.detach().clone()), b))


def test_the_key_separates_mode_layout_dtype_and_tf32():
    x = torch.randn(2, 3, 4, 4)
    base = graph_key(False, [x])
    assert graph_key(True, [x]) != base
    assert graph_key(False, [x.to(memory_format=torch.channels_last)]) != base
    assert graph_key(False, [x.double()]) != base
    assert graph_key(False, [torch.randn(3, 3, 4, 4)]) != base
    assert graph_key(False, [torch.randn(2, 3, 4, 4)]) == base
    saved = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = not saved
        assert graph_key(False, [x]) != base
    finally:
        torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_without_cuda_it_warns_and_computes_as_without(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        net = cnnc.compile(source=CONV, cuda_graphs=True)
    ref = cnnc.reference(source=CONV)
    randomize_buffers(ref)
    net.load_state_dict(ref.state_dict())
    net.eval(), ref.eval()
    x = inputs_for(ref, batch=2)
    assert_same(net(*x), ref(*x))


def test_training_with_dropout_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    net = cnnc.compile(source=DROPOUT)
    net._cnnc_graphs = CudaGraphs()  # what compile sets on CUDA
    x = torch.randn(2, 6)
    with pytest.raises(RuntimeError, match="dropout") as caught, torch.no_grad():
        net.train()(x)
    assert str(caught.value) == GRAPHS_WITH_DROPOUT
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 4)  # eval mode (no dropout) is fine
    # A forward that records an autograd graph never replays a graph: it trains as is.
    assert net.train()(x).grad_fn is not None


def test_graphs_are_not_pickled():
    graphs = CudaGraphs()
    graphs.entries["k"] = "a captured graph"
    import copy

    assert copy.deepcopy(graphs).entries == {}


# ------------------------------------------------------------------ on a CUDA GPU


def _cuda_pair(tmp_path, monkeypatch, source=CONV):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    ref = cnnc.reference(source=source)
    randomize_buffers(ref)
    graphed = cnnc.compile(source=source, device="cuda", cuda_graphs=True)
    graphed.load_state_dict(ref.state_dict())
    return graphed.eval(), ref.cuda().eval()


@pytest.mark.gpu
def test_replays_match_pytorch_and_return_fresh_tensors(tmp_path, monkeypatch):
    net, ref = _cuda_pair(tmp_path, monkeypatch)
    x1, x2 = torch.randn(2, 3, 8, 8, device="cuda"), torch.randn(2, 3, 8, 8, device="cuda")
    first = net(x1)  # eager, then captured
    second = net(x2)  # replayed
    third = net(x1)
    assert net._cnnc_graphs.captures == 1
    assert_same(second, ref(x2))
    assert_same(third, ref(x1))
    assert_same(first, ref(x1))  # not overwritten by later replays
    assert first.data_ptr() != third.data_ptr()


@pytest.mark.gpu
def test_one_graph_per_batch_size(tmp_path, monkeypatch):
    net, ref = _cuda_pair(tmp_path, monkeypatch)
    for batch in (1, 3, 1, 3):
        x = torch.randn(batch, 3, 8, 8, device="cuda")
        assert_same(net(x), ref(x))
    assert net._cnnc_graphs.captures == 2


@pytest.mark.gpu
def test_parameter_changes_are_seen(tmp_path, monkeypatch):
    net, ref = _cuda_pair(tmp_path, monkeypatch)
    x = torch.randn(2, 3, 8, 8, device="cuda")
    net(x), net(x)
    with torch.no_grad():
        net.y[4].weight.data.mul_(-1)  # in place: the replay reads it, no capture
        ref.y[4].weight.data.mul_(-1)
    assert_same(net(x), ref(x))
    assert net._cnnc_graphs.captures == 1
    fresh = torch.randn_like(ref.y[4].weight)
    net.y[4].weight.data = fresh.clone()  # new storage: captured again
    ref.y[4].weight.data = fresh.clone()
    assert_same(net(x), ref(x))
    assert_same(net(x), ref(x))
    assert net._cnnc_graphs.captures == 2
