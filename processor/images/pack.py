"""A complete pack: the main image and five secondary images of one product (and, on request,
the A+ document), each made by a job of its own. The pack's first call hands them out as its
children (generate-image per slot, generate-aplus after the images) and waits for them without
holding a slot; each child has its own retries, fair-share turn, caps, spend records and
provider limits. Once they are finished the pack is called again and puts its result together,
in the same shape as when it made the images itself. Their progress shows on the pack's row as
they go (set_job_progress adds a child's progress to its waiting parent's)."""

from __future__ import annotations

from typing import Any

from processor.images import aplus
from processor.images.common import Assets, Children, HandlerContext, JobCall, public_image
from processor.images.payload import KINDS, parse
from processor.providers.errors import Permanent

PACK_SLOTS = KINDS  # main + the five secondary kinds, one image each
APLUS = "aplus"  # the A+ child's name


async def process_pack(ctx: HandlerContext, call: JobCall) -> dict[str, Any] | Children:
    job = parse(call.payload, kind_allowed=False)
    assets = Assets(ctx, call, job.project_id)
    # Images this pack stored itself (a pack begun before packs had children) still count.
    own = await assets.images()
    images = {slot: public_image(own[slot]) for slot in PACK_SLOTS if slot in own}
    # Its own children only, completed ones (one that failed or was cancelled counts as
    # missing: asked for again, it runs again, as when the pack itself is retried).
    mine = str(call.job_id)
    outcomes = {
        str(d["name"]): d
        for d in call.dependencies or []
        if d.get("parent_id") == mine and d.get("name") and d.get("status") == "completed"
    }
    for name, outcome in outcomes.items():
        if name not in PACK_SLOTS:
            continue
        made = outcome.get("result")
        image = made.get("image") if isinstance(made, dict) else None
        if not isinstance(image, dict):
            raise Permanent(name, f"the {name} image job completed without an image in its result")
        images[name] = image
    total = len(PACK_SLOTS) + (aplus.TOTAL_ITEMS if job.include_aplus else 0)
    missing = [slot for slot in PACK_SLOTS if slot not in images]
    document = (outcomes.get(APLUS, {}).get("result") or {}).get("aplus")
    if missing or (job.include_aplus and document is None):
        await assets.progress(len(images), total, [images[s] for s in PACK_SLOTS if s in images])
        return Children(_children(call.payload, missing, job.include_aplus))
    result: dict[str, Any] = {
        "images": [images[slot] for slot in PACK_SLOTS],
        "demo": any(
            str(images[slot].get("provider", "")).startswith("demo") for slot in PACK_SLOTS
        ),
    }
    if job.include_aplus:
        result["aplus"] = document
    await assets.progress(total, total, result["images"])
    return result


def _children(payload: dict[str, Any], missing: list[str], include_aplus: bool) -> list[Any]:
    """One generate-image job per missing slot and, with include_aplus, the A+ job after them."""
    base = {k: v for k, v in payload.items() if k != "include_aplus"}
    jobs: list[dict[str, Any]] = [
        {"name": slot, "job_type": "generate-image", "payload": {**base, "kind": slot}}
        for slot in missing
    ]
    if include_aplus:
        jobs.append(
            {"name": APLUS, "job_type": "generate-aplus", "payload": base, "depends_on": missing}
        )
    return jobs
