"""PyTorch's parameter initialisation, by recipe (ParamSpec.init).

Recipes: ("kaiming_uniform",) as nn.ConvNd / nn.Linear weights; ("uniform", bound) for
their biases (bound = 1/sqrt(fan_in)); ("fill", value); ("const", shape, values) for a
fixed filter, broadcast over (out, in) when only the spatial dims are given.

`initialize` is also copied into every file `cnnc compile -o` writes, so it must need
nothing but torch and math.
"""

import math

import torch


def initialize(tensor: torch.Tensor, recipe: tuple) -> None:
    kind = recipe[0]
    with torch.no_grad():
        if kind == "kaiming_uniform":
            torch.nn.init.kaiming_uniform_(tensor, a=math.sqrt(5))
        elif kind == "uniform":
            torch.nn.init.uniform_(tensor, -recipe[1], recipe[1])
        elif kind == "fill":
            tensor.fill_(recipe[1])
        elif kind == "const":
            values = torch.tensor(recipe[2], dtype=torch.float64).reshape(recipe[1])
            tensor.copy_(values.expand(tensor.shape))
        else:
            raise ValueError(f"unknown initialisation {kind!r}")
