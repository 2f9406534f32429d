"""Backward kernels of conv1d/2d/3d and conv_transpose1d/2d/3d (cnnc/runtime/grad/conv.py)
against torch.autograd of PyTorch's own operators: every padding mode, asymmetric pads,
stride, dilation, groups and depthwise, bias on and off, each subset of the gradients,
channels-last, contiguous and strided tensors, fp32, bf16 and a float64 gradcheck; the
split (atomic) weight-gradient path; no ATen compute op inside; and the copy of the
file's kernels that generated modules carry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import cnnc  # noqa: F401  (sets TRITON_INTERPRET before triton is imported)
import cnnc.runtime.grad.conv as grad_conv_module
from cnnc.ops.conv import pad_arg_for_F
from cnnc.runtime import support
from cnnc.runtime.grad import GRAD_MARKER
from cnnc.runtime.grad.conv import grad_conv, grad_conv_transpose

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
NEEDS = st.tuples(st.booleans(), st.booleans(), st.booleans()).filter(any)
LAYOUTS = st.sampled_from(["contiguous", "channels_last", "strided"])


# ---------------------------------------------------------------- shared helpers
def laid_out(t: torch.Tensor, layout: str) -> torch.Tensor:
    """t with the same values in another memory layout: channels innermost (any rank), or
    a non-dense view (every other element of a twice-as-wide last dim)."""
    if layout == "channels_last":
        return t.movedim(1, -1).contiguous().movedim(-1, 1)
    if layout == "strided":
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    return t.contiguous()


def assert_close(ours, ref, rtol=1e-4, atol=1e-5):
    """Relative closeness, the absolute floor scaled by the reference's magnitude."""
    assert ours is not None and ours.shape == ref.shape and ours.dtype == ref.dtype
    scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=atol * scale)


def check_grads(ours, refs, needs, has_bias, like):
    """Each needed gradient equals the reference (in the layout of its tensor when that
    is dense); the others are None."""
    for got, ref, need, tensor, name in zip(ours, refs, needs, like, ("input", "weight", "bias")):
        if not need or (name == "bias" and not has_bias):
            assert got is None, name
            continue
        assert_close(got, ref)
        if tensor is not None and (tensor.is_contiguous()
                                   or tensor.movedim(0 if tensor.dim() == 1 else 1,
                                                     -1).is_contiguous()):
            assert got.stride() == tensor.stride(), name


COMPUTE_OPS = ("convolution", "mm", "matmul", "linear", "dot", "pool", "batch_norm",
               "softmax", "upsample", "pad", "reflection", "replication", "col2im", "im2col",
               "scatter", "index", "sum", "mean", "mul", "add", "sub", "div", "clone",
               "_to_copy", "cat", "where")


class ComputeOps(TorchDispatchMode):
    """Records the ATen ops that compute (allocation, views and the interpreter's own
    argument copies are not compute)."""

    def __init__(self):
        super().__init__()
        self.found = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        base = str(func).split(".")[1].strip("_")
        if any(word in base for word in COMPUTE_OPS):
            self.found.add(str(func))
        return func(*args, **(kwargs or {}))


def copied_namespace(module, tmp_path: Path, after=()) -> dict:
    """The text after GRAD_MARKER, run where a generated module runs it: after the copied
    runtime support and the families copied before it (`after`), with only torch, triton,
    tl and INTERPRET besides (from a file, so that triton.jit can read the source)."""
    import triton
    import triton.language as tl

    support_text = Path(support.__file__).read_text()
    namespace: dict = {"__name__": "copied"}
    exec(compile(support_text, support.__file__, "exec"), namespace)
    namespace = {k: v for k, v in namespace.items() if not k.startswith("__")}
    namespace.update(torch=torch, triton=triton, tl=tl, INTERPRET=True, __name__="copied")
    for family in (*after, module):
        text = Path(family.__file__).read_text()
        assert text.count(GRAD_MARKER) == 1
        copied = tmp_path / f"copied_{Path(family.__file__).stem}.py"
        copied.write_text(text.split(GRAD_MARKER, 1)[1])
        exec(compile(copied.read_text(), str(copied), "exec"), namespace)
    return namespace


