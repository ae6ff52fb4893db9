"""Image work done locally with Pillow: decoding, cutting a product out of a plain backdrop,
the marketplace main image, and exact module sizes."""

from __future__ import annotations

import io
from typing import cast

from PIL import Image, ImageChops, ImageFilter, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # default cap on a decoded image (MAX_IMAGE_PIXELS)
MAIN_SIDE = 1600  # longest side >= 1600 px enables zoom on the marketplace
MAIN_FILL = 0.86  # the product's longest side as a share of the frame ("about 85%")
WHITE = (255, 255, 255)


class ImageDataError(ValueError):
    """Bytes that are not an image Pillow can read."""


# The pixel cap below is checked on the header, before anything is decoded; Pillow's own
# bomb check is then redundant (and would raise its own error type).
Image.MAX_IMAGE_PIXELS = None


def load(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decodes an image, refusing one over `max_pixels` before decoding it. CPU-bound: call it
    through asyncio.to_thread from the event loop."""
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageDataError("not a readable image") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ImageDataError(
            f"{width} x {height} pixels ({width * height / 1e6:.0f} MP); the limit is "
            f"{max_pixels / 1e6:g} MP (MAX_IMAGE_PIXELS)"
        )
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageDataError("not a readable image (its data is damaged)") from exc
    return image


def probe(data: bytes, max_pixels: int = MAX_PIXELS) -> str:
    """Checks that the bytes decode as an image within the cap; returns its format."""
    image = load(data, max_pixels)
    fmt = image.format or ""
    image.close()
    return fmt


def encode(image: Image.Image, fmt: str = "PNG", *, comment: str | None = None) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        extra = {"comment": comment.encode()} if comment else {}
        image.convert("RGB").save(out, "JPEG", quality=92, optimize=True, **extra)
    else:
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        if comment:
            info.add_text("Comment", comment)
        image.save(out, "PNG", optimize=False, pnginfo=info)
    return out.getvalue()


def cutout_local(image: Image.Image, tolerance: int = 28) -> Image.Image:
    """The product on a transparent background, for photos shot on a plain backdrop: the
    backdrop colour is read from the border, and what differs from it is kept. (remove.bg does
    this properly for busy backgrounds; this is the fallback when no key is configured.)"""
    low, _ = (
        cast(tuple[int, int], image.getchannel("A").getextrema())
        if image.mode in ("RGBA", "LA")
        else (255, 255)
    )
    if low < 255:
        return image.convert("RGBA")  # already has transparency
    rgb = image.convert("RGB")
    w, h = rgb.size
    points = [(x, y) for x in range(0, w, max(1, w // 50)) for y in (0, h - 1)]
    points += [(x, y) for y in range(0, h, max(1, h // 50)) for x in (0, w - 1)]
    border = [cast(tuple[int, int, int], rgb.getpixel(p)) for p in points]
    backdrop = tuple(sorted(c[i] for c in border)[len(border) // 2] for i in range(3))
    diff = ImageChops.difference(rgb, Image.new("RGB", rgb.size, backdrop)).convert("L")
    mask = diff.point(lambda v: 255 if v > tolerance else 0).filter(ImageFilter.MedianFilter(5))
    cut = rgb.convert("RGBA")
    cut.putalpha(mask)
    return cut


def compose_main(
    cutout: Image.Image, side: int = MAIN_SIDE, fill: float = MAIN_FILL
) -> Image.Image:
    """The product centred on pure white, its longest side `fill` of a `side`-pixel square."""
    rgba = cutout.convert("RGBA")
    box = rgba.getchannel("A").point(lambda v: 255 if v > 16 else 0).getbbox()
    if box is None:
        raise ImageDataError("no product found in the image (everything is background)")
    product = rgba.crop(box)
    scale = side * fill / max(product.size)
    size = (max(1, round(product.width * scale)), max(1, round(product.height * scale)))
    product = product.resize(size, Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (side, side), WHITE)
    canvas.paste(product, ((side - size[0]) // 2, (side - size[1]) // 2), product)
    return canvas


def fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scales and centre-crops to exactly width x height."""
    rgb = image.convert("RGB")
    scale = max(width / rgb.width, height / rgb.height)
    resized = rgb.resize(
        (max(width, round(rgb.width * scale)), max(height, round(rgb.height * scale))),
        Image.Resampling.LANCZOS,
    )
    left = (resized.width - width) // 2
    top = (resized.height - height) // 2
    return resized.crop((left, top, left + width, top + height))


def product_fill(image: Image.Image, threshold: int = 250) -> float:
    """The longest side of the non-white area as a share of the frame's (for checks)."""
    gray = image.convert("L").point(lambda v: 255 if v < threshold else 0)
    box = gray.getbbox()
    if box is None:
        return 0.0
    return max(box[2] - box[0], box[3] - box[1]) / max(image.size)
