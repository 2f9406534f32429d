"""Checks on the pure-PyTorch twin models in tests/torch_models.py.

The twins are the yardstick the .cnn examples are compared against, so they are
checked against numbers that do not come from this repository: the published
parameter counts, and a handful of torchvision state_dict keys and shapes.
"""

from __future__ import annotations

import pytest
import torch

from torch_models import INPUT_SHAPES, MODELS, PUBLISHED_PARAMS, count_parameters

BIG = {"alexnet", "vgg16"}  # hundreds of MB of weights; building them takes a second or two


def _marks(name: str) -> list[pytest.MarkDecorator]:
    return [pytest.mark.slow] if name in BIG else []


ALL = [pytest.param(name, marks=_marks(name), id=name) for name in PUBLISHED_PARAMS]


@pytest.mark.parametrize("name", ALL)
def test_parameter_count_matches_published(name: str) -> None:
    assert count_parameters(MODELS[name]()) == PUBLISHED_PARAMS[name]


@pytest.mark.parametrize("name", ALL)
def test_forward_gives_one_score_per_class(name: str) -> None:
    model = MODELS[name]().eval()
    with torch.no_grad():
        y = model(torch.randn(1, *INPUT_SHAPES[name]))
    classes = 10 if name == "lenet5" else 1000
    assert y.shape == (1, classes)
    assert torch.isfinite(y).all()


# A few keys and shapes as torchvision names them (torchvision is not installed,
# so these are written out by hand from its model definitions).
TORCHVISION_KEYS = {
    "lenet5": {"c1.weight": (6, 1, 5, 5), "c3.bias": (16,), "f5.weight": (120, 400),
               "logits.weight": (10, 84)},
    "alexnet": {"features.0.weight": (64, 3, 11, 11), "features.10.weight": (256, 256, 3, 3),
                "classifier.1.weight": (4096, 9216), "classifier.6.bias": (1000,)},
    "vgg16": {"features.0.weight": (64, 3, 3, 3), "features.28.weight": (512, 512, 3, 3),
              "classifier.0.weight": (4096, 25088), "classifier.6.weight": (1000, 4096)},
    "resnet18": {"conv1.weight": (64, 3, 7, 7), "bn1.running_mean": (64,),
                 "layer1.1.conv2.weight": (64, 64, 3, 3),
                 "layer2.0.downsample.0.weight": (128, 64, 1, 1),
                 "layer4.1.bn2.num_batches_tracked": (), "fc.weight": (1000, 512)},
    "resnet50": {"layer1.0.downsample.0.weight": (256, 64, 1, 1),
                 "layer3.5.conv3.weight": (1024, 256, 1, 1),
                 "layer4.0.conv2.weight": (512, 512, 3, 3), "fc.weight": (1000, 2048)},
    "mobilenet_v2": {"features.0.0.weight": (32, 3, 3, 3),
                     "features.1.conv.0.0.weight": (32, 1, 3, 3),
                     "features.1.conv.1.weight": (16, 32, 1, 1),
                     "features.2.conv.1.0.weight": (96, 1, 3, 3),
                     "features.17.conv.3.running_var": (320,),
                     "features.18.0.weight": (1280, 320, 1, 1),
                     "classifier.1.weight": (1000, 1280)},
}

STATE_DICT_SIZES = {"resnet18": 122, "resnet50": 320, "mobilenet_v2": 314}


@pytest.mark.parametrize("name", ALL)
def test_state_dict_uses_torchvision_names(name: str) -> None:
    state = MODELS[name]().state_dict()
    for key, shape in TORCHVISION_KEYS[name].items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    if name in STATE_DICT_SIZES:
        assert len(state) == STATE_DICT_SIZES[name]
