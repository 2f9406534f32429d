"""`cnnc inspect`: kernels compiled for an absent GPU (sm_80 / sm_90), on the CPU."""

import pytest
import torch

import cnnc
from cnnc.report.inspect import PEAKS, inspect_network
from cnnc.report.summary import summarize
from cnnc.runtime.aot import pipelining

LENET = "examples/lenet5.cnn"


@pytest.fixture(scope="module")
def lenet():
    return cnnc.load(LENET)


@pytest.fixture(scope="module")
def lenet_bf16(lenet):
    return inspect_network(lenet, "sm_90", torch.bfloat16, batch=8)


def test_one_row_per_launch_of_the_plan(lenet, lenet_bf16):
    net = cnnc.compile(LENET)
    assert [r.launch.kernel for r in lenet_bf16.rows] == [row["kernel"] for row in
                                                          net.eval().plan]
    assert lenet_bf16.failures == []
    for row in lenet_bf16.rows:
        assert row.launch.registers > 0 and row.launch.num_warps > 0


def test_flops_are_twice_the_summary_macs(lenet, lenet_bf16):
    assert sum(r.flops for r in lenet_bf16.rows) == 2 * summarize(lenet, 8).macs


def test_bytes_of_the_last_linear(lenet_bf16):
    last = lenet_bf16.rows[-1]  # logits: x [8, 84], weight [10, 84], bias [10], out [8, 10]
    assert last.ops == ["linear"]
    assert last.launch.tensor_bytes == 2 * (8 * 84 + 10 * 84 + 10 + 8 * 10)


def test_bf16_dots_run_on_tensor_cores(lenet_bf16):
    dots = [r for r in lenet_bf16.rows if r.launch.has_dot]
    assert dots and all(r.launch.tensor_cores for r in dots)
    assert all(r.precision == "bf16" for r in dots)


@pytest.mark.parametrize("tf32", [False, True])
def test_fp32_dots_follow_the_tf32_flags(lenet, tf32):
    # Convolutions follow cudnn's flag, linears matmul's (tests/test_precision.py).
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        report = inspect_network(lenet, "sm_80", torch.float32, batch=2)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    dots = [r for r in report.rows if r.launch.has_dot]
    assert dots and all(r.launch.tensor_cores == tf32 for r in dots)
    peak = PEAKS["sm_80"]
    for r in dots:  # the roofline divides by the peak of the precision the PTX uses
        rate = peak.tf32 if tf32 else peak.fp32
        expected = max(r.flops / rate, r.launch.tensor_bytes / peak.bandwidth) * 1e6
        assert r.roofline_us == pytest.approx(expected)


TTGIR_PIPELINED = """
    %b_1 = ttg.async_copy_global_to_local %p, %m : tensor<32x64x!tt.ptr<bf16>> -> <32x64xbf16>
    %acc = scf.for %k = %c0 to %c9 step %c1 iter_args(%a = %cst) -> (tensor<64x64xf32>) {
      %a_2 = ttg.async_copy_global_to_local %q, %m : tensor<64x32x!tt.ptr<bf16>> -> <64x32xbf16>
      %d = ttng.warp_group_dot %x, %y, %a : tensor<64x64xf32>
      scf.yield %d : tensor<64x64xf32>
    }
"""


def test_pipelining_reads_the_dot_loop():
    assert pipelining(TTGIR_PIPELINED) == "all"
    gathered = TTGIR_PIPELINED.replace(
        "%a_2 = ttg.async_copy_global_to_local %q, %m",
        "%a_2 = tt.load %q, %m : tensor<64x32x!tt.ptr<bf16>>\n %z = tt.load %q")
    assert pipelining(gathered) == "some"
    assert pipelining(TTGIR_PIPELINED.replace("ttg.async_copy_global_to_local",
                                              "tt.load")) == "none"
    assert pipelining("%x = tt.load %p : tensor<1024x!tt.ptr<f32>>") == "-"


def test_pipelining_judges_every_dot_loop():
    """A fused data + weight gradient kernel: a dot loop in each branch of an scf.if; one
    loop reading synchronously makes the kernel "some"; a dot outside any loop has nothing
    to pipeline."""
    synchronous = TTGIR_PIPELINED.replace("ttg.async_copy_global_to_local", "tt.load")
    both = ("%c = arith.cmpi slt, %pid, %n : i32\nscf.if %c {\n" + TTGIR_PIPELINED
            + "} else {\n" + "\n" * 41 + TTGIR_PIPELINED + "}\n")
    assert pipelining(both) == "all"
    mixed = ("scf.if %c {\n" + TTGIR_PIPELINED + "} else {\n" + "\n" * 41
             + synchronous.replace("%b_1 = tt.load", "%b_1 = arith.addi") + "}\n")
    assert pipelining(mixed) == "some"
    single = "%a = tt.load %p : tensor<64x16x!tt.ptr<bf16>>\n%d = tt.dot %a, %b, %c\n"
    assert pipelining(single) == "no loop"


