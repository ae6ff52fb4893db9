"""Provider limits shared by every processor: two processors on one database, a fake Gemini
with a quota per window, and PROVIDER_LIMITS set a little under it. The pace is kept across
both processors; a 429 pauses both; jobs held back are postponed without spending attempts."""

from __future__ import annotations

import contextlib
import threading
import time

import httpx
import pytest
from psycopg.types.json import Jsonb

from tests.fakes import FakeGemini
from tests.support import TOKEN, ThreadedServer

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def drive(servers, conn, jobs: int, timeout: float = 180) -> None:
    """What pg_cron and pg_net would do: keep asking both processors until every job ended."""
    stop = threading.Event()

    def caller(server) -> None:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"{server.url}/process-jobs", json={"limit": 10, "wait": True},
                           headers=AUTH, timeout=60)  # fmt: skip
            time.sleep(0.2)

    threads = [threading.Thread(target=caller, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            left = conn.execute(
                "select count(*) as n from job_queue where status in ('pending', 'processing')"
            ).fetchone()["n"]
            if left == 0:
                return
            time.sleep(0.3)
        raise AssertionError(f"{left} of {jobs} jobs still not finished")
    finally:
        stop.set()
        for t in threads:
            t.join()


@pytest.mark.slow
def test_two_processors_keep_one_pace_and_spend_no_attempt_on_rate_limits(make_service, conn):
    fake = FakeGemini(limit=(10, 2.0))  # 300 a minute, counted per 2-second window
    with ThreadedServer(fake.app()) as gemini:
        env = {
            "GEMINI_API_KEY": fake.api_key,
            "GEMINI_BASE_URL": f"{gemini.url}/v1beta",
            "IMAGE_PROVIDER": "gemini",
            "PROVIDER_LIMITS": '{"gemini": {"concurrent": 6, "per_minute": 270}}',
        }
        servers = [make_service(env), make_service(env)]
        packs = 8
        conn.execute(
            "insert into job_queue (job_type, payload) select 'generate-complete-pack', %s"
            " from generate_series(1, %s)",
            (Jsonb({"project_id": "p1", "product": {"name": "Mug"}}), packs),
        )
        started = time.monotonic()
        drive(servers, conn, packs)
        took = time.monotonic() - started
    rows = conn.execute("select status, retry_count from job_queue").fetchall()
    assert {r["status"] for r in rows} == {"completed"}
    assert all(r["retry_count"] == 0 for r in rows), "an attempt was spent"
    calls = conn.execute("select count(*) as n from provider_calls where status = 'ok'").fetchone()
    assert calls["n"] == packs * 6 == len(fake.calls)
    assert fake.limited <= 1, f"{fake.limited} calls answered 429"
    # Together they kept the pace: 48 calls at 270 a minute take at least ~10 s.
    assert took >= 48 / (270 / 60) * 0.9


@pytest.mark.slow
def test_a_429_pauses_every_processor_until_its_wait(make_service, conn):
    fake = FakeGemini()
    fake.fail = {1: (429, "3s")}
    with ThreadedServer(fake.app()) as gemini:
        env = {
            "GEMINI_API_KEY": fake.api_key,
            "GEMINI_BASE_URL": f"{gemini.url}/v1beta",
            "IMAGE_PROVIDER": "gemini",
        }
        first, second = make_service(env), make_service(env)
        payload = Jsonb({"project_id": "p1", "product": {"name": "Mug"}, "kind": "detail"})
        a, b = (
            conn.execute("select enqueue_job('generate-image', %s) as id", (payload,)).fetchone()[
                "id"
            ]
            for _ in range(2)
        )
        httpx.post(f"{first.url}/process-jobs", json={"limit": 1, "wait": True}, headers=AUTH,
                   timeout=30)  # fmt: skip
        paused = conn.execute(
            "select extract(epoch from paused_until - now()) as s from provider_limits"
            " where provider = 'gemini'"
        ).fetchone()
        assert paused is not None and 1 < paused["s"] <= 3
        # The other processor does not call Gemini during the pause: its job is postponed.
        answer = httpx.post(f"{second.url}/process-jobs", json={"limit": 1, "wait": True},
                            headers=AUTH, timeout=30).json()  # fmt: skip
        assert answer["outcomes"][0]["status"] == "pending"
    assert len(fake.calls) == 1  # only the call that got the 429
    jobs = conn.execute(
        "select id, retry_count, postponements, run_at > now() as later from job_queue"
    ).fetchall()
    assert all(j["retry_count"] == 0 and j["postponements"] == 1 and j["later"] for j in jobs)
    assert {j["id"] for j in jobs} == {a, b}
