"""One listing image: the main image (product cut out, on pure white) or a secondary scene."""

from __future__ import annotations

import asyncio
from typing import Any

from processor.images.common import Assets, HandlerContext, JobCall, load_source, public_image
from processor.images.imaging import ImageDataError, compose_main, cutout_local, encode, load
from processor.images.payload import MAIN, ImageJob, parse
from processor.providers import GeneratedImage, ImageRequest
from processor.providers.errors import Transient

SCENES = {
    MAIN: "Studio product photograph of {name}, the whole product in frame, on a plain light "
    "background, soft even lighting, no props, no text.",
    "lifestyle": "Lifestyle photograph of {name} in a real, tasteful home setting that suits "
    "it, natural light, the product the clear hero of the picture.",
    "infographic": "Clean infographic of {name}: the product on one side, its key features as "
    "short labels with simple icons on the other. Features: {features}.",
    "detail": "Macro close-up of {name} showing its materials, finish and craftsmanship.",
    "in_use": "Photograph of a person using {name} as intended, showing how it works in "
    "everyday life.",
    "packaging": "{name} shown with its retail packaging, box and contents neatly arranged on "
    "a clean surface.",
}


def prompt_for(job: ImageJob, kind: str, has_reference: bool) -> str:
    product = job.product
    text = SCENES[kind].format(
        name=product.name, features="; ".join(product.features) or "its main benefits"
    )
    if product.description:
        text += f" Product description: {product.description}"
    if product.category:
        text += f" Category: {product.category}."
    if has_reference:
        text += " Keep the product exactly as it appears in the reference photo."
    return text


async def make_image(
    ctx: HandlerContext,
    assets: Assets,
    job: ImageJob,
    kind: str,
    slot: str,
    source: tuple[bytes, str] | None,
) -> dict[str, Any]:
    """Generates, stores and records one image; returns it as it appears in results."""
    if kind == MAIN:
        return public_image(await _main_image(ctx, assets, job, slot, source))
    prompt = prompt_for(job, kind, source is not None)
    generated = await generate(ctx, assets, job, kind, prompt, job.aspect_ratio, source)
    row = await assets.store_image(
        slot, kind, generated.data, generated.mime_type, generated.provider, generated.model, prompt
    )
    return public_image(row)


async def _main_image(
    ctx: HandlerContext, assets: Assets, job: ImageJob, slot: str, source: tuple[bytes, str] | None
) -> dict[str, Any]:
    """The product photo (the reference, else a generated studio shot), its background removed,
    then centred on pure white filling ~85% of a 1600 px square, as JPEG."""
    prompt = None
    if source is not None:
        photo, provider, model = source[0], "source photo", "-"
    else:
        prompt = prompt_for(job, MAIN, False)
        generated = await generate(ctx, assets, job, MAIN, prompt, "1:1")
        photo, provider, model = generated.data, generated.provider, generated.model
    if ctx.providers.background is not None:
        await assets.ensure_held()
        cut = await _decode(await ctx.providers.background.remove(photo), provider)
        provider = f"{provider} + {ctx.providers.background.name}"
    else:
        cut = await asyncio.to_thread(cutout_local, await _decode(photo, provider))
        provider = f"{provider} + local cut-out"
    try:
        main = await asyncio.to_thread(compose_main, cut)
    except ImageDataError as exc:
        raise Transient(provider, str(exc)) from None
    comment = "demo render (processor offline provider)" if provider.startswith("demo") else None
    data = await asyncio.to_thread(encode, main, "JPEG", comment=comment)
    return await assets.store_image(slot, MAIN, data, "image/jpeg", provider, model, prompt)


async def _decode(data: bytes, provider: str) -> Any:
    try:
        return await asyncio.to_thread(load, data)
    except ImageDataError as exc:
        raise Transient(provider, f"returned {exc}") from None


async def generate(
    ctx: HandlerContext,
    assets: Assets,
    job: ImageJob,
    kind: str,
    prompt: str,
    aspect_ratio: str,
    source: tuple[bytes, str] | None = None,
) -> GeneratedImage:
    """One call to the image provider (made only while the job is still this call's); an
    answer that is not an image counts as transient."""
    await assets.ensure_held()
    generated = await ctx.providers.images.generate(
        ImageRequest(
            prompt=prompt,
            kind=kind,
            product_name=job.product.name,
            features=job.product.features,
            aspect_ratio=aspect_ratio,
            reference=source[0] if source else None,
            reference_mime=source[1] if source else "image/png",
        )
    )
    await _decode(generated.data, generated.provider)
    return generated


async def process_image(ctx: HandlerContext, call: JobCall) -> dict[str, Any]:
    job = parse(call.payload, kind_allowed=True)
    assets = Assets(ctx, call, job.project_id)
    done = await assets.images()
    if job.kind in done:  # finished by an earlier attempt
        image = public_image(done[job.kind])
    else:
        source = await load_source(ctx, job)
        image = await make_image(ctx, assets, job, job.kind, job.kind, source)
    await assets.progress(1, 1, [image])
    return {"image": image, "images": [image], "demo": image["provider"].startswith("demo")}
