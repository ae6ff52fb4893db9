from __future__ import annotations

import io

import pytest
from PIL import Image

from processor.images.imaging import (
    ImageDataError,
    compose_main,
    cutout_local,
    encode,
    fit,
    load,
    product_fill,
)
from tests.fakes import product_photo


def test_a_photo_on_a_plain_backdrop_becomes_a_white_main_image_filling_86_percent():
    photo = load(product_photo((1200, 700), backdrop=(120, 160, 200)))
    main = compose_main(cutout_local(photo))
    assert main.size == (1600, 1600)
    rgb = main.convert("RGB")
    assert rgb.getpixel((0, 0)) == rgb.getpixel((1599, 1599)) == (255, 255, 255)
    assert 0.85 <= product_fill(main) <= 0.87
    jpeg = Image.open(io.BytesIO(encode(main, "JPEG")))
    assert jpeg.format == "JPEG" and jpeg.mode == "RGB"


def test_a_transparent_cutout_is_flattened_onto_white():
    cut = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    cut.paste((10, 120, 10, 255), (100, 50, 300, 350))
    main = compose_main(cutout_local(cut))
    assert main.convert("RGB").getpixel((5, 5)) == (255, 255, 255)
    assert main.convert("RGB").getpixel((800, 800)) == (10, 120, 10)


def test_an_image_with_no_product_is_refused():
    with pytest.raises(ImageDataError, match="no product"):
        compose_main(cutout_local(Image.new("RGB", (300, 300), (90, 90, 90))))


def test_fit_gives_the_exact_module_size():
    image = load(product_photo((1024, 576)))
    assert fit(image, 970, 600).size == (970, 600)
    assert fit(image, 220, 220).size == (220, 220)


def test_bytes_that_are_not_an_image_are_refused():
    with pytest.raises(ImageDataError, match="not a readable image"):
        load(b"<html>nope</html>")


def _png_claiming(width: int, height: int) -> bytes:
    """A 1 x 1 PNG whose header claims another size: decoding it would fail, so a refusal
    that names the size shows the header was checked before any decoding."""
    import struct
    import zlib

    out = io.BytesIO()
    Image.new("RGB", (1, 1)).save(out, "PNG")
    data = bytearray(out.getvalue())
    ihdr = 8 + 8  # signature, then length + "IHDR"
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def test_an_image_over_the_pixel_cap_is_refused_from_its_header():
    with pytest.raises(
        ImageDataError, match=r"20000 x 20000 pixels \(400 MP\); the limit is 40 MP"
    ):
        load(_png_claiming(20000, 20000))


def test_damaged_image_data_is_an_image_data_error():
    with pytest.raises(ImageDataError, match="damaged"):
        load(_png_claiming(100, 100))
    with pytest.raises(ImageDataError, match="not a readable image"):
        load(b"GIF89a but not really")
