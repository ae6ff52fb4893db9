"""A database outage shorter than the lease reruns nothing, and /healthz keeps answering.

The cluster here is the test's own (it is stopped and started mid-run), not the session's."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from processor.ops.migrate import migrate
from processor.ops.pgcluster import free_port
from processor.settings import Settings
from processor.web.app import create_app
from tests.support import TOKEN, ThreadedServer, throwaway_cluster, wait_until

AUTH = {"Authorization": f"Bearer {TOKEN}"}
JOBS = 300


@pytest.fixture
def own_cluster():
    with throwaway_cluster("processor-outage-") as pg:
        yield pg


@pytest.mark.slow
def test_an_outage_shorter_than_the_lease_loses_and_reruns_nothing(
    own_cluster, handler, handler_url, tmp_path
):
    url = own_cluster.url
    migrate(url)
    port = free_port()
    settings = Settings.from_env(
        {
            "DATABASE_URL": url,
            "PROCESSOR_TOKEN": TOKEN,
            "PROCESSOR_URL": f"http://127.0.0.1:{port}",
            "JOB_ROUTES": json.dumps({"ok": f"{handler_url}/ok"}),
            "LOCAL_STORAGE_DIR": str(tmp_path),
            "LISTEN_FOR_JOBS": "off",
            "LEASE_SECONDS": "30",
            "MAX_RUNNING_JOBS": "20",
            "LOG_FORMAT": "json",
        }
    )
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        payload = Jsonb({"respond": {"delay": 0.2}})
        conn.execute(
            "insert into job_queue (job_type, payload) select 'ok', %s from generate_series(1, %s)",
            (payload, JOBS),
        )

    stop = threading.Event()

    def caller() -> None:  # what pg_cron would do: keep asking, whatever the answer
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(
                    f"{base}/process-jobs",
                    json={"drain": True, "limit": 20},
                    headers=AUTH,
                    timeout=15,
                )
            time.sleep(0.3)

    with ThreadedServer(create_app(settings), port) as server:
        base = server.url
        thread = threading.Thread(target=caller)
        thread.start()
        try:
            wait_until(lambda: len(handler.calls) >= 40, 30, "the first jobs to run")
            own_cluster.stop()  # mid-run: jobs are running, outcomes are being written
            health = []
            for _ in range(3):
                started = time.monotonic()
                answer = httpx.get(f"{base}/healthz", timeout=10)
                health.append((answer.status_code, time.monotonic() - started))
            time.sleep(5)
            own_cluster.start()
            with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:

                def finished() -> bool:
                    return (
                        conn.execute(
                            "select count(*) as n from job_queue where status = 'completed'"
                        ).fetchone()["n"]
                        == JOBS
                    )

                wait_until(finished, 90, "every job to complete after the outage")
                rows = conn.execute("select status, count(*) as n from job_queue group by 1")
                statuses = {r["status"]: r["n"] for r in rows.fetchall()}
                expired = conn.execute(
                    "select count(*) as n from job_queue where errors::text like '%%lease%%'"
                ).fetchone()["n"]
            after = httpx.get(f"{base}/healthz", timeout=10)
        finally:
            stop.set()
            thread.join()

    assert statuses == {"completed": JOBS}
    deliveries = Counter(c.job_id for c in handler.calls)
    assert len(deliveries) == JOBS
    assert max(deliveries.values()) == 1, "a job ran twice"
    assert expired == 0
    # /healthz said 503 while the database was down, each time within its 1 s budget (plus
    # slack for a busy machine), and 200 once it was back.
    assert [status for status, _ in health] == [503, 503, 503]
    assert max(took for _, took in health) < 3
    assert after.status_code == 200
