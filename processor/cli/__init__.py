"""The command line, `processor …`: the parser and main (commands), the job commands (jobs),
retry and cancel, one job or by filter (bulk), caps, weights and pause (scheduling), the
operator's commands (operate), what they share (common), and what they show a person (console:
tables, one job's summary, live progress). It may import everything below it: the shared core,
ops, queue, providers and the web app (for `serve`); nothing imports it."""

from processor.cli.commands import main

__all__ = ["main"]
