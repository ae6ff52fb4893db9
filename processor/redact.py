"""Keeps configured secrets out of everything the processor stores, logs or answers.

Every secret the settings hold (tokens, provider keys, the service-role key, signing secrets,
the database password) is registered once at start-up; text from outside (a handler's answer,
a provider's error, an exception) passes through `clean` or `redact_value` before it is stored
in a job, written to a log line or sent in an HTTP answer. Registered secrets are never
forgotten, so a process that built several apps (the tests) redacts all of their secrets.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MARK = "[redacted]"
MIN_SECRET_LENGTH = 6  # shorter values would redact ordinary words
TEXT_LIMIT = 1000  # upstream error text is cut to this many characters

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register(values: Iterable[str | None]) -> None:
    """Adds secrets to redact (and their URL-encoded spellings)."""
    global _secrets
    found = set(_secrets)
    for value in values:
        if value and len(value) >= MIN_SECRET_LENGTH:
            found.update({value, quote(value, safe=""), quote_plus(value)})
    with _lock:
        # Longest first, so a secret that contains another is replaced whole.
        _secrets = tuple(sorted(found, key=len, reverse=True))


def redact(text: str) -> str:
    """The text with every registered secret replaced by [redacted]."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MARK)
    return text


def clean(text: str, limit: int = TEXT_LIMIT) -> str:
    """Upstream text made safe to store: secrets redacted, one line, at most `limit` chars."""
    line = " ".join(redact(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def redact_value(value: Any) -> Any:
    """A JSON value with every registered secret redacted from its strings (and keys)."""
    if not _secrets or value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    text = json.dumps(value, ensure_ascii=False)
    cleaned = redact(text)
    return value if cleaned == text else json.loads(cleaned)
