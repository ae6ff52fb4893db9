"""Every command, flag and environment variable the README, docs/ and deploy/ name exists. In
their code (fenced blocks and `inline` spans) `make X` is a Makefile target, `processor X` a
command of the CLI, and each `--flag` after it one of that command's options; anywhere in
them, each UPPER_CASE_NAME is a variable the code reads (or one of the few that other
programs read, listed below). Links: test_doc_links.py."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from processor.cli.commands import build_parser

ROOT = Path(__file__).resolve().parents[2]
# Read by other programs, not by the processor's own code.
OTHERS = {
    "OTEL_EXPORTER_OTLP_HEADERS": "the OpenTelemetry SDK",
    "OTEL_RESOURCE_ATTRIBUTES": "the OpenTelemetry SDK",
    "FORWARDED_ALLOW_IPS": "uvicorn",
    "PROCESSOR_SIGNING_SECRET": "your handler, in the signature-check examples",
}
COMMAND = re.compile(r"(?:^|[\s;&|(`$/])processor (?!processor )([a-z][a-z-]*)([^#|;&]*)")
VARIABLE = re.compile(r"\b([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\b")
MAKE = re.compile(r"(?:^|[\s;&|(`$])make ([a-z][a-z-]*)")


def documents() -> list[Path]:
    found = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return found + sorted((ROOT / "deploy").rglob("*.md"))


def code_in(text: str) -> list[str]:
    """Lines of fenced code blocks, and inline code spans outside them."""
    blocks = re.findall(r"(?ms)^```[^\n]*\n(.*?)^```", text)
    prose = re.sub(r"(?ms)^```.*?^```", "", text)
    return [line for b in blocks for line in b.splitlines()] + re.findall(r"`([^`\n]+)`", prose)


def variables_read() -> set[str]:
    source = " ".join(p.read_text() for p in (ROOT / "processor").rglob("*.py"))
    return set(re.findall(r'"([A-Z][A-Z0-9_]+)"', source)) | set(OTHERS)


def unknown_references(text: str) -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands: dict[str, argparse.ArgumentParser] = sub.choices
    known_variables = variables_read()
    targets = set(re.findall(r"(?m)^([a-z][a-z-]*):", (ROOT / "Makefile").read_text()))
    unknown = []
    for piece in code_in(text):
        unknown += [f"`make {t}`" for t in MAKE.findall(piece) if t not in targets]
        for match in COMMAND.finditer(piece):
            name, rest = match.groups()
            if name not in commands:
                unknown.append(f"command `processor {name}`")
                continue
            options = {o for a in commands[name]._actions for o in a.option_strings}
            unknown += [
                f"flag `processor {name} {flag}`"
                for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest)
                if flag not in options
            ]
    # Variables anywhere, prose too (commands only in code: "the processor claims" is prose).
    unknown += [
        f"variable {name}"
        for name in dict.fromkeys(VARIABLE.findall(text))
        if name not in known_variables
    ]
    return unknown


def test_every_command_flag_and_variable_the_docs_name_exists():
    found = {
        doc.relative_to(ROOT).as_posix(): unknown
        for doc in documents()
        if (unknown := unknown_references(doc.read_text()))
    }
    assert found == {}


def test_the_check_finds_what_does_not_exist():
    text = (
        "Run `processor jobs --status failed` and `processor enqueue x --wait`.\n"
        "```sh\nMAX_RUNNING_JOBS=5 processor serve --port 1\nprocessor jobs --every 3\n"
        "NO_SUCH_SETTING=1 processor frobnicate\n```\n"
        "Set `ALSO_NOT_READ` or PROSE_ONLY_SETTING; docker run processor processor migrate.\n"
        "```\n.venv/bin/processor stats --spend\n.venv/bin/processor nosuch\n```\n"
        "Then `make dev PORT=8080`, `make test` and `make deploy`.\n"
    )
    assert sorted(unknown_references(text)) == [
        "`make deploy`",
        "command `processor frobnicate`",
        "command `processor nosuch`",
        "flag `processor jobs --every`",
        "variable ALSO_NOT_READ",
        "variable NO_SUCH_SETTING",
        "variable PROSE_ONLY_SETTING",
    ]