def test_cli_inspect_prints_the_table(capsys):
    from cnnc.cli import main

    assert main(["inspect", LENET, "--target", "sm_80", "--dtype", "bf16", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "LeNet5: eval forward, bfloat16, batch 4, sm_80 (A100 SXM peaks)" in out
    assert "k4_linear" in out and "0 failed to compile" in out


def test_cli_inspect_refuses_an_unknown_target(capsys):
    from cnnc.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["inspect", LENET, "--target", "sm_70"])
    assert exit_.value.code == 2
    assert "sm_80" in capsys.readouterr().err


def test_shared_bodies_and_two_kernel_launchers_map_to_their_plan_kernels():
    source = """network T {
    input x: [N, 8, 8, 8]
    a = x -> conv2d(8, 3, padding=1) -> relu
    b = a -> conv2d(8, 3, padding=1) -> relu
    c = b -> batch_norm -> relu
    output c
}"""
    graph = cnnc.load(source=source)
    report = inspect_network(graph, "sm_90", torch.bfloat16, batch=64, training=True)
    plan = [row["kernel"] for row in cnnc.compile(source=source).train().plan]
    # the two convs share one jit body; a split training batch norm adds a statistics
    # kernel: every launch is still attributed to the plan kernel that made it
    assert [r.launch.kernel for r in report.rows if r.launch.kernel in plan] \
        == [r.launch.kernel for r in report.rows]
    assert list(dict.fromkeys(r.launch.kernel for r in report.rows)) == plan
    assert report.rows[1].launch.function == report.rows[0].launch.function
    assert all(r.ops[0] == "batch_norm" for r in report.rows[2:])


def test_backward_compiles_every_kernel_of_a_training_step(lenet):
    """--backward: the differentiable forward's launches, then every backward kernel, each
    attributed to its kernel group, as many as a training step launches (counted on the
    interpreter), none failing and every dot on tensor cores; a gradient GEMM's FLOPs are
    its anchor's."""
    from cnnc.report.training import triton_launches

    report = inspect_network(lenet, "sm_90", torch.bfloat16, batch=4, backward=True)
    net = cnnc.compile(LENET).train()
    x = torch.randn(4, 1, 28, 28)
    with triton_launches() as forward:
        y = net(x)
    with triton_launches() as backward:
        y.sum().backward()
    assert [r.launch.backward for r in report.rows] == \
        [False] * len(forward) + [True] * len(backward)
    assert report.failures == [] and report.dots_off_tensor_cores == []
    grad_plan = [row["kernel"] for row in net.grad_plan]
    assert [r.launch.kernel for r in report.rows[:len(forward)]] == grad_plan
    units = {r.launch.kernel for r in report.rows if r.launch.backward}
    assert units <= set(grad_plan) | {"b" + k[1:] for k in grad_plan}
    assert all(r.ops[0] == "backward of" for r in report.rows[len(forward):])
    # the logits' backward: its data and weight gradients, each the forward's MACs; the
    # first conv's: its weight gradient alone (the image needs none)
    last = next(r for r in report.rows if r.launch.backward and r.launch.has_dot)
    assert last.layers == ["logits"] and last.flops == 2 * (2 * 4 * 84 * 10)
    first = [r for r in report.rows if r.launch.backward and r.layers == ["c1"]][-1]
    assert first.flops == 2 * 4 * 6 * 28 * 28 * 25


def test_cli_inspect_backward_says_what_it_compiled(capsys, tmp_path):
    from cnnc.cli import main

    path = tmp_path / "t.cnn"
    path.write_text("network T { input x: [N, 6] y = x -> linear(4) -> relu output y }")
    assert main(["inspect", "--backward", "--dtype", "bf16", str(path)]) == 0
    out = capsys.readouterr().out
    assert "T: training step (forward + backward), bfloat16, batch 1, sm_90" in out
    assert "backward of" in out and "0 failed to compile" in out


def test_cli_inspect_backward_of_a_network_with_nothing_to_train(capsys):
    """A training step of a network without trainable parameters (pools, fixed filters)
    computes no gradient: --backward says so, and names what to inspect instead."""
    from cnnc.cli import main

    assert main(["inspect", "examples/lecture.cnn", "--network", "Pooling", "--backward"]) == 1
    err = capsys.readouterr().err
    assert "network Pooling has no trainable parameters" in err
    assert "--training without --backward" in err and "Traceback" not in err
