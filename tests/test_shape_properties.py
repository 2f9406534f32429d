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

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st
from shape_harness import (
    PROFILE,
    check,
    evaluated,
    expect_compile_error,
    run_torch,
)
from torch import nn

import cnnc

from strategies import (
    BATCH,
    OMIT,
    SYM,
    Case,
    batch_dim,
    call_text,
    fmt,
    int_or_tuple,
    network,
    optional,
    seeds,
    shapes,
    spatial,
    tensors,
)

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


