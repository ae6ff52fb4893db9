"""The built-in job types end to end: a job row, /process-jobs, the processor's own handler
routes over HTTP, the demo provider or a local fake Gemini server, local storage, and the
result tables, all real."""

from __future__ import annotations

import io
import json
import time

import httpx
from PIL import Image
from psycopg.types.json import Jsonb

from processor.images.imaging import product_fill
from tests.fakes import product_photo
from tests.support import PRODUCT, TOKEN, ThreadedServer, job, make_due, run_until, signed_in


def enqueue(conn, job_type: str, payload: dict) -> str:
    return str(
        conn.execute("select enqueue_job(%s, %s) as id", (job_type, Jsonb(payload))).fetchone()[
            "id"
        ]
    )


def run(server, **body) -> dict:
    response = httpx.post(
        f"{server.url}/process-jobs",
        json={"wait": True, **body},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return response.json()


def children(conn, job_id: str) -> dict[str, dict]:
    rows = conn.execute("select * from job_queue where parent_id = %s", (job_id,)).fetchall()
    return {r["node_name"]: r for r in rows}


def white_corners(image: Image.Image) -> bool:
    rgb = image.convert("RGB")
    w, h = rgb.size
    return all(
        rgb.getpixel(p) == (255, 255, 255) for p in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1))
    )


def test_a_demo_pack_stores_six_real_images_and_links_them(make_service, conn, tmp_path):
    server = make_service()
    job_id = enqueue(conn, "generate-complete-pack", {"project_id": "p1", "product": PRODUCT})
    outcome = run(server)["outcomes"][0]
    assert outcome["status"] == "waiting", outcome  # its six images are jobs of their own
    kids = children(conn, job_id)
    assert sorted(kids) == sorted(
        ["main", "lifestyle", "infographic", "detail", "in_use", "packaging"]
    )
    assert {k["job_type"] for k in kids.values()} == {"generate-image"}
    assert {k["payload"]["kind"] for k in kids.values()} == set(kids)
    row = run_until(server, conn, job_id)
    assert row["status"] == "completed", row["error_message"]
    assert row["retry_count"] == 0 and row["suspensions"] == 1
    images = row["result"]["images"]
    assert [i["slot"] for i in images] == [
        "main",
        "lifestyle",
        "infographic",
        "detail",
        "in_use",
        "packaging",
    ]
    assert row["result"]["demo"] is True
    assert row["progress"]["done"] == row["progress"]["total"] == 6
    files = sorted(p.name for p in (tmp_path / "storage" / "p1" / job_id).iterdir())
    assert files == [
        "detail.png",
        "in_use.png",
        "infographic.png",
        "lifestyle.png",
        "main.jpg",
        "packaging.png",
    ]
    for image in images:  # every URL in the result opens, and is the image it says it is
        response = httpx.get(image["url"])
        assert response.status_code == 200
        opened = Image.open(io.BytesIO(response.content))
        assert opened.size == (image["width"], image["height"])
    recorded = conn.execute(
        "select count(*) as n from generated_images where job_id = any (%s)",
        ([k["id"] for k in kids.values()],),
    ).fetchone()["n"]
    assert recorded == 6  # each image recorded by the job that made it
    page = signed_in(server).get(f"/ui/jobs/{job_id}").text  # the pack's page shows them all
    assert all(f"p1/{job_id}/{name}" in page for name in files)


def test_the_main_image_is_the_product_on_pure_white_filling_about_85_percent(
    make_service, conn, tmp_path
):
    server = make_service()
    job_id = enqueue(
        conn, "generate-image", {"project_id": "p1", "product": PRODUCT, "kind": "main"}
    )
    run(server)
    data = (tmp_path / "storage" / "p1" / job_id / "main.jpg").read_bytes()
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    assert image.size[0] == image.size[1] >= 1600
    assert white_corners(image)
    assert 0.85 <= product_fill(image) <= 0.90
    result = job(conn, job_id)["result"]
    assert result["image"]["provider"] == "demo + local cut-out"
    # The demo marker is in the result and in the file, not drawn on the picture.
    assert result["demo"] is True
    assert b"demo render" in image.info.get("comment", b"")


