"""Signed handler calls: the processor signs every call it makes to a handler, so handlers can
tell it came from the processor without ever holding PROCESSOR_TOKEN, and that it was meant
for them.

Each call carries two headers:

    Processor-Delivery: <32 hex digits, new for every delivery>
    Processor-Signature: t=<unix seconds>,v2=<hex>

where the hex is HMAC-SHA256(secret, "<t>\\n<METHOD>\\n<path>\\n<delivery>\\n" + body) over
the exact bytes of the body. Binding the method and the URL path means a call captured by one
handler cannot be replayed to another route; the job type is a field of the signed body. While
a secret is being rotated the header carries one `v2=` per secret (the new one first); a
verifier accepts the call when any of them matches any secret it knows. A call whose timestamp
is more than five minutes away from the verifier's clock is refused, so a captured call cannot
be replayed later; a handler that also remembers delivery ids for five minutes refuses every
replay.

    from processor.signing import verify
    verify(
        request.headers.get("Processor-Signature"),
        await request.body(),
        secret,
        path=request.url.path,
        delivery=request.headers.get("Processor-Delivery"),
    )

`v1=` (HMAC over "<t>." + body only, not bound to a route) is sent beside `v2=` to your own
handlers only while HANDLER_SIGNATURE_V1=on, for verifiers not yet updated; nothing in the
processor accepts it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Sequence

HEADER = "Processor-Signature"
DELIVERY_HEADER = "Processor-Delivery"
TOLERANCE_SECONDS = 300
SCHEME = "v2"
LEGACY_SCHEME = "v1"
MAX_HEADER_CHARS = 2048  # room for many rotating secrets; anything longer is not ours

_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # ASCII digits only: int() takes "²" and 5000 digits
_HEX = re.compile(r"[0-9a-f]{64}")
_DELIVERY = re.compile(r"[0-9a-f]{32}")


class SignatureError(ValueError):
    """The call is not signed, signed with another secret, for another route, or too old; the
    message says which (and never includes a secret or a signature)."""


def new_delivery() -> str:
    """A delivery id: unique to one request written to one handler."""
    return uuid.uuid4().hex


def message(timestamp: int, method: str, path: str, delivery: str, body: bytes) -> bytes:
    """The bytes a v2 signature covers."""
    return f"{timestamp}\n{method.upper()}\n{path}\n{delivery}\n".encode() + body


def signature(
    secret: str, timestamp: int, body: bytes, *, method: str, path: str, delivery: str
) -> str:
    """The hex v2 HMAC-SHA256 of one call."""
    signed = message(timestamp, method, path, delivery, body)
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def legacy_signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex v1 HMAC-SHA256 of "<timestamp>." + body (no route: replayable elsewhere)."""
    return hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def sign(
    body: bytes,
    secrets: str | Sequence[str],
    *,
    path: str,
    delivery: str,
    method: str = "POST",
    timestamp: int | None = None,
    legacy: bool = False,
) -> str:
    """The header value for one call: `t=<unix>,v2=<hex>[,v2=<hex>…][,v1=<hex>…]`."""
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    if not keys:
        raise ValueError("sign needs at least one secret")
    t = int(time.time()) if timestamp is None else timestamp
    parts = [f"t={t}"]
    parts += [
        f"{SCHEME}={signature(k, t, body, method=method, path=path, delivery=delivery)}"
        for k in keys
    ]
    if legacy:
        parts += [f"{LEGACY_SCHEME}={legacy_signature(k, t, body)}" for k in keys]
    return ",".join(parts)


def verify(
    header: str | None,
    body: bytes,
    secrets: str | Sequence[str],
    *,
    path: str,
    delivery: str | None,
    method: str = "POST",
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """Checks a Processor-Signature header against the exact body, the route it arrived on and
    its Processor-Delivery id; returns its timestamp. Raises SignatureError when it is missing,
    malformed, too old (or too far in the future), or made with none of `secrets` for this
    method, path and delivery."""
    keys = [secrets] if isinstance(secrets, str) else [s for s in secrets if s]
    if not keys:
        raise SignatureError("no secret to verify with")
    if not header:
        raise SignatureError(f"missing {HEADER} header")
    malformed = SignatureError(f"malformed {HEADER} header: expected t=<unix>,{SCHEME}=<hex>")
    if len(header) > MAX_HEADER_CHARS:
        raise malformed
    timestamp: int | None = None
    given: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and _TIMESTAMP.fullmatch(value):
            timestamp = int(value)
        elif name == SCHEME and _HEX.fullmatch(value):
            given.append(value)
    if timestamp is None or not given:
        raise malformed
    if not delivery or not _DELIVERY.fullmatch(delivery):
        raise SignatureError(f"missing or malformed {DELIVERY_HEADER} header: expected 32 hex")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError(
            f"{HEADER} timestamp is {abs(current - timestamp):.0f} s away from now; "
            f"calls older than {tolerance:.0f} s are refused"
        )
    matched = False
    for key in keys:
        expected = signature(key, timestamp, body, method=method, path=path, delivery=delivery)
        for value in given:
            matched |= hmac.compare_digest(expected, value)
    if not matched:
        raise SignatureError(
            f"{HEADER} does not match this body, route and delivery with any known secret"
        )
    return timestamp
