"""The command line: parses arguments, calls the API, prints diagnostics, picks exit codes.

Exit codes: 0 success, 1 a diagnostic (a mistake in the .cnn program or its use),
2 a usage error, 3 an internal error (a bug in cnnc), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from .errors import CompileError
from .options import Options

EXIT_DIAGNOSTIC, EXIT_USAGE, EXIT_INTERNAL = 1, 2, 3


def _networks(path: Path, name: str | None, include: list[Path]) -> list[str | None]:
    """The networks a command acts on: the named one, or every network of the file."""
    from .frontend import load_program

    if name is not None:
        return [name]
    program = load_program(path, include_dirs=include)
    if not program.networks:
        raise CompileError(f"{program.main.path} defines no network",
                           help="a file of blocks and consts is checked when a network uses it")
    return [n.name for n in program.networks]


def cmd_check(args) -> int:
    from . import load

    for name in _networks(args.file, args.network, args.include):
        load(args.file, name, include_dirs=args.include)
    return 0


def cmd_summary(args) -> int:
    from rich.console import Console

    from . import load
    from .report.summary import render, summarize

    console = Console(width=None if sys.stdout.isatty() else 140)
    for name in _networks(args.file, args.network, args.include):
        graph = load(args.file, name, include_dirs=args.include)
        render(summarize(graph, args.batch), args.explain, console)
    return 0


def _one_network(path: Path, name: str | None, include: list[Path]) -> str:
    names = _networks(path, name, include)
    if len(names) > 1:
        raise CompileError(f"{path} defines several networks ({', '.join(names)}); say which one",
                           help="pass --network NAME")
    return names[0]


def _progress(console, message: str):
    """A spinner while something slow runs (only on a terminal)."""
    import contextlib

    return console.status(message) if console.is_terminal else contextlib.nullcontext()


def cmd_compile(args) -> int:
    from rich.console import Console

    from . import generate, load
    from .runtime.loader import write_atomic

    console = Console(stderr=True)
    name = _one_network(args.file, args.network, args.include)
    with _progress(console, f"generating kernels for {name}"):
        generated = generate(load(args.file, name, include_dirs=args.include))

    try:
        write_atomic(Path(args.output), generated.source)
    except OSError as e:
        raise CompileError(f"cannot write {args.output}: {e.strerror or e}") from None
    if not args.quiet:
        console.print(f"wrote {args.output}: class {generated.class_name} "
                      f"(from {Path(args.output).stem} import {generated.class_name})",
                      highlight=False)
    return 0


def cmd_run(args) -> int:
    import torch
    from rich.console import Console

    from . import compile as compile_network
    from . import load, reference
    from .report.run import run_and_compare

    console = Console(stderr=True)
    out = Console(width=None if sys.stdout.isatty() else 140)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for name in _networks(args.file, args.network, args.include):
        with _progress(console, f"compiling {name}"):
            graph = load(args.file, name, include_dirs=args.include)
            net = compile_network(args.file, name, device=device, include_dirs=args.include)
            ref = reference(args.file, name, include_dirs=args.include).to(device)
        with _progress(console, f"running {name} on {device}"
                       + (" (Triton interpreter)" if device == "cpu" else "")):
            report = run_and_compare(net, ref, graph, args.batch, device, args.repeat)
        status = "ok" if report.max_rel_error <= 1e-4 else "MISMATCH"
        out.print(
            f"{report.network}: batch {report.batch} on {report.device}\n"
            f"  max error vs reference: {report.max_abs_error:.3g} absolute, "
            f"{report.max_rel_error:.3g} relative  ({status})\n"
            f"  kernel launches: {report.launches} (PyTorch eager: {report.torch_ops} operator "
            f"calls)\n"
            f"  time per forward: cnnc {report.cnnc_ms:.2f} ms, PyTorch eager "
            f"{report.torch_ms:.2f} ms (median of {args.repeat})",
            highlight=False,
        )
        if status != "ok":
            return EXIT_DIAGNOSTIC
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, found {value}")
    return value


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnc", description="A compiler for convolutional networks written in .cnn."
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"cnnc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name, func, help):
        p = sub.add_parser(name, help=help, description=help)
        # A Path: a file name is never taken for source text, however it looks.
        p.add_argument("file", metavar="FILE", type=Path, help="a .cnn file")
        p.add_argument("--network", metavar="NAME", help="which network of the file "
                       "(default: every network, or the only one)")
        p.add_argument("--include", metavar="DIR", type=Path, action="append", default=[],
                       help="a directory imports may read from, searched after the importing "
                       "file's own directory (repeatable; searched in order)")
        p.set_defaults(func=func)
        return p

    command("check", cmd_check, "parse and shape-check; prints nothing but diagnostics")
    p = command("summary", cmd_summary,
                "a table per layer: ops, output shape, params, MACs; totals")
    p.add_argument("--batch", type=_positive, default=1, metavar="B",
                   help="batch size for MACs and memory (default 1)")
    p.add_argument("--explain", action="store_true",
                   help="show the lecture's arithmetic for each conv, pool and linear")
    p = command("compile", cmd_compile,
                "write one Python file with the Triton kernels and an nn.Module class")
    p.add_argument("-o", "--output", required=True, metavar="OUT.py")
    p.add_argument("-q", "--quiet", action="store_true")
    p = command("run", cmd_run, "compile, run on random input, compare with PyTorch, time it")
    p.add_argument("--batch", type=_positive, default=2, metavar="B", help="default 2")
    p.add_argument("--repeat", type=_positive, default=3, metavar="R",
                   help="timed runs (default 3)")
    return parser


def main(argv: list[str] | None = None) -> int:
    options = Options.from_environment()
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except CompileError as e:
        print(e, file=sys.stderr)
        return EXIT_DIAGNOSTIC
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug in cnnc: say so, without a traceback unless asked
        if options.debug:
            traceback.print_exc()
        print(f"internal error: {type(e).__name__}: {e}\n"
              "this is a bug in cnnc; run with CNNC_DEBUG=1 for the traceback and report it",
              file=sys.stderr)
        return EXIT_INTERNAL