def test_the_main_image_from_a_source_photo_url(make_service, conn, tmp_path):
    photo = product_photo((900, 600), backdrop=(180, 190, 200), fmt="JPEG")

    async def serve(request):
        from starlette.responses import Response

        return Response(photo, media_type="image/jpeg")

    from starlette.applications import Starlette
    from starlette.routing import Route

    with ThreadedServer(Starlette(routes=[Route("/photo.jpg", serve)])) as photos:
        server = make_service({"ALLOW_PRIVATE_URLS": "on"})  # the photo server is on loopback
        job_id = enqueue(
            conn,
            "generate-image",
            {"project_id": "p1", "product": PRODUCT, "source_image_url": f"{photos.url}/photo.jpg"},
        )
        run(server)
    image = Image.open(tmp_path / "storage" / "p1" / job_id / "main.jpg")
    assert white_corners(image)
    assert 0.85 <= product_fill(image) <= 0.90
    # The product (a red box) survived the cut-out with its colour.
    r, g, b = image.convert("RGB").getpixel((800, 800))
    assert r > 150 and g < 80 and b < 80


def test_an_invalid_payload_fails_at_once_naming_each_bad_field(make_service, conn, fake_gemini):
    fake, env = fake_gemini
    server = make_service(env)
    job_id = enqueue(
        conn,
        "generate-image",
        {"project_id": "p1", "product": {"features": "x"}, "kind": "poster", "aspect_ratio": "5:4"},
    )
    run(server)
    row = job(conn, job_id)
    assert row["status"] == "failed"
    assert row["retry_count"] == 0
    for field in (
        "product.name is required",
        "product.features must be a list",
        "kind must be one of",
        "aspect_ratio must be one of",
    ):
        assert field in row["error_message"]
    assert fake.calls == []  # nothing was spent on a job that could never succeed


def test_a_pack_against_fake_gemini_completes(make_service, conn, fake_gemini):
    fake, env = fake_gemini
    server = make_service(env)
    job_id = enqueue(conn, "generate-complete-pack", {"project_id": "p9", "product": PRODUCT})
    assert run_until(server, conn, job_id)["status"] == "completed"
    assert fake.image_calls == 6
    providers = {i["provider"] for i in job(conn, job_id)["result"]["images"]}
    assert providers == {"gemini", "gemini + local cut-out"}
    first = fake.calls[0]["body"]
    assert first["generationConfig"]["responseModalities"] == ["TEXT", "IMAGE"]
    assert fake.calls[0]["model"] == "gemini-3.1-flash-image"


def test_a_pack_whose_image_fails_once_retries_that_image_alone(make_service, conn, fake_gemini):
    fake, env = fake_gemini
    fake.fail = {4: (503, None)}
    server = make_service({**env, "MAX_RUNNING_JOBS": "1"})
    job_id = enqueue(conn, "generate-complete-pack", {"project_id": "p1", "product": PRODUCT})
    for _ in range(7):  # the pack hands out its images, then they run one by one
        run(server)
    kids = children(conn, job_id)
    [failed] = [k for k in kids.values() if k["retry_count"] == 1]
    assert failed["status"] == "pending" and "503" in failed["error_message"]
    assert sorted(k["status"] for k in kids.values()) == ["completed"] * 5 + ["pending"]
    waiting = job(conn, job_id)
    assert (waiting["status"], waiting["retry_count"]) == ("waiting", 0)
    # The pack's row shows its images as they are made.
    assert (waiting["progress"]["done"], waiting["progress"]["total"]) == (5, 6)
    assert len(waiting["progress"]["items"]) == 5
    assert fake.image_calls == 6

    make_due(conn, failed["id"])
    row = run_until(server, conn, job_id)
    assert row["status"] == "completed" and row["retry_count"] == 0
    assert fake.image_calls == 7  # only the failed image was made again
    assert [i["slot"] for i in row["result"]["images"]] == [
        "main", "lifestyle", "infographic", "detail", "in_use", "packaging",
    ]  # fmt: skip
    assert row["progress"]["done"] == row["progress"]["total"] == 6


