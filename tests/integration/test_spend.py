"""The usage ledger: a pack against the fake providers records every call with its units and
cost; the spend views, `processor stats --spend`, GET /jobs/{id} and /metrics agree; a retried
A+ job calls the text model once and makes only the missing module images."""

from __future__ import annotations

import json

import httpx
import pytest
from psycopg.types.json import Jsonb

from processor.cli.commands import main
from processor.providers.metering import estimate
from processor.settings import DEFAULT_PRICES
from tests.support import TOKEN, run_until, scrape

AUTH = {"Authorization": f"Bearer {TOKEN}"}
PRODUCT = {"name": "Ceramic Mug", "features": ["Holds 350 ml", "Dishwasher safe"]}


def run(server) -> dict:
    return httpx.post(
        f"{server.url}/process-jobs", json={"wait": True}, headers=AUTH, timeout=60
    ).json()


PACK_CALLS = (
    "select * from provider_calls where job_id = %(id)s or job_id in "
    "(select id from job_queue where parent_id = %(id)s) order by id"
)


def test_every_call_of_a_pack_is_in_the_ledger_and_every_view_adds_up(
    make_service, conn, fake_gemini, monkeypatch, capsys, database_url
):
    fake, env = fake_gemini
    server = make_service(env)
    job_id = conn.execute(
        "select enqueue_job('generate-complete-pack', %s, 'user-1') as id",
        (Jsonb({"project_id": "p9", "product": PRODUCT, "include_aplus": True}),),
    ).fetchone()["id"]
    assert run_until(server, conn, job_id)["status"] == "completed"
    rows = conn.execute(PACK_CALLS, {"id": job_id}).fetchall()
    # 6 listing images + 6 A+ module images + 1 A+ text call, all to the fake Gemini, each
    # recorded by the image or A+ job of the pack that made it.
    assert len(rows) == len(fake.calls) == 13
    images = [r for r in rows if r["operation"] == "image"]
    [text] = [r for r in rows if r["operation"] == "text"]
    assert len(images) == 12 and all(r["images"] == 1 for r in images)
    assert {(r["input_tokens"], r["output_tokens"]) for r in images} == {(24, 1290)}
    assert (text["input_tokens"], text["output_tokens"]) == (310, 520 + 90)  # thoughts billed
    for r in rows:
        assert (r["provider"], r["status"], r["http_status"]) == ("gemini", "ok", 200)
        assert (r["attempt"], r["user_id"], r["project_id"]) == (1, "user-1", "p9")
        assert r["job_id"] != job_id
        units = {"input_tokens": r["input_tokens"], "output_tokens": r["output_tokens"],
                 "images": r["images"]}  # fmt: skip
        assert float(r["cost_usd"]) == pytest.approx(
            estimate(DEFAULT_PRICES, "gemini", r["model"], units)
        )
        assert r["cost_usd"] > 0 and r["duration_ms"] >= 0
    total = sum(float(r["cost_usd"]) for r in rows)

    by_view = {
        name: float(conn.execute(f"select sum(cost_usd) as c from {name}").fetchone()["c"])
        for name in ("provider_spend_daily", "provider_spend_by_user",
                     "provider_spend_by_project", "provider_spend_by_provider")
    }  # fmt: skip
    assert all(v == pytest.approx(total) for v in by_view.values()), by_view

    job = httpx.get(f"{server.url}/jobs/{job_id}", headers=AUTH).json()
    assert job["spend"]["calls"] == 13
    assert job["spend"]["cost_usd"] == pytest.approx(total, abs=1e-6)
    assert job["spend"]["attempts"][0]["by_provider"] == {"gemini": 13}

    calls = scrape(server.url)['processor_provider_calls_total{outcome="ok",provider="gemini"}']
    assert calls >= 13  # the counters are the process's: other tests' calls count too

    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["stats", "--spend"]) == 0
    out = capsys.readouterr().out
    assert f"total: 13 calls, ${total:.4f} estimated" in out
    assert main(["status", str(job_id)]) == 0
    assert f"${total:.4f}" in capsys.readouterr().out


def test_a_retried_a_plus_job_writes_its_copy_once_and_makes_only_missing_images(
    make_service, conn, fake_gemini
):
    fake, env = fake_gemini
    fake.fail = {4: (503, None)}  # the third module image fails the first attempt
    server = make_service({**env, "PACK_CONCURRENCY": "1"})
    job_id = conn.execute(
        "select enqueue_job('generate-aplus', %s) as id",
        (Jsonb({"project_id": "p1", "product": PRODUCT}),),
    ).fetchone()["id"]
    assert run(server)["outcomes"][0]["status"] == "pending"
    conn.execute("update job_queue set run_at = now() where id = %s", (job_id,))
    assert run(server)["outcomes"][0]["status"] == "completed"
    per_attempt = {
        r["attempt"]: (r["text"], r["images"], r["failed"])
        for r in conn.execute(
            "select attempt, count(*) filter (where operation = 'text') as text,"
            "       count(*) filter (where operation = 'image' and status = 'ok') as images,"
            "       count(*) filter (where status <> 'ok') as failed"
            " from provider_calls where job_id = %s group by attempt",
            (job_id,),
        ).fetchall()
    }
    # Attempt 1: the copy, two images, then the failure. Attempt 2: no copy again, and only the
    # four images that were missing (6 in all).
    assert per_attempt == {1: (1, 2, 1), 2: (0, 4, 0)}
    failed = conn.execute(
        "select status, http_status, error from provider_calls where job_id = %s"
        " and status <> 'ok'",
        (job_id,),
    ).fetchone()
    assert (failed["status"], failed["http_status"]) == ("transient", 503)
    job = httpx.get(f"{server.url}/jobs/{job_id}", headers=AUTH).json()
    assert [a["calls"] for a in job["spend"]["attempts"]] == [4, 4]
    assert json.dumps(job).count("fake-gemini-key") == 0