# ---------------------------------------------------------------- conv
@st.composite
def conv_cases(draw):
    dims = draw(st.sampled_from([1, 2, 3]))
    cap = {1: 7, 2: 6, 3: 4}[dims]
    kind = draw(st.sampled_from(["one", "groups", "depthwise"]))
    if kind == "one":
        groups, c_in, c_out = 1, draw(st.integers(1, 5)), draw(st.integers(1, 5))
    elif kind == "groups":
        groups = 2
        c_in, c_out = 2 * draw(st.integers(1, 3)), 2 * draw(st.integers(1, 3))
    else:
        c_in = groups = draw(st.integers(2, 5))
        c_out = c_in * draw(st.integers(1, 2))
    ints = lambda lo, hi: st.tuples(*[st.integers(lo, hi)] * dims)  # noqa: E731
    case = dict(
        dims=dims, groups=groups, c_in=c_in, c_out=c_out, batch=draw(st.integers(1, 2)),
        sizes=draw(ints(1, cap)), kernel=draw(ints(1, 3)), stride=draw(ints(1, 3)),
        dilation=draw(ints(1, 2)),
        pads=tuple(draw(st.tuples(st.integers(0, 2), st.integers(0, 2))) for _ in range(dims)),
        mode=draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"])),
        bias=draw(st.booleans()), needs=draw(NEEDS), x_layout=draw(LAYOUTS),
        dy_layout=draw(LAYOUTS | st.just("broadcast")), w_layout=draw(LAYOUTS))
    for size, k, d, (left, right) in zip(case["sizes"], case["kernel"], case["dilation"],
                                         case["pads"]):
        assume(size + left + right >= d * (k - 1) + 1)
        if case["mode"] == "reflect":
            assume(max(left, right) < size)
        if case["mode"] == "circular":
            assume(max(left, right) <= size)
    return case


def conv_reference(x, w, b, case, dy_layout="contiguous", dy=None):
    """(dy, autograd's (dx, dw, db)) of F.pad + F.conv{1,2,3}d."""
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    b = b.detach().requires_grad_() if b is not None else None
    mode = "constant" if case["mode"] == "zeros" else case["mode"]
    y = CONV[case["dims"]](F.pad(x, pad_arg_for_F(case["pads"]), mode=mode), w, b,
                           case["stride"], 0, case["dilation"], case["groups"])
    if dy is None and dy_layout == "broadcast":  # as the backward of y.sum() * c gives
        dy = torch.randn(1, y.shape[1], *[1] * (y.dim() - 2)).expand(y.shape)
    elif dy is None:
        dy = laid_out(torch.randn(y.shape, dtype=y.dtype), dy_layout)
    wrt = [x, w] + ([b] if b is not None else [])
    grads = torch.autograd.grad(y, wrt, dy)
    return dy, (*grads, None) if b is None else grads


def run_conv(case, dy, x, w, fn=grad_conv):
    return fn(dy, x, w, stride=case["stride"], pads=case["pads"], dilation=case["dilation"],
              groups=case["groups"], padding_mode=case["mode"], needs=case["needs"],
              has_bias=case["bias"])


