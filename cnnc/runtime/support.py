"""Run-time support for generated modules.

Everything below the marker line is copied verbatim into every generated file (so a
file from `cnnc compile -o` needs only torch and triton); cnnc imports the same
functions from here. Keep it to torch, math and the standard library.
"""

# ---- cnnc runtime support (copied into generated files) ----
import math

import torch


class InputError(ValueError):
    """A tensor given to forward does not match the network's declared input."""


def initialize(tensor, recipe):
    """PyTorch's initialisation of a parameter, by recipe (see ParamSpec.init)."""
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


class ParameterScope(torch.nn.Module):
    """A named level of the parameter tree (`layer1`, `layer1.0`, ...); computes nothing."""

    def forward(self, *args):
        raise RuntimeError("a parameter scope is not callable")


def make_parameters(root, specs, dtype, device=None):
    """Create parameters and buffers under their dotted names, initialised as PyTorch
    does; 4-d and 5-d ones (conv weights) channels-last. specs: (name, shape, trainable,
    is_long, recipe), in PyTorch's creation order."""
    for name, shape, trainable, is_long, recipe in specs:
        *path, leaf = name.split(".")
        holder = root
        for part in path:
            child = holder._modules.get(part)
            if child is None:
                child = ParameterScope()
                holder.add_module(part, child)
            holder = child
        tensor = torch.empty(shape, dtype=torch.long if is_long else dtype, device=device)
        initialize(tensor, recipe)
        if len(shape) in (4, 5):
            # Conv weights channels-last ([C_out, k..., C_in] in memory), so a kernel's
            # reduction over the input channels reads them contiguously. Initialised first,
            # so the random values are PyTorch's; copy_ and load_state_dict keep the layout.
            layout = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
            tensor = tensor.contiguous(memory_format=layout)
        if trainable:
            holder.register_parameter(leaf, torch.nn.Parameter(tensor))
        else:
            holder.register_buffer(leaf, tensor)


def parameter_slots(root, specs):
    """(name, holding module, leaf) for each parameter: forward looks tensors up with one
    getattr each instead of walking the module tree (a replaced Parameter is still seen)."""
    slots = []
    for spec in specs:
        *path, leaf = spec[0].split(".")
        holder = root
        for part in path:
            holder = holder._modules[part]
        slots.append((spec[0], holder, leaf))
    return slots


def check_inputs(network, specs, inputs, dtype, device):
    """Check forward's tensors against the declared inputs; return the batch sizes by name.
    specs: (name, dims) where a dim is an int or (batch symbol, multiple)."""
    if len(inputs) != len(specs):
        names = ", ".join(name for name, _ in specs)
        raise InputError(f"network {network} takes {len(specs)} input(s) ({names}); "
                         f"got {len(inputs)}")
    batch = {}
    for (name, dims), x in zip(specs, inputs):
        shown = "[" + ", ".join(
            (d[0] if d[1] == 1 else f"{d[0]}*{d[1]}") if isinstance(d, tuple) else str(d)
            for d in dims) + "]"
        if not isinstance(x, torch.Tensor):
            raise InputError(f"input {name} must be a tensor; got {type(x).__name__}")
        got = list(x.shape)
        if x.dim() != len(dims):
            raise InputError(f"input {name} must be {len(dims)}-d {shown}; got {got}")
        for d, size in zip(dims, x.shape):
            if isinstance(d, tuple):
                symbol, multiple = d
                if size == 0 or size % multiple:
                    raise InputError(f"input {name} must have shape {shown}; got {got}")
                n = size // multiple
                if batch.setdefault(symbol, (n, name))[0] != n:
                    raise InputError(f"input {name} has {symbol}={n} but input "
                                     f"{batch[symbol][1]} has {symbol}={batch[symbol][0]}")
            elif d != size:
                raise InputError(f"input {name} must have shape {shown}; got {got}")
        if dtype is not None and x.dtype != dtype:
            raise InputError(f"input {name} is {x.dtype}; the network computes in {dtype} "
                             f"(convert the input, or the module with .to({x.dtype}))")
        if not x.is_floating_point():
            raise InputError(f"input {name} must be a floating-point tensor; got {x.dtype}")
        if device is not None and x.device != device:
            raise InputError(f"input {name} is on {x.device}; the network's parameters are on "
                             f"{device}")
    return {symbol: n for symbol, (n, _) in batch.items()}


def broadcast_strides(tensor, shape):
    """Strides that read `tensor` broadcast to `shape` (0 along broadcast dims)."""
    pad = len(shape) - tensor.dim()
    strides = [0] * pad
    for size, stride, target in zip(tensor.shape, tensor.stride(), shape[pad:]):
        strides.append(0 if size == 1 and target != 1 else stride)
    return strides


def allows_tf32(kind):
    """Whether PyTorch computes float32 in TF32: "conv" follows torch.backends.cudnn (TF32
    by default), "matmul" torch.backends.cuda.matmul (IEEE by default). Reads
    fp32_precision where this torch has it: the legacy allow_tf32 getters raise once the
    two APIs were mixed."""
    if kind == "conv":
        flags = getattr(torch.backends.cudnn, "conv", torch.backends.cudnn)
    else:
        flags = torch.backends.cuda.matmul
    precision = getattr(flags, "fp32_precision", None)
    return precision == "tf32" if precision is not None else bool(flags.allow_tf32)


def tile(size, cap):
    """A power-of-two tile of at least 16 and at most cap (or size's next power of two)."""
    t = 16
    while t < size and t < cap:
        t *= 2
    return t
