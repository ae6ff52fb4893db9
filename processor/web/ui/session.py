"""The status page's sign-in: the operator pastes PROCESSOR_TOKEN once and gets a signed,
HttpOnly, SameSite=Strict session cookie (itsdangerous). The cookie holds no token: only a
fingerprint of the token used to sign in (so rotating the token ends old sessions once its
previous value is dropped), a random session id, and the session's CSRF token for the page's
forms. Signing out records the session id (hashed) in processor_ui_signouts, so a saved copy of
the cookie opens nothing afterwards, on any processor sharing the database."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from processor.db import Database
from processor.settings import Settings

COOKIE = "processor_session"
MAX_AGE = 12 * 3600  # a session lasts a working day


@dataclass(frozen=True)
class Session:
    csrf: str
    sid: str

    @property
    def sid_hash(self) -> str:
        return hashlib.sha256(self.sid.encode()).hexdigest()


def _derive(token: str, purpose: bytes) -> str:
    return hmac.new(token.encode(), purpose, hashlib.sha256).hexdigest()


class Sessions:
    def __init__(self, settings: Settings, db: Database) -> None:
        self._db = db
        tokens = [t.reveal() for t in (settings.previous_token, settings.token) if t]
        # Signed with the current token's key; cookies signed with the previous one still load.
        self._serializer = URLSafeTimedSerializer(
            [_derive(t, b"processor ui cookie v1") for t in tokens], salt="ui-session"
        )
        self._fingerprints = {_derive(t, b"processor ui session v1") for t in tokens}
        self._current = _derive(settings.token.reveal(), b"processor ui session v1")
        self.secure = settings.processor_url.startswith("https://")

    async def load(self, request: Request) -> Session | None:
        """The request's session, or None: no cookie, a bad signature, an old token, past
        MAX_AGE, or signed out."""
        session = self._decode(request)
        if session is None:
            return None
        row = await self._db.fetch_one("ui_signed_out", {"sid_hash": session.sid_hash})
        return None if row and row["signed_out"] else session

    def _decode(self, request: Request) -> Session | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self._serializer.loads(raw, max_age=MAX_AGE)
        except BadSignature:
            return None
        if not isinstance(data, dict) or data.get("fp") not in self._fingerprints:
            return None
        csrf, sid = data.get("csrf"), data.get("sid")
        return Session(csrf, sid) if isinstance(csrf, str) and isinstance(sid, str) else None

    def start(self, response: Response) -> None:
        value = self._serializer.dumps(
            {
                "fp": self._current,
                "sid": secrets.token_urlsafe(24),
                "csrf": secrets.token_urlsafe(24),
            }
        )
        response.set_cookie(
            COOKIE,
            value,
            max_age=MAX_AGE,
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=self.secure,
        )

    async def end(self, session: Session | None, response: Response) -> None:
        """Signs the session out for good (until the cookie would have expired anyway) and
        deletes the cookie from this browser."""
        if session is not None:
            await self._db.fetch_one(
                "ui_sign_out", {"sid_hash": session.sid_hash, "max_age": MAX_AGE}
            )
        response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