def conv_tensors(case, dtype=torch.float32):
    x = torch.randn(case["batch"], case["c_in"], *case["sizes"], dtype=dtype)
    w = torch.randn(case["c_out"], case["c_in"] // case["groups"], *case["kernel"], dtype=dtype)
    b = torch.randn(case["c_out"], dtype=dtype) if case["bias"] else None
    return laid_out(x, case["x_layout"]), laid_out(w, case["w_layout"]), b


@settings(max_examples=15, deadline=None)
@given(conv_cases())
def test_conv_gradients_match_autograd(case):
    x, w, b = conv_tensors(case)
    dy, refs = conv_reference(x, w, b, case, case["dy_layout"])
    check_grads(run_conv(case, dy, x, w), refs, case["needs"], case["bias"], (x, w, b))


def _fixed_case(**changes):
    case = dict(dims=2, groups=2, c_in=4, c_out=6, batch=2, sizes=(5, 6), kernel=(3, 2),
                stride=(2, 3), dilation=(1, 2), pads=((2, 1), (0, 2)), mode="reflect",
                bias=True, needs=(True, True, True), x_layout="channels_last",
                dy_layout="contiguous", w_layout="channels_last")
    case.update(changes)
    return case


@pytest.mark.parametrize("changes", [dict(mode="zeros"), dict(mode="circular"),
                                     dict(mode="replicate", groups=4, c_in=4, c_out=8)])
def test_conv_split_weight_gradient(monkeypatch, changes):
    """The GPU's split reduction (fp32 atomics of partial sums), forced under the
    interpreter: fp32 and bf16 (whose atomic buffer is cast back); grouped and depthwise."""
    monkeypatch.setattr(grad_conv_module, "_CONV_FORCE_SPLITS", 3)
    case = _fixed_case(sizes=(6, 7), **changes)
    x, w, b = conv_tensors(case)
    dy, refs = conv_reference(x, w, b, case)
    check_grads(run_conv(case, dy, x, w), refs, case["needs"], True, (x, w, b))
    ours = run_conv(case, dy.bfloat16(), x.bfloat16(), w.bfloat16())
    assert all(g.dtype == torch.bfloat16 for g in ours)


def test_conv_alignment_is_the_largest_useful_power_of_two():
    align = grad_conv_module._conv_alignment
    assert align([1000, 512, 0], 2) == 8  # 16 bytes of bf16: ResNet's fc rows
    assert align([10, 84], 2) == 2 and align([10, 84], 4) == 2 and align([3, 6], 2) == 1
    assert align([24, 8], 4) == 4  # fp32: 16 bytes are 4 elements
    assert align([64, 4096, 0], 2) == 1  # multiples of 16: Triton sees them unaided


def test_conv_alignment_hint_keeps_gradients(monkeypatch):
    """Even channel counts below 16 (LeNet's 6 -> 16): the kernel rewrites strides as
    multiples of ALIGN, which lets Triton prove rows aligned (async copies on a GPU); the
    interpreter computes the rewrite, so a stride wrongly counted as aligned shows here.
    A conv and a conv_transpose (whose weight's unit-strided dim is the other one)."""
    real, chosen = grad_conv_module._conv_alignment, []
    monkeypatch.setattr(grad_conv_module, "_conv_alignment",
                        lambda values, size: chosen.append(real(values, size)) or chosen[-1])
    case = _fixed_case(groups=1, c_in=6, c_out=10, mode="zeros", dy_layout="channels_last")
    x, w, b = conv_tensors(case)
    dy, refs = conv_reference(x, w, b, case, case["dy_layout"])
    check_grads(run_conv(case, dy, x, w), refs, case["needs"], True, (x, w, b))
    x = laid_out(torch.randn(2, 6, 4, 5), "channels_last").requires_grad_()
    w = laid_out(torch.randn(6, 10, 2, 2), "channels_last").requires_grad_()
    y = F.conv_transpose2d(x, w, stride=2)
    dy = laid_out(torch.randn(y.shape), "channels_last")
    ours = grad_conv_transpose(dy, x.detach(), w.detach(), stride=(2, 2), padding=(0, 0),
                               output_padding=(0, 0), dilation=(1, 1), groups=1,
                               has_bias=False)
    for got, ref in zip(ours, torch.autograd.grad(y, (x, w), dy)):
        assert_close(got, ref)
    assert chosen == [2] * 4  # each launch: the weight gradient's x, then the rest


@pytest.mark.parametrize("mode", ["zeros", "replicate"])
def test_conv_bfloat16(mode):
    """bf16 tensors, fp32 accumulation: close to fp32 autograd of the same bf16 values."""
    case = _fixed_case(mode=mode, dims=3, sizes=(3, 4, 3), kernel=(2, 2, 1), stride=(1, 2, 1),
                       dilation=(1, 1, 2), pads=((1, 0), (1, 1), (0, 1)))
    x, w, b = conv_tensors(case, torch.bfloat16)
    dy, refs = conv_reference(x.float(), w.float(), b.float(), case)
    ours = run_conv(case, dy.bfloat16(), x, w)
    for got, ref in zip(ours, refs):
        assert got.dtype == torch.bfloat16
        assert_close(got.float(), ref, rtol=2e-2, atol=2e-2)


class _ConvFn(torch.autograd.Function):
    """PyTorch's forward, cnnc's backward: what gradcheck differentiates numerically."""

    @staticmethod
    def forward(ctx, x, w, b, case):
        ctx.save_for_backward(x, w)
        ctx.case = case
        with torch.no_grad():
            mode = "constant" if case["mode"] == "zeros" else case["mode"]
            return CONV[case["dims"]](F.pad(x, pad_arg_for_F(case["pads"]), mode=mode), w, b,
                                      case["stride"], 0, case["dilation"], case["groups"])

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        return (*run_conv(ctx.case, dy, x, w), None)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "circular"])
def test_conv_gradcheck_float64(mode):
    case = _fixed_case(mode=mode, batch=1, sizes=(4, 5), kernel=(2, 3), stride=(2, 1),
                       dilation=(1, 2), pads=((1, 0), (2, 1)))
    x, w, b = (t.double().requires_grad_() for t in conv_tensors(case))
    assert torch.autograd.gradcheck(lambda *t: _ConvFn.apply(*t, case), (x, w, b), fast_mode=True)


