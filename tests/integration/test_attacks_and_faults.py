"""What an attacker or a fault would try against the processor , each reproduced:
one attempt is one delivery, signed calls stay on their route, operator output is inert, and
every odd input gets a clear answer that loses nothing."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from processor.ops.pgcluster import free_port
from tests.support import (
    CLIENTS,
    TOKEN,
    RawHandler,
    csrf,
    enqueue,
    healthy,
    post,
    row,
    signed_in,
    wait_for,
    wait_until,
)

# --- one attempt, one delivery ------------------------------------------------------------------


def test_a_handler_that_hangs_up_after_reading_gets_one_delivery(make_service, conn):
    """Kept connections from earlier calls, then a handler that reads the request and closes:
    the max_retries = 0 job is delivered once and fails saying why."""
    with RawHandler() as raw:
        routes = {"ok": f"{raw.url}/ok", "hangup": f"{raw.url}/hangup"}
        server = make_service({"JOB_ROUTES": json.dumps(routes), "MAX_RUNNING_JOBS": "8"})
        warm = [enqueue(conn, "ok") for _ in range(6)]
        post(server, {"limit": 6, "wait": True})
        assert all(row(conn, j)["status"] == "completed" for j in warm)
        job_id = enqueue(conn, "hangup", max_retries=0)
        post(server, {"wait": True})
        done = wait_for(conn, job_id, {"failed"})
        hangups = [(h, b) for p, h, b in raw.requests if p == "/hangup"]
    assert len(hangups) == 1
    assert "connection closed after the request was sent" in done["error_message"]
    assert len(done["errors"]) == 1
    # Every delivery carries its own id, signed with the call.
    deliveries = [h["processor-delivery"] for _, h, _ in raw.requests]
    assert len(set(deliveries)) == len(deliveries) == 7


def test_a_lost_connection_is_a_counted_attempt_retried_with_backoff(make_service, conn):
    with RawHandler() as raw:
        server = make_service({"JOB_ROUTES": json.dumps({"hangup": f"{raw.url}/hangup"})})
        job_id = enqueue(conn, "hangup", max_retries=2)
        post(server, {"wait": True})
        after = row(conn, job_id)
        assert raw.paths() == ["/hangup"]
    assert after["status"] == "pending" and after["retry_count"] == 1
    assert after["run_at"] > after["updated_at"]  # backed off, not resent at once


# --- clear refusals in SQL (0010_clear_refusals) ------------------------------------------------


@pytest.mark.parametrize(
    "run_at", ["infinity", "-infinity", "4713-01-01 BC", "294276-01-01", "1969-12-31"]
)
def test_run_at_out_of_range_is_refused_by_name(conn, run_at):
    with pytest.raises(psycopg.errors.DatetimeFieldOverflow, match="run_at must be a time from"):
        conn.execute("select enqueue_job('ok', '{}', p_run_at => %s::timestamptz)", (run_at,))
    with pytest.raises(psycopg.errors.DatetimeFieldOverflow, match="run_at must be a time from"):
        conn.execute("insert into job_queue (job_type, run_at) values ('ok', %s)", (run_at,))
    job_id = conn.execute("select enqueue_job('ok', '{}') as id").fetchone()["id"]
    with pytest.raises(psycopg.errors.CheckViolation, match="job_queue_run_at_range"):
        conn.execute("update job_queue set run_at = %s where id = %s", (run_at, job_id))


def test_rows_with_an_unreadable_run_at_are_repaired_and_read(cluster, tmp_path):
    """Rows written before 0010 with run_at infinity or year 294276: the migration moves them to
    the nearest bound (their order kept), and every read of them works."""
    from processor.ops import migrate

    name = f"old_rows_{uuid.uuid4().hex[:8]}"
    cluster.create_database(name)
    url = cluster.url_for(name)
    try:
        migrate.migrate(url, [m for m in migrate.available() if m.version < 10])
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as c:
            c.execute(
                "insert into job_queue (job_type, run_at) values ('ok', 'infinity'),"
                " ('ok', '-infinity'), ('ok', '294276-01-01'), ('ok', '4713-01-01 BC')"
            )
            with pytest.raises(psycopg.DataError):
                c.execute("select run_at from job_queue").fetchall()
        migrate.migrate(url)
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as c:
            years = sorted(r["run_at"].year for r in c.execute("select run_at from job_queue"))
            stats = c.execute("select * from job_queue_stats").fetchall()
            stuck = c.execute("select * from job_queue_stuck").fetchall()
    finally:
        cluster.drop_database(name)
    assert years == [1970, 1970, 9999, 9999]
    assert stats and len(stuck) == 2  # the two that were always due


def test_priority_and_lengths_out_of_range_are_named(conn):
    with pytest.raises(
        psycopg.errors.NumericValueOutOfRange, match="priority must be an integer from"
    ):
        conn.execute("select enqueue_job('ok', '{}', null, 2147483648)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="user_id is 1000000 char"):
        conn.execute("select enqueue_job('ok', '{}', repeat('u', 1000000))")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="job_type is 201 char"):
        conn.execute("insert into job_queue (job_type) values (repeat('t', 201))")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="idempotency_key is 501"):
        conn.execute("select enqueue_job('ok', '{}', p_idempotency_key => repeat('k', 501))")
    # 200 characters and the largest priority still go in.
    conn.execute("select enqueue_job(repeat('t', 200), '{}', repeat('u', 200), 2147483647)")


def test_include_aplus_that_is_not_a_boolean_is_named_when_credits_price_it(conn):
    conn.execute("update job_queue_settings set credits_enabled = true")
    conn.execute("select grant_credits('alice', 100)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="include_aplus must be true or"):
        conn.execute(
            "select enqueue_job('generate-complete-pack', %s, 'alice')",
            (Jsonb({"project_id": "p", "product": {"name": "M"}, "include_aplus": "maybe"}),),
        )
    available = conn.execute("select available from credit_accounts").fetchone()["available"]
    assert available == 100


def test_a_lease_expiry_failure_says_how_many_attempts_and_when_each_started(conn):
    job_id = conn.execute("select enqueue_job('ok', '{}', p_max_retries => 1) as id").fetchone()[
        "id"
    ]
    for _ in range(2):
        conn.execute("select * from claim_jobs('vm:1', 1)")
        conn.execute("update job_queue set locked_until = now() - interval '1 s'")
        conn.execute("select requeue_expired_jobs()")
    done = conn.execute("select * from job_queue where id = %s", (job_id,)).fetchone()
    assert done["status"] == "failed"
    assert done["error_message"] == (
        "lease expired: worker vm:1 stopped reporting (gave up after 2 attempts)"
    )
    assert [e["attempt"] for e in done["errors"]] == [1, 2]
    assert all(e["started"] for e in done["errors"])


@pytest.mark.parametrize(
    "call, message",
    [
        ("prune_jobs(p_batch => 0)", "batch must be an integer of at least 1, got 0"),
        ("prune_jobs(p_max_rows => -5)", "max_rows must be an integer of at least 1, got -5"),
        ("prune_jobs(p_keep_completed => interval '-1 day')", "ages must not be negative"),
    ],
)
def test_prune_jobs_refuses_odd_values(conn, call, message):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        conn.execute(f"select * from {call}")


def test_prune_jobs_with_a_null_batch_takes_the_default_and_ends(conn):
    conn.execute("select enqueue_job('ok', '{}')")
    conn.execute("update job_queue set status = 'completed', completed_at = now() - interval '1y'")
    rows = conn.execute("select * from prune_jobs(p_batch => null)").fetchall()
    assert {r["kind"]: r["deleted"] for r in rows}["completed"] == 1


def test_switching_credits_off_releases_what_jobs_hold(conn):
    conn.execute("update job_queue_settings set credits_enabled = true")
    conn.execute("select grant_credits('alice', 10)")
    job_id = conn.execute(
        "select enqueue_job('generate-complete-pack', %s, 'alice') as id",
        (Jsonb({"project_id": "p", "product": {"name": "M"}}),),
    ).fetchone()["id"]
    token = conn.execute("select lease_token from claim_jobs('w', 1)").fetchone()["lease_token"]
    assert conn.execute("select held from credit_balances").fetchone()["held"] == 6
    conn.execute("update job_queue_settings set credits_enabled = false")
    conn.execute("select mark_job_completed(%s, %s, '{}')", (job_id, token))
    after = conn.execute("select * from credit_balances").fetchone()
    assert (after["held"], after["available"], after["spent"]) == (0, 10, 0)
    kinds = [
        (r["kind"], r["note"])
        for r in conn.execute("select kind, note from credit_ledger where job_id = %s order by id",
                              (job_id,))
    ]  # fmt: skip
    assert kinds == [("reserve", None), ("release", "credits switched off")]


@pytest.mark.parametrize("days", ["nan", "1e10", "-1", "inf"])
def test_processor_prune_refuses_an_age_that_is_not_one(database_url, monkeypatch, capsys, days):
    from processor import cli

    monkeypatch.setenv("DATABASE_URL", database_url)
    with pytest.raises(SystemExit) as stop:
        cli.main(["prune", "--completed-days", days])
    assert stop.value.code == 2
    assert "days must be a number from 0 to 36500" in capsys.readouterr().err


async def test_a_missing_source_file_does_not_name_the_servers_folder(tmp_path):
    from processor.providers.errors import Permanent
    from processor.providers.storage import LocalStorage

    with pytest.raises(Permanent) as refused:
        await LocalStorage(tmp_path, "http://x").get("p1/missing.png")
    assert "'p1/missing.png'" in str(refused.value) and str(tmp_path) not in str(refused.value)


# --- clear answers over HTTP --------------------------------------------------------------------


def test_input_the_database_refuses_is_a_4xx_with_its_reason_not_an_outage(make_service, conn):
    server = make_service()
    client = signed_in(server)
    for field in ("type", "user", "project"):
        answer = client.get("/ui/jobs", params={field: "x\x00y"})
        assert answer.status_code == 400, field
        assert "control character" in answer.text and "Retry-After" not in answer.headers
    # Retry from the status page with a short balance: 409 naming the balance, job unchanged.
    conn.execute("update job_queue_settings set credits_enabled = true")
    conn.execute("select grant_credits('alice', 6)")
    job_id = conn.execute(
        "select enqueue_job('generate-complete-pack', %s, 'alice') as id",
        (Jsonb({"project_id": "p", "product": {"name": "M"}}),),
    ).fetchone()["id"]
    conn.execute("select cancel_job(%s)", (job_id,))
    conn.execute(  # spends 1 of the 6 the cancel gave back
        "select enqueue_job('generate-image', %s, 'alice')",
        (Jsonb({"project_id": "p", "product": {"name": "M"}}),),
    )
    page = client.get(f"/ui/jobs/{job_id}").text
    answer = client.post(f"/ui/jobs/{job_id}/retry", data={"csrf": csrf(page)})
    assert answer.status_code == 409
    assert "retry refused: insufficient credits: user alice has 5, the job needs 6" in answer.text
    assert row(conn, job_id)["status"] == "cancelled"


def test_an_outage_is_still_a_503_with_retry_after():
    from processor.db import http_status

    outage = psycopg.errors.AdminShutdown()  # 57P01: the server is going down
    assert http_status(outage) == 503
    assert http_status(psycopg.errors.InsufficientResources("out of memory")) == 503
    assert http_status(psycopg.errors.InsufficientResources("insufficient credits: …")) == 409
    assert http_status(psycopg.errors.InvalidTextRepresentation()) == 400
    assert http_status(psycopg.errors.UndefinedColumn()) == 500  # a bug, not the caller's fault


def test_sign_out_ends_the_session_for_every_copy_of_the_cookie(make_service, conn):
    server = make_service()
    client = signed_in(server)
    saved = client.cookies.get("processor_session")
    job_id = conn.execute("select enqueue_job('ok', '{}') as id").fetchone()["id"]
    page = client.get(f"/ui/jobs/{job_id}").text
    token = csrf(page)
    assert client.post("/ui/logout", data={"csrf": token}).status_code == 303
    replay = httpx.Client(base_url=server.url, cookies={"processor_session": saved})
    CLIENTS.append(replay)
    assert replay.get("/ui", follow_redirects=False).status_code == 303  # back to sign-in
    cancel = replay.post(f"/ui/jobs/{job_id}/cancel", data={"csrf": token}, follow_redirects=False)
    assert cancel.status_code == 303 and cancel.headers["location"].startswith("/ui/login")
    assert row(conn, job_id)["status"] == "pending"
    # A new sign-in works as before.
    assert signed_in(server).get("/ui").status_code == 200


def test_failed_token_checks_are_throttled_per_address_and_logged_once(make_service, capfd):
    server = make_service()
    wrong = {"Authorization": "Bearer not-the-token-not-the-token"}
    answers = [
        httpx.post(f"{server.url}/process-jobs", headers=wrong).status_code for _ in range(25)
    ]
    assert answers[:20] == [401] * 20 and answers[20:] == [429] * 5
    held = httpx.post(f"{server.url}/process-jobs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert held.status_code == 429 and int(held.headers["retry-after"]) > 0  # not even compared
    login = httpx.post(f"{server.url}/ui/login", data={"token": TOKEN})
    assert login.status_code == 429 and "Too many wrong tokens" in login.text
    logged = [line for line in capfd.readouterr().out.splitlines() if " auth_" in line]
    events = [re.search(r" (auth_\w+) ", line).group(1) for line in logged]
    assert events == ["auth_failed", "auth_throttled"]
    assert "address=127.0.0.1" in logged[0] and "surface=/process-jobs" in logged[0]
    assert not any(TOKEN in line or "not-the-token" in line for line in logged)


def test_many_addresses_cannot_lock_out_one_that_signed_in_before():
    from processor.auth import FailureGuard

    now = [0.0]
    guard = FailureGuard(per_address=3, overall=10, window=60, clock=lambda: now[0])
    guard.succeeded("10.0.0.1")  # the operator, earlier
    for i in range(10):
        assert guard.held_off(f"198.51.100.{i}") is None
        guard.failed(f"198.51.100.{i}", "/process-jobs", "invalid bearer token")
    assert guard.held_off("10.0.0.1") is None  # still heard
    assert guard.held_off("203.0.113.9") == 60  # a stranger waits for the window
    now[0] = 61
    assert guard.held_off("203.0.113.9") is None
    # Wrong tokens from the operator's own address (a shared egress) do not lock it out.
    for _ in range(5):
        guard.failed("10.0.0.1", "/process-jobs", "invalid bearer token")
    assert guard.held_off("10.0.0.1") is None
    for _ in range(3):
        guard.failed("198.51.100.1", "/process-jobs", "invalid bearer token")
    assert guard.held_off("198.51.100.1") == 60


# --- operator output is inert -------------------------------------------------------------------

HOSTILE = "see [link=https://evil.example/login]details[/link] \x1b]0;PWNED\x1b\\ [/red] \u202e"


def test_hostile_job_text_prints_as_text_in_every_command(conn, database_url, capsys, monkeypatch):
    from processor import cli

    conn.execute(
        "insert into job_queue (job_type, status, error_message, errors, user_id, result)"
        " values ('[blink]x[/blink]', 'failed', %s, %s, %s, %s)",
        (
            HOSTILE,
            Jsonb([{"attempt": 1, "at": "2026-01-01", "error": HOSTILE}]),
            "[bold]u\x07",
            Jsonb({"images": [{"slot": "main\x1b[2J", "url": "https://x.example/a\x1b]8;;"}]}),
        ),
    )
    job_id = conn.execute("select id from job_queue").fetchone()["id"]
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "400")
    outputs = {}
    for args in (["jobs"], ["status", str(job_id)], ["stats"]):
        code = cli.main(args)
        out, err = capsys.readouterr()
        outputs[args[0]] = out + err
        assert code == 0, (args, out, err)
    for name, text in outputs.items():
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text, name
    assert "[link=https://evil.example/login]" in outputs["jobs"]
    assert "\\e]0;PWNED\\e\\ [/red] \\u202e" in outputs["status"]
    assert "[blink]x[/blink]" in outputs["stats"]


def test_the_job_page_shows_only_images_the_processor_stored(make_service, conn):
    server = make_service()
    job_id = conn.execute("select enqueue_job('generate-aplus', '{}') as id").fetchone()["id"]
    stored = "p1/aplus/header.png"
    conn.execute(
        "insert into generated_images (job_id, slot, kind, storage_path, url, width, height,"
        " mime_type, provider, model) values (%s, 'aplus_header', 'aplus', %s,"
        " 'http://127.0.0.1/files/p1/aplus/header.png', 10, 10, 'image/png', 'demo', 'demo')",
        (job_id, stored),
    )
    doc = {
        "headline": "H",
        "modules": {
            "header": {"headline": "h", "body": "b", "image": {"storage_path": stored,
                       "url": "https://tracker.example/pixel.gif"}},
            "four_images": [{"headline": "t", "body": "b",
                             "image": {"url": "https://tracker.example/one.gif"}}],
            "highlights": {"headline": "x", "bullets": ["a"],
                           "image": {"storage_path": "elsewhere.png",
                                     "url": "https://tracker.example/two.gif"}},
        },
    }  # fmt: skip
    conn.execute(
        "update job_queue set status = 'completed', result = %s where id = %s",
        (Jsonb({"aplus": {"document": doc}}), job_id),
    )
    page = signed_in(server).get(f"/ui/jobs/{job_id}").text
    images = re.findall(r'<img src="([^"]+)"', page)
    assert images == ["http://127.0.0.1/files/p1/aplus/header.png"]
    assert "tracker.example/pixel.gif" in page  # shown as text in the raw result, not loaded


# --- the listener comes back at once after each restart -----------------------------------------


def test_the_listen_backoff_starts_again_after_a_connection_held(database_url, conn):
    from processor.queue.listen import Listener

    async def run() -> tuple[list[float], list[float]]:
        woke = asyncio.Event()
        listener = Listener(database_url, woke.set)
        task = asyncio.create_task(listener.run())
        pickups = []
        try:
            for _ in range(3):
                await asyncio.wait_for(listener.connected.wait(), 10)
                woke.clear()
                conn.execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity"
                    " where application_name = 'processor-listen'"
                    " and datname = current_database()"
                )
                await asyncio.sleep(0.1)
                started = time.monotonic()
                await asyncio.wait_for(listener.connected.wait(), 10)
                await asyncio.wait_for(woke.wait(), 10)
                pickups.append(time.monotonic() - started)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return list(listener.waits), pickups

    waits, pickups = asyncio.run(run())
    assert waits == [Listener.FIRST_RETRY] * 3  # before: 0.5, 1.0, 2.0
    assert max(pickups) < 1.0


# --- SIGTERM while a caller waits ---------------------------------------------------------------


def test_sigterm_answers_an_open_wait_call_and_exits_within_the_grace(
    database_url, handler_url, conn, tmp_path
):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PROCESSOR_TOKEN": TOKEN,
        "PROCESSOR_URL": url,
        "JOB_ROUTES": json.dumps({"slow": f"{handler_url}/slow"}),
        "SHUTDOWN_GRACE": "4",
        "LISTEN_FOR_JOBS": "off",
        "LOG_LEVEL": "warning",
        "LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
    }
    quick = enqueue(conn, "slow", {"delay": 1.5})
    stuck = enqueue(conn, "slow", {"delay": 60})
    proc = subprocess.Popen(
        [sys.executable, "-m", "processor", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: healthy(url), 20, "processor serve")
        answer: list[httpx.Response] = []
        caller = threading.Thread(
            target=lambda: answer.append(
                httpx.post(f"{url}/process-jobs", json={"limit": 2, "wait": True},
                           headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
            )
        )  # fmt: skip
        caller.start()
        wait_until(lambda: row(conn, stuck)["status"] == "processing", 10, "both claimed")
        time.sleep(0.3)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        caller.join(10)
        answered = time.monotonic() - started
        proc.wait(20)
        exited = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert answer and answer[0].status_code == 200
    outcomes = {o["id"]: o for o in answer[0].json()["outcomes"]}
    assert set(outcomes) == {str(quick), str(stuck)}
    assert outcomes[str(stuck)]["status"] == "processing"
    assert "shutting down" in outcomes[str(stuck)]["error"]
    assert answered < 1.0 and exited < 4 + 2.5, (answered, exited)
    assert row(conn, quick)["status"] == "completed"  # finished inside the grace
    after = row(conn, stuck)
    assert after["status"] == "pending" and after["retry_count"] == 1  # interrupted, retried
