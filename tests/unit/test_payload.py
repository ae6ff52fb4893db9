from __future__ import annotations

import pytest

from processor.images.payload import PayloadError, parse


def test_a_minimal_payload_gets_the_defaults():
    job = parse({"project_id": 7, "product": {"name": " Mug "}}, kind_allowed=True)
    assert (job.project_id, job.product.name, job.kind, job.aspect_ratio) == (
        "7",
        "Mug",
        "main",
        "1:1",
    )


def test_every_bad_field_is_listed():
    with pytest.raises(PayloadError) as info:
        parse(
            {
                "product": {"name": "", "features": [1]},
                "kind": "x",
                "source_image_url": "file:///etc/passwd",
                "include_aplus": "yes",
            },
            kind_allowed=True,
        )
    assert info.value.problems == [
        "project_id is required",
        "product.name must be a non-empty string",
        "product.features must be a list of non-empty strings (200 characters at most each)",
        "kind must be one of main, lifestyle, infographic, detail, in_use, packaging, got 'x'",
        "source_image_url must be an http(s) URL",
        "include_aplus must be true or false",
    ]


def test_a_payload_that_is_not_an_object():
    with pytest.raises(PayloadError, match="payload must be a JSON object, got array"):
        parse([], kind_allowed=True)


def test_kind_belongs_to_single_images_only():
    with pytest.raises(PayloadError, match="kind is only for generate-image jobs"):
        parse({"project_id": "p", "product": {"name": "Mug"}, "kind": "main"}, kind_allowed=False)
