"""The command line: parses arguments, calls the API, prints diagnostics, picks exit codes.

Exit codes: 0 success, 1 a diagnostic (a mistake in the .cnn program or its use),
2 a usage error, 3 an internal error (a bug in cnnc), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from .errors import CompileError
from .options import Options

EXIT_DIAGNOSTIC, EXIT_USAGE, EXIT_INTERNAL = 1, 2, 3


def _networks(path: str, name: str | None) -> list[str | None]:
    """The networks a command acts on: the named one, or every network of the file."""
    from .frontend import load_program

    if name is not None:
        return [name]
    program = load_program(path)
    if not program.networks:
        raise CompileError(f"{program.main.path} defines no network",
                           help="a file of blocks and consts is checked when a network uses it")
    return [n.name for n in program.networks]


def cmd_check(args) -> int:
    from . import load

    for name in _networks(args.file, args.network):
        load(args.file, name)
    return 0


def cmd_summary(args) -> int:
    from rich.console import Console

    from . import load
    from .report.summary import render, summarize

    console = Console(width=None if sys.stdout.isatty() else 140)
    for name in _networks(args.file, args.network):
        render(summarize(load(args.file, name), args.batch), args.explain, console)
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
        p.add_argument("file", metavar="FILE", help="a .cnn file")
        p.add_argument("--network", metavar="NAME", help="which network of the file "
                       "(default: every network, or the only one)")
        p.set_defaults(func=func)
        return p

    command("check", cmd_check, "parse and shape-check; prints nothing but diagnostics")
    p = command("summary", cmd_summary,
                "a table per layer: ops, output shape, params, MACs; totals")
    p.add_argument("--batch", type=_positive, default=1, metavar="B",
                   help="batch size for MACs and memory (default 1)")
    p.add_argument("--explain", action="store_true",
                   help="show the lecture's arithmetic for each conv, pool and linear")
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
