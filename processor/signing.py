"""Signed handler calls: the processor signs every call it makes to a handler, so handlers can
tell it came from the processor without ever holding PROCESSOR_TOKEN.

The header is `Processor-Signature: t=<unix seconds>,v1=<hex>`, where the hex is
HMAC-SHA256(secret, "<t>." + body) over the exact bytes of the body. While a secret is being
rotated the header carries one `v1=` per secret (the new one first); a verifier accepts the
call when any of them matches any secret it knows. A call whose timestamp is more than five
minutes away from the verifier's clock is refused, so a captured call cannot be replayed later.

    from processor.signing import verify
    verify(request.headers.get("Processor-Signature"), await request.body(), secret)
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

HEADER = "Processor-Signature"
TOLERANCE_SECONDS = 300
SCHEME = "v1"


class SignatureError(ValueError):
    """The call is not signed, signed with another secret, or too old; the message says which
    (and never includes a secret or a signature)."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of "<timestamp>." + body."""
    return hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def sign(body: bytes, secrets: str | Sequence[str], timestamp: int | None = None) -> str:
    """The header value for a call with this body: `t=<unix>,v1=<hex>[,v1=<hex>…]`."""
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    if not keys:
        raise ValueError("sign needs at least one secret")
    t = int(time.time()) if timestamp is None else timestamp
    return ",".join([f"t={t}", *(f"{SCHEME}={signature(k, t, body)}" for k in keys)])


def verify(
    header: str | None,
    body: bytes,
    secrets: str | Sequence[str],
    *,
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """Checks a Processor-Signature header against the exact body; returns its timestamp.
    Raises SignatureError when it is missing, malformed, too old (or too far in the future),
    or made with none of `secrets`."""
    keys = [secrets] if isinstance(secrets, str) else [s for s in secrets if s]
    if not keys:
        raise SignatureError("no secret to verify with")
    if not header:
        raise SignatureError(f"missing {HEADER} header")
    timestamp: int | None = None
    given: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == SCHEME and value:
            given.append(value)
    if timestamp is None or not given:
        raise SignatureError(f"malformed {HEADER} header: expected t=<unix>,{SCHEME}=<hex>")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError(
            f"{HEADER} timestamp is {abs(current - timestamp):.0f} s away from now; "
            f"calls older than {tolerance:.0f} s are refused"
        )
    matched = False
    for key in keys:
        expected = signature(key, timestamp, body)
        for value in given:
            matched |= hmac.compare_digest(expected, value)
    if not matched:
        raise SignatureError(f"{HEADER} does not match the body with any known secret")
    return timestamp
