"""Job ids by their first characters, as the status page and `processor jobs` show them (8):
the CLI and the page's search box take any unambiguous prefix of 8 or more hex digits."""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

PREFIX_MIN = 8
# What an id argument must be, in the words the CLI, the HTTP API and the page all use.
RULE = f"a job id or its first {PREFIX_MIN} or more characters (0-9, a-f)"
_HEX = re.compile(r"[0-9a-f]+")


def id_digits(text: str) -> str | None:
    """The hex digits of an id or of its first PREFIX_MIN or more characters (hyphens
    anywhere or nowhere, any case, in braces or as urn:uuid: as Python's UUID takes them);
    None if it is neither."""
    digits = text.strip().lower().removeprefix("urn:uuid:").strip("{}").replace("-", "")
    if _HEX.fullmatch(digits) and PREFIX_MIN <= len(digits) <= 32:
        return digits
    return None


def ambiguous(ref: str, ids: list[UUID]) -> str:
    """The refusal of some characters that match more than one job (ids: the first matches)."""
    shown = ", ".join(str(i) for i in ids[:2]) + (", …" if len(ids) > 2 else "")
    return f"{ref} matches more than one job ({shown}): give more of the id"


async def matching_ids(db: Any, digits: str) -> list[UUID]:
    """The ids of the jobs `digits` (from id_digits) may name, three at most: the id itself
    when it is whole, else those in its range (more than one: the digits do not say which)."""
    if len(digits) == 32:
        return [UUID(digits)]
    return [r["id"] for r in await db.fetch_all("jobs_by_id_prefix", id_range(digits))]


def id_range(digits: str) -> dict[str, UUID]:
    """The ids that start with `digits`, as the bounds of jobs_by_id_prefix (an index range)."""
    return {"low": UUID(digits.ljust(32, "0")), "high": UUID(digits.ljust(32, "f"))}
