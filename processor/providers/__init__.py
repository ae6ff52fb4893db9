"""The third-party services the built-in handlers call, behind small interfaces: an image
generator, a JSON text generator and a background remover (gemini, openai, removebg, and the
offline demo), the file store (storage: Supabase Storage or a local folder), which of them a
configuration picks (registry), the usage ledger and metered wrappers (metering, usage) and the
limits every processor shares (shared_limits). Each is an httpx client with a configurable base
URL, key and model. It may import only the shared core (settings, db, errors, redact)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import httpx


@dataclass(frozen=True)
class ImageRequest:
    """What to draw: the prompt for real models, and the facts the offline demo draws from."""

    prompt: str
    kind: str
    product_name: str
    features: tuple[str, ...] = ()
    aspect_ratio: str = "1:1"
    reference: bytes | None = None
    reference_mime: str = "image/png"


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    mime_type: str
    provider: str
    model: str


class ImageGenerator(Protocol):
    name: str
    model: str

    async def generate(self, request: ImageRequest) -> GeneratedImage: ...


class TextGenerator(Protocol):
    name: str
    model: str

    async def generate_json(
        self, system: str, prompt: str, schema: dict[str, Any]
    ) -> dict[str, Any]: ...


class BackgroundRemover(Protocol):
    name: str

    async def remove(self, image: bytes) -> bytes:
        """A PNG whose alpha channel is the product's cut-out."""
        ...


class HttpProvider:
    """A provider API reached through an injected httpx client: base URL, key, model, timeout."""

    name = "provider"
    default_timeout = 120.0

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        api_key: str,
        model: str = "",
        *,
        timeout: float | None = None,
    ) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self.model = model
        self.timeout = timeout or self.default_timeout
