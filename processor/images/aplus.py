"""The A+ document: copy from a JSON-schema text model, checked against the marketplace's module
limits (repaired where a cut is safe, rejected with the reason where it is not), and the module
images at their exact sizes."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from processor.images.common import (
    Assets,
    HandlerContext,
    JobCall,
    Progress,
    public_image,
    run_bounded,
)
from processor.images.image import generate
from processor.images.imaging import encode, fit, load
from processor.images.payload import ImageJob, parse
from processor.providers.errors import Transient

MAX_ALT = 100
MAX_BULLETS = 8
MAX_HEADLINE = 150
MAX_MODULE_HEADLINE = 160
MAX_BODY = 1000
MAX_BULLET = 200


@dataclass(frozen=True)
class ModuleImage:
    slot: str
    width: int
    height: int
    aspect_ratio: str  # what to ask the model for before the exact crop
    kind: str  # scene style for the demo renderer


def module_images(doc: dict[str, Any]) -> list[tuple[ModuleImage, dict[str, Any]]]:
    """Each image the document needs, with the module it belongs to."""
    modules = doc["modules"]
    out = [(ModuleImage("aplus_header", 970, 600, "16:9", "lifestyle"), modules["header"])]
    out += [
        (ModuleImage(f"aplus_four_{i}", 220, 220, "1:1", "detail"), tile)
        for i, tile in enumerate(modules["four_images"], start=1)
    ]
    out.append((ModuleImage("aplus_highlights", 300, 300, "1:1", "in_use"), modules["highlights"]))
    return out


TOTAL_ITEMS = 1 + 4 + 1 + 1  # header, four tiles, highlights image, and the document itself

_TEXT_MODULE = {
    "type": "object",
    "properties": {
        "headline": {"type": "string"},
        "body": {"type": "string"},
        "image_alt_text": {"type": "string", "maxLength": MAX_ALT},
        "image_prompt": {"type": "string"},
    },
    "required": ["headline", "body", "image_alt_text", "image_prompt"],
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "headline": {"type": "string", "maxLength": MAX_HEADLINE},
        "modules": {
            "type": "object",
            "properties": {
                "header": _TEXT_MODULE,
                "four_images": {
                    "type": "array",
                    "items": _TEXT_MODULE,
                    "minItems": 4,
                    "maxItems": 4,
                },
                "highlights": {
                    "type": "object",
                    "properties": {
                        "headline": {"type": "string"},
                        "bullets": {
                            "type": "array",
                            "items": {"type": "string"},
                            "minItems": 1,
                            "maxItems": MAX_BULLETS,
                        },
                        "image_alt_text": {"type": "string", "maxLength": MAX_ALT},
                        "image_prompt": {"type": "string"},
                    },
                    "required": ["headline", "bullets", "image_alt_text", "image_prompt"],
                },
            },
            "required": ["header", "four_images", "highlights"],
        },
    },
    "required": ["headline", "modules"],
}
SYSTEM = (
    "You write Amazon A+ content for e-commerce sellers: truthful, specific, benefit-led copy "
    "with no prices, no claims of being #1, no competitor names and no contact details. "
    f"Image alt text describes the image in at most {MAX_ALT} characters. At most {MAX_BULLETS} "
    "bullets. Answer only with JSON matching the schema."
)


def prompt_for(job: ImageJob) -> str:
    return (
        "Write the A+ document for this product: a header module, a four-image module with "
        "text under each image, and a single-image-and-highlights module. For each image give "
        "an image_prompt describing the picture to generate.\n"
        f"PRODUCT_JSON: {json.dumps(job.product.facts(), ensure_ascii=False)}"
    )


class InvalidDocument(Transient):
    """The model's document breaks a rule that cannot be repaired: ask again (a new attempt)."""

    def __init__(self, reason: str) -> None:
        super().__init__("A+ copy", f"the generated A+ document is invalid: {reason}")


