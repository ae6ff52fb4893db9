"""The trigger path with real parts: the pg_net stand-in and its relay, the insert trigger,
real pg_cron firing on its own, `processor schedule` and `processor verify`."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from processor.errors import ConfigError
from processor.ops import migrate, schedule
from processor.ops.pgcluster import LocalCluster, free_port
from processor.ops.verify import verify
from tests.support import TOKEN, wait_until


def wire(database_url: str, server_url: str, *, instant_pickup: bool = True) -> None:
    """What `processor schedule --local` does, minus pg_cron (only the cron database has it)."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        schedule.install_standin(conn)
        schedule.configure_endpoint(conn, server_url, TOKEN, instant_pickup=instant_pickup)


def count(conn, sql: str, *args) -> int:
    return conn.execute(sql, args).fetchone()["n"]


def test_schedule_refuses_a_database_without_pg_net_unless_local(database_url):
    with pytest.raises(ConfigError, match=r"pg_net is not installed.*--local"):
        schedule.schedule(database_url, "http://127.0.0.1:1", TOKEN)


def test_the_standin_sends_only_after_commit_and_records_the_answer(
    make_service, database_url, conn, handler, handler_url
):
    make_service(run_relay=True)
    wire(database_url, "http://127.0.0.1:1")
    body = '{"job_id": "j-commit", "attempt": 1, "payload": {}}'
    with psycopg.connect(database_url, row_factory=dict_row) as tx:
        request_id = tx.execute(
            "select net.http_post(%s, %s::jsonb) as id", (f"{handler_url}/ok", body)
        ).fetchone()["id"]
        time.sleep(1.0)
        assert handler.calls_for("j-commit") == []  # not sent while the transaction is open
        committed = time.monotonic()
    wait_until(lambda: handler.calls_for("j-commit"), 5, "the request after commit")
    assert handler.calls_for("j-commit")[0].started - committed < 1.0
    wait_until(
        lambda: count(
            conn, "select count(*) as n from net._http_response where id = %s", request_id
        ),
        5,
        "the recorded response",
    )
    response = conn.execute(
        "select * from net._http_response where id = %s", (request_id,)
    ).fetchone()
    assert (response["status_code"], response["timed_out"]) == (200, False)
    assert count(conn, "select count(*) as n from net.http_request_queue") == 0


def test_the_standin_records_timeouts_like_pg_net(make_service, database_url, conn, handler_url):
    make_service(run_relay=True)
    wire(database_url, "http://127.0.0.1:1")
    slow = '{"job_id": "j-slow", "attempt": 1, "payload": {"respond": {"delay": 2}}}'
    request_id = conn.execute(
        "select net.http_post(%s, %s::jsonb, timeout_milliseconds => 300) as id",
        (f"{handler_url}/slow", slow),
    ).fetchone()["id"]
    wait_until(
        lambda: count(
            conn, "select count(*) as n from net._http_response where id = %s", request_id
        ),
        5,
        "the timeout to be recorded",
    )
    row = conn.execute("select * from net._http_response where id = %s", (request_id,)).fetchone()
    assert row["timed_out"] is True
    assert row["status_code"] is None
    assert "300 ms" in row["error_msg"]


def test_an_insert_starts_its_job_within_a_second_of_commit_through_pg_net(
    make_service, database_url, conn, handler
):
    server = make_service(run_relay=True)
    wire(database_url, server.url)
    job_id = conn.execute("insert into job_queue (job_type) values ('ok') returning id").fetchone()[
        "id"
    ]
    committed = time.monotonic()  # autocommit: the insert has committed
    wait_until(lambda: handler.calls_for(job_id), 5, "the handler call")
    assert handler.calls_for(job_id)[0].started - committed < 1.0
    wait_until(
        lambda: (
            conn.execute("select status from job_queue where id = %s", (job_id,)).fetchone()[
                "status"
            ]
            == "completed"
        ),
        5,
        "completion",
    )


def test_instant_pickup_can_be_switched_off(make_service, database_url, conn, handler):
    server = make_service(run_relay=True)
    wire(database_url, server.url, instant_pickup=False)
    conn.execute("insert into job_queue (job_type) values ('ok')")
    time.sleep(1.0)
    assert count(conn, "select count(*) as n from net.http_request_queue") == 0
    assert count(conn, "select count(*) as n from net._http_response") == 0
    assert handler.calls == []


