"""Bearer-token checks for the processor's endpoints."""

from __future__ import annotations

import hmac

from starlette.exceptions import HTTPException
from starlette.requests import Request

from processor.settings import Secret

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="processor"'}


def token_matches(presented: str, accepted: list[Secret]) -> bool:
    """Constant-time comparison against every accepted token (current and, while rotating,
    previous); every token is compared, so timing does not tell which one matched."""
    given = presented.encode()
    matched = False
    for secret in accepted:
        matched |= hmac.compare_digest(given, secret.reveal().encode())
    return matched


def require_token(request: Request) -> None:
    """Raises 401 unless the request carries a valid bearer token. The token is never logged."""
    accepted: list[Secret] = request.app.state.accepted_tokens
    header = request.headers.get("authorization", "")
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
