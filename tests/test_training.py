"""Training compiled networks: gradients, running statistics and optimizer steps equal the
reference's (cnnc.reference + PyTorch autograd); the backward runs cnnc's kernels only;
autograd's machinery (saved-tensor hooks, no_grad, torch.compile) sees ordinary modules.
Every example network's training step: test_training_examples.py."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
import torch

import cnnc
from cnnc.report.training import ComputeOps, cnnc_step_cost, eager_step_cost

RTOL = 1e-4

SMALL_RESNET = """
block basic(x: tensor, planes: int, stride: int = 1) {
    main = x -> conv2d(planes, 3, stride=stride, padding=1, bias=false) -> batch_norm -> relu
             -> conv2d(planes, 3, padding=1, bias=false) -> batch_norm
    shortcut = x -> conv2d(planes, 1, stride=stride, bias=false) -> batch_norm if stride != 1 else x
    return main -> add(shortcut) -> relu
}
network SmallResNet {
    input image: [N, 3, 12, 12]
    stem = image -> conv2d(8, 3, padding=1, bias=false) -> batch_norm -> relu
    pool = stem -> max_pool2d(3, stride=2, padding=1)
    layer1 = pool -> basic(8)
    layer2 = layer1 -> basic(16, 2)
    head = layer2 -> adaptive_avg_pool2d(1) -> flatten -> linear(10)
    output head
}
"""


def _pair(path=None, network=None, source=None, dtype=torch.float32):
    net = (cnnc.compile(source=source, dtype=dtype) if source is not None
           else cnnc.compile(path, network, dtype=dtype))
    ref = (cnnc.reference(source=source) if source is not None
           else cnnc.reference(path, network))
    ref.load_state_dict(net.state_dict())
    return net, ref


def _randomise_statistics(net):
    with torch.no_grad():
        for name, buffer in net.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(torch.randn_like(buffer) * 0.1)
            elif name.endswith("running_var"):
                buffer.copy_(torch.rand_like(buffer) + 0.5)


def _close(actual, expected, what):
    assert actual is not None, f"{what}: no gradient"
    scale = expected.abs().max().clamp_min(1e-6)
    err = (actual.float() - expected.float()).abs().max() / scale
    assert err <= RTOL, f"{what}: relative error {err:.2e}"


def _compare_step(net, ref, x, mode="train"):
    getattr(net, mode)()
    getattr(ref, mode)()
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    ya, yb = net(xa), ref(xb)
    _close(ya.detach(), yb.detach(), "output")
    weight = torch.randn_like(yb)
    (ya * weight).sum().backward()
    (yb * weight).sum().backward()
    _close(xa.grad, xb.grad, "input gradient")
    mine = dict(net.named_parameters())
    for name, p in ref.named_parameters():
        _close(mine[name].grad, p.grad, name)
    mine = dict(net.named_buffers())
    for name, b in ref.named_buffers():
        if b.is_floating_point():
            _close(mine[name], b, name)
        else:
            assert torch.equal(mine[name], b), name


@pytest.mark.parametrize("path,network,shape", [
    ("examples/lenet5.cnn", None, (2, 1, 28, 28)),
    ("examples/temporal.cnn", None, (2, 12, 128)),
    ("examples/inception.cnn", "MiniInception", (2, 3, 32, 32)),
    ("examples/lecture.cnn", "ConvStack", (2, 3, 32, 32)),
])
def test_gradients_and_running_statistics_equal_the_reference(path, network, shape):
    torch.manual_seed(0)
    net, ref = _pair(path, network)
    _compare_step(net, ref, torch.randn(shape))


def test_small_resnet_gradients_in_train_and_eval_mode():
    torch.manual_seed(1)
    net, ref = _pair(source=SMALL_RESNET)
    _compare_step(net, ref, torch.randn(2, 3, 12, 12), "train")
    for p in list(net.parameters()) + list(ref.parameters()):
        p.grad = None
    _randomise_statistics(net)
    ref.load_state_dict(net.state_dict())
    _compare_step(net, ref, torch.randn(2, 3, 12, 12), "eval")


@pytest.mark.parametrize("source", ["lenet", "resnet"])
def test_five_sgd_steps_train_like_the_reference(source):
    torch.manual_seed(2)
    if source == "lenet":
        net, ref = _pair("examples/lenet5.cnn")
        shape = (4, 1, 28, 28)
    else:
        net, ref = _pair(source=SMALL_RESNET)
        shape = (4, 3, 12, 12)
    data = [(torch.randn(shape), torch.randint(0, 10, (shape[0],))) for _ in range(5)]
    for model in (net, ref):
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
        for x, y in data:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    theirs = ref.state_dict()
    for name, value in net.state_dict().items():
        if value.is_floating_point():
            _close(value, theirs[name], name)
        else:
            assert torch.equal(value, theirs[name]), name


def test_the_backward_runs_no_aten_convolution_pooling_batch_norm_or_matmul():
    torch.manual_seed(3)
    net, _ = _pair(source=SMALL_RESNET)
    net.train()
    y = net(torch.randn(2, 3, 12, 12, requires_grad=True))
    grad = torch.randn_like(y)
    mode = ComputeOps()
    with mode:
        y.backward(grad)
    forbidden = ("conv", "pool", "batch_norm", "native_batch_norm", "mm", "addmm", "bmm",
                 "matmul", "linear", "softmax", "upsample")
    found = [op for op in mode.ops if any(word in op for word in forbidden)]
    assert not found, found


def test_no_grad_and_inference_mode_record_nothing():
    net, _ = _pair("examples/lenet5.cnn")
    net.train()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert net(x).grad_fn is None
        forward_only = len(net.plan)
        assert len(net.plan) == 5
    with torch.inference_mode():
        assert net(x).grad_fn is None
    assert net(x).grad_fn is not None
    assert len(net.grad_plan) >= forward_only  # the differentiable forward fuses no more
    assert net.backward_plan, "the backward plan lists the gradient kernels"
    pools = [row for row in net.grad_plan if row["ops"] == ["max_pool2d"]]
    assert len(pools) == 2, net.grad_plan  # a pool's backward reads its input: not fused
    assert [row["ops"] for row in net.plan][0] == ["conv2d", "relu", "max_pool2d"]


def test_double_backward_is_a_clear_error_naming_cnnc():
    net, _ = _pair("examples/lenet5.cnn")
    x = torch.randn(1, 1, 28, 28, requires_grad=True)
    with pytest.raises(RuntimeError, match="cnnc: a compiled network's backward is not "
                       "differentiable"):
        torch.autograd.grad(net(x).sum(), x, create_graph=True)
    (g,) = torch.autograd.grad(net(x).sum(), x)  # a first-order gradient still works
    assert g.shape == x.shape


def test_a_module_fed_another_dtype_says_so():
    net = cnnc.compile("examples/lenet5.cnn", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="bfloat16"):
        net(torch.randn(1, 1, 28, 28, requires_grad=True))


def test_saved_tensors_go_through_autograd_hooks_and_checkpointing_works():
    torch.manual_seed(4)
    net, ref = _pair("examples/lenet5.cnn")
    x = torch.randn(2, 1, 28, 28)
    packed = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t, lambda t: t):
        y = net(x)
    assert packed, "the autograd units save through ctx.save_for_backward"
    y.sum().backward()
    from torch.utils.checkpoint import checkpoint

    weights = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    checkpoint(net, x, use_reentrant=False).sum().backward()
    for name, p in net.named_parameters():
        _close(p.grad, weights[name], name)


def test_torch_compile_trains_and_matches_eager():
    torch.manual_seed(5)
    net, _ = _pair("examples/lenet5.cnn")
    x = torch.randn(2, 1, 28, 28)
    net(x).sum().backward()
    expected = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    torch._dynamo.reset()
    compiled = torch.compile(net, backend="aot_eager")
    compiled(x).sum().backward()
    for name, p in net.named_parameters():
        _close(p.grad, expected[name], name)


def test_a_lenet5_step_launches_at_most_half_of_eager_and_saves_no_more():
    """Issue 7's target for LeNet-5: at most 15 launches a step, half of eager's compute
    ops or fewer (7 forward; backward: one launch per linear and conv with the relu's
    derivative folded in, one per max pool)."""
    torch.manual_seed(6)
    net, ref = _pair("examples/lenet5.cnn")
    x = torch.randn(2, 1, 28, 28)
    mine, eager = cnnc_step_cost(net, [x]), eager_step_cost(ref, [x])
    assert mine.kernels <= 15 and 2 * mine.kernels <= eager.kernels, (mine, eager)
    assert mine.saved_bytes <= eager.saved_bytes, (mine, eager)


def test_bf16_module_trains_as_accurately_as_eager_bf16():
    """bf16 gradients (fp32 accumulation inside every kernel) are as close to the fp32
    gradients as PyTorch eager's own bf16 gradients are."""
    torch.manual_seed(7)
    net, ref = _pair("examples/lenet5.cnn", dtype=torch.bfloat16)
    eager16 = cnnc.reference("examples/lenet5.cnn").to(torch.bfloat16)
    eager16.load_state_dict(net.state_dict())
    x = torch.randn(4, 1, 28, 28).bfloat16()
    net(x).float().sum().backward()
    eager16(x).float().sum().backward()
    ref(x.float()).sum().backward()
    mine, theirs = dict(net.named_parameters()), dict(eager16.named_parameters())
    for name, p in ref.named_parameters():
        assert mine[name].grad.dtype == torch.bfloat16
        scale = p.grad.abs().max()
        err = (mine[name].grad.float() - p.grad).abs().max() / scale
        eager_err = (theirs[name].grad.float() - p.grad).abs().max() / scale
        assert err <= 2 * eager_err + 0.02, (name, float(err), float(eager_err))


