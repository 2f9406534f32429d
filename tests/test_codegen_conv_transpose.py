"""The conv_transpose template (cnnc/codegen/templates/conv_transpose.py) against PyTorch.

Hypothesis draws a transposed convolution over its whole option space (1/2/3-d, stride,
padding, output_padding, groups, dilation, bias) and an epilogue fused after it, compiles
a one-layer network and compares it with cnnc.reference (F.conv_transpose*d), inputs
sometimes holding NaN and infinities; each test also checks that the plan is the one
kernel expected.
"""

from __future__ import annotations

import ast
import math
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnc
from cnnc.codegen.templates import TEMPLATES

from strategies import plant, special_values

BATCH = 2
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _spell(values: tuple[int, ...]) -> str:
    return str(values[0]) if len(values) == 1 else "(" + ", ".join(map(str, values)) + ")"


@st.composite
def conv_transposes(draw):
    """A transposed convolution: (input shape, output shape, the op's source text)."""
    dims = draw(st.sampled_from([1, 2, 3]))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c_in = groups * draw(st.integers(1, 3))
    c_out = groups * draw(st.integers(1, 3))
    max_size = {1: 7, 2: 5, 3: 3}[dims]
    sizes, kernel, stride, padding, output_padding, dilation, out = [], [], [], [], [], [], []
    for _ in range(dims):
        size = draw(st.integers(1, max_size))
        k = draw(st.integers(1, 3))
        s = draw(st.integers(1, 3))
        d = draw(st.integers(1, 2))
        op = draw(st.integers(0, max(s, d) - 1))
        full = (size - 1) * s + d * (k - 1) + op + 1  # the output size without padding
        p = draw(st.integers(0, min(2, (full - 1) // 2)))
        sizes.append(size)
        kernel.append(k)
        stride.append(s)
        padding.append(p)
        output_padding.append(op)
        dilation.append(d)
        out.append(full - 2 * p)
    bias = draw(st.booleans())
    text = (f"conv_transpose{dims}d({c_out}, {_spell(kernel)}, stride={_spell(stride)}, "
            f"padding={_spell(padding)}, output_padding={_spell(output_padding)}, "
            f"groups={groups}, bias={'true' if bias else 'false'}, "
            f"dilation={_spell(dilation)})")
    return ["N", c_in, *sizes], ["N", c_out, *out], text, dims


def _shape(dims: list) -> str:
    return "[" + ", ".join(map(str, dims)) + "]"


# An epilogue: (chain text after the conv, extra inputs it reads, the ops it adds).
# `skip` has the conv's output shape; `scale` broadcasts over the batch and space.
EPILOGUES = [
    ("", [], []),
    (" -> relu", [], ["relu"]),
    (" -> leaky_relu(0.2)", [], ["leaky_relu"]),
    (" -> add(skip)", ["skip"], ["add"]),
    (" -> mul(0.5) -> add(skip) -> tanh", ["skip"], ["mul", "add", "tanh"]),
    (" -> mul(scale) -> sigmoid", ["scale"], ["mul", "sigmoid"]),
    (" -> gelu -> add(skip) -> relu6", ["skip"], ["gelu", "add", "relu6"]),
]


def _network(conv, epilogue) -> tuple[str, list[str]]:
    in_shape, out_shape, text, dims = conv
    chain, extra, ops = epilogue
    lines = [f"network T {{ input x: {_shape(in_shape)}"]
    if "skip" in extra:
        lines.append(f" input skip: {_shape(out_shape)}")
    if "scale" in extra:
        lines.append(f" input scale: {_shape(['N', out_shape[1]] + [1] * dims)}")
    lines.append(f" y = x -> {text}{chain}")
    lines.append(" output y }")
    return "\n".join(lines), [f"conv_transpose{dims}d", *ops]


def _inputs(ref) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(BATCH, *node.shape[1:]) for node in ref.graph.input_nodes()]


def _compare(source: str, ops: list[str], inputs=None, train: bool = False):
    net = cnnc.compile(source=source).eval()
    ref = cnnc.reference(source=source).eval()
    net.load_state_dict(ref.state_dict())
    assert [step["ops"] for step in net.plan if step["kernel"] != "copy_into"] == [ops]
    xs = _inputs(ref) if inputs is None else inputs(ref)
    torch.testing.assert_close(net(*xs), ref(*xs), rtol=1e-4, atol=1e-5, equal_nan=True)
    if train:
        net.train()
        ref.train()
        assert [step["ops"] for step in net.plan if step["kernel"] != "copy_into"] == [ops]
        torch.testing.assert_close(net(*xs), ref(*xs), rtol=1e-4, atol=1e-5, equal_nan=True)
    return net


@settings(max_examples=40, **SETTINGS)
@given(conv=conv_transposes(), epilogue=st.sampled_from(EPILOGUES), planted=special_values())
def test_conv_transpose_matches_pytorch(conv, epilogue, planted):
    source, ops = _network(conv, epilogue)
    if "gelu" in ops:  # PyTorch's vectorised float32 gelu(+inf) is nan, its scalar one inf
        planted = [(where, value) for where, value in planted if math.isnan(value)]
    _compare(source, ops, lambda ref: [plant(x, planted) for x in _inputs(ref)])


@settings(max_examples=10, **SETTINGS)
@given(conv=conv_transposes())
def test_training_mode_runs_the_same_kernel(conv):
    source, ops = _network(conv, EPILOGUES[1])
    _compare(source, ops, train=True)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_channels_last_input_and_output_into_a_concat_slice(dims):
    size = {1: (5,), 2: (4, 5), 3: (3, 4, 2)}[dims]
    out = tuple(2 * s for s in size)  # kernel 3, stride 2, padding 1, output_padding 1
    source = (f"network T {{ input x: {_shape(['N', 4, *size])}\n"
              f" input s: {_shape(['N', 3, *out])}\n"
              f" a = x -> conv_transpose{dims}d(6, 3, stride=2, padding=1, output_padding=1,"
              f" groups=2) -> relu\n"
              f" z = concat(s, a, dim=1)\n"
              f" output z }}")
    layout = {1: torch.contiguous_format, 2: torch.channels_last,
              3: torch.channels_last_3d}[dims]

    def inputs(ref):
        xs = _inputs(ref)
        return [xs[0].contiguous(memory_format=layout), xs[1]]

    net = _compare(source, [f"conv_transpose{dims}d", "relu"], inputs)
    # the input s is copied into its slice: the one extra launch
    assert [step["kernel"] for step in net.plan].count("copy_into") == 1
    text = open(net.source_path).read()
    # The kernel writes straight into its slice of the concat's output.
    view = re.search(r"(\w+) = \w+\.narrow\(1, 3, 6\)", text)
    assert view is not None
    assert f"launch_k0_conv_transpose{dims}d({view.group(1)}, " in text


def test_generated_source_reads_well():
    conv = (["N", 4, 5, 6], ["N", 6, 11, 14], "conv_transpose2d(6, (3, 4), stride=2, groups=2)", 2)
    source, _ = _network(conv, EPILOGUES[4])
    net = cnnc.compile(source=source)
    text = open(net.source_path).read()
    ast.parse(text)
    kernel = text[text.index("def k0_conv_transpose2d("):text.index("def launch_k0_")]
    assert "sub-pixel implicit GEMM" in kernel
    assert "if INDEX_64:" in kernel and "pid_m.to(tl.int64)" in kernel  # int64 where needed
    # Each phase loops over its own taps: no divisibility mask, no zero tap in tl.dot.
    assert "% SH == 0" not in kernel and "range(0, phase_taps * CP, BLOCK_K)" in kernel
    assert "tl.dot(" in kernel and "out_ptr.dtype.element_ty" in kernel


def test_bfloat16_network():
    source = ("network T { input x: [N, 4, 5, 6]\n"
              " y = x -> conv_transpose2d(6, 3, stride=2, padding=1, output_padding=1) -> relu\n"
              " output y }")
    net = cnnc.compile(source=source, dtype=torch.bfloat16).eval()
    ref = cnnc.reference(source=source).eval()
    ref.load_state_dict({k: v.bfloat16().float() for k, v in ref.state_dict().items()})
    net.load_state_dict(ref.state_dict())
    (x,) = _inputs(ref)
    got = net(x.bfloat16())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), ref(x.bfloat16().float()), rtol=1e-2, atol=1e-2)


