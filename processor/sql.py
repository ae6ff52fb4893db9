"""Where the SQL lives: the migrations and the named queries of sql/queries.sql."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from psycopg import sql

_NAME = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)


def sql_dir() -> Path:
    """The sql/ folder: inside an installed wheel, or at the top of a source checkout."""
    packaged = Path(__file__).parent / "_sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "sql"


def parse_queries(text: str) -> dict[str, str]:
    """Splits a file of '-- name --' blocks into {name: query}."""
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    queries = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = body.strip()
    return queries


@cache
def queries() -> dict[str, sql.SQL]:
    """The named queries, loaded once."""
    text = (sql_dir() / "queries.sql").read_text(encoding="utf-8")
    return {name: sql.SQL(body) for name, body in parse_queries(text).items()}


def query(name: str) -> sql.SQL:
    return queries()[name]
