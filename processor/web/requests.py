"""What a caller may ask of POST /process-jobs, parsed and checked: a ClaimRequest, or a 400
that names what is wrong."""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.exceptions import HTTPException

from processor import redact
from processor.settings import json_type

CLAIM_FIELDS = ("limit", "job_types", "wait", "drain")
MAX_JOB_TYPES = 100


@dataclass(frozen=True)
class ClaimRequest:
    """limit: jobs to claim at most; job_types: only these (None: any); wait: answer with the
    outcomes; drain: keep claiming due jobs for DRAIN_SECONDS after answering."""

    limit: int = 1
    job_types: list[str] | None = None
    wait: bool = False
    drain: bool = False

    @classmethod
    def parse(cls, raw: bytes, max_limit: int) -> ClaimRequest:
        return parse_claim_request(raw, max_limit)


def parse_claim_request(raw: bytes, max_limit: int) -> ClaimRequest:
    """Validates the optional body {"limit", "job_types", "wait", "drain"}; 400 names what is
    wrong. drain: keep claiming due jobs for DRAIN_SECONDS after answering (the trigger path)."""
    if not raw.strip():
        return ClaimRequest()
    try:
        data = json.loads(raw)
    except RecursionError:
        raise HTTPException(400, "body is not valid JSON: it nests too deeply") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, an integer of thousands of digits
        raise HTTPException(400, f"body is not valid JSON: {short(exc)}") from None
    if not isinstance(data, dict):
        raise HTTPException(400, f"body must be a JSON object, got {json_type(data)}")
    unknown = sorted(set(data) - set(CLAIM_FIELDS))
    if unknown:
        raise HTTPException(
            400, f"unknown field(s): {', '.join(unknown)}; expected {', '.join(CLAIM_FIELDS)}"
        )
    limit = data.get("limit", 1)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= max_limit:
        raise HTTPException(
            400, f"limit must be an integer from 1 to {max_limit}, got {short(repr(limit))}"
        )
    job_types = data.get("job_types")
    if job_types is not None and (
        not isinstance(job_types, list)
        or not 1 <= len(job_types) <= MAX_JOB_TYPES
        or not all(isinstance(t, str) and _type_name(t) for t in job_types)
    ):
        raise HTTPException(
            400,
            f"job_types must be a list of 1 to {MAX_JOB_TYPES} job type names "
            "(200 characters at most each, without control characters)",
        )
    wait = data.get("wait", False)
    if not isinstance(wait, bool):
        raise HTTPException(400, f"wait must be true or false, got {short(repr(wait))}")
    drain = data.get("drain", False)
    if not isinstance(drain, bool):
        raise HTTPException(400, f"drain must be true or false, got {short(repr(drain))}")
    return ClaimRequest(limit, job_types, wait, drain)


def _type_name(text: str) -> bool:
    """A job type name as the database can store and match it: 1-200 characters, not all
    blank, no control characters (NUL cannot be stored at all) and no lone surrogates."""
    return (
        0 < len(text) <= 200
        and bool(text.strip())
        and not any(ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF for c in text)
    )


def short(value: object, limit: int = 80) -> str:
    return redact.clean(str(value), limit)
