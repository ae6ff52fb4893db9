"""Validation of the built-in job types' payloads. Every problem is collected, so one 422
lists each bad field at once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from processor.providers.gemini import ASPECT_RATIOS
from processor.settings import json_type

MAIN = "main"
SECONDARY_KINDS = ("lifestyle", "infographic", "detail", "in_use", "packaging")
KINDS = (MAIN, *SECONDARY_KINDS)
MAX_FEATURES = 10


class PayloadError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid payload: " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Product:
    name: str
    description: str | None = None
    features: tuple[str, ...] = ()
    category: str | None = None

    def facts(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in {
                "name": self.name,
                "description": self.description,
                "features": list(self.features) or None,
                "category": self.category,
            }.items()
            if v
        }


@dataclass(frozen=True)
class ImageJob:
    project_id: str
    product: Product
    kind: str = MAIN
    aspect_ratio: str = "1:1"
    source_image_url: str | None = None
    source_image_path: str | None = None
    include_aplus: bool = False


PROJECT_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def _text(
    problems: list[str],
    data: dict[str, Any],
    key: str,
    where: str,
    *,
    required: bool = False,
    limit: int = 2000,
) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            problems.append(f"{where}{key} is required")
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and key.endswith("_id"):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}{key} must be a non-empty string")
        return None
    if len(value) > limit:
        problems.append(f"{where}{key} is longer than {limit} characters")
        return None
    return value.strip()


def parse(payload: Any, *, kind_allowed: bool) -> ImageJob:
    """Reads a payload of generate-image (kind_allowed) or of a pack / A+ job."""
    if not isinstance(payload, dict):
        raise PayloadError([f"payload must be a JSON object, got {json_type(payload)}"])
    problems: list[str] = []
    project_id = _text(problems, payload, "project_id", "", required=True, limit=200)
    if project_id and not PROJECT_ID.fullmatch(project_id):
        problems.append(
            "project_id may hold only letters, digits, '.', '_' and '-' (it names a storage "
            f"folder), and must not start with '.'; got {project_id!r}"
        )
    product_data = payload.get("product")
    product = None
    if not isinstance(product_data, dict):
        problems.append(
            "product is required and must be an object with a name"
            if product_data is None
            else "product must be an object"
        )
    else:
        name = _text(problems, product_data, "name", "product.", required=True, limit=200)
        description = _text(problems, product_data, "description", "product.", limit=2000)
        category = _text(problems, product_data, "category", "product.", limit=200)
        features = product_data.get("features") or []
        if not isinstance(features, list) or not all(
            isinstance(f, str) and f.strip() and len(f) <= 200 for f in features
        ):
            problems.append(
                "product.features must be a list of non-empty strings (200 characters at most each)"
            )
            features = []
        elif len(features) > MAX_FEATURES:
            problems.append(f"product.features has {len(features)} items; at most {MAX_FEATURES}")
        if name:
            product = Product(name, description, tuple(f.strip() for f in features), category)

    kind = payload.get("kind", MAIN)
    if not kind_allowed and "kind" in payload:
        problems.append("kind is only for generate-image jobs")
    elif kind not in KINDS:
        problems.append(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    aspect = payload.get("aspect_ratio", "1:1")
    if aspect not in ASPECT_RATIOS:
        problems.append(f"aspect_ratio must be one of {', '.join(ASPECT_RATIOS)}, got {aspect!r}")
    url = _text(problems, payload, "source_image_url", "", limit=4000)
    if url and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc):
        problems.append("source_image_url must be an http(s) URL")
    path = _text(problems, payload, "source_image_path", "", limit=1000)
    if path and any(part in ("", ".", "..") for part in path.strip("/").split("/")):
        problems.append(f"source_image_path must be a plain path in the bucket, got {path!r}")
    if url and path:
        problems.append("give source_image_url or source_image_path, not both")
    include_aplus = payload.get("include_aplus", False)
    if not isinstance(include_aplus, bool):
        problems.append("include_aplus must be true or false")
    if problems or product is None or project_id is None:
        raise PayloadError(problems)
    return ImageJob(project_id, product, kind, aspect, url, path, include_aplus)
