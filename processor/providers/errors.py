"""Provider failures, classified once, where the provider's answer is read.

ProviderError
├── RateLimited   the provider asks us to slow down: postpone (retry_after seconds, if given)
├── Transient     5xx, timeouts, connection errors, a garbled answer: retry with backoff
└── Permanent     bad key, out of credits, safety refusal, retired model, invalid input:
                  fail at once with the provider's message
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from typing import Any

import httpx

from processor import redact

MESSAGE_LIMIT = 500


class ProviderError(Exception):
    def __init__(self, provider: str, message: str, *, retry_after: float | None = None):
        # Provider text is upstream text: secrets out, one line, cut.
        super().__init__(f"{provider}: {redact.clean(message, MESSAGE_LIMIT)}")
        self.provider = provider
        self.retry_after = retry_after


class RateLimited(ProviderError):
    pass


class Transient(ProviderError):
    pass


class Permanent(ProviderError):
    pass


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` (seconds or an HTTP date)."""
    if ms := headers.get("retry-after-ms"):
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, when.timestamp() - time.time()) if when else None


def gemini_retry_delay(body: Any) -> float | None:
    """The `RetryInfo.retryDelay` ("15s", "1.5s") of a Gemini error body, when present."""
    try:
        details = body["error"]["details"]
    except (KeyError, TypeError):
        return None
    for item in details if isinstance(details, list) else []:
        if isinstance(item, dict) and item.get("@type", "").endswith("google.rpc.RetryInfo"):
            match = re.fullmatch(r"([0-9.]+)s", str(item.get("retryDelay", "")))
            if match:
                return float(match[1])
    return None


def by_status(provider: str, status: int, message: str, wait: float | None) -> ProviderError:
    """The error for an HTTP status, before any provider-specific exceptions."""
    if status == 429:
        return RateLimited(provider, message, retry_after=wait)
    if status in (408, 409, 500, 502, 503, 504) or status >= 500:
        return Transient(provider, message, retry_after=wait)
    return Permanent(provider, message)


def network(provider: str, exc: httpx.HTTPError) -> Transient:
    if isinstance(exc, httpx.TimeoutException):
        return Transient(provider, f"timed out ({type(exc).__name__})")
    return Transient(provider, f"unreachable: {' '.join(str(exc).split()) or type(exc).__name__}")


def json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
