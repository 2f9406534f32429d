"""cnnc: a compiler for convolutional networks written in the .cnn language.

    import cnnc
    graph = cnnc.load("examples/lenet5.cnn")        # checked graph IR (shapes, names)
    model = cnnc.reference("examples/lenet5.cnn")   # an nn.Module on torch.nn.functional
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch

from .runtime.device import select_triton_mode

select_triton_mode()  # TRITON_INTERPRET=1 before triton is first imported, when no GPU

from .compiler import generate, load  # noqa: E402
from .errors import CompileError, Location  # noqa: E402
from .ir.graph import Graph  # noqa: E402
from .ir.printer import print_graph  # noqa: E402
from .runtime.inputs import InputError  # noqa: E402
from .runtime.reference import ReferenceModule  # noqa: E402

__version__ = "0.1.0"


def reference(path_or_source=None, network: str | None = None, *, source: str | None = None,
              dtype: torch.dtype = torch.float32,
              include_dirs: Iterable[str | os.PathLike] = ()) -> ReferenceModule:
    """The network as an nn.Module computed with torch.nn.functional (the oracle)."""
    graph = load(path_or_source, network, source=source, include_dirs=include_dirs)
    return ReferenceModule(graph, dtype=dtype)


def compile(path_or_source=None, network: str | None = None, *, source: str | None = None,
            dtype: torch.dtype = torch.float32, device=None,
            include_dirs: Iterable[str | os.PathLike] = (),
            cuda_graphs: bool = False, config: str | None = None) -> torch.nn.Module:
    """The network as an nn.Module whose forward launches cnnc's generated Triton kernels.

    The module has the reference's parameter names (so load_state_dict takes a torchvision
    model's weights) and a `plan` attribute: the kernel launches of one forward pass.

    cuda_graphs=True: on CUDA, each forward replays one CUDA graph of the whole plan,
    captured at the first call per batch size, input layout, dtype and mode, and captured
    again when a parameter or buffer is replaced or moved (see docs/api.md). Without CUDA
    it warns and has no effect.
    config: launch configs pinned per kernel family, as CNNC_CONFIG writes them
    ("gemm:BLOCK_M=64,num_warps=4;elementwise:BLOCK=256"); it replaces CNNC_CONFIG.
    """
    from .options import Options, parse_configs
    from .runtime.device import require_triton
    from .runtime.pickling import load_cached
    from .runtime.tuner import pin_configs

    require_triton()
    options = Options.from_environment()
    pins = options.pinned if config is None else Options(
        configs=parse_configs(config, "config")).pinned
    generated = generate(load(path_or_source, network, source=source, include_dirs=include_dirs))
    module, path, _ = load_cached(generated.source, options.cache_dir)
    pin_configs(module, pins, "CNNC_CONFIG" if config is None else "config")
    net = getattr(module, generated.class_name)(dtype=dtype, device=device)
    net.source_path = str(path)
    if cuda_graphs:
        if torch.cuda.is_available():
            from .runtime.graphs import CudaGraphs

            net._cnnc_graphs = CudaGraphs()
        else:
            import warnings

            warnings.warn("cnnc.compile(cuda_graphs=True): CUDA is not available, so the "
                          "network runs without CUDA graphs", RuntimeWarning, stacklevel=2)
    return net


parse = load

__all__ = [
    "CompileError", "Graph", "InputError", "Location", "ReferenceModule", "compile", "generate",
    "load", "parse", "print_graph", "reference",
]
