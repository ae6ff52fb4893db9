from __future__ import annotations

import hashlib
import hmac

import pytest

from processor.signing import SignatureError, sign, verify

SECRET = "whsec-0123456789abcdef"
BODY = b'{"job_id":"1","payload":{}}'


def test_the_header_is_an_hmac_over_the_timestamp_and_the_exact_body():
    header = sign(BODY, SECRET, timestamp=1_700_000_000)
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify(header, BODY, SECRET, now=1_700_000_010) == 1_700_000_000


@pytest.mark.parametrize(
    ("header", "body", "secret", "now", "reason"),
    [
        (None, BODY, SECRET, 1_700_000_000, "missing"),
        ("v1=abc", BODY, SECRET, 1_700_000_000, "malformed"),
        ("t=1700000000", BODY, SECRET, 1_700_000_000, "malformed"),
        (sign(BODY, SECRET, 1_700_000_000), BODY + b" ", SECRET, 1_700_000_000, "does not match"),
        (sign(BODY, SECRET, 1_700_000_000), BODY, "another-secret-000", 1_700_000_000, "match"),
        (sign(BODY, SECRET, 1_700_000_000), BODY, SECRET, 1_700_000_301, "older than 300 s"),
        (sign(BODY, SECRET, 1_700_000_400), BODY, SECRET, 1_700_000_000, "older than 300 s"),
    ],
)
def test_verify_refuses_with_a_reason(header, body, secret, now, reason):
    with pytest.raises(SignatureError, match=reason) as caught:
        verify(header, body, secret, now=now)
    assert secret not in str(caught.value)


def test_rotation_signs_with_both_secrets_and_either_verifies():
    header = sign(BODY, ["new-secret-0000000", "old-secret-0000000"], timestamp=1_700_000_000)
    assert header.count("v1=") == 2
    for secret in ("new-secret-0000000", "old-secret-0000000"):
        assert verify(header, BODY, secret, now=1_700_000_000)
    assert verify(header, BODY, ["unrelated-000000000", "old-secret-0000000"], now=1_700_000_000)
