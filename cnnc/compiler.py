"""The pipeline, one stage a line: text -> AST -> graph IR -> plans -> Triton source -> module."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from .frontend import build_graph, load_program
from .ir.graph import Graph
from .passes.verify import verify


def resolve_input(path_or_source, source: str | None) -> dict:
    """`compile("net.cnn")`, `compile(source=text)`, or a string that is plainly source.

    A string naming an existing file is that file, whatever it looks like (`net{v2}.cnn`);
    otherwise one with a line break, or a `{` but not ending in `.cnn`, is source text.
    """
    if source is not None:
        if path_or_source is not None:
            raise TypeError("give a path or source=..., not both")
        return {"text": source}
    if path_or_source is None:
        raise TypeError("give a path to a .cnn file, or source=...")
    if isinstance(path_or_source, os.PathLike):
        return {"path": path_or_source}
    if not isinstance(path_or_source, str):
        raise TypeError(f"expected a path or source text, got {type(path_or_source).__name__}")
    looks_like_source = "\n" in path_or_source or (
        "{" in path_or_source and not path_or_source.endswith(".cnn"))
    if looks_like_source and not _is_existing_path(path_or_source):
        return {"text": path_or_source}
    return {"path": path_or_source}


def _is_existing_path(text: str) -> bool:
    return len(text) <= 4096 and os.path.lexists(text)  # longer: no file has such a name


def load(path_or_source=None, network: str | None = None, *, source: str | None = None,
         include_dirs: Iterable[str | os.PathLike] = ()) -> Graph:
    """Parse, expand and shape-check a network; the checked graph IR, or CompileError.

    Imports may name files in the compiled file's directory or in `include_dirs`.
    """
    program = load_program(**resolve_input(path_or_source, source),  # parse + imports
                           include_dirs=include_dirs)
    graph = build_graph(program, network)  # expand blocks, bind arguments, infer shapes, name
    verify(graph)  # IR invariants and parameter names
    return graph


@dataclass
class Generated:
    graph: Graph
    source: str  # the whole generated Python file
    class_name: str


def generate(graph: Graph) -> Generated:
    """The checked graph as one Python file of Triton kernels and an nn.Module."""
    from .codegen.module import emit_module
    from .passes import plan

    eval_plan = plan(graph, training=False)  # simplify, fold batch norms, fuse
    train_plan = plan(graph, training=True)  # simplify, fuse (batch statistics)
    grad_plans = {mode: plan(graph, training=mode == "train", differentiable=True)
                  for mode in ("eval", "train")}  # what autograd units can differentiate
    origin = graph.location.file if graph.location is not None else "<source>"
    emitted = emit_module(graph, eval_plan, train_plan, origin, grad_plans)  # + backward
    return Generated(graph, emitted.source, emitted.class_name)
