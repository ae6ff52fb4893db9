"""Gemini `generateContent`: images (with an optional reference photo) and JSON text."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx

from processor.providers import GeneratedImage, HttpProvider, ImageRequest
from processor.providers.errors import (
    Permanent,
    ProviderError,
    Transient,
    by_status,
    gemini_retry_delay,
    json_or_none,
    network,
    retry_after,
)
from processor.providers.usage import report

NAME = "gemini"
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9")
SAFETY_REASONS = {
    "SAFETY",
    "PROHIBITED_CONTENT",
    "IMAGE_SAFETY",
    "BLOCKLIST",
    "SPII",
    "RECITATION",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
}


class Gemini(HttpProvider):
    """One Gemini model over HTTP. `model` is an image or a text model, by use."""

    name = NAME

    image_size = "2K"

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.base_url}/models/{self.model}:generateContent"
        try:
            response = await self.client.post(
                url, json=body, timeout=self.timeout, headers={"x-goog-api-key": self._key}
            )
        except httpx.HTTPError as exc:
            raise network(NAME, exc) from exc
        report(http_status=response.status_code)
        data = json_or_none(response)
        if response.status_code >= 400:
            raise _error(response, data)
        if not isinstance(data, dict):
            raise Transient(NAME, f"answered {response.status_code} with a body that is not JSON")
        usage = data.get("usageMetadata") or {}
        if isinstance(usage, dict):  # thinking tokens are billed as output
            report(
                input_tokens=usage.get("promptTokenCount"),
                output_tokens=(usage.get("candidatesTokenCount") or 0)
                + (usage.get("thoughtsTokenCount") or 0),
            )
        return data

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        prompt, aspect_ratio = request.prompt, request.aspect_ratio
        reference, reference_mime = request.reference, request.reference_mime
        parts: list[dict[str, Any]] = [{"text": prompt}]
        if reference is not None:
            parts.append(
                {
                    "inlineData": {
                        "mimeType": reference_mime,
                        "data": base64.b64encode(reference).decode(),
                    }
                }
            )
        data = await self._post(
            {
                "contents": [{"role": "user", "parts": parts}],
                "generationConfig": {
                    "responseModalities": ["TEXT", "IMAGE"],
                    "imageConfig": {"aspectRatio": aspect_ratio, "imageSize": self.image_size},
                },
            }
        )
        for part in _parts(data):
            if not isinstance(part, dict) or part.get("thought"):
                continue  # a thinking model's draft images are not the answer
            inline = part.get("inlineData")
            if isinstance(inline, dict) and inline.get("data"):
                try:
                    raw = base64.b64decode(inline["data"], validate=True)
                except ValueError as exc:
                    raise Transient(NAME, "returned image data that is not base64") from exc
                report(images=1)
                return GeneratedImage(raw, inline.get("mimeType", "image/png"), NAME, self.model)
        raise Transient(NAME, f"returned no image (finishReason {_finish(data)})")

    async def generate_json(
        self, system: str, prompt: str, schema: dict[str, Any]
    ) -> dict[str, Any]:
        data = await self._post(
            {
                "systemInstruction": {"parts": [{"text": system}]},
                "contents": [{"role": "user", "parts": [{"text": prompt}]}],
                "generationConfig": {
                    "responseMimeType": "application/json",
                    "responseJsonSchema": schema,
                },
            }
        )
        text = "".join(
            p.get("text", "") for p in _parts(data) if isinstance(p, dict) and not p.get("thought")
        )
        if _finish(data) == "MAX_TOKENS":
            raise Transient(NAME, "the JSON answer was cut off (finishReason MAX_TOKENS)")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise Transient(NAME, f"returned text that is not JSON: {exc.msg}") from exc
        if not isinstance(value, dict):
            raise Transient(NAME, "returned JSON that is not an object")
        return value


def _parts(data: dict[str, Any]) -> list[Any]:
    """The first candidate's parts; raises Permanent for a blocked prompt or a safety stop."""
    feedback = data.get("promptFeedback") or {}
    candidates = data.get("candidates")
    if not candidates:
        if feedback.get("blockReason"):
            raise Permanent(NAME, f"the prompt was blocked ({feedback['blockReason']})")
        raise Transient(NAME, "returned no candidates")
    finish = _finish(data)
    if finish in SAFETY_REASONS:
        raise Permanent(NAME, f"refused for safety reasons (finishReason {finish})")
    content = candidates[0].get("content") or {}
    parts = content.get("parts")
    if not isinstance(parts, list):
        raise Transient(NAME, f"returned a candidate without parts (finishReason {finish})")
    return parts


def _finish(data: dict[str, Any]) -> str | None:
    candidates = data.get("candidates") or [{}]
    return candidates[0].get("finishReason") if isinstance(candidates[0], dict) else None


def _error(response: httpx.Response, data: Any) -> ProviderError:
    error = data.get("error", {}) if isinstance(data, dict) else {}
    status_text = error.get("status", "")
    message = error.get("message") or response.text[:300] or response.reason_phrase
    summary = f"{response.status_code} {status_text}: {message}".replace("  ", " ")
    wait = gemini_retry_delay(data) or retry_after(response.headers)
    if response.status_code == 404:
        return Permanent(NAME, f"{summary} (is the model id retired? set GEMINI_*_MODEL)")
    return by_status(NAME, response.status_code, summary, wait)
