"""Each provider against respx mocks of its real request and response shapes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
import respx

from processor.providers import ImageRequest
from processor.providers.errors import Permanent, RateLimited, Transient
from processor.providers.gemini import Gemini
from processor.providers.openai import OpenAIImages
from processor.providers.removebg import RemoveBg
from tests.fakes import product_photo

GEMINI = "https://gemini.test/v1beta"
IMAGE_URL = f"{GEMINI}/models/gemini-3.1-flash-image:generateContent"
TEXT_URL = f"{GEMINI}/models/gemini-3.5-flash:generateContent"
OPENAI = "https://openai.test/v1"
REMOVEBG = "https://removebg.test/v1.0"
PNG = product_photo((64, 64))
JPEG = product_photo((64, 64), fmt="JPEG")
REQUEST = ImageRequest(prompt="A mug", kind="lifestyle", product_name="Mug", aspect_ratio="4:3")


@pytest.fixture
async def client():
    async with httpx.AsyncClient() as c:
        yield c


@pytest.fixture
def mock():
    with respx.mock(assert_all_called=True) as router:
        yield router


def gemini(client, model="gemini-3.1-flash-image") -> Gemini:
    return Gemini(client, GEMINI, "g-key", model)


def image_answer(data: bytes = JPEG, mime: str = "image/jpeg") -> dict:
    return {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Here you go"},
                        {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}},
                    ],
                },
                "finishReason": "STOP",
            }
        ]
    }


def gemini_error(code: int, status: str, details: list | None = None) -> dict:
    return {
        "error": {
            "code": code,
            "message": f"{status} happened",
            "status": status,
            "details": details or [],
        }
    }


async def test_gemini_image_request_shape_and_reference_photo(client, mock):
    route = mock.post(IMAGE_URL).respond(json=image_answer())
    result = await gemini(client).generate(
        ImageRequest(
            prompt="A mug", kind="main", product_name="Mug", aspect_ratio="4:3", reference=PNG
        )
    )
    sent = route.calls.last.request
    assert sent.headers["x-goog-api-key"] == "g-key"
    body = json.loads(sent.content)
    assert body["contents"][0]["parts"][0] == {"text": "A mug"}
    assert body["contents"][0]["parts"][1]["inlineData"] == {
        "mimeType": "image/png",
        "data": base64.b64encode(PNG).decode(),
    }
    assert body["generationConfig"] == {
        "responseModalities": ["TEXT", "IMAGE"],
        "imageConfig": {"aspectRatio": "4:3", "imageSize": "2K"},
    }
    assert (result.data, result.mime_type) == (JPEG, "image/jpeg")  # the mimeType is read


async def test_gemini_429_with_retry_info_is_a_rate_limit_with_its_delay(client, mock):
    details = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure"},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "15s"},
    ]
    mock.post(IMAGE_URL).respond(429, json=gemini_error(429, "RESOURCE_EXHAUSTED", details))
    with pytest.raises(RateLimited) as info:
        await gemini(client).generate(REQUEST)
    assert info.value.retry_after == 15.0


async def test_gemini_429_without_retry_info_falls_back_to_the_header(client, mock):
    mock.post(IMAGE_URL).respond(
        429, json=gemini_error(429, "RESOURCE_EXHAUSTED"), headers={"retry-after": "3"}
    )
    with pytest.raises(RateLimited) as info:
        await gemini(client).generate(REQUEST)
    assert info.value.retry_after == 3.0


@pytest.mark.parametrize(
    ("status", "name", "error"),
    [
        (500, "INTERNAL", Transient),
        (503, "UNAVAILABLE", Transient),
        (504, "DEADLINE_EXCEEDED", Transient),
        (400, "INVALID_ARGUMENT", Permanent),
        (403, "PERMISSION_DENIED", Permanent),
        (404, "NOT_FOUND", Permanent),
    ],
)
async def test_gemini_errors_are_classified(client, mock, status, name, error):
    mock.post(IMAGE_URL).respond(status, json=gemini_error(status, name))
    with pytest.raises(error, match=name):
        await gemini(client).generate(REQUEST)


async def test_a_retired_gemini_model_says_to_change_the_model(client, mock):
    mock.post(IMAGE_URL).respond(404, json=gemini_error(404, "NOT_FOUND"))
    with pytest.raises(Permanent, match="GEMINI_"):
        await gemini(client).generate(REQUEST)


async def test_gemini_timeout_is_transient(client, mock):
    mock.post(IMAGE_URL).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(Transient, match="timed out"):
        await gemini(client).generate(REQUEST)


@pytest.mark.parametrize(
    "body",
    [
        {"candidates": [{"content": {"parts": [{"text": "no"}]}, "finishReason": "IMAGE_SAFETY"}]},
        {"promptFeedback": {"blockReason": "SAFETY"}},
        {"candidates": [{"finishReason": "PROHIBITED_CONTENT"}]},
    ],
)
async def test_gemini_safety_refusals_are_permanent(client, mock, body):
    mock.post(IMAGE_URL).respond(json=body)
    with pytest.raises(Permanent, match=r"SAFETY|PROHIBITED"):
        await gemini(client).generate(REQUEST)


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="<html>proxy error</html>"),
        httpx.Response(
            200,
            json={
                "candidates": [
                    {"content": {"parts": [{"text": "only words"}]}, "finishReason": "STOP"}
                ]
            },
        ),
        httpx.Response(
            200,
            json={
                "candidates": [
                    {
                        "content": {
                            "parts": [
                                {"inlineData": {"mimeType": "image/png", "data": "@@not base64@@"}}
                            ]
                        }
                    }
                ]
            },
        ),
    ],
)
async def test_a_malformed_gemini_answer_is_transient(client, mock, answer):
    mock.post(IMAGE_URL).mock(return_value=answer)
    with pytest.raises(Transient):
        await gemini(client).generate(REQUEST)


async def test_gemini_json_text_joins_non_thought_parts_and_sends_the_schema(client, mock):
    route = mock.post(TEXT_URL).respond(
        json={
            "candidates": [
                {
                    "content": {
                        "parts": [
                            {"text": "planning...", "thought": True},
                            {"text": '{"a": '},
                            {"text": "1}"},
                        ]
                    },
                    "finishReason": "STOP",
                }
            ]
        }
    )
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    value = await gemini(client, "gemini-3.5-flash").generate_json("sys", "write", schema)
    assert value == {"a": 1}
    body = json.loads(route.calls.last.request.content)
    assert body["systemInstruction"] == {"parts": [{"text": "sys"}]}
    assert body["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }


async def test_gemini_json_cut_off_by_max_tokens_is_transient(client, mock):
    mock.post(TEXT_URL).respond(
        json={
            "candidates": [
                {"content": {"parts": [{"text": '{"a":'}]}, "finishReason": "MAX_TOKENS"}
            ]
        }
    )
    with pytest.raises(Transient, match="MAX_TOKENS"):
        await gemini(client, "gemini-3.5-flash").generate_json("s", "p", {})


def openai(client) -> OpenAIImages:
    return OpenAIImages(client, OPENAI, "o-key", "gpt-image-2")


def openai_error(message: str, code: str | None, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


async def test_openai_generation_request_shape(client, mock):
    route = mock.post(f"{OPENAI}/images/generations").respond(
        json={
            "created": 1,
            "data": [{"b64_json": base64.b64encode(PNG).decode()}],
            "usage": {"total_tokens": 10},
        }
    )
    result = await openai(client).generate(REQUEST)
    sent = route.calls.last.request
    assert sent.headers["authorization"] == "Bearer o-key"
    assert json.loads(sent.content) == {
        "model": "gpt-image-2",
        "prompt": "A mug",
        "n": 1,
        "size": "1536x1024",
        "quality": "high",
        "background": "opaque",
        "output_format": "png",
    }
    assert result.data == PNG


async def test_openai_edit_sends_the_reference_as_multipart(client, mock):
    route = mock.post(f"{OPENAI}/images/edits").respond(
        json={"created": 1, "data": [{"b64_json": base64.b64encode(PNG).decode()}]}
    )
    await openai(client).generate(
        ImageRequest(
            prompt="On a desk",
            kind="lifestyle",
            product_name="Mug",
            reference=JPEG,
            reference_mime="image/jpeg",
        )
    )
    sent = route.calls.last.request
    assert sent.headers["content-type"].startswith("multipart/form-data")
    assert b'name="image"; filename="reference.jpeg"' in sent.content
    assert b'name="prompt"' in sent.content and JPEG in sent.content


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "4"}, 4.0),
    ],
)
async def test_openai_rate_limit_reads_the_retry_headers(client, mock, headers, wait):
    mock.post(f"{OPENAI}/images/generations").respond(
        429,
        json=openai_error("Rate limit reached", "rate_limit_exceeded", "requests"),
        headers=headers,
    )
    with pytest.raises(RateLimited) as info:
        await openai(client).generate(REQUEST)
    assert info.value.retry_after == wait


async def test_openai_retry_after_as_an_http_date(client, mock):
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    mock.post(f"{OPENAI}/images/generations").respond(
        429, json=openai_error("slow down", "rate_limit_exceeded"), headers={"retry-after": when}
    )
    with pytest.raises(RateLimited) as info:
        await openai(client).generate(REQUEST)
    assert 25 <= info.value.retry_after <= 31


@pytest.mark.parametrize(
    ("status", "code", "error", "words"),
    [
        (400, "moderation_blocked", Permanent, "safety system"),
        (400, "content_policy_violation", Permanent, "safety system"),
        (404, "model_not_found", Permanent, "OPENAI_IMAGE_MODEL"),
        (429, "insufficient_quota", Permanent, "out of credits"),
        (401, "invalid_api_key", Permanent, "invalid_api_key"),
        (500, None, Transient, "500"),
    ],
)
async def test_openai_errors_are_classified(client, mock, status, code, error, words):
    mock.post(f"{OPENAI}/images/generations").respond(status, json=openai_error("nope", code))
    with pytest.raises(error, match=words):
        await openai(client).generate(REQUEST)


async def test_removebg_sends_the_photo_and_returns_the_png(client, mock):
    route = mock.post(f"{REMOVEBG}/removebg").respond(
        content=PNG, headers={"content-type": "image/png", "X-Credits-Charged": "1"}
    )
    assert await RemoveBg(client, REMOVEBG, "r-key").remove(JPEG) == PNG
    sent = route.calls.last.request
    assert sent.headers["x-api-key"] == "r-key"
    assert b'name="image_file"' in sent.content and b'name="format"\r\n\r\npng' in sent.content


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (400, "unknown_foreground", Permanent),
        (402, "insufficient_credits", Permanent),
        (403, "auth_failed", Permanent),
        (429, "rate_limit_exceeded", RateLimited),
        (503, "unavailable", Transient),
    ],
)
async def test_removebg_errors_are_classified(client, mock, status, code, error):
    mock.post(f"{REMOVEBG}/removebg").respond(
        status,
        json={"errors": [{"title": "Problem", "code": code, "detail": "details"}]},
        headers={"X-RateLimit-Reset": "1700000000", "Retry-After": "2"},
    )
    with pytest.raises(error, match=code):
        await RemoveBg(client, REMOVEBG, "r-key").remove(JPEG)


@pytest.mark.parametrize(("model", "sent"), [("gpt-image-2", True), ("gpt-image-1-mini", False)])
async def test_input_fidelity_goes_only_to_models_that_take_it(client, mock, model, sent):
    route = mock.post(f"{OPENAI}/images/edits").respond(
        json={"created": 1, "data": [{"b64_json": base64.b64encode(PNG).decode()}]}
    )
    provider = OpenAIImages(client, OPENAI, "o-key", model)
    await provider.generate(
        ImageRequest(prompt="p", kind="detail", product_name="Mug", reference=JPEG,
                     reference_mime="image/jpeg")
    )  # fmt: skip
    body = route.calls.last.request.content
    assert (b'name="input_fidelity"\r\n\r\nhigh' in body) is sent


async def test_a_removebg_429_waits_until_x_ratelimit_reset(client, mock):
    import time

    mock.post(f"{REMOVEBG}/removebg").respond(
        429,
        json={"errors": [{"title": "Rate limit exceeded", "code": "rate_limit_exceeded"}]},
        headers={"X-RateLimit-Reset": str(int(time.time()) + 30)},  # no Retry-After
    )
    with pytest.raises(RateLimited) as info:
        await RemoveBg(client, REMOVEBG, "r-key").remove(JPEG)
    assert 25 <= info.value.retry_after <= 31


async def test_gemini_image_extraction_skips_thought_parts(client, mock):
    answer = image_answer(PNG, "image/png")
    draft = {"inlineData": {"mimeType": "image/jpeg", "data": base64.b64encode(JPEG).decode()},
             "thought": True}  # fmt: skip
    answer["candidates"][0]["content"]["parts"].insert(0, draft)
    mock.post(IMAGE_URL).respond(json=answer)
    image = await gemini(client).generate(REQUEST)
    assert image.data == PNG and image.mime_type == "image/png"


CUT_OFF = {"incomplete_details": {"reason": "max_output_tokens"}}


def responses_answer(text: str, status: str = "completed", extra: dict | None = None) -> dict:
    return {
        "id": "resp_1",
        "object": "response",
        "status": status,
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": text, "annotations": []}]},
        ],
        "usage": {"input_tokens": 120, "output_tokens": 40, "total_tokens": 160},
        **(extra or {}),
    }  # fmt: skip


async def test_openai_text_uses_the_responses_api_with_a_json_schema(client, mock):
    from processor.providers.openai import OpenAIText

    route = mock.post(f"{OPENAI}/responses").respond(json=responses_answer('{"headline": "Hi"}'))
    schema = {"type": "object", "properties": {"headline": {"type": "string"}}}
    value = await OpenAIText(client, OPENAI, "o-key", "gpt-5-mini").generate_json(
        "Write copy.", "PRODUCT_JSON: {}", schema
    )
    assert value == {"headline": "Hi"}
    sent = json.loads(route.calls.last.request.content)
    assert sent["model"] == "gpt-5-mini" and sent["instructions"] == "Write copy."
    assert sent["text"]["format"] == {
        "type": "json_schema", "name": "document", "schema": schema, "strict": False,
    }  # fmt: skip
    assert route.calls.last.request.headers["authorization"] == "Bearer o-key"


@pytest.mark.parametrize(
    ("answer", "error", "words"),
    [
        (responses_answer("{", "incomplete", CUT_OFF), Transient, "cut off"),
        ({"status": "completed", "output": [{"type": "message", "content": [
            {"type": "refusal", "refusal": "I can't help with that."}]}]}, Permanent, "refused"),
        (responses_answer("not json"), Transient, "not JSON"),
    ],
)  # fmt: skip
async def test_openai_text_failures_are_classified(client, mock, answer, error, words):
    from processor.providers.openai import OpenAIText

    mock.post(f"{OPENAI}/responses").respond(json=answer)
    with pytest.raises(error, match=words):
        await OpenAIText(client, OPENAI, "o-key", "gpt-5-mini").generate_json("s", "p", {})


def test_with_openai_configured_a_plus_copy_goes_to_openai_not_the_demo():
    from processor.providers.registry import build
    from processor.settings import ProviderSettings

    cfg = ProviderSettings.from_env(
        {"OPENAI_API_KEY": "sk-test-000000", "IMAGE_PROVIDER": "openai"}
    )
    providers = build(cfg, httpx.AsyncClient(), "http://127.0.0.1:8000")
    assert providers.text.name == "openai" and providers.text.model == "gpt-5-mini"