def test_an_insert_never_fails_because_the_trigger_path_is_broken(database_url, conn):
    # No pg_net, no endpoint: the job is stored and waits for cron, silently.
    conn.execute("insert into job_queue (job_type) values ('ok')")
    assert count(conn, "select count(*) as n from job_queue") == 1


def test_a_bulk_insert_of_1000_jobs_makes_a_bounded_number_of_calls_and_all_finish(
    make_service, database_url, conn, handler
):
    server = make_service({"DRAIN_SECONDS": "60", "MAX_RUNNING_JOBS": "40"}, run_relay=True)
    wire(database_url, server.url)
    conn.execute("insert into job_queue (job_type) select 'ok' from generate_series(1, 1000)")
    wait_until(
        lambda: (
            count(conn, "select count(*) as n from job_queue where status = 'completed'") == 1000
        ),
        60,
        "1000 completions",
    )
    calls = count(conn, "select count(*) as n from net._http_response")
    queued = count(conn, "select count(*) as n from net.http_request_queue")
    assert calls + queued == 1  # one INSERT statement, one call
    assert len(handler.calls) == 1000
    assert len({c.job_id for c in handler.calls}) == 1000


# pg_cron lives in one database of the cluster (cron.database_name): these tests use it.


@pytest.fixture
def cron_db(cluster: LocalCluster) -> Iterator[str]:
    migrate.migrate(cluster.url)
    yield cluster.url
    schedule.unschedule(cluster.url)
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute("truncate job_queue cascade")
        conn.execute("delete from processor_settings")


def test_schedule_installs_one_job_whose_command_holds_no_secret(cron_db):
    first = schedule.schedule(cron_db, "http://127.0.0.1:9/", TOKEN, local=True)
    again = schedule.schedule(cron_db, "http://127.0.0.1:9", TOKEN, local=True)
    assert first.schedule == again.schedule == "* * * * *"  # pg_cron 1.4 here
    assert "1.5" in first.warning and "every ten minutes" in first.warning
    with psycopg.connect(cron_db, autocommit=True, row_factory=dict_row) as conn:
        jobs = conn.execute(
            "select command from cron.job where jobname = 'process-job-queue'"
        ).fetchall()
        assert jobs == [{"command": "select invoke_job_processor()"}]
        prune = conn.execute(
            "select schedule, command from cron.job where jobname = 'processor-prune'"
        ).fetchall()
        assert prune == [{"schedule": "17 * * * *", "command": "select prune_jobs()"}]
        # What the cron job runs works where it runs (and deletes nothing young).
        kinds = {r["kind"] for r in conn.execute("select * from prune_jobs()").fetchall()}
        assert kinds == {"completed", "failed_or_cancelled", "cron_history"}
        everything = conn.execute("select string_agg(command, ' ') as c from cron.job").fetchone()[
            "c"
        ]
        assert TOKEN not in everything
        conn.execute("create role curious_reader")
        try:
            conn.execute("set role curious_reader")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("select * from processor_settings")
        finally:
            conn.execute("reset role")
            conn.execute("drop role curious_reader")
    assert schedule.unschedule(cron_db) is True
    assert schedule.unschedule(cron_db) is False
    with psycopg.connect(cron_db, autocommit=True) as conn:
        assert conn.execute("select count(*) from cron.job").fetchone()[0] == 0


@pytest.mark.slow
def test_pg_cron_fires_by_itself_and_the_job_completes(make_service, cron_db, handler):
    server = make_service({"DATABASE_URL": cron_db}, run_relay=True)
    schedule.schedule(cron_db, server.url, TOKEN, local=True, instant_pickup=False)
    with psycopg.connect(cron_db, autocommit=True, row_factory=dict_row) as conn:
        job_id = conn.execute(
            "insert into job_queue (job_type) values ('ok') returning id"
        ).fetchone()["id"]
        # Nothing else calls the endpoint: only the next minute's cron tick can run this job.
        wait_until(
            lambda: (
                conn.execute("select status from job_queue where id = %s", (job_id,)).fetchone()[
                    "status"
                ]
                == "completed"
            ),
            75,
            "the cron tick",
        )
        # The tick's run is recorded as it ends, which can be a moment after the job does.
        wait_until(
            lambda: (
                {"status": "succeeded"}
                in conn.execute("""select d.status from cron.job_run_details d
                               join cron.job j using (jobid)
                               where j.jobname = 'process-job-queue'""").fetchall()
            ),
            10,
            "the cron run to be recorded as succeeded",
        )
    assert len(handler.calls_for(job_id)) == 1


