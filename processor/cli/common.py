"""What every command group shares: the environment, argument types and the sub-parser shape."""

from __future__ import annotations

import argparse
import json
import math
import re
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from processor import db
from processor.errors import ProcessorError
from processor.ids import RULE as ID_RULE
from processor.ids import ambiguous, id_digits, id_range
from processor.settings import BUILTIN_ROUTES, CommandSettings, parse_job_routes

DB_ENV = "Reads DATABASE_URL from the environment."
MAX_KEEP_DAYS = 36_500  # a hundred years: an age beyond it is a typo, not a retention policy


def env() -> CommandSettings:
    return CommandSettings.from_env()


def database_url() -> str:
    return env().database_url


def public_url() -> str:
    return env().processor_url or "http://127.0.0.1:8000"


def routed_types() -> set[str]:
    """The job types this processor runs: the built-ins and those in JOB_ROUTES."""
    return set(BUILTIN_ROUTES) | set(parse_job_routes(env().job_routes, 120))


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help with the defaults that say something (never `(default: None)` or `(default:
    False)`), and lines never broken inside a hyphenated word or a path such as
    /process-jobs."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)

    def _split_lines(self, text: str, width: int) -> list[str]:
        text = " ".join(text.split())
        return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(
            indent + line for line in self._split_lines(text, max(width - len(indent), 20))
        )


def add_command(
    sub: Any, name: str, help_text: str, env: str = DB_ENV, **kw: Any
) -> argparse.ArgumentParser:
    """One `processor NAME` sub-command; its --help shows defaults and the variables it reads."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog=env,
        formatter_class=HelpFormatter,
        **kw,
    )
    return parser


def days(text: str) -> float:
    """A retention age in days: a finite number from 0 to MAX_KEEP_DAYS (nan and 1e10 are not
    ages, and a negative one would delete jobs that finished moments ago)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_KEEP_DAYS:
        raise argparse.ArgumentTypeError(
            f"days must be a number from 0 to {MAX_KEEP_DAYS}, got {text!r}"
        )
    return value


def bounded_int(low: int, high: int, alternative: str = "") -> Callable[[str], int]:
    """A whole number in [low, high]; a refusal in the HTTP API's words ("must be an integer
    from 1 to 50, got -1"), after argparse's "argument --limit:"."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be an integer from {low} to {high}{alternative}, "
                f"got {text if value is not None else repr(text)}"
            )
        return value

    return parse


PORT_NUMBER = bounded_int(1, 65535)


def seconds(text: str) -> float:
    """A wait in seconds: a number from 0 to a day."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 86_400:
        shown = text if math.isfinite(value) else repr(text)
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 86400, got {shown}")
    return value


def job_ref(text: str) -> str:
    """A job id, or its first 8 or more hex digits (hyphens anywhere or nowhere, any case), as
    given; resolve_job_id looks it up."""
    if id_digits(text) is None:
        raise argparse.ArgumentTypeError(f"must be {ID_RULE}, got {text!r}")
    return text.strip()


class AmbiguousJobId(ProcessorError):
    """Some digits of an id that match more than one job."""


def resolve_job_id(conn: Any, ref: str) -> UUID | None:
    """The job whose id is or starts with `ref` (from job_ref); None if there is none."""
    digits = id_digits(ref)
    assert digits is not None  # job_ref checked it
    if len(digits) == 32:
        return UUID(digits)
    rows = db.run(conn, "jobs_by_id_prefix", id_range(digits))
    if len(rows) > 1:
        raise AmbiguousJobId(ambiguous(ref, [r["id"] for r in rows]))
    return rows[0]["id"] if rows else None


_AGO = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def moment(text: str) -> datetime:
    """A point in time: ISO 8601 (a time without a zone is UTC), or an age such as 30m, 6h, 2d."""
    ago = _AGO.fullmatch(text.strip())
    if ago:
        return datetime.now(UTC) - timedelta(**{_UNITS[ago[2]]: float(ago[1])})
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (give 2026-12-01T10:00, 2026-12-01, or an age: 30m, 6h, 2d)"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)
