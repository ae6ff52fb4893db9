"""Bearer-token checks for the processor's endpoints, and the guard that throttles and logs
failed attempts (bearer calls and status-page sign-ins alike)."""

from __future__ import annotations

import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request

from processor.settings import Secret

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="processor"'}
log = structlog.get_logger("processor.auth")


@dataclass
class _Window:
    start: float
    failures: int = 0


@dataclass
class FailureGuard:
    """Counts failed token checks per client address and overall, in fixed windows of WINDOW
    seconds. An address past PER_ADDRESS failures is held off (429, its token not even
    compared) until its window ends, so guessing from one address runs at PER_ADDRESS a
    minute; past OVERALL failures from all addresses together, every address is. Addresses
    that have presented the right token before are never held off (their failures are still
    counted and logged): a flood of wrong tokens cannot lock out the operator's browser or
    the database's pg_net, even when it comes from an address they share (a cloud egress).
    Failures are logged once per address per window, and once when a limit is reached, never
    once per guess."""

    per_address: int = 20
    overall: int = 300
    window: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _addresses: OrderedDict[str, _Window] = field(default_factory=OrderedDict)
    _all: _Window = field(default_factory=lambda: _Window(-math.inf))
    _trusted: OrderedDict[str, None] = field(default_factory=OrderedDict)
    MAX_TRACKED = 10_000

    def _current(self, entry: _Window, now: float) -> _Window:
        if now - entry.start >= self.window:
            entry.start, entry.failures = now, 0
        return entry

    def held_off(self, address: str) -> float | None:
        """Seconds until this address may try again, or None when it may try now."""
        if address in self._trusted:
            return None
        now = self.clock()
        entry = self._addresses.get(address)
        if entry is not None and self._current(entry, now).failures >= self.per_address:
            return entry.start + self.window - now
        everyone = self._current(self._all, now)
        if everyone.failures >= self.overall:
            return everyone.start + self.window - now
        return None

    def failed(self, address: str, surface: str, reason: str) -> None:
        now = self.clock()
        entry = self._addresses.pop(address, None) or _Window(now)
        self._current(entry, now).failures += 1
        self._addresses[address] = entry  # most recent last; the oldest go first
        while len(self._addresses) > self.MAX_TRACKED:
            self._addresses.popitem(last=False)
        everyone = self._current(self._all, now)
        everyone.failures += 1
        if entry.failures == 1:
            log.warning("auth_failed", address=address, surface=surface, reason=reason)
        if entry.failures == self.per_address:
            log.warning(
                "auth_throttled", address=address, surface=surface, failures=entry.failures,
                held_off_seconds=round(self.window),
            )  # fmt: skip
        if everyone.failures == self.overall:
            log.warning(
                "auth_throttled_overall", failures=everyone.failures, addresses=len(self._addresses)
            )

    def succeeded(self, address: str) -> None:
        self._trusted.pop(address, None)
        self._trusted[address] = None
        while len(self._trusted) > 1000:
            self._trusted.popitem(last=False)


def client_address(request: Request) -> str:
    """The caller's address as uvicorn saw it (behind a proxy, set FORWARDED_ALLOW_IPS so
    uvicorn takes it from X-Forwarded-For)."""
    return request.client.host if request.client else "unknown"


def retry_after(wait: float) -> str:
    """Whole seconds for a Retry-After header, at least 1."""
    return str(max(1, math.ceil(wait)))


def too_many(wait: float) -> HTTPException:
    seconds = retry_after(wait)
    return HTTPException(
        429,
        f"too many failed token checks from this address; try again in {seconds} s",
        headers={"Retry-After": seconds},
    )


def token_matches(presented: str, accepted: list[Secret]) -> bool:
    """Constant-time comparison against every accepted token (current and, while rotating,
    previous); every token is compared, so timing does not tell which one matched."""
    given = presented.encode()
    matched = False
    for secret in accepted:
        matched |= hmac.compare_digest(given, secret.reveal().encode())
    return matched


def require_token(request: Request) -> None:
    """Raises 401 unless the request carries a valid bearer token, 429 while its address is
    held off by the FailureGuard. The token is never logged."""
    accepted: list[Secret] = request.app.state.accepted_tokens
    guard: FailureGuard = request.app.state.auth_guard
    address = client_address(request)
    wait = guard.held_off(address)
    if wait is not None:
        raise too_many(wait)
    try:
        _check_bearer(request.headers.get("authorization", ""), accepted)
    except HTTPException as exc:
        guard.failed(address, request.url.path, str(exc.detail))
        raise
    guard.succeeded(address)


def _check_bearer(header: str, accepted: list[Secret]) -> None:
    scheme, _, presented = header.partition(" ")
    if not header:
        raise HTTPException(
            401, "missing bearer token: send 'Authorization: Bearer <token>'", headers=CHALLENGE
        )
    if scheme.lower() != "bearer" or not presented.strip():
        raise HTTPException(
            401,
            "malformed Authorization header: expected 'Bearer <token>'",
            headers={
                **CHALLENGE,
                "WWW-Authenticate": CHALLENGE["WWW-Authenticate"] + ', error="invalid_request"',
            },
        )
    if not token_matches(presented.strip(), accepted):
        raise HTTPException(
            401,
            "invalid bearer token",
            headers={"WWW-Authenticate": CHALLENGE["WWW-Authenticate"] + ', error="invalid_token"'},
        )
