"""sql/schema.sql is what the migrations build today: a new migration without `make schema`
fails here, with the first lines that differ."""

from __future__ import annotations

import difflib

from processor.ops.schema import dump, target


def test_schema_sql_matches_what_the_migrations_build(database_url):
    built = dump(database_url)
    stored = target().read_text()
    diff = list(difflib.unified_diff(stored.splitlines(), built.splitlines(), lineterm="", n=1))
    assert diff == [], "sql/schema.sql is stale: run `make schema`\n" + "\n".join(diff[:40])


def test_the_schema_file_holds_the_current_definitions():
    text = target().read_text()
    # 0010 redefined these; the file shows today's version, not the first one.
    assert "p_priority bigint" in text
    assert "gave up after %s attempts" in text
    assert "CREATE TABLE public.processor_ui_signouts" in text
