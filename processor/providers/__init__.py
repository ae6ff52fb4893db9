"""AI providers behind small interfaces: an image generator, a JSON text generator, and a
background remover. Each is an httpx client with configurable base URL, key and model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


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
