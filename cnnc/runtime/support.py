"""Run-time support for generated modules.

Everything below the marker line is copied verbatim into every generated file (so a
file from `cnnc compile -o` needs only torch and triton); cnnc imports the same
functions from here. Keep it to torch, math and the standard library.
"""

# ---- cnnc runtime support (copied into generated files) ----
import contextlib
import math
import operator
import struct
import threading

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


class NamedModule(torch.nn.Module):
    """An nn.Module whose children are the .cnn file's layers. Any identifier may name a
    layer (`training`, `eval`, `_modules` too), so make_parameters puts layers straight
    into _modules, where they never hide the module's own attributes and methods, and
    setting a plain attribute (the training flag) never trips over a layer's name."""

    def __setattr__(self, name, value):
        modules = self.__dict__.get("_modules")
        if modules is None or name not in modules:
            super().__setattr__(name, value)
        elif isinstance(value, (torch.Tensor, torch.nn.Module)) or value is None:
            raise TypeError(f"cannot replace layer {name!r}: the network's forward reads the "
                            "parameters of the layers it was built with; assign their "
                            "parameters, or use load_state_dict")
        else:
            object.__setattr__(self, name, value)


class ParameterScope(NamedModule):
    """A named level of the parameter tree (`layer1`, `layer1.0`, ...); computes nothing.

    It indexes like nn.Sequential: scope[3] is the child named "3", where indices count
    every layer of the chain as torchvision's do. Layers without parameters (relu, pools)
    live inside the kernels and have no module, so len() and iteration see only the layers
    that hold parameters, and scope[1] of a relu is an IndexError saying so."""

    def __init__(self, path=""):
        super().__init__()
        self._cnnc_path = path

    def forward(self, *args):
        raise RuntimeError(f"{self._cnnc_path or 'a parameter scope'} holds parameters only and is "
                           "not callable: call the network")

    def __getitem__(self, index):
        if isinstance(index, slice):
            raise TypeError(f"{self._cnnc_path} cannot be sliced: its layers run inside the "
                            "network's kernels, not one after another as modules")
        index = operator.index(index)
        child = self._modules.get(str(index))
        if child is None:
            held = ", ".join(k for k in self._modules if k.isdigit()) or "none"
            why = ("negative indices need every layer, and only the layers with parameters "
                   "are modules" if index < 0 else "layers without parameters have no module")
            raise IndexError(f"{self._cnnc_path} has no layer with parameters at index {index} "
                             f"(those with parameters are at {held}; {why})")
        return child

    def __setitem__(self, index, value):
        raise TypeError(f"cannot replace {self._cnnc_path}[{index}]: the network's forward reads "
                        "the parameters of the layers it was built with; assign their "
                        "parameters, or use load_state_dict")

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __bool__(self):
        return True  # a scope of parameters only has no children, and is still there


def make_parameters(root, specs, dtype, device=None):
    """Create parameters and buffers under their dotted names, initialised as PyTorch
    does; 4-d and 5-d ones (conv weights) channels-last. specs: (name, shape, trainable,
    is_long, recipe), in PyTorch's creation order. Layers go straight into _modules,
    _parameters and _buffers (see NamedModule)."""
    for name, shape, trainable, is_long, recipe in specs:
        *path, leaf = name.split(".")
        holder = root
        for depth, part in enumerate(path):
            child = holder._modules.get(part)
            if child is None:
                child = ParameterScope(".".join(path[:depth + 1]))
                holder._modules[part] = child
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
            holder._parameters[leaf] = torch.nn.Parameter(tensor)
        else:
            holder._buffers[leaf] = tensor


def parameter_slots(root, specs):
    """(dicts, leaves, names, holders): for each parameter, the _parameters or _buffers dict
    of the module that holds it and its key there. current_tensors reads them all with one
    C-level map per forward, so a replaced Parameter is still seen and nothing is rebuilt."""
    dicts, leaves, names, holders = [], [], [], []
    for spec in specs:
        *path, leaf = spec[0].split(".")
        holder = root
        for part in path:
            holder = holder._modules[part]
        dicts.append(holder._parameters if spec[2] else holder._buffers)
        leaves.append(leaf)
        names.append(spec[0])
        holders.append(holder)
    return tuple(dicts), tuple(leaves), tuple(names), tuple(holders)


def current_tensors(slots):
    """The parameters and buffers as they are now, in PARAMETERS order (forward's P)."""
    dicts, leaves, names, holders = slots
    try:
        return tuple(map(dict.__getitem__, dicts, leaves))
    except KeyError:
        pass
    # Taken out of its dict: torch.nn.utils.prune and parametrize leave an attribute or a
    # property of that name, which getattr reads (slower, and only for these networks).
    found = []
    for holder, leaf, name in zip(holders, leaves, names):
        value = getattr(holder, leaf, None)
        if not isinstance(value, torch.Tensor):
            raise AttributeError(f"the network's forward reads {name}, which was deleted; "
                                 "assign it again, or use load_state_dict")
        found.append(value)
    return tuple(found)


