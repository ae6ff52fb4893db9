from __future__ import annotations

import pytest
from starlette.exceptions import HTTPException

from processor.web.requests import ClaimRequest, parse_claim_request


def test_an_empty_body_claims_one_job_without_waiting():
    assert parse_claim_request(b"", 50) == ClaimRequest()
    assert parse_claim_request(b"  \n", 50) == ClaimRequest()
    assert parse_claim_request(b"{}", 50) == ClaimRequest()


def test_all_fields_are_read():
    raw = b'{"limit": 7, "job_types": ["a", "b"], "wait": true, "drain": true}'
    assert parse_claim_request(raw, 50) == ClaimRequest(7, ["a", "b"], True, True)


def test_invalid_utf8_is_a_400():
    with pytest.raises(HTTPException) as info:
        parse_claim_request(b"\xff\xfe{", 50)
    assert info.value.status_code == 400
