"""The `processor` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from processor import __version__
from processor.cli import jobs, operate, scheduling
from processor.cli.common import HelpFormatter
from processor.errors import ProcessorError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="processor",
        description=__doc__,
        epilog="Every command reads its settings from the environment (docs/configuration.md "
        "lists them). `processor COMMAND --help` lists a command's options.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"processor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    operate.add_run_commands(sub)
    jobs.add_commands(sub)
    scheduling.add_commands(sub)
    operate.add_setup_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # defaults read PORT and PROCESSOR_PG_PORT
        code = int(args.func(args))
        sys.stdout.flush()  # here, not at exit, so a reader that went away is met below
        return code
    except ProcessorError as exc:
        print(f"processor: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`processor jobs | head -1`): stop quietly, as seq or git do,
        # with SIGPIPE's status; stdout goes to /dev/null so its final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