def _shown(dims):
    return "[" + ", ".join(
        (d[0] if d[1] == 1 else f"{d[0]}*{d[1]}") if isinstance(d, tuple) else str(d)
        for d in dims) + "]"


def check_inputs(network, specs, inputs, dtype, device):
    """Check forward's tensors against the declared inputs; return the batch sizes by name.
    specs: (name, dims) where a dim is an int or (batch symbol, multiple). Messages are
    built only when a check fails: this runs on every forward."""
    if len(inputs) != len(specs):
        names = ", ".join(name for name, _ in specs)
        raise InputError(f"network {network} takes {len(specs)} input(s) ({names}); "
                         f"got {len(inputs)}")
    batch = {}
    for (name, dims), x in zip(specs, inputs):
        if not isinstance(x, torch.Tensor):
            raise InputError(f"input {name} must be a tensor; got {type(x).__name__}")
        shape = x.shape
        if len(shape) != len(dims):
            raise InputError(f"input {name} must be {len(dims)}-d {_shown(dims)}; "
                             f"got {list(shape)}")
        for d, size in zip(dims, shape):
            if d.__class__ is tuple:
                symbol, multiple = d
                if size % multiple:  # a batch of 0 is empty, as in PyTorch
                    raise InputError(f"input {name} must have shape {_shown(dims)}; "
                                     f"got {list(shape)}")
                n = size // multiple
                if batch.setdefault(symbol, (n, name))[0] != n:
                    raise InputError(f"input {name} has {symbol}={n} but input "
                                     f"{batch[symbol][1]} has {symbol}={batch[symbol][0]}")
            elif d != size:
                raise InputError(f"input {name} must have shape {_shown(dims)}; "
                                 f"got {list(shape)}")
        if x.dtype is not dtype:
            if not x.is_floating_point():
                target = dtype if dtype is not None else torch.get_default_dtype()
                raise InputError(f"input {name} must be a floating-point tensor; got "
                                 f"{x.dtype} (convert it with .to({target}))")
            if dtype is not None:
                raise InputError(f"input {name} is {x.dtype}; the network computes in {dtype} "
                                 f"(convert the input with .to({dtype}), or the module with "
                                 f".to({x.dtype}))")
        if device is not None and x.device != device:
            raise InputError(f"input {name} is on {x.device}; the network's parameters are on "
                             f"{device}")
    return {symbol: n for symbol, (n, _) in batch.items()}


def batch_shapes(memo, key, compute, sizes):
    """The output shapes of one plan at these batch sizes, computed once per batch size
    (memo: a dict per generated file, bounded: a server may see many batch sizes)."""
    shapes = memo.get(key)
    if shapes is None:
        if len(memo) >= 256:
            memo.clear()
        shapes = memo[key] = compute(sizes)
    return shapes


def channels_last_strides(shape):
    """The strides torch.empty(shape, memory_format=torch.channels_last or _3d) gives a
    4-d or 5-d shape (channels innermost, then the spatial dims, the batch outermost):
    the forward allocates with torch.empty_strided, which parses fewer arguments."""
    strides = [1] * len(shape)
    step = shape[1]
    for d in range(len(shape) - 1, 1, -1):
        strides[d] = step
        step *= shape[d]
    strides[0] = step
    return tuple(strides)


def empty_batch(sizes):
    """Whether forward has a batch of 0 (then it returns empty outputs, as PyTorch does)."""
    if 0 not in sizes.values():
        return False
    if any(sizes.values()):
        shown = ", ".join(f"{symbol}={n}" for symbol, n in sizes.items())
        raise InputError(f"the inputs give {shown}: a batch of 0 must be empty in every "
                         "batch size")
    return True


def broadcast_strides(tensor, shape):
    """Strides that read `tensor` broadcast to `shape` (0 along broadcast dims)."""
    pad = len(shape) - tensor.dim()
    strides = [0] * pad
    for size, stride, target in zip(tensor.shape, tensor.stride(), shape[pad:]):
        strides.append(0 if size == 1 and target != 1 else stride)
    return strides


def launch_lock(interpreted):
    """What every forward holds while it launches kernels. Triton's interpreter keeps a
    launch's state in globals, so interpreted launches from two threads must take turns:
    one lock per process, kept on the interpreter module because every generated file
    carries its own copy of this code."""
    if not interpreted:
        return contextlib.nullcontext()
    import triton.runtime.interpreter as interpreter

    return vars(interpreter).setdefault("cnnc_launch_lock", threading.RLock())


NO_TORCHSCRIPT = ("TorchScript (torch.jit.script, torch.jit.trace) cannot hold a network "
                  "compiled by cnnc: its forward launches Triton kernels. Call the module as "
                  "it is, or capture it with torch.compile or torch.export, which trace "
                  "Triton kernels on a CUDA GPU")


def refuse_tracing():
    """torch.jit.trace would fail deep inside Triton: say so up front."""
    if torch.jit.is_tracing():
        raise RuntimeError(NO_TORCHSCRIPT)


