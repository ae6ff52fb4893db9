"""remove.bg: the product cut out of its photo, as a PNG with alpha."""

from __future__ import annotations

import time

import httpx

from processor.providers import HttpProvider
from processor.providers.errors import (
    Permanent,
    ProviderError,
    Transient,
    by_status,
    json_or_none,
    network,
    retry_after,
)
from processor.providers.usage import report

NAME = "remove.bg"


class RemoveBg(HttpProvider):
    name = NAME

    default_timeout = 60.0

    async def remove(self, image: bytes) -> bytes:
        try:
            response = await self.client.post(
                f"{self.base_url}/removebg",
                headers={"X-Api-Key": self._key},
                timeout=self.timeout,
                data={"size": "full", "type": "product", "format": "png"},
                files={"image_file": ("product.png", image, "application/octet-stream")},
            )
        except httpx.HTTPError as exc:
            raise network(NAME, exc) from exc
        report(http_status=response.status_code, credits=response.headers.get("x-credits-charged"))
        if response.status_code >= 400:
            raise _error(response)
        if not response.content.startswith(b"\x89PNG"):
            raise Transient(NAME, "answered 200 without a PNG image")
        return response.content


def _error(response: httpx.Response) -> ProviderError:
    data = json_or_none(response)
    errors = data.get("errors") if isinstance(data, dict) else None
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    parts = [first.get("title"), first.get("code"), first.get("detail")]
    message = " / ".join(p for p in parts if p) or response.text[:300] or response.reason_phrase
    summary = f"{response.status_code}: {message}"
    if response.status_code == 402:
        return Permanent(NAME, f"out of credits: {summary}")
    return by_status(NAME, response.status_code, summary, _wait(response.headers))


def _wait(headers: httpx.Headers) -> float | None:
    """remove.bg's own clients wait until X-RateLimit-Reset (a Unix time); Retry-After, when
    sent, is read the usual way."""
    wait = retry_after(headers)
    if wait is not None:
        return wait
    try:
        return max(0.0, float(headers.get("x-ratelimit-reset", "")) - time.time())
    except ValueError:
        return None
