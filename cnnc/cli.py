"""The command line: parses arguments, calls the API, prints diagnostics, picks exit codes.

Exit codes: 0 success, 1 a diagnostic (a mistake in the .cnn program or its use),
2 a usage error, 3 an internal error (a bug in cnnc), 130 interrupted, 141 the reader of
standard output went away (as a Unix tool killed by SIGPIPE). Command-line paths are
always paths, never guessed to be source text; no user text is read as rich markup.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import traceback
import warnings
from pathlib import Path

from . import outputs
from .errors import CompileError
from .options import Options

EXIT_DIAGNOSTIC, EXIT_USAGE, EXIT_INTERNAL = 1, 2, 3
EXIT_BROKEN_PIPE = 128 + 13  # 13: SIGPIPE


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


def _input_files(path: Path, include: list[Path]) -> set[str]:
    """The .cnn files a compile reads: FILE and every imported file that defines something."""
    from .frontend import load_program

    program = load_program(path, include_dirs=include)
    return {str(path)} | {d.loc.source.path
                          for d in (*program.consts.values(), *program.blocks.values())}


def cmd_check(args) -> int:
    from . import load

    for name in _networks(args.file, args.network, args.include):
        load(args.file, name, include_dirs=args.include)
    return 0


def cmd_summary(args) -> int:
    from . import load
    from .report.summary import render, summarize

    console = outputs.stdout_console()
    for name in _networks(args.file, args.network, args.include):
        graph = load(args.file, name, include_dirs=args.include)
        render(summarize(graph, args.batch), args.explain, console)
        if args.training:
            from .report.training import training_lines

            with _progress(console, f"running one training step of {name}"):
                lines = training_lines(args.file, name, args.batch, args.include)
            for line in lines:
                console.print(line, highlight=False, markup=False)
    return 0


def _one_network(path: Path, name: str | None, include: list[Path]) -> str:
    names = _networks(path, name, include)
    if len(names) > 1:
        raise CompileError(f"{path} defines several networks ({', '.join(names)}); say which one",
                           help="pass --network NAME")
    return names[0]


def _progress(console, message: str):
    """A spinner while something slow runs (only on a terminal)."""
    from rich.text import Text

    return console.status(Text(message)) if console.is_terminal else contextlib.nullcontext()


def cmd_compile(args) -> int:
    from rich.console import Console

    from . import generate, load

    name = _one_network(args.file, args.network, args.include)
    target = outputs.output_target(args.output, _input_files(args.file, args.include))
    with _progress(Console(stderr=True), f"generating kernels for {name}"):
        generated = generate(load(args.file, name, include_dirs=args.include))
    outputs.write(target, generated.source)
    if not args.quiet:
        where = "standard output" if target.path is None else args.output
        _say(f"wrote {where}: {outputs.import_hint(args.output, generated.class_name)}")
    return 0


def cmd_run(args) -> int:
    import torch
    from rich.console import Console

    from . import compile as compile_network
    from . import load, reference
    from .report.run import check_memory, run_and_compare

    console = Console(stderr=True)
    out = outputs.stdout_console()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for name in _networks(args.file, args.network, args.include):
        graph = load(args.file, name, include_dirs=args.include)
        check_memory(graph, args.batch, device)
        with _progress(console, f"compiling {name}"):
            net = compile_network(args.file, name, device=device, include_dirs=args.include)
            ref = reference(args.file, name, include_dirs=args.include).to(device)
        with _progress(console, f"running {name} on {device}"
                       + (" (Triton interpreter)" if device == "cpu" else "")), \
                _out_of_memory(name, args.batch, device):
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
            highlight=False, markup=False,
        )
        if status != "ok":
            return EXIT_DIAGNOSTIC
    return 0


@contextlib.contextmanager
def _out_of_memory(name: str, batch: int, device: str):
    """Running out of memory is a diagnostic: the batch is the user's choice."""
    import torch

    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not isinstance(e, torch.OutOfMemoryError) and "allocate" not in str(e):
            raise
        raise CompileError(f"out of memory running {name} at batch {batch} on {device}",
                           help="use a smaller --batch") from None


DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def cmd_bench(args) -> int:
    import torch
    from rich.console import Console

    from . import compile as compile_network
    from . import load, reference
    from .report.bench import CPU_NOTE, TRAINING_NOTE, bench
    from .report.run import check_memory

    dtype = getattr(torch, DTYPES[args.dtype])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    repeat = args.repeat or (20 if device == "cuda" else 1)  # the interpreter is slow
    console = Console(stderr=True)
    out = outputs.stdout_console()
    notes = ([CPU_NOTE] if device == "cpu" else []) + ([TRAINING_NOTE] if args.training else [])
    for note in notes:  # first: whoever reads the numbers reads this before them
        out.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    for name in _networks(args.file, args.network, args.include):
        graph = load(args.file, name, include_dirs=args.include)
        check_memory(graph, args.batch, device)
        with _progress(console, f"compiling {name}"):
            net = compile_network(args.file, name, dtype=dtype, device=device,
                                  include_dirs=args.include)
            eager = reference(args.file, name, dtype=dtype, include_dirs=args.include)
        with _progress(console, f"timing {name}: cnnc, PyTorch eager, torch.compile"), \
                _out_of_memory(name, args.batch, device):
            result = bench(graph, net, eager.to(device), args.batch, dtype, device,
                           args.training, repeat)
        out.print("\n".join(result.lines()), highlight=False, markup=False, soft_wrap=True)
    return 0


def cmd_graph(args) -> int:
    from . import load
    from .report.graph import check_format, drawing, render

    if args.training and not args.fused:
        args.parser.error("--training picks the plan that --fused draws: add --fused")
    name = _one_network(args.file, args.network, args.include)
    target = outputs.output_target(args.output, _input_files(args.file, args.include))
    graph = load(args.file, name, include_dirs=args.include)
    data, how = render(drawing(graph, args.fused, args.training), check_format(args.output))
    outputs.write(target, data)
    if not args.quiet and target.path is not None:
        _say(f"wrote {args.output} ({how})")
    return 0


def cmd_inspect(args) -> int:
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from . import load
    from .report.inspect import inspect_network, render, total_launches
    from .runtime.aot import AotError

    dtype = getattr(torch, DTYPES[args.dtype])
    if args.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    console = outputs.stdout_console()
    for name in _networks(args.file, args.network, args.include):
        graph = load(args.file, name, include_dirs=args.include)
        progress = Progress(TextColumn("compiling for {task.fields[target]}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("{task.fields[kernel]}"),
                            console=Console(stderr=True), transient=True)
        with progress:
            task = progress.add_task("", total=total_launches(graph, args.training,
                                                              args.backward),
                                     target=args.target, kernel="")
            try:
                inspection = inspect_network(
                    graph, args.target, dtype, args.batch, args.training,
                    progress=lambda i, kernel: progress.update(task, completed=i,
                                                               kernel=kernel),
                    backward=args.backward)
            except AotError as e:
                raise CompileError(f"cannot compile ahead of time: {e}") from None
        render(inspection, console)
    return 0


def cmd_cache(args) -> int:
    from .report.summary import human_bytes
    from .runtime import cache

    options = Options.from_environment()
    directory = Path(options.cache_dir)
    if args.action == "clear":
        removed = cache.clear(directory)
        text = (f"removed {removed.entries} entries ({human_bytes(removed.bytes)}) "
                f"from {directory}")
    else:
        held = cache.stats(directory)
        text = (f"cache directory: {directory}\n"
                f"entries: {held.entries} ({human_bytes(held.bytes)}); least recently used "
                f"ones are removed above {options.cache_max_mb:g} MB (CNNC_CACHE_MAX_MB)")
    stream = outputs.stdout()
    stream.write(text + "\n")
    stream.flush()
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, found {value}")
    return value


def _graph_output(text: str) -> str:
    from .report.graph import check_format

    if not text:
        raise argparse.ArgumentTypeError("the path is empty")
    try:
        check_format(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _path(text: str) -> Path:
    if not text:
        raise argparse.ArgumentTypeError("the path is empty")
    return Path(text)


class _Parser(argparse.ArgumentParser):
    def _print_message(self, message: str, file=None) -> None:
        """--help and --version: argparse itself would let a failed write pass silently."""
        if message and file is not None and file is sys.stdout:
            outputs.stdout().write(message)
        else:
            super()._print_message(message, file)


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cnnc", description="A compiler for convolutional networks written in .cnn."
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"cnnc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name, func, help):
        p = sub.add_parser(name, help=help, description=help)
        # A Path: a file name is never taken for source text, however it looks.
        p.add_argument("file", metavar="FILE", type=_path, help="a .cnn file")
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
                   help="show the lecture's arithmetic: output sizes and parameters of each "
                   "conv, pool and linear, receptive field and jump of every layer, what a "
                   "fully connected layer would cost next to each conv, activation memory")
    p.add_argument("--training", action="store_true",
                   help="also run one training step (forward + backward) and count its "
                   "kernels and the bytes saved for backward, next to PyTorch eager's")
    p = command("compile", cmd_compile,
                "write one Python file with the Triton kernels and an nn.Module class")
    p.add_argument("-o", "--output", required=True, metavar="OUT.py",
                   help="the file to write (never the input; - for standard output)")
    p.add_argument("-q", "--quiet", action="store_true")
    p = command("run", cmd_run, "compile, run on random input, compare with PyTorch, time it")
    p.add_argument("--batch", type=_positive, default=2, metavar="B", help="default 2")
    p.add_argument("--repeat", type=_positive, default=3, metavar="R",
                   help="timed runs (default 3)")
    p = command("inspect", cmd_inspect,
                "compile every kernel for a GPU (none needed): registers, spills, shared "
                "memory, pipelining, tensor cores, roofline")
    p.add_argument("--target", choices=["sm_80", "sm_90"], default="sm_90",
                   help="the GPU: sm_80 (A100) or sm_90 (H100/H200, the default)")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32",
                   help="the compiled dtype (default fp32)")
    p.add_argument("--batch", type=_positive, default=1, metavar="B", help="default 1")
    p.add_argument("--training", action="store_true",
                   help="the training-mode forward (batch statistics)")
    p.add_argument("--backward", action="store_true",
                   help="one training step: the differentiable forward and every backward "
                   "kernel")
    p.add_argument("--allow-tf32", action="store_true",
                   help="inspect as if torch.backends' allow_tf32 flags were set")
    p = command("graph", cmd_graph,
                "draw the graph (one box per operator, blocks as clusters), or with --fused "
                "the kernels of the plan")
    p.add_argument("-o", "--output", required=True, metavar="OUT.svg|.dot|.png",
                   type=_graph_output, help="the file to write; its extension picks the "
                   "format (.svg and .dot need nothing else, .png needs Graphviz); - writes "
                   "DOT to standard output")
    p.add_argument("--fused", action="store_true",
                   help="draw the plan: each kernel a coloured cluster, refused fusions listed")
    p.add_argument("--training", action="store_true",
                   help="with --fused: the training-mode plan (batch statistics)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(parser=p)
    p = command("bench", cmd_bench,
                "time the compiled network against PyTorch eager and torch.compile")
    p.add_argument("--batch", type=_positive, default=1, metavar="B", help="default 1")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32",
                   help="the dtype of weights and inputs (default fp32)")
    p.add_argument("--training", action="store_true",
                   help="time one training step: the training-mode forward (batch "
                   "statistics) and its backward")
    p.add_argument("--repeat", type=_positive, default=None, metavar="R",
                   help="timed runs, median reported (default 20 on a GPU, 1 on a CPU)")
    help = "show the cache of generated files (directory, entries, size), or clear it"
    p = sub.add_parser("cache", help=help, description=help)
    p.add_argument("action", nargs="?", choices=["clear"], help="clear: remove every entry")
    p.set_defaults(func=cmd_cache)
    return parser


