"""Under load: admission control, busy answers, the LISTEN pickup path, and several processors on
one database. Real processors on real ports, a real database and a real local handler."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psycopg
import pytest

from processor.ops.pgcluster import free_port
from tests.support import TOKEN, healthy, scrape, wait_until

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def statuses(conn) -> dict[str, int]:
    return dict(
        (r["status"], r["n"])
        for r in conn.execute("select status, count(*) as n from job_queue group by status")
    )


def lease_expiries(conn) -> int:
    return conn.execute(
        "select count(*) as n from job_queue, jsonb_array_elements(errors) e "
        "where e->>'error' like 'lease expired%'"
    ).fetchone()["n"]


def test_twenty_callers_asking_for_50_never_get_more_than_max_running_jobs_at_once(
    make_service, conn, handler, database_url
):
    server = make_service({"MAX_RUNNING_JOBS": "5"})
    conn.execute("""insert into job_queue (job_type, payload)
                    select 'ok', '{"respond": {"delay": 0.05}}' from generate_series(1, 100)""")
    most_processing = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal most_processing
        with psycopg.connect(database_url, autocommit=True) as c:
            while not stop.is_set():
                n = c.execute("select count(*) from job_queue where status = 'processing'")
                most_processing = max(most_processing, n.fetchone()[0])
                time.sleep(0.005)

    answers: list[dict] = []

    def call(_: int) -> None:
        with httpx.Client(timeout=60) as client:
            while True:
                body = client.post(
                    f"{server.url}/process-jobs", json={"limit": 50, "wait": True}, headers=AUTH
                ).json()
                answers.append(body)
                if not body["claimed"] and not body.get("busy"):
                    return
                if body.get("busy"):
                    time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            list(pool.map(call, range(20)))
    finally:
        stop.set()
        watcher.join()

    assert handler.most_in_flight <= 5
    assert 0 < most_processing <= 5
    assert max(len(a["claimed"]) for a in answers) <= 5
    busy = [a for a in answers if a.get("busy")]
    assert busy, "with 20 callers and 5 slots some calls must have been told the service is busy"
    assert all(a["claimed"] == [] and 1 <= a["running"] <= 5 for a in busy)
    assert busy[0]["message"].startswith("Busy: ")
    assert statuses(conn) == {"completed": 100}
    assert lease_expiries(conn) == 0
    handled = Counter(c.job_id for c in handler.calls)
    assert len(handled) == 100 and set(handled.values()) == {1}


def test_a_busy_processor_claims_nothing_and_says_how_many_run(make_service, conn, handler):
    server = make_service({"MAX_RUNNING_JOBS": "1"})
    # Two statements: the slow job is the older one, so it is claimed first.
    conn.execute("""insert into job_queue (job_type, payload)
                    values ('slow', '{"respond": {"delay": 1}}')""")
    conn.execute("insert into job_queue (job_type, payload) values ('ok', '{}')")
    first = httpx.post(f"{server.url}/process-jobs", json={"limit": 2}, headers=AUTH).json()
    assert len(first["claimed"]) == 1 and "busy" not in first
    second = httpx.post(f"{server.url}/process-jobs", json={"limit": 2}, headers=AUTH)
    assert second.status_code == 200
    assert second.json() == {
        "claimed": [],
        "message": "Busy: 1 of 1 jobs running; nothing claimed",
        "busy": True,
        "running": 1,
    }
    assert statuses(conn) == {"processing": 1, "pending": 1}


def test_draining_never_runs_more_than_max_running_jobs(make_service, conn, handler):
    server = make_service({"MAX_RUNNING_JOBS": "3", "DRAIN_SECONDS": "30"})
    conn.execute("""insert into job_queue (job_type, payload)
                    select 'ok', '{"respond": {"delay": 0.05}}' from generate_series(1, 40)""")
    for _ in range(5):  # repeated trigger calls do not add to what runs
        httpx.post(f"{server.url}/process-jobs", json={"drain": True, "limit": 50}, headers=AUTH)
    wait_until(lambda: statuses(conn) == {"completed": 40}, 30, "40 completions")
    assert handler.most_in_flight <= 3
    assert len(handler.calls) == 40


def test_a_running_processor_picks_up_a_plain_insert_with_cron_and_pg_net_off(
    make_service, conn, handler
):
    # No cron job, no pg_net (not even the stand-in), no endpoint: only LISTEN/NOTIFY is left.
    make_service({"LISTEN_FOR_JOBS": "on"})
    assert conn.execute("select to_regnamespace('net') as ns").fetchone()["ns"] is None
    time.sleep(0.3)  # the listener is connected
    job_id = conn.execute("insert into job_queue (job_type) values ('ok') returning id").fetchone()[
        "id"
    ]
    wait_until(lambda: handler.calls_for(job_id), 5, "the handler call")
    wait_until(lambda: statuses(conn) == {"completed": 1}, 5, "completion")


@pytest.fixture
def serve_processes(database_url: str, handler_url: str, tmp_path: Path):
    """Starts `processor serve` processes (the real CLI) on this test's database."""
    procs: list[tuple[subprocess.Popen, str]] = []

    def start() -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "PROCESSOR_TOKEN": TOKEN,
            "PROCESSOR_URL": url,
            "JOB_ROUTES": json.dumps({"ok": f"{handler_url}/ok"}),
            "MAX_RUNNING_JOBS": "20",
            "DRAIN_SECONDS": "60",
            "LOG_LEVEL": "warning",
            "LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "processor", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append((proc, url))
        wait_until(lambda: healthy(url), 20, f"processor on {url}")
        return url

    yield start
    for proc, _ in procs:
        proc.terminate()
        proc.wait(timeout=30)


def _completed_here(url: str) -> int:
    return int(scrape(url).get('processor_attempts_total{outcome="completed"}', 0))


def test_two_processor_serve_processes_share_2000_jobs_and_deliver_each_once(
    serve_processes, conn, handler
):
    first, second = serve_processes(), serve_processes()
    time.sleep(0.5)  # both are listening
    conn.execute("insert into job_queue (job_type) select 'ok' from generate_series(1, 2000)")
    for url in (first, second):  # and a trigger call each, as pg_net would send
        httpx.post(f"{url}/process-jobs", json={"drain": True, "limit": 50}, headers=AUTH)
    wait_until(lambda: statuses(conn) == {"completed": 2000}, 120, "2000 completions")
    handled = Counter(c.job_id for c in handler.calls)
    assert len(handled) == 2000 and set(handled.values()) == {1}
    shares = [_completed_here(first), _completed_here(second)]
    assert sum(shares) == 2000 and min(shares) > 0, shares
