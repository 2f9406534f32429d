"""The pool and adaptive_pool templates against cnnc.reference (torch.nn.functional).

Each property test draws a one-op network that pools its input (so the pool is a kernel
of its own, not fused into a conv) with every option of the operator, runs the generated
kernel under Triton's interpreter on a random batch-2 input (sometimes channels-last or
otherwise strided), and compares with the reference. Some examples shrink the tile caps
to the GPU's, so that large windows are reduced in several chunks; inputs sometimes hold
NaN and infinities. Further tests cover a
pool after a pointwise kernel, pools writing into a concat's slices, int64 indexing, NaN
propagation and bfloat16.
"""

from __future__ import annotations

import ast
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnc
from cnnc.codegen import helpers
from cnnc.ops.arithmetic import pool_output_size

from strategies import BATCH, OMIT, call_text, network, plant, special_values

# CNNC_PROPERTY_EXAMPLES=500 pytest tests/test_codegen_pool.py explores more.
EXAMPLES = settings(max_examples=int(os.environ.get("CNNC_PROPERTY_EXAMPLES", "30")), deadline=None)
GPU_WINDOW = {"BLOCK": 1024}  # the GPU's first window config: several window chunks


def generated_module(net):
    return sys.modules[type(net).__module__]


@contextmanager
def tiles(net, small: bool):
    """Run with the GPU's tile caps (small tiles: several window chunks) if `small`."""
    pinned = generated_module(net).PINNED
    saved = dict(pinned)
    if small:
        pinned["window"] = GPU_WINDOW
    try:
        yield
    finally:
        pinned.clear()
        pinned.update(saved)


def layout(x: torch.Tensor, how: str) -> torch.Tensor:
    """The same values in another memory layout: contiguous, channels-last, or transposed."""
    if how == "channels_last":
        fmt = {4: torch.channels_last, 5: torch.channels_last_3d}[x.dim()]
        return x.contiguous(memory_format=fmt)
    if how == "transposed":  # channels innermost, spatial dims in reverse order
        return x.permute(0, *range(x.dim() - 1, 0, -1)).contiguous().permute(
            0, *range(x.dim() - 1, 0, -1))
    return x


def check(src: str, shape: tuple[int, ...], ops: list[list[str]], how: str = "contiguous",
          small_tiles: bool = False, seed: int = 0, planted=()) -> None:
    """Compile `src`, check its plan's kernels (their ops), and compare with the reference
    on a random input holding the `planted` special values (strategies.plant)."""
    net = cnnc.compile(source=src).eval()
    assert [row["ops"] for row in net.plan] == ops
    ast.parse(Path(net.source_path).read_text())
    ref = cnnc.reference(source=src).eval()
    g = torch.Generator().manual_seed(seed)
    x = plant(torch.randn(BATCH, *shape[1:], generator=g), planted)
    expected = ref(x)
    with tiles(net, small_tiles):
        got = net(layout(x, how))
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, equal_nan=True)


def per_dim(values: tuple[int, ...]):
    """One int when every dim agrees on an odd value, else a tuple (both spellings occur)."""
    return values[0] if len(set(values)) == 1 and values[0] % 2 else values


# ------------------------------------------------------------------ max / avg pool


@st.composite
def pool_case(draw):
    dims = draw(st.sampled_from([1, 2, 3]))
    kind = draw(st.sampled_from(["max", "avg"]))
    hi = {1: 5, 2: 4, 3: 3}[dims]
    kernel = tuple(draw(st.integers(1, hi)) for _ in range(dims))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    stride = draw(st.one_of(st.none(), st.tuples(*[st.integers(1, 3)] * dims)))
    dilation = (tuple(draw(st.integers(1, 3)) for _ in range(dims)) if kind == "max"
                else (1,) * dims)
    ceil_mode = draw(st.booleans())
    sizes = []
    for k, p, d in zip(kernel, padding, dilation):
        least = max(1, d * (k - 1) + 1 - 2 * p)  # the window fits the padded input
        if kind == "avg" and dims == 3:
            least = max(least, k)  # F.avg_pool3d also wants the window to fit the input
        sizes.append(draw(st.integers(least, least + {1: 8, 2: 5, 3: 3}[dims])))
    channels = draw(st.integers(1, 3))
    args = [("kernel_size", per_dim(kernel)),
            ("stride", OMIT if stride is None else per_dim(stride)),
            ("padding", per_dim(padding) if any(padding) or draw(st.booleans()) else OMIT)]
    if kind == "max":
        args += [("dilation", per_dim(dilation) if any(d > 1 for d in dilation) else OMIT),
                 ("ceil_mode", ceil_mode if ceil_mode else OMIT)]
    else:
        include = draw(st.booleans())
        override = draw(st.one_of(st.none(), st.integers(1, 7)))
        args += [("ceil_mode", ceil_mode if ceil_mode else OMIT),
                 ("count_include_pad", OMIT if include else False),
                 ("divisor_override", OMIT if override is None else override)]
    op = f"{kind}_pool{dims}d"
    statement = "y = " + draw(call_text(op, args))
    shape = ("N", channels, *sizes)
    outs = [pool_output_size(n, k, s, p, d, ceil_mode) for n, k, s, p, d in
            zip(sizes, kernel, stride or kernel, padding, dilation)]
    assert min(outs) >= 1
    src = network([("x", shape)], statement)
    return src, (BATCH, channels, *sizes), op


