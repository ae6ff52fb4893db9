"""Where the SQL lives: the migrations, and the named queries in sql/queries/*.sql (one file per
concern; a name may be defined once across all of them)."""

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


def load_queries(folder: Path) -> dict[str, str]:
    """Every named query in the folder's .sql files; a name defined twice, in one file or in
    two, is an error that names both places."""
    found: dict[str, str] = {}
    where: dict[str, str] = {}
    for path in sorted(folder.glob("*.sql")):
        for name, body in parse_queries(path.read_text(encoding="utf-8")).items():
            if name in found:
                raise ValueError(f"query {name!r} is defined twice ({where[name]}, {path.name})")
            found[name], where[name] = body, path.name
    return found


@cache
def queries() -> dict[str, sql.SQL]:
    """The named queries, loaded once."""
    return {name: sql.SQL(body) for name, body in load_queries(sql_dir() / "queries").items()}


def query(name: str) -> sql.SQL:
    return queries()[name]