def test_the_standalone_file_trains_without_cnnc(tmp_path):
    out = tmp_path / "lenet.py"
    subprocess.run([sys.executable, "-m", "cnnc", "compile", "examples/lenet5.cnn", "-o",
                    str(out), "-q"], check=True)
    script = textwrap.dedent(f"""
        import importlib.util, sys
        sys.modules["cnnc"] = None  # import cnnc fails: the file must not need it
        spec = importlib.util.spec_from_file_location("lenet", {str(out)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        import torch
        torch.manual_seed(0)
        net = module.LeNet5()
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
        losses = []
        for _ in range(3):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0], losses
        print("trained", losses)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained" in done.stdout


def test_summary_training_counts_a_step_next_to_eager(capsys):
    from cnnc.cli import main

    assert main(["summary", "examples/lenet5.cnn", "--training", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    mine = re.search(r"cnnc: +(\d+) kernels, (.+) saved for backward", out)
    eager = re.search(r"PyTorch eager: +(\d+) compute ops, (.+) saved for backward", out)
    assert mine and eager, out
    net, ref = _pair("examples/lenet5.cnn")
    x = torch.randn(2, 1, 28, 28)
    assert int(mine.group(1)) == cnnc_step_cost(net, [x]).kernels
    assert int(eager.group(1)) == eager_step_cost(ref, [x]).kernels
    assert "max_pool2d" in out and "pool's backward reads" in out  # the trade-off, stated


@pytest.mark.parametrize("network,kernels,ops", [("Pooling", 2, 2), ("EdgeDetection", 5, 6)])
def test_summary_and_bench_training_of_a_network_with_nothing_to_train(capsys, network,
                                                                        kernels, ops):
    """Pools alone, or fixed filters (buffers): the step is the training-mode forward, with
    no backward, in `cnnc summary --training` and `cnnc bench --training`."""
    from cnnc.cli import main

    assert main(["summary", "examples/lecture.cnn", "--network", network, "--training"]) == 0
    out = capsys.readouterr().out
    assert f"network {network} has no trainable parameters" in out
    assert re.search(rf"cnnc: +{kernels} kernels\n", out), out
    assert re.search(rf"PyTorch eager: +{ops} compute ops\n", out), out
    assert main(["bench", "examples/lecture.cnn", "--network", network, "--training"]) == 0
    out = capsys.readouterr().out
    assert "training step (a training-mode forward: no trainable parameters, no backward)" \
        in out
    assert f"cnnc ({kernels} kernels)" in out


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_dropout_mask_is_the_same_in_forward_and_backward(p):
    net = cnnc.compile(source=f"""
network D {{
    input x: [N, 6, 8]
    y = x -> relu -> dropout({p}) -> mul(3.0)
    output y
}}
""").train()
    x = (torch.rand(4, 6, 8) + 0.1).requires_grad_(True)
    y = net(x)
    y.sum().backward()
    kept = y.detach() != 0
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    assert torch.equal(y.detach(), torch.where(kept, x.detach() * scale * 3.0, 0.0))
    assert torch.equal(x.grad, torch.where(kept, torch.tensor(scale * 3.0), 0.0))
    if 0 < p < 1:
        assert 0 < kept.float().mean() < 1


# Batch norm groups whose activation the batch norm's backward folds in (no chain kernel):
# bn + relu, bn + add + relu6 (the added tensor's gradient from masked_out), bn + hardtanh.
FOLDED = """
network Folded {
    input x: [N, 4, 6, 6]
    input r: [N, 8, 6, 6]
    a = x -> conv2d(8, 3, padding=1, bias=false) -> batch_norm -> relu
    b = a -> conv2d(8, 3, padding=1, bias=false) -> batch_norm -> add(r) -> relu6
    c = b -> batch_norm -> add(a) -> relu
    d = c -> batch_norm(affine=false) -> hardtanh(-0.5, 0.5)
    output d
}
"""


def test_batch_norm_groups_fold_their_activation_and_match_autograd():
    torch.manual_seed(10)
    net, ref = _pair(source=FOLDED)
    xs = [torch.randn(2, 4, 6, 6) * 2, torch.randn(2, 8, 6, 6) * 3]
    weight = torch.randn(2, 8, 6, 6)
    found = []
    for model in (net, ref):
        model.train()
        inputs = [x.clone().requires_grad_(True) for x in xs]
        (model(*inputs) * weight).sum().backward()
        found.append({"x": inputs[0].grad, "r": inputs[1].grad,
                      **{name: p.grad for name, p in model.named_parameters()}})
    for name, expected in found[1].items():
        _close(found[0][name], expected, name)
    bn_rows = [row for row in net.backward_plan if "batch_norm" in row["ops"]]
    # a and b: the conv and its batch norm are one unit (coefficients, then the conv's
    # gradient reading dy through them); c and d read no conv's output
    paired = ["grad_batch_norm_coefficients", "grad_conv"]
    assert [row["kernels"] for row in bn_rows] == [["grad_batch_norm"]] * 2 + [paired] * 2
    assert [row["layers"] for row in bn_rows] == [["d"], ["c"], ["b"], ["a"]]


@pytest.mark.parametrize("tail", ["-> relu", "-> add(r) -> relu"])
def test_one_batch_norm_group_backward_is_two_launches(tail):
    from cnnc.report.training import triton_launches

    torch.manual_seed(11)
    residual = "input r: [N, 6, 5, 5]" if "add" in tail else ""
    net, ref = _pair(source=f"network T {{ input x: [N, 6, 5, 5] {residual} "
                            f"y = x -> batch_norm {tail} output y }}")
    xs = [torch.randn(2, 6, 5, 5) for _ in range(2 if residual else 1)]
    dy = torch.randn(2, 6, 5, 5)
    grads, launches = [], []
    for model in (net, ref):
        model.train()
        inputs = [x.clone().requires_grad_(True) for x in xs]
        y = model(*inputs)
        with triton_launches() as launched:
            y.backward(dy)
        launches.append(launched)
        grads.append([x.grad for x in inputs] + [p.grad for p in model.parameters()])
    for mine, theirs in zip(*grads):
        _close(mine, theirs, "gradient")
    assert launches[0] == ["_norm_sum_kernel", "_norm_apply_kernel"]


def test_conv_and_linear_groups_fold_their_relu():
    """Needs grad_conv / grad_linear with mask= (issue 7's conv and linear branch)."""
    torch.manual_seed(12)
    net, ref = _pair("examples/lenet5.cnn")
    _compare_step(net, ref, torch.randn(2, 1, 28, 28))
    folded = [row for row in net.backward_plan if row["ops"][-1] == "relu"]
    assert folded and all(len(row["kernels"]) == 1 for row in folded), net.backward_plan