LAYOUTS = st.sampled_from(["contiguous", "channels_last", "transposed"])


@given(case=pool_case(), how=LAYOUTS, small_tiles=st.booleans(), seed=st.integers(0, 99),
       planted=special_values())
@EXAMPLES
def test_pool_matches_reference(case, how, small_tiles, seed, planted):
    src, shape, op = case
    if how == "channels_last" and len(shape) == 3:
        how = "transposed"
    check(src, shape, [[op]], how, small_tiles, seed, planted)


# ------------------------------------------------------------------ adaptive pools


@st.composite
def adaptive_case(draw):
    dims = draw(st.sampled_from([1, 2, 3]))
    kind = draw(st.sampled_from(["max", "avg"]))
    hi = {1: 11, 2: 7, 3: 5}[dims]
    sizes = tuple(draw(st.integers(1, hi)) for _ in range(dims))
    # Output sizes that divide the input or not, equal to it, larger than it, or none.
    outs = []
    for size in sizes:
        choice = draw(st.sampled_from(["any", "any", "divisor", "larger", "none"]))
        if choice == "none" and dims > 1:
            outs.append(None)
        elif choice == "divisor":
            outs.append(draw(st.sampled_from([d for d in range(1, size + 1) if size % d == 0])))
        elif choice == "larger":
            outs.append(draw(st.integers(size, size + 4)))
        else:
            outs.append(draw(st.integers(1, hi)))
    channels = draw(st.integers(1, 3))
    if dims == 1:
        output_size = outs[0] if draw(st.booleans()) else (outs[0],)
    elif len(set(outs)) == 1 and outs[0] is not None and draw(st.booleans()):
        output_size = outs[0]
    else:
        output_size = tuple(outs)
    op = f"adaptive_{kind}_pool{dims}d"
    statement = "y = " + draw(call_text(op, [("output_size", output_size)]))
    src = network([("x", ("N", channels, *sizes))], statement)
    return src, (BATCH, channels, *sizes), op


@given(case=adaptive_case(), how=LAYOUTS, small_tiles=st.booleans(), seed=st.integers(0, 99),
       planted=special_values())
@EXAMPLES
def test_adaptive_pool_matches_reference(case, how, small_tiles, seed, planted):
    src, shape, op = case
    if how == "channels_last" and len(shape) == 3:
        how = "transposed"
    check(src, shape, [[op]], how, small_tiles, seed, planted)


def test_global_pools_reduce_in_chunks():
    """Windows of 576 and 1152 elements: more than one BLOCK_K chunk on any tile caps."""
    for op in ("adaptive_avg_pool2d(1)", "adaptive_max_pool2d((1, 2))", "avg_pool2d(24)",
               "max_pool2d(24, padding=3, ceil_mode=true)"):
        src = network([("x", ("N", 3, 24, 48))], f"y = x -> {op}")
        name = op.split("(")[0]
        for small in (False, True):
            check(src, (BATCH, 3, 24, 48), [[name]], small_tiles=small)


# ------------------------------------------------------------------ in a network


def test_pool_after_pointwise_kernel():
    """relu runs as a pointwise kernel; the pool after it is a kernel of its own."""
    src = network([("x", ("N", 4, 9, 11))],
                  "y = x -> relu -> max_pool2d(3, stride=2, padding=1, ceil_mode=true) "
                  "-> avg_pool2d(2, ceil_mode=true, count_include_pad=false)")
    check(src, (BATCH, 4, 9, 11), [["relu"], ["max_pool2d"], ["avg_pool2d"]])


