"""Every example network trained one step in train mode (outputs, input and parameter
gradients of a fixed random weighting of the outputs, running statistics) against the
reference (cnnc.reference + PyTorch autograd): in float32, next to float64 truth, and in
float64 on both sides, where the kernels' own error shows without float32's rounding."""

from __future__ import annotations

import os
import re

import pytest
import torch

import cnnc

RTOL = 1e-4
# float64 on both sides: what differs is summation order (measured: ~1e-15 on the light
# networks, below 1e-10 on ResNet50 and MobileNetV2); issue 7's 1e-4, as tight as float64
# allows
RTOL_FLOAT64 = 1e-10

# Every example network in train mode. The ImageNet-sized ones run at 64 px (their last
# batch norms then see 2x2 maps, 8 values a channel at batch 2: over fewer, normalising
# amplifies float32 rounding past 1e-4, in PyTorch's own float32 too) and take minutes
# each under the interpreter: they run when CNNC_HEAVY_TESTS=1.
HEAVY = ("AlexNet", "VGG16", "ResNet18", "ResNet50", "MobileNetV2", "EfficientNetB0",
         "DenseNet121", "ShuffleNetV2_x1_0")

# float32 rounding luck, not defects: in each a relu (relu6) mask that float32 rounding of
# the forward flips (an output float64 puts at 0, float32 just above it, or the reverse)
# moves every gradient upstream; PyTorch's float32 flips some too, at other elements
# (ShuffleNetV2_x1_0's one flip is PyTorch's). In float64 on both sides, where no mask
# flips, the same networks train like the reference to 1e-10:
# test_every_example_trains_like_the_reference_in_float64 runs them and must pass.
FLOAT64_PASSES = "; in float64 the step equals the reference's (the _in_float64 test)"
KNOWN_OFF = {
    "ShuffleNetV2_x0_5": "one relu value flips (stage3.3.branch2's last, 1 of 1536): the "
                         "gradients upstream are ~1% off float64 where PyTorch's float32, "
                         "with no flip, is 1e-4 off" + FLOAT64_PASSES,
    "MobileNetV2": "at 64 px one relu6 value flips (the 31st of 35 relu6s, a 960-channel "
                   "2x2 map; PyTorch's float32: none): the input gradient is 0.8% off "
                   "float64 where PyTorch's float32 is 8e-5 off (heavy only; before the "
                   "batch norms took their statistics from the convs' tiles it was a "
                   "weight's gradient, 3.2e-4 against a bar of 2.9e-4)" + FLOAT64_PASSES,
    "ResNet50": "at 64 px its last stage's batch norms see 8 values a channel; 7 relu values "
                "flip (PyTorch's float32: 5, elsewhere): layer4.2.bn3.bias's gradient is "
                "9% off float64 where PyTorch's float32 is 3e-7 off" + FLOAT64_PASSES,
}


# Over 20 s each in float64 under the interpreter (measured on 2 cores: 25 to 80 s): heavy
# for the float64 test, which runs the rest in CI (UNet, UNetTransposed, VolumeNet: 12-15 s).
HEAVY_FLOAT64 = HEAVY + ("MobileNetV3Small", "ShuffleNetV2_x0_5")

# Where float64 cnnc and float64 PyTorch differ by more than summation order, and why.
FLOAT64_OFF = {
    # ATen's hardsigmoid backward multiplies by 1.0f / 6.0f, a float constant, for double
    # too (F.hardsigmoid's float64 gradient is 0.16666667163...); cnnc divides by 6.0
    "MobileNetV3Small": 1e-7,
}


def _example_cases(known_off=KNOWN_OFF, heavy=HEAVY):
    from test_compile_examples import EXAMPLES

    from cnnc.frontend import load_program

    for path in EXAMPLES:
        for net in load_program(path).networks:
            skip = net.name in heavy and os.environ.get("CNNC_HEAVY_TESTS") != "1"
            marks = [pytest.mark.skip(reason="long under the interpreter: "
                                      "CNNC_HEAVY_TESTS=1 runs it")] if skip else []
            if net.name in known_off:
                marks.append(pytest.mark.xfail(reason=known_off[net.name], strict=False))
            yield pytest.param(path, net.name, marks=marks, id=f"{path.stem}:{net.name}")


def _training_source(path, network):
    """The network's source as these tests train it: reduced inputs (64 px for the
    ImageNet-sized ones), dropout off (it draws its own random numbers;
    test_training.py's test_dropout_mask_... checks it)."""
    from test_compile_examples import REDUCED, reduced_source

    source = reduced_source(path, network)
    if REDUCED.get(network, 0) >= 32:
        source = re.sub(r"(input \w+: \[N, 3, )\d+, \d+\]", r"\g<1>64, 64]", source)
    return re.sub(r"dropout\([^)]*\)", "dropout(0.0)", source)


