"""How a handler's answer decides a job's fate. 2xx completes the job, but a 202 whose body holds
"children" (a JSON array of jobs) makes it wait for those children and be called again;
408/425/429/5xx retry it (a 429 with Retry-After postpones it without spending an attempt); a
redirect or any other 4xx fails it at once with the handler's reason."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from processor import redact
from processor.settings import json_type

RETRYABLE_STATUS = frozenset({408, 425, 429})
REASON_LIMIT = 1000
TEXT_RESULT_KEY = "text"  # a 2xx answer that is not JSON is kept as {"text": "..."}


@dataclass(frozen=True)
class Answer:
    """A handler's HTTP answer, read whole: status, headers (lower-case names) and body."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def reason_phrase(self) -> str:
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return ""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON, or None when it is empty or not JSON (or too deep to decode)."""
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            return None


@dataclass(frozen=True)
class Verdict:
    ok: bool
    result: Any = None
    error: str | None = None
    retryable: bool = False
    postpone_seconds: float | None = None  # a 429 with Retry-After: wait, spend no attempt
    children: list[Any] | None = None  # a 202 with children: create them, wait, call again

    def redacted(self) -> Verdict:
        """The verdict with every configured secret removed from its result and error."""
        return dataclasses.replace(
            self,
            result=redact.redact_value(self.result),
            error=None if self.error is None else redact.clean(self.error, REASON_LIMIT),
        )


def judge(answer: Answer) -> Verdict:
    """Turns a handler's answer into a verdict."""
    status = answer.status
    if 200 <= status < 300:
        body = answer.json()
        if status == 202 and isinstance(body, dict) and "children" in body:
            children = body["children"]
            if not isinstance(children, list) or not children:
                return Verdict(
                    ok=False,
                    error="handler answered 202 with children that are not a non-empty JSON "
                    f"array of jobs (got {json_type(children)})",
                )
            return Verdict(ok=True, children=children)
        if isinstance(body, dict) and "result" in body:
            return Verdict(ok=True, result=body["result"])
        if body is None and answer.body.strip():
            return Verdict(ok=True, result={TEXT_RESULT_KEY: answer.text})
        return Verdict(ok=True, result=body)
    summary = f"handler answered {status} {answer.reason_phrase}".rstrip()
    if 300 <= status < 400:
        where = answer.headers.get("location", "?")
        return Verdict(ok=False, error=f"{summary} to {where}; configure the final URL")
    reason = _reason(answer)
    return Verdict(
        ok=False,
        error=f"{summary}: {reason}" if reason else summary,
        retryable=status >= 500 or status in RETRYABLE_STATUS,
        postpone_seconds=_retry_after(answer) if status == 429 else None,
    )


def _retry_after(answer: Answer) -> float | None:
    try:
        return max(0.0, float(answer.headers.get("retry-after", "")))
    except ValueError:
        return None


def _reason(answer: Answer) -> str:
    body = answer.json()
    if isinstance(body, dict):
        for key in ("error", "detail", "message", "reason"):
            value = body.get(key)
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                value = value["message"]
            if value:
                text = value if isinstance(value, str) else json.dumps(value)
                return redact.clean(text, REASON_LIMIT)
    return redact.clean(answer.text, REASON_LIMIT)
