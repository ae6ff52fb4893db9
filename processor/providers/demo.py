"""The offline demo provider: no key, no network. It draws real images with Pillow from the
product's name and features, and writes A+ copy from the same facts, so the whole pipeline
(storage, result tables, progress, the main-image rules) runs on a laptop. Every output says
it is a demo: provider "demo", and a "demo render" comment inside the file."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
from typing import Any

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from processor.providers import GeneratedImage, ImageRequest
from processor.providers.usage import report

NAME = "demo"
MARK = "demo render (processor offline provider)"
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
Colour = tuple[int, int, int]
Box = tuple[int, int, int, int]


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _accent(name: str) -> Colour:
    digest = hashlib.sha256(name.encode()).digest()
    return (60 + digest[0] % 150, 60 + digest[1] % 150, 60 + digest[2] % 150)


def _shade(colour: Colour, factor: float) -> Colour:
    return (
        min(255, round(colour[0] * factor)),
        min(255, round(colour[1] * factor)),
        min(255, round(colour[2] * factor)),
    )


def _gradient(draw: ImageDraw.ImageDraw, box: Box, top: Colour, bottom: Colour) -> None:
    x0, y0, x1, y1 = box
    for y in range(y0, y1):
        t = (y - y0) / max(1, y1 - y0 - 1)
        draw.line(
            [(x0, y), (x1, y)],
            fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
        )


def _product(draw: ImageDraw.ImageDraw, box: Box, accent: Colour) -> None:
    """The product: a body with a lid band and a highlight. No text: a listing's main image
    must carry none, and the scenes reuse the same drawing."""
    x0, y0, x1, y1 = box
    w = x1 - x0
    draw.rounded_rectangle(
        box, radius=max(2, w // 8), fill=accent, outline=_shade(accent, 0.5), width=max(2, w // 50)
    )
    band = y0 + (y1 - y0) // 6
    draw.rectangle(
        [x0 + w // 20, band, x1 - w // 20, band + max(3, (y1 - y0) // 14)], fill=_shade(accent, 0.7)
    )
    draw.rounded_rectangle(
        [x0 + w // 8, band + (y1 - y0) // 8, x0 + w // 4, y1 - (y1 - y0) // 6],
        radius=max(2, w // 30),
        fill=_shade(accent, 1.35),
    )


def _mark(draw: ImageDraw.ImageDraw, w: int, h: int) -> None:
    """The visible demo marker, bottom centre and inset, so a centre crop never cuts it."""
    font = _font(max(12, min(w, h) // 22))
    draw.text(
        (w // 2, round(h * 0.93)),
        "DEMO",
        font=font,
        fill=(255, 255, 255),
        anchor="mm",
        stroke_width=2,
        stroke_fill=(0, 0, 0),
    )


def _main(draw: ImageDraw.ImageDraw, w: int, h: int, accent: Colour, v: bytes) -> None:
    draw.rectangle([0, 0, w, h], fill=(236, 236, 236))
    bw, bh = round(min(w, h) * 0.46), round(min(w, h) * 0.62)
    _product(draw, ((w - bw) // 2, (h - bh) // 2, (w + bw) // 2, (h + bh) // 2), accent)


def _lifestyle(draw: ImageDraw.ImageDraw, w: int, h: int, accent: Colour, v: bytes) -> None:
    """A room: warm wall, a window, a plant, the product on a wooden table."""
    table = round(h * 0.7)
    _gradient(draw, (0, 0, w, table), (250, 236, 214), (226, 200, 168))
    _gradient(draw, (0, table, w, h), (150, 104, 70), (112, 76, 50))
    wx = round(w * (0.08 + (v[0] % 20) / 100))
    window = (wx, round(h * 0.1), wx + round(w * 0.3), round(h * 0.5))
    draw.rectangle(window, fill=(190, 222, 246), outline=(255, 255, 255), width=max(3, w // 120))
    draw.line(
        [((window[0] + window[2]) // 2, window[1]), ((window[0] + window[2]) // 2, window[3])],
        fill=(255, 255, 255),
        width=max(3, w // 120),
    )
    px = round(w * 0.82)
    draw.polygon(
        [
            (px - w // 20, table),
            (px + w // 20, table),
            (px + w // 28, table - h // 8),
            (px - w // 28, table - h // 8),
        ],
        fill=(176, 92, 60),
    )
    for dx, dy in ((-1, -1), (1, -1), (0, -2), (-1, -2), (1, -3)):
        cx, cy = px + dx * w // 30, table - h // 8 + dy * h // 18
        draw.ellipse([cx - w // 22, cy - h // 26, cx + w // 22, cy + h // 26], fill=(70, 140, 80))
    bw, bh = round(min(w, h) * 0.26), round(min(w, h) * 0.34)
    cx = round(w * (0.5 + ((v[1] % 10) - 5) / 100))
    _product(draw, (cx - bw // 2, table - bh + h // 40, cx + bw // 2, table + h // 40), accent)


def _infographic(
    draw: ImageDraw.ImageDraw, w: int, h: int, accent: Colour, v: bytes, request: ImageRequest
) -> None:
    """A header with the name, the product on the left, its features as labelled rows."""
    draw.rectangle([0, 0, w, h], fill=(246, 249, 253))
    draw.rectangle([0, 0, w, round(h * 0.14)], fill=_shade(accent, 0.6))
    draw.text(
        (w // 2, round(h * 0.07)),
        request.product_name,
        font=_font(max(12, h // 18)),
        fill=(255, 255, 255),
        anchor="mm",
    )
    bw, bh = round(min(w, h) * 0.3), round(min(w, h) * 0.42)
    cx, cy = round(w * 0.26), round(h * 0.58)
    draw.ellipse([cx - bw, cy - bw, cx + bw, cy + bw], fill=(228, 238, 250))
    _product(draw, (cx - bw // 2, cy - bh // 2, cx + bw // 2, cy + bh // 2), accent)
    features = list(request.features[:5]) or ["Made to last", "Easy to clean", "Gift ready"]
    step = round(h * 0.7 / max(4, len(features)))
    for i, feature in enumerate(features):
        y = round(h * 0.26) + i * step
        r = max(6, h // 40)
        x = round(w * 0.52)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=accent)
        draw.text((x, y), str(i + 1), font=_font(max(10, r)), fill=(255, 255, 255), anchor="mm")
        draw.text(
            (x + 2 * r, y),
            _wrap(feature, 28).replace("\n", " "),
            font=_font(max(12, h // 30)),
            fill=(30, 40, 60),
            anchor="lm",
        )


def _detail(draw: ImageDraw.ImageDraw, w: int, h: int, accent: Colour, v: bytes) -> None:
    """A macro close-up: the surface fills the frame, with its texture and a lens on it."""
    surface = _shade(accent, 0.75 + (v[5] % 6) / 10)  # each close-up its own light
    draw.rectangle([0, 0, w, h], fill=surface)
    accent = surface
    gap = max(6, min(w, h) // (14 + v[0] % 10))
    angle = 1 if v[1] % 2 else -1
    for i in range(-h, w + h, gap):
        draw.line([(i, 0), (i + angle * h, h)], fill=_shade(accent, 0.75), width=max(2, gap // 4))
    r = round(min(w, h) * (0.22 + (v[2] % 10) / 100))
    cx, cy = round(w * (0.35 + (v[3] % 30) / 100)), round(h * (0.35 + (v[4] % 30) / 100))
    draw.ellipse(
        [cx - r, cy - r, cx + r, cy + r],
        fill=_shade(accent, 1.3),
        outline=(40, 40, 40),
        width=max(3, r // 12),
    )
    draw.line(
        [(cx + r * 7 // 10, cy + r * 7 // 10), (cx + r * 3 // 2, cy + r * 3 // 2)],
        fill=(40, 40, 40),
        width=max(5, r // 6),
    )


def _in_use(draw: ImageDraw.ImageDraw, w: int, h: int, accent: Colour, v: bytes) -> None:
    """Outdoors: a person holding the product out, sun and hills behind."""
    _gradient(draw, (0, 0, w, h), (200, 228, 250), (160, 210, 170))
    draw.ellipse(
        [round(w * 0.78), round(h * 0.06), round(w * 0.92), round(h * 0.06) + round(w * 0.14)],
        fill=(255, 214, 90),
    )
    draw.ellipse([-w // 3, round(h * 0.62), w, round(h * 1.4)], fill=(104, 166, 96))
    px = round(w * (0.34 + (v[0] % 10) / 100))
    head = round(min(w, h) * 0.08)
    draw.ellipse(
        [px - head, round(h * 0.22), px + head, round(h * 0.22) + 2 * head], fill=(224, 176, 140)
    )
    body_top = round(h * 0.22) + 2 * head
    draw.rounded_rectangle(
        [px - round(head * 1.4), body_top, px + round(head * 1.4), round(h * 0.8)],
        radius=head,
        fill=(60, 90, 150),
    )
    hand = (px + round(head * 3.2), round(h * 0.5))
    draw.line([(px + head, body_top + head), hand], fill=(224, 176, 140), width=max(6, head // 2))
    bw, bh = round(min(w, h) * 0.16), round(min(w, h) * 0.22)
    _product(
        draw,
        (hand[0] - bw // 4, hand[1] - bh // 2, hand[0] - bw // 4 + bw, hand[1] + bh // 2),
        accent,
    )


def _packaging(
    draw: ImageDraw.ImageDraw, w: int, h: int, accent: Colour, v: bytes, request: ImageRequest
) -> None:
    """The retail box, drawn in perspective with the name on its front, the product beside it."""
    _gradient(draw, (0, 0, w, h), (244, 240, 250), (214, 206, 228))
    floor = round(h * 0.8)
    bw, bh, depth = round(w * 0.34), round(h * 0.5), round(w * 0.08)
    x0, y0 = round(w * 0.14), floor - bh
    front = [(x0, y0), (x0 + bw, y0), (x0 + bw, floor), (x0, floor)]
    top = [(x0, y0), (x0 + depth, y0 - depth), (x0 + bw + depth, y0 - depth), (x0 + bw, y0)]
    side = [
        (x0 + bw, y0),
        (x0 + bw + depth, y0 - depth),
        (x0 + bw + depth, floor - depth),
        (x0 + bw, floor),
    ]
    draw.polygon(front, fill=(250, 250, 250), outline=(120, 120, 140))
    draw.polygon(top, fill=(226, 226, 236), outline=(120, 120, 140))
    draw.polygon(side, fill=(200, 200, 214), outline=(120, 120, 140))
    draw.rectangle([x0, y0 + bh // 3, x0 + bw, y0 + bh // 3 + bh // 5], fill=accent)
    draw.text(
        (x0 + bw // 2, y0 + bh // 3 + bh // 10),
        _wrap(request.product_name, 14).split("\n")[0],
        font=_font(max(12, bh // 12)),
        fill=(255, 255, 255),
        anchor="mm",
    )
    pw, ph = round(min(w, h) * 0.2), round(min(w, h) * 0.28)
    px = round(w * 0.72)
    _product(draw, (px, floor - ph, px + pw, floor), accent)


def render(request: ImageRequest, long_side: int = 1024) -> Image.Image:
    """A picture of the requested kind: each kind its own composition, varied by the prompt
    (so four A+ tiles of one kind differ), sized to the aspect ratio."""
    rw, rh = RATIOS.get(request.aspect_ratio, (1, 1))
    scale = long_side / max(rw, rh)
    w, h = round(rw * scale), round(rh * scale)
    image = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    accent = _accent(request.product_name)
    variation = hashlib.sha256(request.prompt.encode()).digest()
    kind = request.kind if request.kind in SCENES else "lifestyle"
    if kind == "infographic":
        _infographic(draw, w, h, accent, variation, request)
    elif kind == "packaging":
        _packaging(draw, w, h, accent, variation, request)
    else:
        SCENES[kind](draw, w, h, accent, variation)
    if kind != "main":  # the main image carries no text: its marker is in the file and result
        _mark(draw, w, h)
    return image


SCENES: dict[str, Any] = {
    "main": _main,
    "lifestyle": _lifestyle,
    "infographic": None,
    "detail": _detail,
    "in_use": _in_use,
    "packaging": None,
}


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
        data = await asyncio.to_thread(lambda: _png(render(request), MARK))
        report(images=1)
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


def _png(image: Image.Image, comment: str) -> bytes:
    """PNG bytes with a text comment that marks the image as a demo placeholder."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", comment)
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=info)
    return out.getvalue()