@pytest.mark.parametrize("path,network", list(_example_cases()))
def test_every_example_trains_like_the_reference(path, network, monkeypatch):
    from compile_helpers import inputs_for

    monkeypatch.chdir(path.parent)
    source = _training_source(path, network)
    torch.manual_seed(8)
    net = cnnc.compile(source=source, network=network).train()
    ref = cnnc.reference(source=source, network=network).train()
    ref.load_state_dict(net.state_dict())
    truth = cnnc.reference(source=source, network=network).double().train()
    truth.load_state_dict(net.state_dict())
    xs = inputs_for(ref, batch=2)
    # Deep stacks of batch norms over 8 values a channel amplify float32 rounding; so each
    # result is compared with float64's, next to PyTorch's own float32 error.
    runs = [_run(model, [x.to(dtype) for x in xs]) for model, dtype in
            ((net, torch.float32), (ref, torch.float32), (truth, torch.float64))]
    errors = {}
    for name in runs[2]:
        mine, eager, exact = (r[name].double() for r in runs)
        scale = exact.abs().max().clamp_min(1e-30)
        err, eager_err = ((v - exact).abs().max() / scale for v in (mine, eager))
        # a value that is 0 but for rounding (the running mean after a batch norm and a
        # conv without bias) has no relative error to speak of: 1e-5 absolute there
        near_zero = (mine - exact).abs().max() <= 1e-5
        errors[name] = (0.0 if near_zero else float(err), float(eager_err))
    # Where PyTorch's own float32 step is more than RTOL off float64 somewhere, float32
    # rounding decides relu masks at this size (UNet's 1 x 1 bottleneck normalises 2 values
    # a channel), and which tensors come out near float64 is luck that moves with the
    # thread count: there cnnc's error may reach 4x PyTorch's worst, in any tensor.
    eager_worst = max(eager for _, eager in errors.values())
    floor = RTOL if eager_worst <= RTOL else 4 * eager_worst
    off = {name: (err, eager) for name, (err, eager) in errors.items()
           if err > max(floor, 4 * eager)}
    assert not off, (off, eager_worst)


@pytest.mark.parametrize("path,network", list(_example_cases(known_off={},
                                                              heavy=HEAVY_FLOAT64)))
def test_every_example_trains_like_the_reference_in_float64(path, network, monkeypatch):
    """cnnc compiled in float64 (every kernel's arithmetic in float64: ACC in the
    templates) against the reference in float64, one training step from the same state.
    No relu mask flips here, so this is the sound check of the kernels; KNOWN_OFF's
    networks must pass it (no xfail)."""
    from compile_helpers import inputs_for

    monkeypatch.chdir(path.parent)
    source = _training_source(path, network)
    torch.manual_seed(8)
    net = cnnc.compile(source=source, network=network, dtype=torch.float64).train()
    ref = cnnc.reference(source=source, network=network, dtype=torch.float64).train()
    ref.load_state_dict(net.state_dict())
    xs = [x.double() for x in inputs_for(ref, batch=2)]
    mine, exact = _run(net, xs), _run(ref, xs)
    assert mine.keys() == exact.keys()
    # relative to each tensor's largest magnitude, at least 1 (as compile_helpers'
    # assert_close_to_scale, which compares in float32): a value that is 0 but for rounding
    # has no relative error to speak of (the running mean after a batch norm and a
    # bias-free 1x1 conv; the bias gradient of a batch norm whose output a 1x1 conv takes
    # to a training batch norm, whose dy sums to 0: 1e-13 in ShuffleNetV2_x0_5, 1e-12 in
    # MobileNetV2)
    errors = {name: float((mine[name] - value).abs().max() / value.abs().max().clamp_min(1.0))
              for name, value in exact.items()}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= FLOAT64_OFF.get(network, RTOL_FLOAT64), (worst, errors[worst])


def _run(model, xs):
    """Outputs, gradients (inputs and parameters, of a fixed random weighting of the
    outputs) and floating buffers after one training step, by name."""
    inputs = [x.clone().requires_grad_(True) for x in xs]
    ys = model(*inputs)
    ys = ys if isinstance(ys, tuple) else (ys,)
    weights = torch.Generator().manual_seed(9)
    sum((y * torch.randn(y.shape, generator=weights).to(y.dtype)).sum() for y in ys).backward()
    found = {f"output {i}": y.detach() for i, y in enumerate(ys)}
    found.update({f"input gradient {i}": x.grad for i, x in enumerate(inputs)})
    found.update({name: p.grad for name, p in model.named_parameters()})
    found.update({name: b for name, b in model.named_buffers()
                  if b.is_floating_point() and not name.startswith("_")})
    return found