def _say(text: str) -> None:
    """A line on standard error, if there is one to write to."""
    if sys.stderr is not None:
        with contextlib.suppress(OSError, ValueError):
            print(text, file=sys.stderr, flush=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    _say(f"warning: {message}")


def main(argv: list[str] | None = None) -> int:
    try:
        args = make_parser().parse_args(argv)
    except (outputs.OutputError, BrokenPipeError) as e:  # from --help or --version
        raise SystemExit(_stdout_failed(e)) from None
    except SystemExit:  # --help, --version or a usage error, printed by argparse
        failed = _finish_stdout()
        if failed:
            raise SystemExit(failed) from None
        raise
    debug = False
    try:
        options = Options.from_environment()
        debug = options.debug
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            code = args.func(args)
        return _finish_stdout() or code
    except (outputs.OutputError, BrokenPipeError) as e:
        return _stdout_failed(e)
    except CompileError as e:
        _say(str(e))
        return EXIT_DIAGNOSTIC
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except MemoryError:
        _say("error: out of memory")
        return EXIT_DIAGNOSTIC
    except OSError as e:
        if e.filename is None:
            return _internal_error(e, debug)
        _say(f"error: {e.filename}: {e.strerror or e}")
        return EXIT_DIAGNOSTIC
    except Exception as e:  # a bug in cnnc: say so, without a traceback unless asked
        return _internal_error(e, debug)


def _finish_stdout() -> int:
    """Flush standard output now, so a failure is said here rather than lost at exit."""
    try:
        if sys.stdout is not None:
            outputs.stdout().flush()
        return 0
    except (outputs.OutputError, BrokenPipeError) as e:
        return _stdout_failed(e)


def _stdout_failed(e: Exception) -> int:
    """Standard output failed: say why, unless its reader just left (as `head` does)."""
    outputs.discard_stdout()  # the exit-time flush must not fail again
    if isinstance(e, BrokenPipeError):
        return EXIT_BROKEN_PIPE
    _say(str(e))
    return EXIT_DIAGNOSTIC


def _internal_error(e: Exception, debug: bool) -> int:
    if debug and sys.stderr is not None:
        traceback.print_exc()
    _say(f"internal error: {type(e).__name__}: {e}\n"
         "this is a bug in cnnc; run with CNNC_DEBUG=1 for the traceback and report it")
    return EXIT_INTERNAL