def allows_tf32(kind):
    """Whether PyTorch computes float32 in TF32: "conv" follows torch.backends.cudnn (TF32
    by default), "matmul" torch.backends.cuda.matmul (IEEE by default). Reads
    fp32_precision where this torch has it: the legacy allow_tf32 getters raise once the
    two APIs were mixed. Asked at every forward: the getter behind those properties is
    called directly where this torch has it (the properties cost microseconds)."""
    if _FP32_PRECISION is not None:
        return _FP32_PRECISION("cuda", "conv" if kind == "conv" else "matmul") == "tf32"
    if kind == "conv":
        flags = getattr(torch.backends.cudnn, "conv", torch.backends.cudnn)
    else:
        flags = torch.backends.cuda.matmul
    precision = getattr(flags, "fp32_precision", None)
    return precision == "tf32" if precision is not None else bool(flags.allow_tf32)


# What torch.backends.cudnn.conv.fp32_precision and torch.backends.cuda.matmul's read.
_FP32_PRECISION = getattr(torch._C, "_get_fp32_precision_getter", None)


def float32(value):
    """The float32 nearest to value (C++'s static_cast<float>), as a Python float."""
    return struct.unpack("f", struct.pack("f", value))[0]


def upsample_ratio(size, out, scale, mode, align_corners, double):
    """ATen's per-dim source scale of an upsample (area_pixel_compute_scale,
    compute_scales_value), in float32, or in double where `double` (float64's opmath; never
    for nearest): the forward template's constant and the backward kernel's argument."""
    rounded = (lambda v: v) if double and mode != "nearest" else float32
    if mode != "nearest" and align_corners:
        return rounded(rounded(size - 1) / (out - 1)) if out > 1 else 0.0
    if scale is not None and scale > 0:
        return rounded(1.0 / scale)
    return rounded(rounded(size) / out)


def ceil_div(n, d):
    """ceil(n / d) for ints, in host code (triton.cdiv costs microseconds a call)."""
    return -(-n // d)


def tile(size, cap):
    """A power-of-two tile of at least 16 and at most cap (or size's next power of two)."""
    t = 16
    while t < size and t < cap:
        t *= 2
    return t



DOUBLE_BACKWARD = ("cnnc: a compiled network's backward is not differentiable (no double "
                   "backward: create_graph=True, torch.autograd.grad of a gradient, or "
                   "gradient penalties). Differentiate cnnc.reference(...) for that")


class CnncGroup(torch.autograd.Function):
    """One fused kernel group as one differentiable unit.

    apply(step, *tensors): step = (forward, backward, spec). forward(spec, *tensors) ->
    (output, tensors to save, state); backward(state, grad, needs, *saved) -> one gradient
    per tensor (None where not needed). Saved tensors go through ctx.save_for_backward, so
    saved-tensor hooks, checkpointing and offloading see them. The output may be a tuple
    (output, *more): the more (a conv's partial statistics for the batch norm reading its
    output) are not differentiable; a tensor argument that is not a tensor (those partials,
    with their rows) gets no gradient.
    """

    @staticmethod
    def forward(ctx, step, *tensors):
        forward, backward, spec = step
        out, saved, state = forward(spec, *tensors)
        ctx.cnnc_backward, ctx.cnnc_state = backward, state
        ctx.save_for_backward(*saved)
        if isinstance(out, tuple):
            ctx.mark_non_differentiable(*(t for t in out[1:] if isinstance(t, torch.Tensor)))
        return out

    @staticmethod
    def backward(ctx, grad, *more):
        if torch.is_grad_enabled():
            raise RuntimeError(DOUBLE_BACKWARD)
        grads = ctx.cnnc_backward(ctx.cnnc_state, grad, ctx.needs_input_grad[1:],
                                  *ctx.saved_tensors)
        return (None, *grads)


def needs_graph(inputs, params):
    """Whether a forward must record an autograd graph: grad mode is on and some input or
    parameter requires a gradient (under no_grad and inference_mode: never)."""
    if not torch.is_grad_enabled():
        return False
    return any(t.requires_grad for t in inputs) or any(t.requires_grad for t in params)


def rng_state():
    """The CPU generator's state before a launch that draws a dropout seed from it; the
    backward restores it to draw the same seed (and so the same mask)."""
    return torch.random.get_rng_state()


def replayed_seed(state):
    with torch.random.fork_rng(devices=[]):
        torch.random.set_rng_state(state)
        return int(torch.randint(0, 2**31 - 1, (1,)).item())


def add_grad(total, more):
    """Gradients of one tensor used twice in a group: their sum (None: not needed)."""
    if total is None:
        return more
    if more is None:
        return total
    return total + more


def opaque_to_dynamo(fn):
    """torch.compile runs a compiled network's forward as it is, between the graphs it
    compiles around it: the forward launches cnnc's own kernels (under the interpreter,
    Python that Dynamo cannot trace) and records its own autograd units."""
    disable = getattr(getattr(torch, "compiler", None), "disable", None)
    return disable(fn) if disable is not None else fn
