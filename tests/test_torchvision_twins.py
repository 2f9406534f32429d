"""The .cnn classics against their PyTorch twins written as torchvision writes them.

The reference module's state_dict must have exactly the twin's keys and shapes, and
with the twin's weights and non-trivial batch-norm statistics loaded, eval outputs
must agree to 1e-5 relative.
"""

from __future__ import annotations

import pytest
import torch

import cnnc

from torch_models import CNN_EXAMPLES, INPUT_SHAPES, MODELS

EXACT_KEYS = ["alexnet", "vgg16", "resnet18", "resnet50", "lenet5", "mobilenet_v2"]


def _randomise_batch_norm(model: torch.nn.Module, generator: torch.Generator) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            c = module.num_features
            module.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(c, generator=generator) * 0.1)
            module.num_batches_tracked.fill_(7)


@pytest.mark.parametrize("name", EXACT_KEYS)
def test_state_dict_keys_and_shapes_equal_torchvision(name):
    path, network = CNN_EXAMPLES[name]
    ours = cnnc.reference(path, network).state_dict()
    theirs = MODELS[name]().state_dict()
    assert list(ours) == list(theirs)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {
        k: tuple(v.shape) for k, v in theirs.items()
    }


@pytest.mark.parametrize("name", EXACT_KEYS)
@torch.no_grad()
def test_eval_outputs_agree_with_twin(name):
    generator = torch.Generator().manual_seed(0)
    twin = MODELS[name]().eval()
    _randomise_batch_norm(twin, generator)
    path, network = CNN_EXAMPLES[name]
    ours = cnnc.reference(path, network).eval()
    ours.load_state_dict(twin.state_dict())
    x = torch.randn(2, *INPUT_SHAPES[name], generator=generator)
    expected = twin(x)
    got = ours(x)
    scale = expected.abs().max().item()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * scale)


@torch.no_grad()
def test_training_mode_updates_running_statistics_like_torch():
    generator = torch.Generator().manual_seed(1)
    twin = MODELS["resnet18"]().train()
    path, network = CNN_EXAMPLES["resnet18"]
    ours = cnnc.reference(path, network).train()
    ours.load_state_dict(twin.state_dict())
    x = torch.randn(2, 3, 224, 224, generator=generator)
    torch.testing.assert_close(ours(x), twin(x), rtol=1e-5, atol=1e-5)
    for (k, a), (_, b) in zip(ours.state_dict().items(), twin.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


def test_parameters_start_as_pytorch_initialises_the_same_layers():
    # Same seed, same layer order: nn.Conv2d / nn.Linear defaults draw the same numbers.
    torch.manual_seed(0)
    ours = cnnc.reference(*CNN_EXAMPLES["lenet5"]).state_dict()
    torch.manual_seed(0)
    theirs = MODELS["lenet5"]().state_dict()
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0, msg=key)