@pytest.mark.skipif(TEMPLATES.get("batch_norm_train") is None,
                    reason="compile() also builds the training plan, whose batch_norm_train "
                           "kernel has no template yet")
@settings(max_examples=15, **SETTINGS)
@given(conv=conv_transposes(), affine=st.booleans(), activation=st.sampled_from(["", " -> relu"]))
def test_batch_norm_after_conv_transpose_is_an_epilogue(conv, affine, activation):
    in_shape, out_shape, text, dims = conv
    c_out = out_shape[1]
    source = (f"network T {{ input x: {_shape(in_shape)}\n"
              f" y = x -> {text} -> batch_norm(eps=0.001, affine={str(affine).lower()})"
              f"{activation}\n output y }}")
    net = cnnc.compile(source=source).eval()
    ref = cnnc.reference(source=source).eval()
    state = ref.state_dict()
    generator = torch.Generator().manual_seed(1)
    for key in state:
        if key.endswith("running_mean"):
            state[key] = torch.randn(c_out, generator=generator)
        elif key.endswith("running_var"):
            state[key] = torch.rand(c_out, generator=generator) + 0.5
        elif key.endswith(".1.weight") or key.endswith(".1.bias"):
            state[key] = torch.randn(c_out, generator=generator)
    ref.load_state_dict(state)
    net.load_state_dict(state)
    ops = [f"conv_transpose{dims}d", "batch_norm"] + (["relu"] if activation else [])
    assert [step["ops"] for step in net.plan] == [ops]
    (x,) = _inputs(ref)
    torch.testing.assert_close(net(x), ref(x), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(TEMPLATES.get("batch_norm_train") is None,
                    reason="the batch_norm_train kernel has no template yet")
def test_training_plan_with_batch_norm():
    source = ("network T { input x: [N, 4, 3, 4]\n"
              " y = x -> conv_transpose2d(6, 3, stride=2, groups=2) -> batch_norm -> relu\n"
              " output y }")
    net = cnnc.compile(source=source).train()
    ref = cnnc.reference(source=source).train()
    net.load_state_dict(ref.state_dict())
    assert [step["ops"] for step in net.plan] == [["conv_transpose2d"], ["batch_norm", "relu"]]
    (x,) = _inputs(ref)
    torch.testing.assert_close(net(x), ref(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net.state_dict(), ref.state_dict(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel,stride,dilation", [(3, 2, 1), (4, 2, 1), (3, 3, 2), (5, 2, 2),
                                                    (1, 3, 1), (3, 1, 2)])
def test_each_tap_serves_exactly_one_phase(kernel, stride, dilation):
    """The sub-pixel decomposition: phase r's output o (with (o + p) % s == r) gathers
    through exactly the taps k with k*d % s == r, so each phase's loop visits only taps
    that contribute, and every tap is visited by one phase."""
    from cnnc.codegen.templates.conv_transpose import phase_taps

    phases = phase_taps(kernel, stride, dilation)
    assert sorted(k for taps in phases for k in taps) == list(range(kernel))
    for r, taps in enumerate(phases):
        for o in range(r, 4 * stride, stride):  # outputs of phase r (padding 0)
            hits = [k for k in range(kernel) if (o - k * dilation) % stride == 0]
            assert hits == taps