def test_conv_empty_batch():
    """A batch of 0: an empty input gradient, zero weight and bias gradients (PyTorch's)."""
    case = _fixed_case(batch=0)
    x, w, b = conv_tensors(case)
    dy, refs = conv_reference(x, w, b, case)
    check_grads(run_conv(case, dy, x, w), refs, case["needs"], True, (x, w, b))
    case = dict(stride=(2, 1), padding=(1, 0), output_padding=(1, 0), dilation=(1, 2),
                groups=2, needs=(True, True, True), bias=True)
    ours = run_transpose(case, torch.randn(0, 6, 5, 5), torch.randn(0, 4, 3, 4),
                         torch.randn(4, 3, 3, 2))
    assert ours[0].shape == (0, 4, 3, 4) and not ours[1].any() and not ours[2].any()


# ---------------------------------------------------------------- conv_transpose
@st.composite
def transpose_cases(draw):
    dims = draw(st.sampled_from([1, 2, 3]))
    cap = {1: 6, 2: 5, 3: 3}[dims]
    groups = draw(st.sampled_from([1, 2, 3]))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    ints = lambda lo, hi: st.tuples(*[st.integers(lo, hi)] * dims)  # noqa: E731
    case = dict(dims=dims, groups=groups, c_in=c_in, c_out=c_out,
                batch=draw(st.integers(1, 2)), sizes=draw(ints(1, cap)),
                kernel=draw(ints(1, 3)), stride=draw(ints(1, 3)), dilation=draw(ints(1, 2)),
                padding=draw(ints(0, 2)), output_padding=draw(ints(0, 2)),
                bias=draw(st.booleans()), needs=draw(NEEDS), x_layout=draw(LAYOUTS),
                dy_layout=draw(LAYOUTS), w_layout=draw(LAYOUTS))
    for size, k, s, d, p, op in zip(case["sizes"], case["kernel"], case["stride"],
                                    case["dilation"], case["padding"],
                                    case["output_padding"]):
        assume(op < s or op < d)
        assume((size - 1) * s - 2 * p + d * (k - 1) + op + 1 >= 1)
    return case


def run_transpose(case, dy, x, w):
    return grad_conv_transpose(dy, x, w, stride=case["stride"], padding=case["padding"],
                               output_padding=case["output_padding"],
                               dilation=case["dilation"], groups=case["groups"],
                               needs=case["needs"], has_bias=case["bias"])


