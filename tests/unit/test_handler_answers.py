"""How a handler's answer decides the job's fate."""

from __future__ import annotations

import json

import pytest

from processor.queue.verdict import Answer, judge


def answer(status: int, *, json_body=None, text=None, headers=None) -> Answer:
    body = json.dumps(json_body).encode() if json_body is not None else (text or "").encode()
    return Answer(status, body, headers or {})


def test_2xx_completes_with_the_result_field():
    verdict = judge(answer(200, json_body={"result": {"url": "u"}, "other": 1}))
    assert (verdict.ok, verdict.result) == (True, {"url": "u"})


def test_2xx_without_a_result_field_keeps_the_whole_json_body():
    assert judge(answer(201, json_body={"sent": True})).result == {"sent": True}
    assert judge(answer(204)).result is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422])
def test_4xx_fails_without_retry(status):
    verdict = judge(answer(status, json_body={"error": "nope"}))
    assert (verdict.ok, verdict.retryable) == (False, False)
    assert verdict.error.endswith(": nope")
    assert verdict.error.startswith(f"handler answered {status} ")


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_5xx_and_throttling_answers_are_retried(status):
    verdict = judge(answer(status, text="try later"))
    assert (verdict.ok, verdict.retryable) == (False, True)
    assert verdict.error.endswith(": try later")


def test_a_redirect_fails_and_says_where_it_pointed():
    verdict = judge(answer(301, headers={"location": "https://new/x"}))
    assert (verdict.ok, verdict.retryable) == (False, False)
    assert "https://new/x" in verdict.error


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"detail": "payload.product.name is required"}, "payload.product.name is required"),
        ({"error": {"message": "nested message", "code": 1}}, "nested message"),
        ({"message": "plain message"}, "plain message"),
        (
            {"detail": [{"loc": ["name"], "msg": "required"}]},
            '[{"loc": ["name"], "msg": "required"}]',
        ),
    ],
)
def test_the_reason_is_read_from_the_usual_fields(body, reason):
    assert (
        judge(answer(422, json_body=body)).error
        == f"handler answered 422 Unprocessable Entity: {reason}"
    )


def test_a_long_reason_is_cut_short():
    verdict = judge(answer(400, text="x" * 5000))
    assert len(verdict.error) < 1100
