"""OpenAI Images: `/images/generations` and `/images/edits` (GPT image models, base64 out)."""

from __future__ import annotations

import base64
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

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        prompt, aspect_ratio = request.prompt, request.aspect_ratio
        reference, reference_mime = request.reference, request.reference_mime
        size = SIZES.get(aspect_ratio, "1024x1024")
        headers = {"Authorization": f"Bearer {self._key}"}
        try:
            if reference is None:
                response = await self.client.post(
                    f"{self.base_url}/images/generations",
                    headers=headers,
                    timeout=self.timeout,
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
                response = await self.client.post(
                    f"{self.base_url}/images/edits",
                    headers=headers,
                    timeout=self.timeout,
                    data={
                        "model": self.model,
                        "prompt": prompt,
                        "n": "1",
                        "size": size,
                        "quality": self.quality,
                        "input_fidelity": "high",
                    },
                    files={"image": (f"reference.{ext}", reference, reference_mime)},
                )
        except httpx.HTTPError as exc:
            raise network(NAME, exc) from exc
        data = json_or_none(response)
        if response.status_code >= 400:
            raise _error(response, data)
        try:
            b64 = data["data"][0]["b64_json"]
            return GeneratedImage(
                base64.b64decode(b64, validate=True), "image/png", NAME, self.model
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise Transient(NAME, "answered without an image (data[0].b64_json)") from exc


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
