"""What every command group shares: the environment, argument types and the sub-parser shape."""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

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


def add_command(
    sub: Any, name: str, help_text: str, env: str = DB_ENV, **kw: Any
) -> argparse.ArgumentParser:
    """One `processor NAME` sub-command; its --help shows defaults and the variables it reads."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog=env,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {text}")
        return value

    return parse


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
