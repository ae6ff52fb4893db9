"""The pooler tier: the service, the command line and `processor migrate` through a real
PgBouncer (Debian's), in transaction mode as Supabase's pooler on port 6543 runs, and in session
mode. Each test gets a fresh database reached through the pooler as well as directly."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row
from structlog.testing import capture_logs

from processor.ops.migrate import available, migrate
from processor.ops.verify import connection_path, verify
from tests.support import post, wait_until

MODES = ("transaction", "session")


def statuses(conn) -> dict[str, int]:
    rows = conn.execute("select status, count(*) as n from job_queue group by 1").fetchall()
    return {r["status"]: r["n"] for r in rows}


def app_state(server):
    return server.server.config.app.state


def drain_through(server, jobs: int, callers: int, conn) -> list[int]:
    """`callers` threads call /process-jobs (wait: true) until every job has ended; returns
    every answer's status code."""
    codes: list[int] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 60

    def finished() -> bool:
        with psycopg.connect(conn.info.dsn, autocommit=True) as c:
            row = c.execute(
                "select count(*) from job_queue where status in ('completed', 'failed')"
            ).fetchone()
            return row[0] >= jobs

    def caller() -> None:
        while time.monotonic() < deadline and not finished():
            answer = post(server, {"wait": True, "limit": 5})
            with lock:
                codes.append(answer.status_code)

    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(lambda _: caller(), range(callers)))
    return codes


@pytest.mark.parametrize("mode", MODES)
def test_jobs_through_a_pooler_are_each_delivered_once_with_no_error(
    mode, poolers, make_service, database_url, conn, handler
):
    """120 jobs, 6 concurrent /process-jobs callers, the service's every connection through the
    pooler: every call answers 200, every job completes after exactly one handler call, and no
    error is logged (on a transaction pooler psycopg's prepared statements used to fail with
    `prepared statement "_pg3_0" does not exist`)."""
    server = make_service({"DATABASE_URL": poolers[mode].url_for(database_url)})
    ids = [
        r["id"]
        for r in conn.execute(
            "insert into job_queue (job_type) select 'ok' from generate_series(1, 120) returning id"
        ).fetchall()
    ]
    with capture_logs() as logs:
        codes = drain_through(server, len(ids), 6, conn)
    assert set(codes) == {200}, codes
    assert statuses(conn) == {"completed": 120}
    assert [len(handler.calls_for(i)) for i in ids] == [1] * 120
    errors = [e for e in logs if e.get("log_level") in ("error", "critical")]
    assert errors == []
    assert "prepared statement" not in repr(logs)
    assert app_state(server).claimer.health.problem is None


def test_listen_through_a_transaction_pooler_is_reported_unavailable_once(
    poolers, make_service, database_url, conn, handler
):
    """The probe NOTIFY never comes back through a transaction pooler: the processor logs
    `listen_unavailable` once, stops listening, and a job is still picked up by a call to
    /process-jobs as pg_net or cron would make it."""
    url = poolers["transaction"].url_for(database_url)
    with capture_logs() as logs:
        server = make_service({"DATABASE_URL": url, "LISTEN_FOR_JOBS": "on"})
        listener = app_state(server).listener
        wait_until(lambda: listener.unavailable is not None, 15, "the probe to time out")
    assert "LISTEN_DATABASE_URL" in listener.unavailable
    assert [e["event"] for e in logs].count("listen_unavailable") == 1
    assert "listening" not in [e["event"] for e in logs]
    job_id = conn.execute("insert into job_queue (job_type) values ('ok') returning id").fetchone()[
        "id"
    ]
    time.sleep(0.5)
    assert handler.calls_for(job_id) == []  # nothing woke the processor
    assert post(server, {"wait": True}).json()["outcomes"][0]["status"] == "completed"


@pytest.mark.parametrize("how", ["session pooler", "LISTEN_DATABASE_URL"])
def test_listen_works_through_a_session_pooler_or_its_own_url(
    how, poolers, make_service, database_url, conn, handler
):
    """Through a session pooler the probe comes back; behind a transaction pooler,
    LISTEN_DATABASE_URL (direct) gives millisecond pickup back. Either way an insert is run
    with nobody calling /process-jobs."""
    if how == "session pooler":
        env = {"DATABASE_URL": poolers["session"].url_for(database_url)}
    else:
        env = {
            "DATABASE_URL": poolers["transaction"].url_for(database_url),
            "LISTEN_DATABASE_URL": database_url,
        }
    server = make_service({**env, "LISTEN_FOR_JOBS": "on"})
    listener = app_state(server).listener
    wait_until(listener.connected.is_set, 10, "the listener to prove itself")
    assert listener.unavailable is None
    job_id = conn.execute("insert into job_queue (job_type) values ('ok') returning id").fetchone()[
        "id"
    ]
    wait_until(lambda: handler.calls_for(job_id), 5, "the handler call")
    wait_until(lambda: statuses(conn) == {"completed": 1}, 5, "completion")