def test_a_private_bucket_keeps_paths_and_signs_urls_when_the_job_is_read(
    make_service, conn, database_url, monkeypatch, capsys
):
    """Signed URLs expire (7 days), so none is stored: the result keeps the storage path and
    GET /jobs/{id} signs a fresh URL on every read. Supabase Storage is mocked with respx at
    its real endpoints; calls to the service itself pass through."""
    import itertools

    import respx

    supabase = "https://proj.supabase.test"
    tokens = itertools.count(1)

    def signed(request: httpx.Request) -> httpx.Response:
        path = request.url.path.split("/object/sign/", 1)[1]
        return httpx.Response(200, json={"signedURL": f"/object/sign/{path}?token=t{next(tokens)}"})

    with respx.mock(assert_all_mocked=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        mock.post(url__regex=rf"{supabase}/storage/v1/object/images/.+").respond(json={"Key": "k"})
        mock.post(url__regex=rf"{supabase}/storage/v1/object/sign/images/.+").mock(
            side_effect=signed
        )
        server = make_service(
            {
                "SUPABASE_URL": supabase,
                "SUPABASE_SERVICE_ROLE_KEY": "service-role-key-123456",
                "STORAGE_BUCKET": "images",
                "STORAGE_PUBLIC": "false",
            }
        )
        job_id = conn.execute(
            "select enqueue_job('generate-image', %s) as id",
            (Jsonb({"project_id": "p1", "product": PRODUCT, "kind": "detail"}),),
        ).fetchone()["id"]
        assert run(server)["outcomes"][0]["status"] == "completed"
        stored = conn.execute("select result from job_queue where id = %s", (job_id,)).fetchone()
        image = stored["result"]["image"]
        assert image["url"] is None and image["storage_path"] == f"p1/{job_id}/detail.png"
        assert (
            conn.execute(
                "select url from generated_images where job_id = %s", (job_id,)
            ).fetchone()["url"]
            is None
        )
        reads = [
            httpx.get(f"{server.url}/jobs/{job_id}", headers=AUTH).json()["result"]["image"]["url"]
            for _ in range(2)
        ]
        # The command line signs too, from the same settings.
        for name, value in {
            "DATABASE_URL": database_url,
            "SUPABASE_URL": supabase,
            "SUPABASE_SERVICE_ROLE_KEY": "service-role-key-123456",
            "STORAGE_BUCKET": "images",
            "STORAGE_PUBLIC": "false",
        }.items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        assert main(["status", str(job_id), "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)["result"]["image"]["url"]
        reads.append(shown)
    prefix = f"{supabase}/storage/v1/object/sign/images/p1/{job_id}/detail.png?token=t"
    assert all(url.startswith(prefix) for url in reads) and len(set(reads)) == 3


def test_a_bulk_replay_of_a_failed_pack_pays_only_for_its_missing_images(
    make_service, conn, fake_gemini
):
    fake, env = fake_gemini
    fake.fail = {5: (503, None)}  # the fifth image fails, and (as its pack) it has no retry left
    server = make_service({**env, "MAX_RUNNING_JOBS": "1"})
    job_id = conn.execute(
        "select enqueue_job('generate-complete-pack', %s, 'user-1', p_max_retries => 0) as id",
        (Jsonb({"project_id": "p1", "product": PRODUCT}),),
    ).fetchone()["id"]
    assert run_until(server, conn, job_id)["status"] == "failed"
    [dry] = conn.execute(
        "select * from retry_jobs(p_job_type => 'generate-complete-pack', p_dry_run => true)"
    ).fetchall()
    first = conn.execute(
        "select sum(cost_usd) as paid, max(cost_usd) filter (where status = 'ok') as dearest"
        " from provider_calls where job_id in (select id from job_queue where parent_id = %s)",
        (job_id,),
    ).fetchone()
    # Its images are its children's: four made, the fifth failed (failing the pack), the sixth
    # not run yet.
    assert (dry["job_id"], dry["items_stored"], dry["items_needed"]) == (job_id, 4, 6)
    assert dry["paid_usd"] == first["paid"] and dry["max_retry_usd"] == 2 * first["dearest"]
    assert conn.execute("select status from job_queue where id = %s", (job_id,)).fetchone() == {
        "status": "failed"
    }

    [done] = conn.execute("select * from retry_jobs(p_job_type => 'generate-complete-pack')")
    assert done["retried"]
    assert run_until(server, conn, job_id)["status"] == "completed"
    # The replay waits for the sixth image, then asks again for the one that failed: only
    # those two are made.
    second = conn.execute(
        "select count(*) as calls, sum(cost_usd) as cost from provider_calls"
        " where job_id in (select id from job_queue where parent_id = %s)"
        " and id > (select max(id) from provider_calls where status <> 'ok')",
        (job_id,),
    ).fetchone()
    assert second["calls"] == 2
    assert second["cost"] <= dry["max_retry_usd"]
    assert second["cost"] <= dry["max_retry_usd"]
