from __future__ import annotations

import copy

import pytest

from processor.images.aplus import MAX_ALT, InvalidDocument, check_document
from tests.fakes import APLUS


def doc():
    return copy.deepcopy(APLUS)


def test_a_valid_document_passes_unchanged():
    checked, repairs = check_document(doc(), "Mug")
    assert repairs == []
    assert checked["modules"]["highlights"]["bullets"] == ["Warm", "Sturdy"]


def test_long_alt_text_is_cut_at_a_word_to_100_characters():
    d = doc()
    d["modules"]["header"]["image_alt_text"] = "a very long description " * 10
    checked, repairs = check_document(d, "Mug")
    alt = checked["modules"]["header"]["image_alt_text"]
    assert 1 <= len(alt) <= MAX_ALT
    assert alt.endswith("…") and "descr…" not in alt
    assert repairs == ["modules.header.image_alt_text cut from 239 to 100 characters"]


def test_more_than_eight_bullets_are_cut_to_eight():
    d = doc()
    d["modules"]["highlights"]["bullets"] = [f"b{i}" for i in range(12)]
    checked, repairs = check_document(d, "Mug")
    assert len(checked["modules"]["highlights"]["bullets"]) == 8
    assert "highlights had 12 bullets; kept the first 8" in repairs


def test_empty_alt_text_is_filled_from_the_product_name():
    d = doc()
    d["modules"]["four_images"][2]["image_alt_text"] = " "
    checked, _ = check_document(d, "Mug")
    assert checked["modules"]["four_images"][2]["image_alt_text"] == "Mug"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d["modules"].pop("four_images"), "four_images needs 4 items, got 0"),
        (lambda d: d["modules"]["four_images"].pop(), "four_images needs 4 items, got 3"),
        (lambda d: d["modules"]["highlights"].update(bullets=[]), "needs at least one bullet"),
        (lambda d: d["modules"]["header"].update(body=""), "modules.header.body is missing"),
        (lambda d: d.pop("modules"), "modules is missing"),
    ],
)
def test_documents_that_cannot_be_repaired_are_rejected_with_the_reason(change, reason):
    d = doc()
    change(d)
    with pytest.raises(InvalidDocument, match=reason):
        check_document(d, "Mug")