def test_verify_names_the_pooler_mode(poolers, database_url, monkeypatch):
    monkeypatch.delenv("LISTEN_DATABASE_URL", raising=False)
    tx = connection_path(poolers["transaction"].url_for(database_url))
    assert tx.mode == "transaction" and "backend pid changed" in tx.evidence
    session = connection_path(poolers["session"].url_for(database_url))
    assert session.mode == "session"
    assert f"URL port {poolers['session'].port}" in session.evidence
    assert connection_path(database_url).mode == "direct"

    lines: list[str] = []
    verify(poolers["transaction"].url_for(database_url), lines.append)
    [line] = [line for line in lines if "connection:" in line]
    assert line.startswith("! connection: transaction-mode pooler")
    assert "LISTEN cannot work here" in line and "LISTEN_DATABASE_URL" in line
    [budget] = [line for line in lines if "connections:" in line]
    assert "+ 0 LISTEN" in budget  # the listener gives up there: it holds no connection

    lines.clear()
    verify(database_url, lines.append)
    assert any(line.startswith("✓ connection: direct connection") for line in lines)


@pytest.mark.parametrize("mode", MODES)
def test_concurrent_migrations_through_a_pooler_never_hang(mode, poolers, cluster):
    """Five migrators at once on a fresh database, then fifteen one after another, all through
    the pooler: none hangs, none fails, and each migration is applied once."""
    name = f"fresh_{uuid.uuid4().hex[:10]}"
    cluster.create_database(name)
    url = poolers[mode].url_for(cluster.url_for(name))
    try:
        results: list[object] = []

        def run() -> None:
            try:
                results.append(len(migrate(url)))
            except Exception as exc:  # reported below with the others
                results.append(exc)

        threads = [threading.Thread(target=run, daemon=True) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "a migrator hung"
        assert all(isinstance(r, int) for r in results), results
        assert sum(results) == len(available())  # taken in turns: each applied by one of them
        for _ in range(15):
            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            thread.join(timeout=30)
            assert not thread.is_alive(), "a later migration hung on a leaked lock"
        assert results[5:] == [0] * 15
        with psycopg.connect(cluster.url_for(name), row_factory=dict_row) as direct:
            versions = [
                r["version"] for r in direct.execute("select version from processor_migrations")
            ]
        assert sorted(versions) == [m.version for m in available()]
    finally:
        cluster.drop_database(name)


@pytest.mark.parametrize("mode", MODES)
def test_the_command_line_works_through_a_pooler(mode, poolers, database_url):
    """migrate, enqueue, jobs, status and limits as a user runs them, DATABASE_URL on the
    pooler, each command six times so psycopg would have prepared its statements."""
    env = {**os.environ, "DATABASE_URL": poolers[mode].url_for(database_url)}

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "processor", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "up to date" in cli("migrate") or "applied" in cli("migrate")
    ids = [
        cli("enqueue", "generate-image", '{"project_id": "p1", "product": {"name": "Mug"}}').strip()
        for _ in range(6)
    ]
    listing = cli("jobs", "--limit", "10")
    assert all(job_id in listing for job_id in ids)
    for job_id in ids:
        assert "pending" in cli("status", job_id)
    assert "generate-image" in cli("limits")


def test_healthz_turns_unhealthy_while_claims_keep_failing(make_service, conn):
    """The database answers `select 1`, but every claim fails: after three failures in a row
    /healthz answers 503 naming the claim error, and 200 again once a claim works."""
    server = make_service()
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    signature = conn.execute(
        "select oid::regprocedure::text as f from pg_proc where proname = 'claim_jobs'"
    ).fetchone()["f"]
    conn.execute(f"alter function {signature} rename to claim_jobs_away")
    try:
        for _ in range(3):
            assert post(server, {}).status_code != 200
        health = httpx.get(f"{server.url}/healthz")
        assert health.status_code == 503
        assert "the last 3 claims failed" in health.json()["claims"]
        assert "claim_jobs" in health.json()["claims"]
    finally:
        conn.execute(
            f"alter function {signature.replace('claim_jobs', 'claim_jobs_away', 1)} "
            "rename to claim_jobs"
        )
    assert post(server, {}).status_code == 200
    assert httpx.get(f"{server.url}/healthz").status_code == 200
