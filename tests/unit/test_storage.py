"""Storage: the local folder, and Supabase Storage's real requests (storage3) under respx."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from processor.providers.errors import Permanent, Transient
from processor.providers.storage import LocalStorage, SupabaseStorage, fresh_urls

SUPABASE = "https://project.supabase.test"


async def test_local_storage_writes_the_file_and_returns_its_served_url(tmp_path):
    storage = LocalStorage(tmp_path, "http://127.0.0.1:8000/")
    url = await storage.put("p1/job/main.jpg", b"jpeg-bytes", "image/jpeg")
    assert url == "http://127.0.0.1:8000/files/p1/job/main.jpg"
    assert (tmp_path / "p1" / "job" / "main.jpg").read_bytes() == b"jpeg-bytes"
    assert await storage.get("p1/job/main.jpg") == b"jpeg-bytes"


async def test_local_storage_refuses_paths_that_climb_out(tmp_path):
    with pytest.raises(ValueError, match="invalid storage path"):
        await LocalStorage(tmp_path, "http://x").put("../../etc/x", b"", "image/png")


async def test_supabase_upload_uses_upsert_and_returns_the_public_url():
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(f"{SUPABASE}/storage/v1/object/images/p1/job/main.jpg").respond(
            json={"Key": "images/p1/job/main.jpg", "Id": "abc"}
        )
        storage = SupabaseStorage(SUPABASE, "service-role-key", "images")
        url = await storage.put("p1/job/main.jpg", b"jpeg-bytes", "image/jpeg")
    sent = route.calls.last.request
    assert sent.headers["x-upsert"] == "true"
    assert sent.headers["authorization"] == "Bearer service-role-key"
    assert b"jpeg-bytes" in sent.content
    assert url.startswith(f"{SUPABASE}/storage/v1/object/public/images/p1/job/main.jpg")


async def test_a_private_bucket_keeps_no_url_and_signs_one_when_asked():
    with respx.mock(assert_all_called=True) as mock:
        mock.post(f"{SUPABASE}/storage/v1/object/images/p/a.png").respond(json={"Key": "k"})
        sign = mock.post(f"{SUPABASE}/storage/v1/object/sign/images/p/a.png").respond(
            json={"signedURL": "/object/sign/images/p/a.png?token=t0k"}
        )
        storage = SupabaseStorage(SUPABASE, "key", "images", public=False)
        assert await storage.put("p/a.png", b"png", "image/png") is None  # nothing that expires
        assert not storage.durable_urls
        url = await storage.url_for("p/a.png")
        result = await fresh_urls(
            {"images": [{"slot": "main", "url": None, "storage_path": "p/a.png"}], "n": 1},
            storage,
        )
    assert url == f"{SUPABASE}/storage/v1/object/sign/images/p/a.png?token=t0k"
    assert result == {"images": [{"slot": "main", "url": url, "storage_path": "p/a.png"}], "n": 1}
    assert int(json.loads(sign.calls.last.request.content)["expiresIn"]) == 7 * 24 * 3600


@pytest.mark.parametrize(
    ("status", "error"), [(400, Permanent), (403, Permanent), (500, Transient), (503, Transient)]
)
async def test_supabase_errors_are_classified(status, error):
    with respx.mock() as mock:
        mock.post(f"{SUPABASE}/storage/v1/object/images/p/a.png").respond(
            status, json={"statusCode": str(status), "error": "Err", "message": "went wrong"}
        )
        with pytest.raises(error):
            await SupabaseStorage(SUPABASE, "key", "images").put("p/a.png", b"x", "image/png")


async def test_supabase_connection_errors_are_transient():
    with respx.mock() as mock:
        mock.post(f"{SUPABASE}/storage/v1/object/images/p/a.png").mock(
            side_effect=httpx.ConnectError("refused")
        )
        with pytest.raises(Transient):
            await SupabaseStorage(SUPABASE, "key", "images").put("p/a.png", b"x", "image/png")
