from __future__ import annotations

import ast
from pathlib import Path

import pytest

from processor.ops.migrate import available
from processor.sql import load_queries, parse_queries, queries

ROOT = Path(__file__).resolve().parents[2] / "processor"


def test_named_blocks_are_split_by_their_header_line():
    text = "-- preamble\n\n-- one --\nselect 1;\n\n-- two --\n-- a comment\nselect 2;\n"
    assert parse_queries(text) == {"one": "select 1;", "two": "-- a comment\nselect 2;"}


def test_a_name_defined_twice_is_an_error():
    with pytest.raises(ValueError, match="'one' is defined twice"):
        parse_queries("-- one --\nselect 1;\n-- one --\nselect 2;\n")


def test_a_name_defined_in_two_files_is_an_error(tmp_path):
    (tmp_path / "a.sql").write_text("-- one --\nselect 1;\n")
    (tmp_path / "b.sql").write_text("-- one --\nselect 2;\n")
    with pytest.raises(ValueError, match=r"'one' is defined twice \(a.sql, b.sql\)"):
        load_queries(tmp_path)


# Queries the code names through a variable rather than a literal (the status page's actions).
USED_DYNAMICALLY = {
    "cancel_job",
    "retry_job",
    "cancel_jobs",
    "retry_jobs",
    "pause_job_type",
    "resume_job_type",
}
CALLS = {"fetch_one": 0, "fetch_all": 0, "query": 0, "run": 1, "_optional": 1}


def names_the_code_uses() -> set[str]:
    """Every literal query name passed to the gateway anywhere in processor/."""
    used = set()
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            index = CALLS.get(name or "")
            if index is None or len(node.args) <= index:
                continue
            arg = node.args[index]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                used.add(arg.value)
    return used


def test_every_query_the_code_uses_is_defined_and_every_defined_one_is_used():
    used = names_the_code_uses()
    assert len(used) > 50  # the scan finds the calls
    defined = set(queries())
    assert sorted(used - defined) == []
    assert sorted(defined - used - USED_DYNAMICALLY) == []


def test_migrations_are_numbered_from_1_without_gaps_or_duplicates():
    files = [p.name for p in (ROOT.parent / "sql" / "migrations").iterdir() if p.suffix == ".sql"]
    numbers = sorted(int(name.split("_", 1)[0]) for name in files)
    assert numbers == list(range(1, len(numbers) + 1))
    assert [m.version for m in available()] == numbers