def test_a_failed_image_fails_the_pack_naming_it_and_retried_alone_completes_it(
    make_service, conn, fake_gemini
):
    fake, env = fake_gemini
    fake.fail = {2: (400, None)}  # refused for good: no retry
    server = make_service({**env, "MAX_RUNNING_JOBS": "1"})
    job_id = enqueue(conn, "generate-complete-pack", {"project_id": "p1", "product": PRODUCT})
    row = run_until(server, conn, job_id)
    kids = children(conn, job_id)
    [bad] = [k for k in kids.values() if k["status"] == "failed"]
    assert row["status"] == "failed"
    assert row["error_message"].startswith(f"its child {bad['id']} ({bad['node_name']}) failed: ")
    fake.fail = {}
    assert conn.execute("select retry_job(%s) as ok", (bad["id"],)).fetchone()["ok"]
    assert job(conn, job_id)["status"] == "waiting"  # re-opened with its image
    row = run_until(server, conn, job_id)
    assert row["status"] == "completed"
    assert len(row["result"]["images"]) == 6


def test_cancelling_a_pack_cancels_its_images(make_service, conn):
    server = make_service()
    job_id = enqueue(conn, "generate-complete-pack", {"project_id": "p1", "product": PRODUCT})
    run(server, limit=1)
    assert conn.execute("select cancel_job(%s) as ok", (job_id,)).fetchone()["ok"]
    kids = children(conn, job_id)
    assert len(kids) == 6 and {k["status"] for k in kids.values()} == {"cancelled"}
    assert {k["error_message"] for k in kids.values()} == {f"cancelled with its parent {job_id}"}


def test_a_provider_rate_limit_postpones_the_job_without_spending_an_attempt(
    make_service, conn, fake_gemini
):
    fake, env = fake_gemini
    fake.fail = {1: (429, "42s")}
    server = make_service(env)
    job_id = enqueue(
        conn, "generate-image", {"project_id": "p1", "product": PRODUCT, "kind": "lifestyle"}
    )
    before = time.time()
    assert run(server)["outcomes"][0]["status"] == "pending"
    row = job(conn, job_id)
    assert (row["retry_count"], row["postponements"]) == (0, 1)
    wait = row["run_at"].timestamp() - before
    assert 40 <= wait <= 45
    assert "RESOURCE_EXHAUSTED" in row["error_message"]


def test_aplus_writes_a_checked_document_and_module_images_at_their_sizes(
    make_service, conn, fake_gemini
):
    fake, env = fake_gemini
    server = make_service(env)
    job_id = enqueue(conn, "generate-aplus", {"project_id": "p1", "product": PRODUCT})
    assert run(server)["outcomes"][0]["status"] == "completed"
    aplus = job(conn, job_id)["result"]["aplus"]
    modules = aplus["document"]["modules"]
    assert (modules["header"]["image"]["width"], modules["header"]["image"]["height"]) == (970, 600)
    assert {(t["image"]["width"], t["image"]["height"]) for t in modules["four_images"]} == {
        (220, 220)
    }
    assert (modules["highlights"]["image"]["width"], modules["highlights"]["image"]["height"]) == (
        300,
        300,
    )
    text_call = next(c for c in fake.calls if "responseJsonSchema" in c["body"]["generationConfig"])
    assert text_call["model"] == "gemini-3.5-flash"
    assert "PRODUCT_JSON" in text_call["body"]["contents"][0]["parts"][0]["text"]
    stored = conn.execute(
        "select content from aplus_contents where job_id = %s", (job_id,)
    ).fetchone()["content"]
    assert stored["document"]["headline"] == "Meet the Mug"


def test_a_pack_with_aplus_includes_the_document(make_service, conn):
    server = make_service()
    job_id = enqueue(
        conn,
        "generate-complete-pack",
        {"project_id": "p1", "product": PRODUCT, "include_aplus": True},
    )
    row = run_until(server, conn, job_id)
    assert row["status"] == "completed"
    aplus_job = children(conn, job_id)["aplus"]
    assert aplus_job["job_type"] == "generate-aplus" and len(aplus_job["depends_on"]) == 6
    assert row["result"]["aplus"]["document"]["headline"] == "Meet the Ceramic Mug"
    assert row["progress"]["done"] == row["progress"]["total"] == 13


def test_handlers_refuse_calls_without_the_token(make_service):
    server = make_service()
    body = {
        "job_id": "00000000-0000-0000-0000-000000000000",
        "lease_token": "00000000-0000-0000-0000-000000000000",
        "payload": {},
    }
    response = httpx.post(f"{server.url}/process-image", json=body)
    assert response.status_code == 401
    bad = httpx.post(
        f"{server.url}/process-image",
        content=json.dumps({"x": 1}),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert bad.status_code == 400