def test_verify_is_all_green_on_a_working_stack_and_names_a_stopped_server(make_service, cron_db):
    server = make_service({"DATABASE_URL": cron_db}, run_relay=True)
    schedule.schedule(cron_db, server.url, TOKEN, local=True)
    with psycopg.connect(cron_db, autocommit=True) as conn:
        conn.execute("insert into job_queue (job_type) values ('ok')")
    time.sleep(0.5)
    lines: list[str] = []
    assert verify(cron_db, lines.append) is True, lines
    assert all(line.startswith("✓") for line in lines)
    assert len(lines) == 11  # database, connection path … queue, storage, connections

    server.__exit__(None, None, None)  # the processor goes away
    lines.clear()
    assert verify(cron_db, lines.append) is False
    failed = [line for line in lines if line.startswith("✗")]
    assert failed[0].startswith(f"✗ processor unreachable at {server.url}")
    assert "fix: start it" in failed[0]
    # The links before it still hold (a cron tick in this very second could add a pg_net line).
    assert all(line.startswith("✓") for line in lines[:4])


def test_verify_fails_the_pg_net_link_when_many_recent_calls_failed(cron_db):
    """12 of pg_net's last 20 calls to the processor answered 500 and the latest 200: verify
    called that healthy from the latest call alone."""
    from processor.ops.verify import Verifier

    schedule.schedule(cron_db, "http://127.0.0.1:9", TOKEN, local=True)
    with psycopg.connect(cron_db, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("truncate net._http_response; truncate processor_net_calls")
        conn.execute(
            "insert into net._http_response (id, status_code, timed_out, created) "
            "select g, case when g % 5 in (1, 2, 3) then 500 else 200 end, false, "
            "now() - (20 - g) * interval '1 second' from generate_series(1, 20) g"
        )
        conn.execute(
            "insert into processor_net_calls (request_id) select g from generate_series(1, 20) g"
        )
        try:
            with httpx.Client() as client:
                check = Verifier(conn, client).net()
        finally:  # the cluster's database is shared with the next tests
            conn.execute("truncate net._http_response; truncate processor_net_calls")
    assert not check.ok
    assert "12 of the last 20 calls to the processor failed" in check.label
    assert "healthz" in check.fix


def test_verify_names_a_wrong_token(make_service, cron_db):
    server = make_service({"DATABASE_URL": cron_db})
    schedule.schedule(cron_db, server.url, "a-different-token-entirely", local=True)
    lines: list[str] = []
    assert verify(cron_db, lines.append) is False
    assert any(
        line.startswith(f"✗ processor at {server.url} rejects the stored token (401)")
        for line in lines
    )


def test_verify_says_when_the_database_is_unreachable():
    lines: list[str] = []
    assert verify(f"postgresql://postgres@127.0.0.1:{free_port()}/x", lines.append) is False
    assert lines[0].startswith("✗ database unreachable")


def test_the_trigger_still_calls_when_pg_nets_queue_cannot_be_read(
    make_service, database_url, conn, handler
):
    # Some pg_net installations keep net.http_request_queue from the function's owner.
    server = make_service(run_relay=True)
    wire(database_url, server.url)
    conn.execute("create role queue_owner_without_read")
    try:
        conn.execute(
            "alter function invoke_job_processor(boolean) owner to queue_owner_without_read"
        )
        conn.execute("grant usage on schema net to queue_owner_without_read")
        conn.execute(
            "grant execute on function net.http_post(text, jsonb, jsonb, jsonb, integer) "
            "to queue_owner_without_read"
        )
        conn.execute("grant execute on function processor_endpoint() to queue_owner_without_read")
        job_id = conn.execute(
            "insert into job_queue (job_type) values ('ok') returning id"
        ).fetchone()["id"]
        wait_until(lambda: handler.calls_for(job_id), 5, "the handler call")
    finally:
        conn.execute("alter function invoke_job_processor(boolean) owner to current_user")
        conn.execute("drop owned by queue_owner_without_read")
        conn.execute("drop role queue_owner_without_read")


# The stand-in behaves like pg_net 0.20 where it matters for timing and correctness.


def test_the_standin_checks_content_type_like_pg_net(database_url, conn):
    wire(database_url, "http://127.0.0.1:1")
    with pytest.raises(psycopg.errors.RaiseException, match='must be "application/json"'):
        conn.execute(
            "select net.http_post('http://h/x', '{}'::jsonb, "
            """headers => '{"Content-Type": "text/plain"}'::jsonb)"""
        )
    conn.execute(
        """select net.http_post('http://h/x', '{}'::jsonb, headers => '{"X-A": "1"}'::jsonb)"""
    )
    stored = conn.execute("select headers from net.http_request_queue").fetchone()["headers"]
    assert stored == {"X-A": "1", "Content-Type": "application/json"}


def test_the_standin_sends_a_null_body_empty_and_url_encodes_params(database_url, conn):
    wire(database_url, "http://127.0.0.1:1")
    conn.execute(
        """select net.http_post('http://h/x?k=v', null,
                                params => '{"a b": "c&d/é"}'::jsonb)"""
    )
    row = conn.execute("select url, body from net.http_request_queue").fetchone()
    assert row["url"] == "http://h/x?k=v&a%20b=c%26d%2F%C3%A9"
    assert row["body"] is None


def test_a_request_stays_queued_until_its_answer_is_in(
    make_service, database_url, conn, handler, handler_url
):
    make_service(run_relay=True)
    wire(database_url, "http://127.0.0.1:1")
    body = '{"job_id": "j-queued", "attempt": 1, "payload": {"respond": {"delay": 1.0}}}'
    conn.execute("select net.http_post(%s, %s::jsonb)", (f"{handler_url}/slow", body))
    wait_until(lambda: handler.calls_for("j-queued"), 5, "the request to be sent")
    # Sent, not answered yet: still in the queue, which is what the trigger's debounce sees.
    assert count(conn, "select count(*) as n from net.http_request_queue") == 1
    wait_until(
        lambda: count(conn, "select count(*) as n from net._http_response") == 1, 5, "the answer"
    )
    assert count(conn, "select count(*) as n from net.http_request_queue") == 0


def test_under_a_trickle_the_standin_sends_batches_about_a_second_apart(
    make_service, database_url, conn, handler, handler_url
):
    make_service(run_relay=True)
    wire(database_url, "http://127.0.0.1:1")
    time.sleep(0.3)  # the relay is idle and listening
    for n in range(8):
        body = f'{{"job_id": "j-trickle-{n}", "attempt": 1, "payload": {{}}}}'
        conn.execute("select net.http_post(%s, %s::jsonb)", (f"{handler_url}/ok", body))
        time.sleep(0.1)
    wait_until(lambda: len(handler.calls) == 8, 10, "all eight requests")
    starts = sorted(c.started for c in handler.calls)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # The first commit wakes the idle relay; the rest wait for its next round (≈1 s later):
    # like pg_net, it does not send each request as it commits.
    assert max(gaps) > 0.8
    assert sum(1 for g in gaps if g > 0.5) <= 2


def test_verify_judges_pg_net_by_the_processors_own_calls_only(make_service, cron_db):
    server = make_service({"DATABASE_URL": cron_db}, run_relay=True)
    schedule.schedule(cron_db, server.url, TOKEN, local=True)
    with psycopg.connect(cron_db, autocommit=True) as conn:
        conn.execute("insert into job_queue (job_type) values ('ok')")  # one call of ours
        time.sleep(0.5)
        # Someone else's request through pg_net fails; it says nothing about the processor.
        other = conn.execute(
            "select net.http_post(%s, '{}'::jsonb)", (f"http://127.0.0.1:{free_port()}/other",)
        ).fetchone()[0]
        wait_until(
            lambda: conn.execute(
                "select count(*) from net._http_response where id = %s", (other,)
            ).fetchone()[0],
            10,
            "the other request's answer",
        )
    lines: list[str] = []
    assert verify(cron_db, lines.append) is True, lines
    net_line = next(line for line in lines if "stand-in" in line)
    assert net_line.startswith("✓") and "answered 2xx" in net_line


def test_verify_without_pg_cron_says_to_enable_it_not_to_migrate(database_url):
    """A database without pg_cron (each test's own: the extension lives in one database per
    cluster) is migrated; verify must not send its user to `processor migrate`."""
    lines: list[str] = []
    assert verify(database_url, lines.append) is False
    cron = [line for line in lines if "cron" in line]
    assert cron and all("processor migrate" not in line for line in cron), lines
    assert any("pg_cron is not installed" in line and "enable pg_cron" in line for line in cron)