@settings(max_examples=12, deadline=None)
@given(transpose_cases())
def test_conv_transpose_gradients_match_autograd(case):
    x = laid_out(torch.randn(case["batch"], case["c_in"], *case["sizes"]), case["x_layout"])
    w = laid_out(torch.randn(case["c_in"], case["c_out"] // case["groups"], *case["kernel"]),
                 case["w_layout"])
    b = torch.randn(case["c_out"]) if case["bias"] else None
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    br = b.clone().requires_grad_() if b is not None else None
    y = CONV_T[case["dims"]](xr, wr, br, case["stride"], case["padding"],
                             case["output_padding"], case["groups"], case["dilation"])
    dy = laid_out(torch.randn(y.shape), case["dy_layout"])
    refs = torch.autograd.grad(y, [xr, wr] + ([br] if b is not None else []), dy)
    refs = (*refs, None) if b is None else refs
    check_grads(run_transpose(case, dy, x, w), refs, case["needs"], case["bias"], (x, w, b))


@pytest.mark.parametrize("groups, c_out", [(2, 6), (4, 4)])  # grouped; depthwise
def test_conv_transpose_bfloat16_and_float64(groups, c_out):
    case = dict(dims=2, groups=groups, stride=(2, 1), padding=(1, 0), output_padding=(1, 0),
                dilation=(1, 2), bias=True, needs=(True, True, True))
    x, w = torch.randn(2, 4, 3, 4), torch.randn(4, c_out // groups, 3, 2)
    b = torch.randn(c_out)
    for dtype in (torch.bfloat16, torch.float64):
        xr, wr, br = (t.to(dtype).float().requires_grad_() for t in (x, w, b))
        y = F.conv_transpose2d(xr, wr, br, (2, 1), (1, 0), (1, 0), groups, (1, 2))
        dy = torch.randn(y.shape).to(dtype)
        refs = torch.autograd.grad(y, (xr, wr, br), dy.float())
        ours = run_transpose(case, dy, x.to(dtype), w.to(dtype))
        tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
        for got, ref in zip(ours, refs):
            assert got.dtype == dtype
            assert_close(got.float(), ref, rtol=tol, atol=tol)


# ---------------------------------------------------------------- what runs, and the copy
def test_conv_backward_runs_no_aten_compute_op(monkeypatch):
    monkeypatch.setattr(grad_conv_module, "_CONV_FORCE_SPLITS", 2)  # the cast kernel too
    case = _fixed_case()
    x, w, b = conv_tensors(case, torch.bfloat16)
    dy = torch.randn(2, 6, 3, 3, dtype=torch.bfloat16)
    xt, wt = torch.randn(2, 4, 3, 3), torch.randn(4, 3, 2, 2)
    dyt = torch.randn(2, 6, 5, 4)
    control = ComputeOps()
    with control:  # the detector sees PyTorch's own backward
        xr = x.float().requires_grad_()
        F.conv2d(F.pad(xr, (1, 1, 1, 1), mode="reflect"), w.float(), groups=2).sum().backward()
    assert control.found
    with ComputeOps() as ops:
        ours = run_conv(case, dy, x, w)
        transposed = grad_conv_transpose(dyt, xt, wt, stride=(1, 1), padding=(0, 0),
                                         output_padding=(0, 0), dilation=(1, 1), groups=1)
    assert not ops.found, sorted(ops.found)
    assert all(g is not None for g in (*ours, *transposed))


def test_conv_copy_after_marker_works(tmp_path):
    from cnnc.runtime.grad import conv_tile  # copied before conv

    namespace = copied_namespace(grad_conv_module, tmp_path, after=(conv_tile,))
    case = _fixed_case(dims=1, sizes=(6,), kernel=(3,), stride=(2,), dilation=(1,),
                       pads=((1, 2),), x_layout="contiguous", w_layout="contiguous")
    x, w, b = conv_tensors(case)
    dy, refs = conv_reference(x, w, b, case)
    check_grads(run_conv(case, dy, x, w, namespace["grad_conv"]), refs, case["needs"], True,
                (x, w, b))
    assert callable(namespace["grad_conv_transpose"])


SM90_SCRIPT = r'''
import json, os, sys
os.environ["TRITON_INTERPRET"] = "0"
import torch
import cnnc  # noqa: F401
import cnnc.runtime.grad.conv as C
import cnnc.runtime.grad.linear as L
from cnnc.runtime.aot import Launch, _compiling_for, _describe

with _compiling_for(90) as jit_function:
    def record(fn, grid):
        def launch(*args, **kwargs):
            entry = Launch(fn.__name__, fn.__name__, tuple(grid), 0)
            try:
                _describe(entry, fn.warmup(*args, grid=grid, **kwargs))
            except Exception as e:
                entry.error = f"{type(e).__name__}: {e}"[-300:]
            first = next(v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor))
            print(json.dumps(dict(vars(entry), dtype=str(first.dtype), tag=tag)), flush=True)
        return launch
    jit_function.__getitem__ = record
    tag = None
    C._CONV_FORCE_SPLITS = L._LINEAR_FORCE_SPLITS = 2
    cl = torch.channels_last
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.empty(8, 64, 28, 28, dtype=dtype).to(memory_format=cl)
        dy = torch.empty(8, 64, 14, 14, dtype=dtype).to(memory_format=cl)
        relu = (torch.empty_like(dy), 0.0, float("inf"))  # a channels-last y
        for groups in (1, 64):
            w = torch.empty(64, 64 // groups, 3, 3, dtype=dtype).to(memory_format=cl)
            C.grad_conv(dy, x, w, stride=(2, 2), pads=((1, 1), (1, 1)), dilation=(1, 1),
                        groups=groups, padding_mode="reflect" if groups == 1 else "zeros")
            C.grad_conv(dy, x, w, stride=(2, 2), pads=((1, 1), (1, 1)), dilation=(1, 1),
                        groups=groups, padding_mode="zeros", mask=relu)
        C.grad_conv(dy, x, w, stride=(2, 2), pads=((1, 1), (1, 1)), dilation=(1, 1),
                    groups=64, padding_mode="zeros", needs=(False, False, True))
        C.grad_conv_transpose(torch.empty(8, 32, 56, 56, dtype=dtype), x,
                              torch.empty(64, 32, 4, 4, dtype=dtype), stride=(2, 2),
                              padding=(1, 1), output_padding=(0, 0), dilation=(1, 1), groups=1)
        for mask in (None, (torch.empty(256, 64, dtype=dtype), 0.0, 6.0)):
            L.grad_linear(torch.empty(256, 64, dtype=dtype), torch.empty(256, 128, dtype=dtype),
                          torch.empty(64, 128, dtype=dtype), mask=mask)
    # Widths that are multiples of 8 (or 2) but not of 16, whose rows Triton cannot see
    # aligned unless told (ALIGN): each part alone, since inspect's `pipelined` reads the
    # first dot. ResNet's fc and LeNet's last linear; LeNet's second conv (6 -> 16 channels).
    tag = "pipelined"
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32 dots on TF32 tensor cores
    for dtype in (torch.float32, torch.bfloat16):
        for n_out, n_in, rows in ((1000, 512, 64), (10, 84, 256)):
            for needs in ((True, False, False), (False, True, True)):
                L.grad_linear(torch.empty(rows, n_out, dtype=dtype),
                              torch.empty(rows, n_in, dtype=dtype),
                              torch.empty(n_out, n_in, dtype=dtype), needs=needs)
        for needs in ((True, False, False), (False, True, True)):
            C.grad_conv(torch.empty(32, 16, 10, 10, dtype=dtype).to(memory_format=cl),
                        torch.empty(32, 6, 14, 14, dtype=dtype).to(memory_format=cl),
                        torch.empty(16, 6, 5, 5, dtype=dtype).to(memory_format=cl),
                        stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), groups=1,
                        padding_mode="zeros", needs=needs)
    # An image's channels (1: LeNet; 3: a stem) in bf16: x's 2- or 6-byte pixels are below
    # cp.async's 4 aligned bytes, so its gather stays synchronous; dy's tiles go async.
    tag = "image"
    for channels in (1, 3):
        C.grad_conv(torch.empty(32, 6, 28, 28, dtype=torch.bfloat16).to(memory_format=cl),
                    torch.empty(32, channels, 28, 28, dtype=torch.bfloat16),
                    torch.empty(6, channels, 5, 5, dtype=torch.bfloat16).to(memory_format=cl),
                    stride=(1, 1), pads=((2, 2), (2, 2)), dilation=(1, 1), groups=1,
                    padding_mode="zeros", needs=(False, True, True))
'''


def test_backward_kernels_compile_for_sm90():
    """Every kernel variant (stride phases, mode atomics, depthwise, split weight gradient,
    bias alone, transpose, casts, linear) with its GPU tiles, compiled for sm_90 without a
    GPU: Triton's compiler accepts it, and the bf16 ones (training's dtype) neither spill
    nor miss the tensor cores."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, TRITON_INTERPRET="0")
    done = subprocess.run([sys.executable, "-c", SM90_SCRIPT], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    launches = [json.loads(line) for line in done.stdout.splitlines()]
    kernels = {entry["function"] for entry in launches}
    assert kernels == {"_conv_grad_kernel", "_conv_cast_kernel",
                       "_linear_grad_kernel"}  # linear casts with conv's
    assert not [entry for entry in launches if entry["error"]]
    bf16 = [entry for entry in launches if entry["dtype"] == "torch.bfloat16"]
    assert not [entry for entry in bf16 if entry["spill_bytes"]]
    assert all(entry["tensor_cores"] for entry in bf16 if entry["has_dot"])
    # Every dot loop of these reads its operands through async copies (an image's x
    # cannot in 16 bits, see _conv_tile_dw: only dy's tiles do).
    aligned = [entry for entry in launches
               if entry["tag"] == "pipelined" and entry["function"] != "_conv_cast_kernel"]
    assert len(aligned) == 12
    assert [(e["function"], e["dtype"], e["pipelined"]) for e in aligned
            if e["pipelined"] != "all" or not e["tensor_cores"] or e["spill_bytes"]] == []
    images = [entry for entry in launches
              if entry["tag"] == "image" and entry["function"] != "_conv_cast_kernel"]
    assert [entry["pipelined"] for entry in images] == ["some", "some"]


def sm90_launches(calls: str, cut: str = "    for dtype in") -> list[dict]:
    """SM90_SCRIPT's harness (sm_90 compiles, one JSON line per launch) up to `cut`, then
    `calls`, run in a subprocess without the interpreter: the launches it recorded."""
    import json
    import os
    import subprocess
    import sys

    script = SM90_SCRIPT[:SM90_SCRIPT.index(cut)] + calls
    env = dict(os.environ, TRITON_INTERPRET="0")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()]