def test_pools_write_into_concat_slices():
    """Each pool writes straight into its slice of the concat (through out.stride())."""
    src = """network T {
    input x: [N, 3, 10, 10]
    a = x -> max_pool2d(2)
    b = x -> adaptive_avg_pool2d(5)
    c = x -> avg_pool2d(4, 2, 1, ceil_mode=true, count_include_pad=false)
    y = concat(a, b, c)
    output y
}
"""
    check(src, (BATCH, 3, 10, 10), [["max_pool2d"], ["adaptive_avg_pool2d"], ["avg_pool2d"]])
    check(src, (BATCH, 3, 10, 10), [["max_pool2d"], ["adaptive_avg_pool2d"], ["avg_pool2d"]],
          how="channels_last")


# ------------------------------------------------------------------ details


def test_int64_index_arithmetic():
    """The INDEX_64 variant (chosen when an offset may pass 2**31) computes the same."""
    for op in ("max_pool3d(3, 2, 1, dilation=(1, 2, 1), ceil_mode=true)",
               "avg_pool3d(2, 1, 1, count_include_pad=false)",
               "adaptive_avg_pool3d((2, none, 5))", "adaptive_max_pool3d(3)"):
        src = network([("x", ("N", 2, 5, 6, 7))], f"y = x -> {op}")
        net = cnnc.compile(source=src).eval()
        ref = cnnc.reference(source=src).eval()
        (row,) = net.plan
        launch = getattr(generated_module(net), "launch_" + row["kernel"])
        x = layout(torch.randn(BATCH, 2, 5, 6, 7), "channels_last")
        expected = ref(x)
        out = torch.empty_like(expected)
        launch(out, x, force_int64=True)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_max_pools_propagate_nan():
    for op in ("max_pool2d(2, padding=1)", "adaptive_max_pool2d((3, 2))"):
        src = network([("x", ("N", 2, 6, 5))], f"y = x -> {op}")
        net = cnnc.compile(source=src).eval()
        ref = cnnc.reference(source=src).eval()
        x = torch.randn(BATCH, 2, 6, 5)
        x[0, 1, 2, 3] = float("nan")
        x[1, 0, 0, 0] = float("nan")
        got, expected = net(x), ref(x)
        assert got.isnan().any()
        torch.testing.assert_close(got, expected, equal_nan=True)


def test_bfloat16_values_are_stored_in_bfloat16():
    src = network([("x", ("N", 3, 8, 8))],
                  "y = x -> avg_pool2d(3, 2, 1, divisor_override=4)")
    net = cnnc.compile(source=src, dtype=torch.bfloat16).eval()
    x = torch.randn(BATCH, 3, 8, 8).to(torch.bfloat16)
    got = net(x)
    assert got.dtype == torch.bfloat16
    expected = torch.nn.functional.avg_pool2d(x.float(), 3, 2, 1, divisor_override=4)
    torch.testing.assert_close(got.float(), expected.to(torch.bfloat16).float(),
                               rtol=1e-2, atol=1e-2)


# ------------------------------------------------------------------ the epilogue slot


def test_epilogue_slot(tmp_path):
    """The fusion pass gives pools no epilogue yet; a kernel given one applies it."""
    import importlib.util

    from cnnc.codegen.kernel import EmitContext
    from cnnc.codegen.templates import adaptive_pool, pool
    from cnnc.passes.plan import Kernel

    for op, template in (("avg_pool2d(3, 2, 1, ceil_mode=true)", pool),
                         ("adaptive_max_pool2d((3, none))", adaptive_pool)):
        src = f"""network T {{
    input x: [N, 3, 7, 6]
    input b: [3, 1, 1]
    y = x -> {op} -> mul(0.5) -> add(b) -> leaky_relu(0.2) -> sigmoid
    output y
}}
"""
        graph = cnnc.load(source=src)
        nodes = [n for n in graph.nodes() if n.op != "input"]
        kind = "adaptive_pool" if template is adaptive_pool else "pool"
        kernel = Kernel(kind, nodes[0].id, epilogue=[n.id for n in nodes[1:]], index=0)
        emitted = template.emit(EmitContext(graph, kernel))
        assert [a.name for a in emitted.arguments] == ["x", "r0"]
        path = tmp_path / f"epilogue_{template.__name__.rsplit('.', 1)[-1]}.py"
        path.write_text("import os\nimport torch\nimport triton\nimport triton.language as tl\n"
                        "from cnnc.runtime.support import broadcast_strides, tile\n"
                        "from cnnc.runtime.tuner import Tuner\n" + helpers.RUNTIME
                        + "\nPINNED['window'] = {'BLOCK': 1024}\n\n" + emitted.source)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        x, b = torch.randn(BATCH, 3, 7, 6), torch.randn(3, 1, 1)
        expected = cnnc.reference(source=src).eval()(x, b)
        out = torch.empty_like(expected)
        getattr(module, emitted.launcher)(out, x, b)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
