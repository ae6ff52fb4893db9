from __future__ import annotations

import pytest

from processor.ops.migrate import available
from processor.sql import parse_queries, queries


def test_named_blocks_are_split_by_their_header_line():
    text = "-- preamble\n\n-- one --\nselect 1;\n\n-- two --\n-- a comment\nselect 2;\n"
    assert parse_queries(text) == {"one": "select 1;", "two": "-- a comment\nselect 2;"}


def test_a_name_defined_twice_is_an_error():
    with pytest.raises(ValueError, match="'one' is defined twice"):
        parse_queries("-- one --\nselect 1;\n-- one --\nselect 2;\n")


def test_every_query_the_code_uses_is_defined():
    assert {
        "claim_jobs",
        "complete_jobs",
        "fail_jobs",
        "extend_job_leases",
        "listen_inserts",
        "requeue_expired_jobs",
        "get_job",
        "migrations_record",
    } <= set(queries())


def test_migrations_are_numbered_in_order():
    versions = [m.version for m in available()]
    assert versions == sorted(versions) and versions[0] == 1
