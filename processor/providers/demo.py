"""The offline demo provider: no key, no network. It draws real images with Pillow from the
product's name and features, and writes A+ copy from the same facts, so the whole pipeline
(storage, result tables, progress, the main-image rules) runs on a laptop. Every output says
it is a demo: provider "demo", and a "demo render" comment inside the file."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from processor.imaging import encode
from processor.providers import GeneratedImage, ImageRequest

NAME = "demo"
MARK = "demo render (processor offline provider)"
PALETTES = {
    "main": ((236, 236, 236), (236, 236, 236)),
    "lifestyle": ((250, 232, 210), (196, 160, 120)),
    "infographic": ((228, 240, 252), (160, 196, 236)),
    "detail": ((40, 44, 52), (90, 96, 110)),
    "in_use": ((222, 244, 226), (120, 180, 140)),
    "packaging": ((246, 236, 250), (190, 160, 210)),
}
RATIOS = {
    "1:1": (1, 1),
    "2:3": (2, 3),
    "3:2": (3, 2),
    "3:4": (3, 4),
    "4:3": (4, 3),
    "9:16": (9, 16),
    "16:9": (16, 9),
    "21:9": (21, 9),
}


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _accent(name: str) -> tuple[int, int, int]:
    digest = hashlib.sha256(name.encode()).digest()
    return (60 + digest[0] % 150, 60 + digest[1] % 150, 60 + digest[2] % 150)


def render(request: ImageRequest, long_side: int = 1024) -> Image.Image:
    rw, rh = RATIOS.get(request.aspect_ratio, (1, 1))
    scale = long_side / max(rw, rh)
    w, h = round(rw * scale), round(rh * scale)
    top, bottom = PALETTES.get(request.kind, PALETTES["lifestyle"])
    image = Image.new("RGB", (w, h), top)
    draw = ImageDraw.Draw(image)
    if request.kind != "main":  # a plain studio backdrop for main; a scene for the rest
        for y in range(h):
            t = y / max(1, h - 1)
            draw.line(
                [(0, y), (w, y)],
                fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
            )
        draw.rectangle([0, round(h * 0.72), w, h], fill=tuple(round(c * 0.85) for c in bottom))
    # The product: a labelled box, bigger in close-ups.
    size = 0.62 if request.kind in ("main", "detail") else 0.42
    bw, bh = round(min(w, h) * size * 0.8), round(min(w, h) * size)
    cx = w // 2 if request.kind != "infographic" else round(w * 0.3)
    x0, y0 = cx - bw // 2, round(h * 0.72) - bh if request.kind != "main" else (h - bh) // 2
    accent = _accent(request.product_name)
    draw.rounded_rectangle(
        [x0, y0, x0 + bw, y0 + bh],
        radius=bw // 10,
        fill=accent,
        outline=tuple(c // 2 for c in accent),
        width=max(2, bw // 60),
    )
    label = _font(max(12, bw // 9))
    draw.multiline_text(
        (cx, y0 + bh // 2),
        _wrap(request.product_name, 12),
        font=label,
        fill=(255, 255, 255),
        anchor="mm",
        align="center",
    )
    if request.kind == "infographic":
        small = _font(max(12, w // 32))
        for i, feature in enumerate(request.features[:5]):
            y = round(h * 0.2) + i * round(h * 0.1)
            r = max(4, w // 120)
            draw.ellipse([round(w * 0.55) - 3 * r, y - r, round(w * 0.55) - r, y + r], fill=accent)
            draw.text((round(w * 0.55), y), feature, font=small, fill=(30, 40, 60), anchor="lm")
    if request.kind != "main":
        draw.text(
            (w - 10, h - 10),
            "DEMO",
            font=_font(max(12, w // 40)),
            fill=(255, 255, 255),
            anchor="rd",
        )
    return image


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line][:3])


class DemoImages:
    name = NAME
    model = "pillow-demo-1"

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        data = await asyncio.to_thread(lambda: encode(render(request), "PNG", comment=MARK))
        return GeneratedImage(data, "image/png", NAME, self.model)


class DemoText:
    """Writes A+ copy from the product facts the prompt carries on its PRODUCT_JSON line."""

    name = NAME
    model = "template-demo-1"

    async def generate_json(
        self, system: str, prompt: str, schema: dict[str, Any]
    ) -> dict[str, Any]:
        match = re.search(r"^PRODUCT_JSON: (.+)$", prompt, re.MULTILINE)
        product = json.loads(match[1]) if match else {"name": "Product"}
        name = product.get("name", "Product")
        features = list(
            product.get("features")
            or ["Thoughtfully designed", "Built to last", "Easy to use", "Great value"]
        )
        description = product.get("description") or f"{name}, made for everyday use."
        tiles = (features * 4)[:4]
        return {
            "headline": f"Meet the {name}",
            "modules": {
                "header": {
                    "headline": f"{name}: {tiles[0]}",
                    "body": description,
                    "image_alt_text": f"{name} in a styled scene",
                    "image_prompt": f"Hero banner of {name}",
                },
                "four_images": [
                    {
                        "headline": t[:60],
                        "body": f"{name}: {t.lower()}.",
                        "image_alt_text": f"{name}: {t}"[:100],
                        "image_prompt": f"{name}, {t}",
                    }
                    for t in tiles
                ],
                "highlights": {
                    "headline": f"Why the {name}",
                    "bullets": features[:8],
                    "image_alt_text": f"{name} close-up",
                    "image_prompt": f"Close-up of {name}",
                },
            },
            "demo": True,
        }
