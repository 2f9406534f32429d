"""Property tests: every operator of LANGUAGE.md against its PyTorch namesake.

For random configurations (input shapes and every argument, spelled by position or by
name, or left to its default) each test builds the source of a one-op network and the
equivalent PyTorch call on a random batch-2 input, then checks:

- PyTorch raises (any exception)      -> cnnc.load raises CompileError, and nothing else;
- PyTorch gives a zero-sized result   -> cnnc.load raises CompileError (cnnc rejects
                                         zero-sized dims by design);
- PyTorch succeeds                    -> cnnc.load succeeds, output_shapes(batch=2) is the
                                         PyTorch shape, and cnnc.reference, given the
                                         PyTorch layer's state_dict, computes the same values.

A few configurations are deliberately stricter in cnnc (Case.stricter says which); there
cnnc must reject whatever PyTorch does.

The last tests mutate one argument of a valid call into a wrong type (or add an unknown
keyword, or one positional too many) and check that the CompileError points at it.

CNNC_PROPERTY_EXAMPLES=500 pytest tests/test_shape_properties.py explores more.
"""

from __future__ import annotations

import os
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from torch import nn

import cnnc

from strategies import (
    BATCH,
    OMIT,
    SYM,
    Case,
    Raw,
    batch_dim,
    call_text,
    concrete,
    dims_text,
    fmt,
    int_or_tuple,
    network,
    numbers,
    optional,
    seeds,
    shapes,
    spatial,
    tensors,
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
    check_reference(case, expected, module)


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


# ================================================================ conv1d / conv2d / conv3d

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
PADDING_MODES = ["zeros", "reflect", "replicate", "circular"]


@st.composite
def channels_and_groups(draw):
    """in_channels, out_channels, groups: plain, depthwise (groups = in_channels), or any."""
    in_ch = draw(st.integers(1, 6))
    mode = draw(st.sampled_from(["plain", "depthwise", "grouped", "any"]))
    if mode == "plain":
        return in_ch, draw(st.integers(1, 6)), 1
    if mode == "depthwise":
        return in_ch, in_ch * draw(st.integers(1, 2)), in_ch
    if mode == "grouped":
        g = draw(st.integers(1, 3))
        return g * draw(st.integers(1, 2)), g * draw(st.integers(1, 2)), g
    return in_ch, draw(st.integers(1, 6)), draw(st.integers(1, 4))


UNBATCHED = "no unbatched form: a *d operator takes rank * + 2 exactly"


def input_shape(draw, d: int, in_ch: int, hi: int | None = None) -> tuple[tuple, str | None]:
    """[N, C, *spatial], and None; rarely a wrong rank, and why cnnc must reject it.

    One dim short is PyTorch's unbatched form, which cnnc deliberately lacks (every input
    has the batch as dim 0); one dim more PyTorch rejects too."""
    sizes = draw(spatial(d, hi=hi))
    n = draw(batch_dim())
    rank_error = draw(st.integers(0, 19))
    if rank_error == 0:
        return (n, in_ch, *sizes[:-1]), UNBATCHED
    if rank_error == 1:  # PyTorch rejects it too (but for adaptive_avg_pool*d(1), see there)
        return (n, in_ch, *sizes, 2), "a *d operator takes rank * + 2 exactly"
    return (n, in_ch, *sizes), None


@st.composite
def conv_cases(draw):
    d = draw(st.sampled_from([1, 2, 3]))
    in_ch, out_ch, groups = draw(channels_and_groups())
    shape, stricter = input_shape(draw, d, in_ch)
    kernel = draw(int_or_tuple(d, 1, 4))
    padding_s, padding = draw(optional(st.one_of(
        int_or_tuple(d, 0, 3), st.sampled_from(["same", "valid"])), 0))
    # "same" needs stride 1 in PyTorch: draw stride 1 most of the time then
    stride_values = st.one_of(st.just(1), st.just((1,) * d), int_or_tuple(d, 1, 3)) \
        if padding == "same" else int_or_tuple(d, 1, 3)
    stride_s, stride = draw(optional(stride_values, 1))
    dilation_s, dilation = draw(optional(int_or_tuple(d, 1, 3), 1))
    groups_s, _ = draw(optional(st.just(groups), 1)) if groups == 1 else (groups, groups)
    bias_s, bias = draw(optional(st.booleans(), True))
    mode_s, mode = draw(optional(st.sampled_from(PADDING_MODES), "zeros"))
    weight_s = draw(st.sampled_from([OMIT, OMIT, OMIT, None]))  # weight=none: learned
    call = draw(call_text(f"conv{d}d", [
        ("out_channels", out_ch), ("kernel_size", kernel), ("stride", stride_s),
        ("padding", padding_s), ("dilation", dilation_s), ("groups", groups_s),
        ("bias", bias_s), ("padding_mode", mode_s), ("weight", weight_s),
    ]))
    (x,) = tensors([shape], draw(seeds))

    def torch_fn():
        m = CONV[d](in_ch, out_ch, kernel, stride=stride, padding=padding, dilation=dilation,
                    groups=groups, bias=bias, padding_mode=mode)
        return evaluated(m, x)

    return Case(network([("x", shape)], f"y = {call}"), [x], torch_fn, stricter)


@PROFILE
@given(conv_cases())
def test_conv(case):
    check(case)


@st.composite
def fixed_filter_cases(draw):
    """conv*d(..., weight=CONST): a fixed filter, spatial-only or full, or a wrong shape."""
    d = draw(st.sampled_from([1, 2, 3]))
    in_ch, out_ch, groups = draw(st.sampled_from([(1, 1, 1), (2, 3, 1), (2, 2, 2), (3, 3, 3)]))
    kernel = draw(st.tuples(*[st.integers(1, 3)] * d))
    full = (out_ch, in_ch // groups, *kernel)
    form = draw(st.sampled_from(["spatial", "full", "wrong"]))
    if form == "spatial":
        wshape = kernel
    elif form == "full":
        wshape = full
    else:
        wshape = draw(st.sampled_from([(*kernel, 2), tuple(k + 1 for k in kernel),
                                       (out_ch + 1, *full[1:])]))
    values = torch.tensor(draw(st.lists(st.sampled_from([-2, -1, 0, 1, 2, 0.5, -0.25]),
                                        min_size=int(torch.Size(wshape).numel()),
                                        max_size=int(torch.Size(wshape).numel()))),
                          dtype=torch.float64).reshape(wshape)
    shape = (SYM, in_ch, *draw(spatial(d, lo=3)))
    bias = draw(st.booleans())
    call = f"x -> conv{d}d({out_ch}, {fmt(kernel)}, groups={groups}, bias={fmt(bias)}, weight=w)"
    consts = f"const w = {fmt(values.tolist())}"
    src = network([("x", shape)], f"y = {call}", consts=consts)
    (x,) = tensors([shape], draw(seeds))
    return form, src, x, values, (d, in_ch, out_ch, groups, kernel, bias)


@PROFILE
@given(fixed_filter_cases())
def test_conv_fixed_filter(drawn):
    form, src, x, values, (d, in_ch, out_ch, groups, kernel, bias) = drawn
    if form == "wrong":
        e = expect_compile_error(src, "the const's shape is neither the kernel's nor the full")
        assert e.location is not None and e.location.text() == "w", e
        return
    m = CONV[d](in_ch, out_ch, kernel, groups=groups, bias=bias).eval()
    with torch.no_grad():
        m.weight.copy_(values.to(torch.float32).expand_as(m.weight))
        expected = m(x)
    graph = cnnc.load(source=src)
    assert graph.output_shapes(batch=BATCH)[0] == tuple(expected.shape), src
    ref = cnnc.reference(source=src)
    assert "y.weight" not in dict(ref.named_parameters()), "a fixed filter is a buffer"
    torch.testing.assert_close(ref.state_dict()["y.weight"], m.weight.detach())
    if bias:  # the learned bias comes from PyTorch's layer; the weight is the const's
        ref.load_state_dict({"y.bias": m.bias.detach()}, strict=False)
    ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(ref(x), expected, msg=lambda msg: f"{msg}\n{src}")


# ================================================================ conv_transpose*d


@st.composite
def conv_transpose_cases(draw):
    d = draw(st.sampled_from([1, 2, 3]))
    in_ch, out_ch, groups = draw(channels_and_groups())
    shape, stricter = input_shape(draw, d, in_ch, hi={1: 8, 2: 6, 3: 4}[d])
    kernel = draw(int_or_tuple(d, 1, 4))
    stride_s, stride = draw(optional(int_or_tuple(d, 1, 3), 1))
    padding_s, padding = draw(optional(int_or_tuple(d, 0, 3), 0))
    out_pad_s, out_pad = draw(optional(int_or_tuple(d, 0, 2), 0))
    groups_s, _ = draw(optional(st.just(groups), 1)) if groups == 1 else (groups, groups)
    bias_s, bias = draw(optional(st.booleans(), True))
    dilation_s, dilation = draw(optional(int_or_tuple(d, 1, 3), 1))
    call = draw(call_text(f"conv_transpose{d}d", [
        ("out_channels", out_ch), ("kernel_size", kernel), ("stride", stride_s),
        ("padding", padding_s), ("output_padding", out_pad_s), ("groups", groups_s),
        ("bias", bias_s), ("dilation", dilation_s),
    ]))
    (x,) = tensors([shape], draw(seeds))

    def torch_fn():
        m = CONV_T[d](in_ch, out_ch, kernel, stride=stride, padding=padding,
                      output_padding=out_pad, groups=groups, bias=bias, dilation=dilation)
        return evaluated(m, x)

    return Case(network([("x", shape)], f"y = {call}"), [x], torch_fn, stricter)


@PROFILE
@given(conv_transpose_cases())
def test_conv_transpose(case):
    check(case)


# ================================================================ max_pool*d / avg_pool*d

MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


@st.composite
def max_pool_cases(draw):
    d = draw(st.sampled_from([1, 2, 3]))
    shape, stricter = input_shape(draw, d, draw(st.integers(1, 3)))
    kernel = draw(int_or_tuple(d, 1, 4))
    stride_s, stride = draw(optional(st.one_of(int_or_tuple(d, 1, 3), st.none()), None))
    padding_s, padding = draw(optional(int_or_tuple(d, 0, 2), 0))
    dilation_s, dilation = draw(optional(int_or_tuple(d, 1, 3), 1))
    ceil_s, ceil = draw(optional(st.booleans(), False))
    call = draw(call_text(f"max_pool{d}d", [
        ("kernel_size", kernel), ("stride", stride_s), ("padding", padding_s),
        ("dilation", dilation_s), ("ceil_mode", ceil_s),
    ]))
    (x,) = tensors([shape], draw(seeds))

    def torch_fn():
        return MAX_POOL[d](x, kernel, stride, padding, dilation, ceil_mode=ceil), None

    return Case(network([("x", shape)], f"y = {call}"), [x], torch_fn, stricter)


@PROFILE
@given(max_pool_cases())
def test_max_pool(case):
    check(case)


@st.composite
def avg_pool_cases(draw):
    d = draw(st.sampled_from([1, 2, 3]))
    shape, stricter = input_shape(draw, d, draw(st.integers(1, 3)))
    kernel = draw(int_or_tuple(d, 1, 4))
    stride_s, stride = draw(optional(st.one_of(int_or_tuple(d, 1, 3), st.none()), None))
    padding_s, padding = draw(optional(int_or_tuple(d, 0, 2), 0))
    ceil_s, ceil = draw(optional(st.booleans(), False))
    cip_s, cip = draw(optional(st.booleans(), True))
    div_s, div = draw(optional(st.one_of(st.none(), st.integers(1, 7)), None))
    call = draw(call_text(f"avg_pool{d}d", [
        ("kernel_size", kernel), ("stride", stride_s), ("padding", padding_s),
        ("ceil_mode", ceil_s), ("count_include_pad", cip_s), ("divisor_override", div_s),
    ]))
    (x,) = tensors([shape], draw(seeds))

    def torch_fn():
        if d == 1:
            # F.avg_pool1d (and nn.AvgPool1d) have no divisor_override. The shape and the
            # errors come from avg_pool1d; the values with a divisor from avg_pool2d over
            # a one-row image, PyTorch's own route for avg_pool1d.
            y = F.avg_pool1d(x, kernel, stride, padding, ceil, cip)
            if div is not None:
                k1, s1, p1 = ((v if isinstance(v, tuple) else (v,)) for v in
                              (kernel, kernel if stride is None else stride, padding))
                y = F.avg_pool2d(x.unsqueeze(-2), (1, *k1), (1, *s1), (0, *p1), ceil, cip,
                                 div).squeeze(-2)
            return y, None
        return AVG_POOL[d](x, kernel, stride, padding, ceil, cip, div), None

    return Case(network([("x", shape)], f"y = {call}"), [x], torch_fn, stricter)


@PROFILE
@given(avg_pool_cases())
def test_avg_pool(case):
    check(case)


@pytest.mark.parametrize("divisor", ["0", "-1", "2.0", "true"])
def test_avg_pool_divisor_override_must_be_a_positive_int(divisor):
    """Stricter than PyTorch by design (LANGUAGE.md): divisor_override is a positive int."""
    src = network([("x", (SYM, 2, 6, 6))], f"y = x -> avg_pool2d(2, divisor_override={divisor})")
    e = expect_compile_error(src, "divisor_override must be a positive int")
    assert e.location.text() == divisor


# ================================================================ adaptive pools


@st.composite
def adaptive_pool_cases(draw):
    kind = draw(st.sampled_from(["avg", "max"]))
    d = draw(st.sampled_from([1, 2, 3]))
    shape, stricter = input_shape(draw, d, draw(st.integers(1, 3)), hi={1: 12, 2: 9, 3: 5}[d])
    entry = st.integers(1, 7)
    size = draw(st.one_of(
        entry,  # an int for every dim (not always dividing the input)
        st.tuples(*[st.one_of(entry, st.none())] * d),  # none keeps that dim
        st.sampled_from([None, (None,) * d]),
    ))
    op = f"adaptive_{kind}_pool{d}d"
    call = draw(st.sampled_from([f"x -> {op}({fmt(size)})", f"x -> {op}(output_size={fmt(size)})",
                                 f"{op}(x, {fmt(size)})"]))
    (x,) = tensors([shape], draw(seeds))
    fn = getattr(F, op)

    def torch_fn():
        return fn(x, size), None

    return Case(network([("x", shape)], f"y = {call}"), [x], torch_fn, stricter)


@PROFILE
@given(adaptive_pool_cases())
def test_adaptive_pool(case):
    check(case)


# ================================================================ batch_norm

BATCH_NORM = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d,
              1: nn.BatchNorm1d, 6: nn.BatchNorm3d}  # ranks 1 and 6: PyTorch rejects them


@st.composite
def batch_norm_cases(draw):
    rank = draw(st.sampled_from([2, 3, 4, 5, 2, 3, 4, 5, 1, 6]))
    shape = (SYM, *draw(st.tuples(*[st.integers(1, 4)] * (rank - 1))))
    eps_s, eps = draw(optional(st.sampled_from([1e-5, 1e-3, 0.1, 1, 0.0, 2.5e-2, -1e-5]), 1e-5))
    mom_s, momentum = draw(optional(st.sampled_from([None, 0.1, 0.5, 1.0, 0.0, 1, 0.3, -0.5]),
                                    0.1))
    affine_s, affine = draw(optional(st.booleans(), True))
    track_s, track = draw(optional(st.booleans(), True))
    call = draw(call_text("batch_norm", [
        ("eps", eps_s), ("momentum", mom_s), ("affine", affine_s),
        ("track_running_stats", track_s),
    ]))
    (x,) = tensors([shape], draw(seeds))
    channels = shape[1] if rank > 1 else 1

    def make():
        return BATCH_NORM[rank](channels, eps=eps, momentum=momentum, affine=affine,
                                track_running_stats=track)

    def torch_fn():
        m = make()
        if track:  # running statistics other than the initial ones
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
        if affine:
            m.weight.uniform_(0.5, 2)
            m.bias.uniform_(-1, 1)
        return evaluated(m, x)

    # PyTorch refuses eps=0 in training (and with batch statistics), not in eval mode
    # with running statistics; cnnc refuses it always.
    stricter = "batch_norm eps must be above 0" if eps == 0 else None
    case = Case(network([("x", shape)], f"y = {call}"), [x], torch_fn, stricter)
    case.info.update(make=make, eps=eps)
    return case


@PROFILE
@given(batch_norm_cases())
def test_batch_norm(case):
    check(case)


@PROFILE
@given(batch_norm_cases())
def test_batch_norm_training_updates_buffers_as_pytorch(case):
    """In training mode: batch statistics, and the running buffers (num_batches_tracked,
    momentum=none's cumulative average) move exactly as nn.BatchNorm's do, over two steps."""
    try:
        run_torch(case)
    except Exception:  # noqa: BLE001 - configurations PyTorch rejects: see test_batch_norm
        assume(False)
    assume(case.info["eps"] != 0)  # refused by cnnc (test_batch_norm checks that)
    m = case.info["make"]().train()
    ref = cnnc.reference(source=case.src).train()
    ref.load_state_dict({f"y.{k}": v for k, v in m.state_dict().items()})
    (x,) = case.inputs
    for step in range(2):
        xs = x * (step + 1) + step
        with torch.no_grad():
            torch.testing.assert_close(ref(xs), m(xs), msg=lambda msg: f"{msg}\n{case.src}")
    theirs = {f"y.{k}": v for k, v in m.state_dict().items()}
    ours = ref.state_dict()
    assert sorted(ours) == sorted(theirs)
    for k in theirs:
        torch.testing.assert_close(ours[k], theirs[k], msg=lambda msg: f"{k}: {msg}\n{case.src}")


# ================================================================ linear


@st.composite
def linear_cases(draw):
    rank = draw(st.sampled_from([1, 2, 2, 3, 3, 4]))
    shape = draw(shapes(rank, rank, hi=6, dim0=batch_dim()))
    out_features = draw(st.integers(1, 6))
    bias_s, bias = draw(optional(st.booleans(), True))
    call = draw(call_text("linear", [("out_features", out_features), ("bias", bias_s)]))
    (x,) = tensors([shape], draw(seeds))

    def torch_fn():
        return evaluated(nn.Linear(x.shape[-1], out_features, bias=bias), x)

    stricter = "linear() on the batch dim (a rank-1 [N] input)" if shape == (SYM,) else None
    return Case(network([("x", shape)], f"y = {call}"), [x], torch_fn, stricter)


@PROFILE
@given(linear_cases())
def test_linear(case):
    check(case)


# ================================================================ flatten, softmax, dropout


def dim_index(rank: int) -> st.SearchStrategy:
    """A dim for a rank-`rank` tensor, sometimes one out of range."""
    return st.integers(-rank - 1, rank)


@st.composite
def flatten_cases(draw):
    shape = draw(shapes(1, 5, hi=3, dim0=batch_dim()))
    rank = len(shape)
    start_s, start = draw(optional(dim_index(rank), 1))
    end_s, end = draw(optional(dim_index(rank), -1))
    call = draw(call_text("flatten", [("start_dim", start_s), ("end_dim", end_s)]))
    (x,) = tensors([shape], draw(seeds))
    return Case(network([("x", shape)], f"y = {call}"), [x],
                lambda: (torch.flatten(x, start, end), None))


@PROFILE
@given(flatten_cases())
def test_flatten(case):
    check(case)


@st.composite
def softmax_cases(draw):
    op = draw(st.sampled_from(["softmax", "log_softmax"]))
    shape = draw(shapes(1, 4, hi=4, dim0=batch_dim()))
    dim_s, dim = draw(optional(dim_index(len(shape)), 1))
    call = draw(call_text(op, [("dim", dim_s)]))
    (x,) = tensors([shape], draw(seeds))
    fn = getattr(F, op)
    return Case(network([("x", shape)], f"y = {call}"), [x],
                lambda: (fn(x, dim=dim), None))


@PROFILE
@given(softmax_cases())
def test_softmax(case):
    check(case)


@st.composite
def dropout_cases(draw):
    shape = draw(shapes(1, 4, hi=4))
    p_s, p = draw(optional(st.one_of(st.floats(0, 1), st.sampled_from([0, 1, -0.5, 1.5, -1, 2])),
                           0.5))
    call = draw(call_text("dropout", [("p", p_s)]))
    (x,) = tensors([shape], draw(seeds))
    case = Case(network([("x", shape)], f"y = {call}"), [x],
                lambda: evaluated(nn.Dropout(p), x))
    case.info["p"] = p
    return case


@PROFILE
@given(dropout_cases())
def test_dropout(case):
    check(case)
    p = case.info["p"]
    if p in (0, 1):  # deterministic in training mode too: identity, or all zeros
        ref = cnnc.reference(source=case.src).train()
        with torch.no_grad():
            torch.testing.assert_close(ref(case.inputs[0]), F.dropout(case.inputs[0], p, True))


# ================================================================ activations

PLAIN_ACTIVATIONS = {
    "relu": F.relu, "relu6": F.relu6, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
    "silu": F.silu, "hardsigmoid": F.hardsigmoid, "hardswish": F.hardswish,
    "identity": lambda x: x,
}


@st.composite
def activation_cases(draw):
    op = draw(st.sampled_from([*PLAIN_ACTIVATIONS, "leaky_relu", "elu", "gelu"] * 1))
    shape = draw(shapes(1, 4, hi=5, dim0=batch_dim()))
    (x,) = tensors([shape], draw(seeds))
    x = x * 4  # reach the kinks of relu6, hardsigmoid, hardswish
    if op in PLAIN_ACTIVATIONS:
        fn = PLAIN_ACTIVATIONS[op]
        call = draw(call_text(op, []))
        torch_fn = lambda: (fn(x), None)  # noqa: E731
    elif op == "leaky_relu":
        slope_s, slope = draw(optional(numbers(), 0.01))
        call = draw(call_text(op, [("negative_slope", slope_s)]))
        torch_fn = lambda: (F.leaky_relu(x, slope), None)  # noqa: E731
    elif op == "elu":
        alpha_s, alpha = draw(optional(numbers(), 1.0))
        call = draw(call_text(op, [("alpha", alpha_s)]))
        torch_fn = lambda: (F.elu(x, alpha), None)  # noqa: E731
    else:
        approx_s, approx = draw(optional(st.sampled_from(["none", "tanh", "sigmoid", "Tanh"]),
                                         "none"))
        call = draw(call_text(op, [("approximate", approx_s)]))
        torch_fn = lambda: (F.gelu(x, approximate=approx), None)  # noqa: E731
    return Case(network([("x", shape)], f"y = {call}"), [x], torch_fn)


@PROFILE
@given(activation_cases())
def test_activation(case):
    check(case)


# ================================================================ add / mul


def sym_broadcast(a: tuple, b: tuple) -> tuple | str:
    """cnnc's broadcasting of declared shapes (SYM for the batch): the shape, "bad" where
    sizes clash, or "batch" where the batch meets a fixed size other than 1."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        elif SYM in (x, y):
            return "batch"
        else:
            return "bad"
    return tuple(reversed(out))


@st.composite
def operand_shape(draw, a: tuple) -> tuple:
    """A shape to broadcast with `a`: each dim aligned from the right is a's, 1 or another
    size; sometimes fewer or more dims."""
    rank = draw(st.integers(1, len(a) + 1))
    dims = []
    for i in range(1, rank + 1):
        mine = a[-i] if i <= len(a) else None
        choices = [st.integers(1, 4), st.just(1)]
        if mine is not None and (mine != SYM or i == rank):  # only dim 0 may be the batch
            choices += [st.just(mine)] * 3
        dims.append(draw(st.one_of(*choices)))
    dims.reverse()
    dims[0] = draw(st.sampled_from([dims[0], dims[0], SYM]))
    if len(dims) == len(a) and a[0] == SYM:
        dims[0] = draw(st.sampled_from([SYM, SYM, SYM, 1, 2]))
    return tuple(dims)


def nice_number():
    return st.sampled_from([0.5, -1.5, 2.0, 1e-3, 0.0, 3.25])


@st.composite
def arithmetic_cases(draw):
    op = draw(st.sampled_from(["add", "mul"]))
    a = draw(shapes(1, 4, hi=4, dim0=st.sampled_from([SYM, SYM, SYM, 1, 2])))
    n_others = draw(st.sampled_from([0, 1, 1, 2, 2, 3]))  # none: torch.add(a) raises too
    others, inputs = [], [("a", a)]
    for name in "bcd"[:n_others]:
        if draw(st.integers(0, 3)) == 0:
            others.append(draw(st.one_of(st.integers(-3, 3), nice_number())))
        else:
            inputs.append((name, draw(operand_shape(a))))
            others.append(Raw(name))
    args = [fmt(o) for o in others]
    stmt = draw(st.sampled_from([f"y = a -> {op}({', '.join(args)})",
                                 f"y = {op}({', '.join(['a', *args])})"]))
    xs = tensors([s for _, s in inputs], draw(seeds))
    by_name = {name: x for (name, _), x in zip(inputs, xs)}
    operands = [by_name["a"]] + [by_name[o.text] if isinstance(o, Raw) else o for o in others]

    def torch_fn():
        fn = torch.add if op == "add" else torch.mul
        y = fn(*operands[:2])  # torch.add(a) alone raises, as add() alone must
        for o in operands[2:]:
            y = fn(y, o)
        return y, None

    shape, stricter = a, None
    for _, s in inputs[1:]:
        shape = sym_broadcast(shape, s)
        if shape == "batch":
            stricter = "add/mul do not broadcast the batch dim N against a fixed size"
        if isinstance(shape, str):
            break
    return Case(network(inputs, stmt), xs, torch_fn, stricter)


@PROFILE
@given(arithmetic_cases())
def test_add_mul(case):
    check(case)


# ================================================================ concat


@st.composite
def concat_cases(draw):
    rank = draw(st.integers(1, 4))
    k = draw(st.sampled_from([1, 2, 2, 3]))  # one tensor: torch.cat of one is a copy
    dim_s, dim = draw(optional(dim_index(rank), 1))
    base = list(draw(shapes(rank, rank, hi=4, dim0=st.sampled_from([SYM, SYM, 2]))))
    inputs = []
    for name in "abc"[:k]:
        s = list(base)
        if -rank <= dim < rank and s[dim] != SYM:
            s[dim] = draw(st.integers(1, 4))
        trouble = draw(st.integers(0, 9))
        if trouble == 0:  # another dim differs
            i = draw(st.integers(0, rank - 1))
            s[i] = draw(st.sampled_from([1, 2, 3, SYM])) if i == 0 else draw(st.integers(1, 4))
        elif trouble == 1:  # another rank
            s = s + [2] if draw(st.booleans()) or rank == 1 else s[:-1]
        inputs.append((name, tuple(s)))
    shapes_ = [s for _, s in inputs]
    args = [n for n, _ in inputs[1:]] + ([] if dim_s is OMIT else [f"dim={dim}"])
    stmt = draw(st.sampled_from([
        f"y = a -> concat({', '.join(args)})" if args else "y = a -> concat",
        f"y = concat({', '.join(['a', *args])})",
    ]))
    xs = tensors(shapes_, draw(seeds))
    stricter = None
    if len({len(s) for s in shapes_}) == 1:
        for i in range(len(shapes_[0])):
            column = {s[i] for s in shapes_}
            if SYM in column and len(column) > 1:
                stricter = "concat() does not mix the batch dim N with a fixed size"
    return Case(network(inputs, stmt), xs, lambda: (torch.cat(xs, dim=dim), None), stricter)


@PROFILE
@given(concat_cases())
def test_concat(case):
    check(case)


# ================================================================ upsample


@st.composite
def upsample_cases(draw):
    rank = draw(st.sampled_from([3, 4, 5, 3, 4, 5, 2, 6]))
    hi = {2: 4, 3: 8, 4: 6, 5: 4, 6: 3}[rank]
    shape = (SYM, *draw(st.tuples(*[st.integers(1, hi)] * (rank - 1))))
    scale_value = st.one_of(st.integers(1, 3), st.sampled_from([0.5, 1.5, 2.5, 0.75, 1.3, 0.3,
                                                                2.0, 0.25, 0.1, 0, -1]))
    spatial_dims = max(rank - 2, 1)
    scale_s, scale = draw(optional(st.one_of(
        scale_value,
        st.tuples(*[scale_value] * spatial_dims),
        st.lists(scale_value, min_size=1, max_size=4).map(tuple),
    ), 2))
    call = draw(call_text("upsample", [("scale_factor", scale_s)]))
    (x,) = tensors([shape], draw(seeds))

    def torch_fn():
        return F.interpolate(x, scale_factor=scale, mode="nearest"), None

    return Case(network([("x", shape)], f"y = {call}"), [x], torch_fn)


@PROFILE
@given(upsample_cases())
def test_upsample(case):
    check(case)


# ================================================================ wrong argument types

WRONG = {  # kind -> wrong-type spellings (each must be rejected wherever the kind goes)
    "int": ['"3"', "true", "2.5", "(2, 2)", "x", "none", "relu"],
    "ints": ['"3"', "true", "2.5", "x", "none", "relu", "@LONG", "@SHORT", "@STRING_IN"],
    "opt_ints": ['"3"', "true", "2.5", "x", "@LONG", "@SHORT", "@STRING_IN"],  # none is valid
    "padding": ['"full"', "true", "2.5", "x", "none", "@LONG", "@SHORT"],
    "bool": ["1", '"true"', "x", "none", "0.5", "(true,)"],
    "choice": ["1", '"Zeros"', "x", "true", "none", "(1, 2)"],
    "float": ['"0.1"', "x", "(0.1, 0.2)", "true", "none"],
    "opt_float": ['"0.1"', "x", "(0.1, 0.2)", "true"],
    "scale": ['"2"', "x", "true", "none", "(2, 2, 2, 2)"],
    "sizes": ['"2"', "x", "2.5", "true", "@LONG"],
    "filter": ["3", '"w"', "x", "(1, 2)"],
    "opt_int": ['"3"', "true", "2.5", "x", "(2, 2)"],
    "tensor": ["1", '"a"', "(1, 2)", "true", "none"],
    "tensor_or_number": ['"a"', "true", "(1, 2)", "none", "relu"],
}

X4 = (SYM, 4, 8, 8)
SHAPE_FOR = {1: (SYM, 4, 8), 2: X4, 3: (SYM, 4, 5, 5, 5)}

# op -> (spatial dims, input shape, [(argument, valid spelling, kind)])
SPECS: dict[str, tuple[int, tuple, list[tuple[str, str, str]]]] = {}
for _d in (1, 2, 3):
    _t = fmt((2,) * _d)
    SPECS[f"conv{_d}d"] = (_d, SHAPE_FOR[_d], [
        ("out_channels", "4", "int"), ("kernel_size", "3", "ints"), ("stride", _t, "ints"),
        ("padding", '"same"', "padding"), ("dilation", "1", "ints"), ("groups", "2", "int"),
        ("bias", "false", "bool"), ("padding_mode", '"reflect"', "choice"),
        ("weight", "none", "filter"),
    ])
    SPECS[f"conv_transpose{_d}d"] = (_d, SHAPE_FOR[_d], [
        ("out_channels", "4", "int"), ("kernel_size", "3", "ints"), ("stride", "2", "ints"),
        ("padding", "1", "ints"), ("output_padding", "1", "ints"), ("groups", "2", "int"),
        ("bias", "true", "bool"), ("dilation", "1", "ints"),
    ])
    SPECS[f"max_pool{_d}d"] = (_d, SHAPE_FOR[_d], [
        ("kernel_size", "2", "ints"), ("stride", "none", "opt_ints"), ("padding", "1", "ints"),
        ("dilation", "1", "ints"), ("ceil_mode", "true", "bool"),
    ])
    SPECS[f"avg_pool{_d}d"] = (_d, SHAPE_FOR[_d], [
        ("kernel_size", "2", "ints"), ("stride", _t, "opt_ints"), ("padding", "1", "ints"),
        ("ceil_mode", "false", "bool"), ("count_include_pad", "false", "bool"),
        ("divisor_override", "3", "opt_int"),
    ])
    for _k in ("avg", "max"):
        SPECS[f"adaptive_{_k}_pool{_d}d"] = (_d, SHAPE_FOR[_d], [
            ("output_size", "3", "sizes"),
        ])
SPECS.update({
    "batch_norm": (2, X4, [("eps", "0.001", "float"), ("momentum", "0.1", "opt_float"),
                           ("affine", "true", "bool"), ("track_running_stats", "false", "bool")]),
    "linear": (2, X4, [("out_features", "5", "int"), ("bias", "false", "bool")]),
    "flatten": (2, X4, [("start_dim", "1", "int"), ("end_dim", "-1", "int")]),
    "softmax": (2, X4, [("dim", "1", "int")]),
    "log_softmax": (2, X4, [("dim", "-1", "int")]),
    "dropout": (2, X4, [("p", "0.2", "float")]),
    "leaky_relu": (2, X4, [("negative_slope", "0.2", "float")]),
    "elu": (2, X4, [("alpha", "1.0", "float")]),
    "gelu": (2, X4, [("approximate", '"tanh"', "choice")]),
    "upsample": (2, X4, [("scale_factor", "2", "scale")]),
    "add": (2, X4, [("others", "x", "tensor_or_number")]),  # variadic: by position only
    "mul": (2, X4, [("others", "2", "tensor_or_number")]),
    "concat": (2, X4, [("others", "x", "tensor"), ("dim", "1", "int")]),
    **{op: (2, X4, []) for op in [*PLAIN_ACTIVATIONS]},
})
VARIADIC = {"add", "mul", "concat"}  # their first argument is positional-only


def wrong_spelling(d: int, choice: str) -> str:
    if choice == "@LONG":
        return fmt((2,) * (d + 1))
    if choice == "@SHORT":
        return "()" if d == 1 else fmt((2,) * (d - 1))
    if choice == "@STRING_IN":
        return "(" + ", ".join(['"2"'] + ["2"] * (d - 1)) + ("," if d == 1 else "") + ")"
    return choice


@st.composite
def mutated_calls(draw):
    """A valid call with one argument made wrong; returns (src, line, span of the culprit)."""
    op = draw(st.sampled_from(sorted(SPECS)))
    d, shape, spec = SPECS[op]
    args = [(name, valid) for name, valid, _ in spec]
    mutations = ["type"] * 3 if spec else []
    mutations += ["keyword"] + ([] if op in VARIADIC else ["positional"])
    mutation = draw(st.sampled_from(mutations))
    culprit = None
    if mutation == "type":
        i = draw(st.integers(0, len(spec) - 1))
        name, valid, kind = spec[i]
        text = wrong_spelling(d, draw(st.sampled_from(WRONG[kind])))
        args[i] = (name, text)
        culprit = i
        # The tensors after the input have no name the user knows: say what was found.
        mention = "; found " if name == "others" else f"`{name}`"
    if op in VARIADIC:  # every positional argument joins the tensors: spell the rest by name
        n_positional = 1
    elif mutation == "positional":
        n_positional = len(args)
    else:
        n_positional = draw(st.integers(0, len(args)))
    parts = []  # (text, is the culprit)
    for i, (name, text) in enumerate(args):
        parts.append((text if i < n_positional else f"{name}={text}", i == culprit))
    if mutation == "keyword":
        bogus = draw(st.sampled_from(["bogus=1", "kernel=3", "strides=2", "inplace=true",
                                      "input=x"]))
        at = draw(st.integers(n_positional, len(parts)))
        parts.insert(at, (bogus, True))
        mention = f"`{bogus.split('=')[0]}`"
    elif mutation == "positional":  # one positional argument too many
        parts.append(("7", True))
        mention = "the int 7"
    prefix = f"    y = a -> {op}("
    text, span = prefix, None
    for j, (part, is_culprit) in enumerate(parts):
        if j:
            text += ", "
        if is_culprit:
            span = (len(text) + 1, len(text) + len(part) + 1)  # 1-based, end exclusive
        text += part
    text += ")"
    src = "\n".join([
        "# a network with one wrong argument",
        "network T {",
        f"    input x: {dims_text(shape)}",
        "    a = x -> relu",
        text,
        "    output y",
        "}",
    ]) + "\n"
    return src, 5, span, mention


@PROFILE
@given(mutated_calls())
def test_wrong_argument_is_located(drawn):
    src, line, (start, end), mention = drawn
    e = expect_compile_error(src, "one argument has the wrong type, or is unknown or extra")
    assert mention in e.message, f"the message does not mention {mention}\n{e}"
    loc = e.location
    assert loc is not None, f"no location\n{src}\n{e}"
    culprit = src.splitlines()[line - 1][start - 1:end - 1]
    assert (loc.line, loc.end_line) == (line, line), f"points at {loc}, not at {culprit}\n{e}"
    assert start <= loc.col and loc.end_col <= end, (
        f"points at {loc.text()!r} ({loc.col}-{loc.end_col}), not inside {culprit!r} "
        f"({start}-{end})\n{e}")
    assert str(loc).endswith(f":{loc.line}:{loc.col}")
    assert re.search(rf"^ *{line} \| ", str(e), re.M), str(e)  # the quoted line


def test_wrong_type_examples_point_at_the_argument():
    """A few spelled-out cases of the property above."""
    cases = {
        'conv2d(4, "3")': '"3"',
        "conv2d(4, (3, 3, 3))": "(3, 3, 3)",
        "conv2d(4, 3, stride=x)": "x",
        "conv2d(4, 3, paddin=1)": "paddin",
        "max_pool2d(2, ceil_mode=1)": "1",
        "linear(x)": "x",
        "upsample(scale_factor=(2, 2, 2, 2))": "(2, 2, 2, 2)",
        "softmax(dim=1.0)": "1.0",
    }
    for call, culprit in cases.items():
        src = network([("x", X4)], f"y = x -> {call}")
        e = expect_compile_error(src, "a wrong argument")
        assert e.location.text() == culprit, (call, str(e))


# ================================================================ regression tests for the
# bugs found by the properties above (fixed; each test pins the fixed behaviour)


def test_bug1_upsample_one_tuple_on_1d_input():
    """F.interpolate(x, scale_factor=(2,)) on [N, C, L] is fine; so is Ints' (3,) for
    conv1d's kernel_size. upsample rejected it (and printed the tuple as "(2)")."""
    src = network([("x", (SYM, 2, 5))], "y = x -> upsample(scale_factor=(2,))")
    x = torch.randn(BATCH, 2, 5)
    check(Case(src, [x], lambda: (F.interpolate(x, scale_factor=(2,), mode="nearest"), None)))


def test_bug2_avg_pool3d_input_smaller_than_window():
    """PyTorch's avg_pool3d (only the 3-d one) needs every unpadded input size >= the
    window: "input image (T: 2 H: 4 W: 4) smaller than kernel size (kT: 3 kH: 3 kW: 3)".
    cnnc inferred [N, 1, 2, 4, 4], and cnnc.reference then failed at run time."""
    src = network([("x", (SYM, 1, 2, 4, 4))], "y = x -> avg_pool3d(3, stride=1, padding=1)")
    x = torch.randn(BATCH, 1, 2, 4, 4)
    check(Case(src, [x], lambda: (F.avg_pool3d(x, 3, 1, 1), None)))


@pytest.mark.parametrize("op", ["adaptive_avg_pool2d", "adaptive_max_pool2d",
                                "adaptive_avg_pool3d", "adaptive_max_pool3d"])
def test_bug3_adaptive_pool_bare_none(op):
    """F.adaptive_*_pool2d(x, None) raises TypeError (none is allowed only inside a tuple);
    cnnc accepted `output_size=none` and kept every dim."""
    d = int(op[-2])
    shape = (SYM, 3, 5, 7, 4)[: d + 2]
    src = network([("x", shape)], f"y = x -> {op}(none)")
    x = torch.randn(concrete(shape))
    check(Case(src, [x], lambda: (getattr(F, op)(x, None), None)))


def test_bug4_batch_norm_zero_eps_with_batch_statistics():
    """nn.BatchNorm2d(3, eps=0, track_running_stats=False) raises at every forward
    ("batch_norm eps must be positive during training"); cnnc accepted it and its reference
    raised ValueError at run time. (With tracked statistics eps=0 works in eval mode but
    raises in training: cnnc refuses eps=0 always.)"""
    src = network([("x", (SYM, 3, 5, 5))], "y = x -> batch_norm(eps=0, track_running_stats=false)")
    x = torch.randn(BATCH, 3, 5, 5)
    check(Case(src, [x], lambda: evaluated(nn.BatchNorm2d(3, eps=0, track_running_stats=False),
                                           x)))


BIG = [2**31, 2**63, 2**64]
X3 = (SYM, 3, 6, 6)


def _extreme(stmt_and_fn):
    return [pytest.param(stmt, fn, id=stmt) for stmt, fn in stmt_and_fn]


@pytest.mark.parametrize("stmt, fn", _extreme([
    *[(f"x -> conv2d(3, 2, stride={v})", lambda x, v=v: evaluated(nn.Conv2d(3, 3, 2, stride=v), x))
      for v in BIG],
    *[(f"x -> max_pool2d(2, stride={v})", lambda x, v=v: (F.max_pool2d(x, 2, v), None))
      for v in BIG],
    *[(f"x -> avg_pool2d(2, divisor_override={v})",
       lambda x, v=v: (F.avg_pool2d(x, 2, divisor_override=v), None)) for v in BIG],
    *[(f"x -> {op}({v})", lambda x, v=v, fn=fn: (fn(x, v), None))
      for op, fn in [("leaky_relu", F.leaky_relu), ("elu", F.elu)]
      for v in [3.5e38, -1e300]],
    ("x -> add(1e300)", lambda x: (x + 1e300, None)),
    ("x -> batch_norm(eps=1e300, momentum=-1e300)",
     lambda x: evaluated(nn.BatchNorm2d(3, eps=1e300, momentum=-1e300), x)),
    ("x -> upsample(1e300)", lambda x: (F.interpolate(x, scale_factor=1e300), None)),
]))
def test_bug5_extreme_argument_values(stmt, fn):
    """Ints beyond int64 (and, in pooling, beyond int32) and floats beyond float32 that
    PyTorch refuses ("Overflow when unpacking long long", "value cannot be converted to
    type float without overflow") were accepted; cnnc.reference then raised TypeError,
    ValueError or RuntimeError at run time. The values PyTorch takes must stay accepted."""
    x = torch.randn(concrete(X3))
    check(Case(network([("x", X3)], f"y = {stmt}"), [x], lambda: fn(x)))


@pytest.mark.parametrize("tup", ["(3, 3, 3)", "(2,)", "( 3 , 3 , 3 )"])
def test_bug6_tuple_argument_is_underlined_whole(tup):
    """A wrong tuple argument's caret covered only the inside: `3, 3, 3` of `(3, 3, 3)`,
    `2` of `(2,)`; the message also printed a 1-tuple as "(2)"."""
    src = network([("x", X4)], f"y = x -> max_pool2d({tup})")
    e = expect_compile_error(src, "a 2-d kernel_size cannot have 3 or 1 entries")
    assert e.location.text() == tup, str(e)
    if tup == "(2,)":
        assert "(2,)" in e.message, e.message