def _cut(text: str, limit: int) -> str:
    """Shortens at a word boundary."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:-")
    return (cut or text[: limit - 1]) + "…"


def check_document(doc: Any, product_name: str) -> tuple[dict[str, Any], list[str]]:
    """Validates and repairs a document. Returns (document, what was repaired)."""
    repairs: list[str] = []

    def text(module: Any, key: str, where: str, limit: int, fallback: str | None = None) -> str:
        value = module.get(key) if isinstance(module, dict) else None
        if not isinstance(value, str) or not value.strip():
            if fallback is None:
                raise InvalidDocument(f"{where}.{key} is missing or empty")
            repairs.append(f"{where}.{key} was empty; filled from the product name")
            value = fallback
        value = " ".join(value.split())
        if len(value) > limit:
            repairs.append(f"{where}.{key} cut from {len(value)} to {limit} characters")
            value = _cut(value, limit)
        return value

    def module(data: Any, where: str) -> dict[str, str]:
        if not isinstance(data, dict):
            raise InvalidDocument(f"{where} is missing or not an object")
        return {
            "headline": text(data, "headline", where, MAX_MODULE_HEADLINE),
            "body": text(data, "body", where, MAX_BODY),
            "image_alt_text": text(data, "image_alt_text", where, MAX_ALT, product_name),
            "image_prompt": text(data, "image_prompt", where, 1000, product_name),
        }

    if not isinstance(doc, dict):
        raise InvalidDocument("the answer is not a JSON object")
    modules = doc.get("modules")
    if not isinstance(modules, dict):
        raise InvalidDocument("modules is missing")
    tiles = modules.get("four_images")
    if not isinstance(tiles, list) or len(tiles) < 4:
        count = len(tiles) if isinstance(tiles, list) else 0
        raise InvalidDocument(f"four_images needs 4 items, got {count}")
    if len(tiles) > 4:
        repairs.append(f"four_images had {len(tiles)} items; kept the first 4")
    high = modules.get("highlights")
    if not isinstance(high, dict):
        raise InvalidDocument("modules.highlights is missing or not an object")
    bullets = high.get("bullets")
    if not isinstance(bullets, list) or not [
        b for b in bullets if isinstance(b, str) and b.strip()
    ]:
        raise InvalidDocument("modules.highlights.bullets needs at least one bullet")
    bullets = [" ".join(b.split()) for b in bullets if isinstance(b, str) and b.strip()]
    if len(bullets) > MAX_BULLETS:
        repairs.append(f"highlights had {len(bullets)} bullets; kept the first {MAX_BULLETS}")
        bullets = bullets[:MAX_BULLETS]
    for i, bullet in enumerate(bullets):
        if len(bullet) > MAX_BULLET:
            repairs.append(f"highlights.bullets[{i}] cut to {MAX_BULLET} characters")
            bullets[i] = _cut(bullet, MAX_BULLET)
    checked = {
        "headline": text(doc, "headline", "document", MAX_HEADLINE),
        "modules": {
            "header": module(modules.get("header"), "modules.header"),
            "four_images": [
                module(t, f"modules.four_images[{i}]") for i, t in enumerate(tiles[:4])
            ],
            "highlights": {
                "headline": text(high, "headline", "modules.highlights", MAX_MODULE_HEADLINE),
                "bullets": bullets,
                "image_alt_text": text(
                    high, "image_alt_text", "modules.highlights", MAX_ALT, product_name
                ),
                "image_prompt": text(
                    high, "image_prompt", "modules.highlights", 1000, product_name
                ),
            },
        },
    }
    return checked, repairs


async def _document(
    ctx: HandlerContext, assets: Assets, job: ImageJob
) -> tuple[dict[str, Any], list[str], str]:
    """The job's A+ copy: the recorded one from an earlier attempt, or a new one."""
    row = await ctx.db.fetch_one("aplus_for_job", {"job_id": assets.call.job_id})
    if row is not None:
        return row["content"]["document"], row["content"].get("repairs", []), row["provider"]
    text = ctx.providers.text
    await assets.ensure_held()
    raw = await text.generate_json(SYSTEM, prompt_for(job), SCHEMA)
    doc, repairs = check_document(raw, job.product.name)
    await ctx.db.fetch_all(
        "record_aplus",
        {
            "job_id": assets.call.job_id,
            "project_id": job.project_id,
            "user_id": assets.call.user_id,
            "content": {"document": doc, "repairs": repairs},
            "provider": text.name,
            "model": text.model,
        },
    )
    return doc, repairs, text.name


async def _module_image(
    ctx: HandlerContext, assets: Assets, job: ImageJob, spec: ModuleImage, module: dict[str, Any]
) -> dict[str, Any]:
    prompt = f"{module['image_prompt']} Product: {job.product.name}. No text in the image."
    generated = await generate(ctx, assets, job, spec.kind, prompt, spec.aspect_ratio)
    exact = await asyncio.to_thread(lambda: fit(load(generated.data), spec.width, spec.height))
    data = await asyncio.to_thread(encode, exact, "JPEG")
    row = await assets.store_image(
        spec.slot, spec.slot, data, "image/jpeg", generated.provider, generated.model, prompt
    )
    return public_image(row)


async def build(
    ctx: HandlerContext, assets: Assets, job: ImageJob, progress: Progress
) -> dict[str, Any]:
    """The A+ document with its images' URLs, generating only what is missing."""
    doc, repairs, provider = await _document(ctx, assets, job)
    await progress.add({"slot": "aplus_document", "kind": "aplus_document", "provider": provider})
    wanted = module_images(doc)
    done = await assets.images()
    todo = [(spec, module) for spec, module in wanted if spec.slot not in done]
    for spec, _ in wanted:
        if spec.slot in done:
            await progress.add(public_image(done[spec.slot]))

    def maker(spec: ModuleImage, module: dict[str, Any]):
        return lambda: _module_image(ctx, assets, job, spec, module)

    await run_bounded([maker(s, m) for s, m in todo], ctx.pack_concurrency, progress.add)
    images = await assets.images()
    for spec, module in wanted:
        module["image"] = public_image(images[spec.slot])
    return {"document": doc, "repairs": repairs, "provider": provider}


async def process_aplus(ctx: HandlerContext, call: JobCall) -> dict[str, Any]:
    job = parse(call.payload, kind_allowed=False)
    assets = Assets(ctx, call, job.project_id)
    progress = Progress(assets, TOTAL_ITEMS, [])
    return {"aplus": await build(ctx, assets, job, progress)}
