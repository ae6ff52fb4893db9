"""OpenAI Images: `/images/generations` and `/images/edits` (GPT image models, base64 out)."""

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
    json_or_none,
    network,
    retry_after,
)
from processor.providers.usage import report

NAME = "openai"
# GPT image models take these sizes; aspect ratios map to the nearest.
SIZES = {
    "1:1": "1024x1024",
    "2:3": "1024x1536",
    "3:4": "1024x1536",
    "9:16": "1024x1536",
    "3:2": "1536x1024",
    "4:3": "1536x1024",
    "16:9": "1536x1024",
    "21:9": "1536x1024",
}
REFUSALS = {"moderation_blocked", "content_policy_violation"}


class OpenAIImages(HttpProvider):
    name = NAME

    default_timeout = 180.0
    quality = "high"
    # Models whose edits take input_fidelity (configuration: OPENAI_INPUT_FIDELITY_MODELS);
    # the spec marks it unsupported for gpt-image-1-mini, which answers 400 to it.
    input_fidelity_models: tuple[str, ...] = ("gpt-image-1", "gpt-image-1.5", "gpt-image-2")

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        prompt, aspect_ratio = request.prompt, request.aspect_ratio
        reference, reference_mime = request.reference, request.reference_mime
        size = SIZES.get(aspect_ratio, "1024x1024")
        if reference is None:
            data = await _post(
                self,
                "/images/generations",
                json={
                    "model": self.model,
                    "prompt": prompt,
                    "n": 1,
                    "size": size,
                    "quality": self.quality,
                    "background": "opaque",
                    "output_format": "png",
                },
            )
        else:
            ext = reference_mime.split("/")[-1]
            form = {
                "model": self.model,
                "prompt": prompt,
                "n": "1",
                "size": size,
                "quality": self.quality,
            }
            if self.model in self.input_fidelity_models:
                form["input_fidelity"] = "high"
            data = await _post(
                self,
                "/images/edits",
                data=form,
                files={"image": (f"reference.{ext}", reference, reference_mime)},
            )
        try:
            b64 = data["data"][0]["b64_json"]
            report(images=1)
            return GeneratedImage(
                base64.b64decode(b64, validate=True), "image/png", NAME, self.model
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise Transient(NAME, "answered without an image (data[0].b64_json)") from exc


class OpenAIText(HttpProvider):
    """JSON text through the Responses API with a JSON schema (the A+ copy, when OpenAI is the
    configured provider)."""

    name = NAME
    default_timeout = 120.0

    async def generate_json(
        self, system: str, prompt: str, schema: dict[str, Any]
    ) -> dict[str, Any]:
        data = await _post(
            self,
            "/responses",
            json={
                "model": self.model,
                "instructions": system,
                "input": prompt,
                "text": {
                    "format": {
                        "type": "json_schema",
                        "name": "document",
                        "schema": schema,
                        "strict": False,
                    }
                },
            },
        )
        if not isinstance(data, dict):
            raise Transient(NAME, "answered with a body that is not JSON")
        if data.get("status") == "incomplete":
            reason = (data.get("incomplete_details") or {}).get("reason", "unknown")
            raise Transient(NAME, f"the JSON answer was cut off ({reason})")
        texts = []
        for item in data.get("output") or []:
            if not isinstance(item, dict) or item.get("type") != "message":
                continue  # reasoning items and tool calls carry no answer text
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "refusal":
                    raise Permanent(NAME, f"refused: {part.get('refusal', '')}")
                if isinstance(part, dict) and part.get("type") == "output_text":
                    texts.append(part.get("text", ""))
        try:
            value = json.loads("".join(texts))
        except json.JSONDecodeError as exc:
            raise Transient(NAME, f"returned text that is not JSON: {exc.msg}") from exc
        if not isinstance(value, dict):
            raise Transient(NAME, "returned JSON that is not an object")
        return value


async def _post(provider: HttpProvider, path: str, **kwargs: Any) -> Any:
    """One POST to the API: the answer's JSON, its usage reported; errors sorted."""
    try:
        response = await provider.client.post(
            f"{provider.base_url}{path}",
            headers={"Authorization": f"Bearer {provider._key}"},
            timeout=provider.timeout,
            **kwargs,
        )
    except httpx.HTTPError as exc:
        raise network(NAME, exc) from exc
    report(http_status=response.status_code)
    data = json_or_none(response)
    if response.status_code >= 400:
        raise _error(response, data)
    _report_usage(data)
    return data


def _report_usage(data: Any) -> None:
    usage = data.get("usage") if isinstance(data, dict) else None
    if isinstance(usage, dict):
        report(input_tokens=usage.get("input_tokens"), output_tokens=usage.get("output_tokens"))


def _error(response: httpx.Response, data: Any) -> ProviderError:
    error = data.get("error", {}) if isinstance(data, dict) else {}
    error = error if isinstance(error, dict) else {}
    code = error.get("code") or error.get("type") or ""
    message = error.get("message") or response.text[:300] or response.reason_phrase
    summary = (
        f"{response.status_code} {code}: {message}"
        if code
        else f"{response.status_code}: {message}"
    )
    if code in REFUSALS:
        return Permanent(NAME, f"refused by the safety system: {summary}")
    if code == "model_not_found":
        return Permanent(NAME, f"{summary} (set OPENAI_IMAGE_MODEL to a current model)")
    if code == "insufficient_quota":
        return Permanent(NAME, f"out of credits: {summary}")
    return by_status(NAME, response.status_code, summary, retry_after(response.headers))
