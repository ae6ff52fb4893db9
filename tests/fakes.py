"""Local stand-ins for the AI providers, speaking their real request and response shapes
(see the provider modules): a Gemini generateContent server that draws real PNGs."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def product_photo(
    size: tuple[int, int] = (800, 800), backdrop=(200, 200, 200), fmt: str = "PNG"
) -> bytes:
    """A product (a red box) on a plain backdrop: what a seller's photo looks like."""
    image = Image.new("RGB", size, backdrop)
    w, h = size
    ImageDraw.Draw(image).rectangle([w * 0.3, h * 0.2, w * 0.7, h * 0.8], fill=(200, 30, 30))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


APLUS = {
    "headline": "Meet the Mug",
    "modules": {
        "header": {
            "headline": "Coffee, better",
            "body": "A mug for slow mornings.",
            "image_alt_text": "Mug on a table",
            "image_prompt": "Mug on an oak table",
        },
        "four_images": [
            {
                "headline": f"Tile {i}",
                "body": f"Body {i}",
                "image_alt_text": f"Alt {i}",
                "image_prompt": f"Prompt {i}",
            }
            for i in range(4)
        ],
        "highlights": {
            "headline": "Why",
            "bullets": ["Warm", "Sturdy"],
            "image_alt_text": "Close-up",
            "image_prompt": "Close-up of glaze",
        },
    },
}


@dataclass
class FakeGemini:
    """POST /v1beta/models/{model}:generateContent. Script failures by call number:
    fail = {4: (503, None)} answers call 4 with 503; (429, "7s") adds RetryInfo.
    echo_request answers every call 400 with the request's headers in the message, as a
    misconfigured proxy in front of the real API might."""

    api_key: str = "fake-gemini-key"
    delay: float = 0.0
    echo_request: bool = False
    # (calls, seconds): at most that many calls per fixed window, as a vendor's quota; beyond
    # it a 429 RESOURCE_EXHAUSTED with RetryInfo until the window ends.
    limit: tuple[int, float] | None = None
    limited: int = 0  # 429s answered for the limit
    windows: dict[int, int] = field(default_factory=dict)
    fail: dict[int, tuple[int, str | None]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def image_calls(self) -> int:
        with self.lock:
            return sum(
                1
                for c in self.calls
                if "IMAGE" in c["body"]["generationConfig"].get("responseModalities", [])
            )

    async def generate(self, request: Request) -> Response:
        if self.echo_request:
            seen = dict(request.headers)
            message = f"bad request {request.url} with headers {seen}"
            return JSONResponse(
                {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}, 400
            )
        if request.headers.get("x-goog-api-key") != self.api_key:
            return JSONResponse(
                {
                    "error": {
                        "code": 400,
                        "message": "API key not valid.",
                        "status": "INVALID_ARGUMENT",
                    }
                },
                400,
            )
        body = await request.json()
        if self.limit is not None:
            calls, seconds = self.limit
            now = time.monotonic()
            window = int(now // seconds)
            with self.lock:
                self.windows[window] = self.windows.get(window, 0) + 1
                over = self.windows[window] > calls
                if over:
                    self.limited += 1
            if over:
                left = (window + 1) * seconds - now
                details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                            "retryDelay": f"{left:.3f}s"}]  # fmt: skip
                return JSONResponse(
                    {"error": {"code": 429, "message": "Resource has been exhausted (quota).",
                               "status": "RESOURCE_EXHAUSTED", "details": details}},
                    429,
                )  # fmt: skip
        with self.lock:
            self.calls.append({"model": request.path_params["model"], "body": body})
            number = len(self.calls)
        if self.delay:
            await asyncio.sleep(self.delay)
        if number in self.fail:
            status, retry = self.fail[number]
            details = (
                [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry}]
                if retry
                else []
            )
            names = {429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE", 500: "INTERNAL"}
            return JSONResponse(
                {
                    "error": {
                        "code": status,
                        "message": "scripted failure",
                        "status": names.get(status, "UNKNOWN"),
                        "details": details,
                    }
                },
                status,
            )
        config = body["generationConfig"]
        if config.get("responseMimeType") == "application/json":
            parts = [{"text": "thinking…", "thought": True}, {"text": json.dumps(APLUS)}]
            usage = {"promptTokenCount": 310, "candidatesTokenCount": 520,
                     "thoughtsTokenCount": 90, "totalTokenCount": 920}  # fmt: skip
        else:
            usage = {"promptTokenCount": 24, "candidatesTokenCount": 1290, "totalTokenCount": 1314}
            data = base64.b64encode(product_photo((640, 640))).decode()
            parts = [
                {"text": "Here is your image."},
                {"inlineData": {"mimeType": "image/png", "data": data}},
            ]
        return JSONResponse(
            {
                "candidates": [
                    {"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}
                ],
                "usageMetadata": usage,
            }
        )

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1beta/models/{model}:generateContent", self.generate, methods=["POST"])
            ]
        )
