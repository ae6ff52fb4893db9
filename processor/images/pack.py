"""A complete pack: the main image and five secondary images of one product (and, on request,
the A+ document), each stored and recorded the moment it is done, so a retry only makes what is
missing."""

from __future__ import annotations

from typing import Any

from processor.images import aplus
from processor.images.common import (
    Assets,
    HandlerContext,
    JobCall,
    Progress,
    load_source,
    public_image,
    run_bounded,
)
from processor.images.image import make_image
from processor.images.payload import KINDS, parse

PACK_SLOTS = KINDS  # main + the five secondary kinds, one image each


async def process_pack(ctx: HandlerContext, call: JobCall) -> dict[str, Any]:
    job = parse(call.payload, kind_allowed=False)
    assets = Assets(ctx, call, job.project_id)
    done = await assets.images()
    todo = [slot for slot in PACK_SLOTS if slot not in done]
    total = len(PACK_SLOTS) + (aplus.TOTAL_ITEMS if job.include_aplus else 0)
    progress = Progress(assets, total, [public_image(done[s]) for s in PACK_SLOTS if s in done])
    await progress.write()

    source = await load_source(ctx, job) if todo else None

    def maker(slot: str):
        return lambda: make_image(ctx, assets, job, slot, slot, source)

    await run_bounded([maker(slot) for slot in todo], ctx.pack_concurrency, progress.add)
    images = await assets.images()
    result: dict[str, Any] = {
        "images": [public_image(images[slot]) for slot in PACK_SLOTS],
        "demo": any(images[slot]["provider"].startswith("demo") for slot in PACK_SLOTS),
    }
    if job.include_aplus:
        result["aplus"] = await aplus.build(ctx, assets, job, progress)
    return result
