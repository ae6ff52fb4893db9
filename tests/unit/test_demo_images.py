"""The offline demo images are told apart at a glance: six different compositions, a main
image without any text, A+ tiles that differ, and a DEMO mark that survives the A+ crops."""

from __future__ import annotations

import itertools

from PIL import Image, ImageChops, ImageStat

from processor.images.imaging import fit
from processor.providers import ImageRequest
from processor.providers.demo import render

KINDS = ("main", "lifestyle", "infographic", "detail", "in_use", "packaging")


def request(kind: str, prompt: str = "a prompt", ratio: str = "1:1") -> ImageRequest:
    return ImageRequest(
        prompt=prompt,
        kind=kind,
        product_name="Ceramic Mug",
        features=("Holds 350 ml", "Dishwasher safe"),
        aspect_ratio=ratio,
        reference=None,
        reference_mime="image/png",
    )


def difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel, 0-255."""
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def test_the_six_kinds_are_six_different_pictures():
    images = {k: render(request(k), 256) for k in KINDS}
    for a, b in itertools.combinations(KINDS, 2):
        assert difference(images[a], images[b]) > 20, f"{a} and {b} look alike"


def test_the_main_image_carries_no_text():
    main = render(request("main"), 512)
    # Text (the DEMO mark, a label) is drawn in pure white: the main image has none of it,
    # only the backdrop and the product's own colours.
    colours = {c for _, c in main.getcolors(maxcolors=1 << 16)}
    assert (255, 255, 255) not in colours
    assert len(colours) < 50  # flat shapes, no anti-aliased lettering


def test_tiles_of_one_kind_differ_by_their_prompt():
    tiles = [fit(render(request("detail", f"tile {i}")), 220, 220) for i in range(4)]
    for a, b in itertools.combinations(tiles, 2):
        assert difference(a, b) > 5


def test_the_demo_mark_survives_the_a_plus_header_crop():
    header = fit(render(request("lifestyle", ratio="16:9")), 970, 600)
    w, h = header.size
    band = header.crop((w // 2 - 80, round(h * 0.86), w // 2 + 80, h)).convert("RGB")
    colours = {c for _, c in band.getcolors(maxcolors=1 << 16)}
    assert (255, 255, 255) in colours and (0, 0, 0) in colours  # the lettering and its outline
