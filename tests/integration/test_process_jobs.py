"""POST /process-jobs end to end: a real processor on a real port, a real database, and a real
local HTTP handler whose answers each test scripts through the job payload."""

from __future__ import annotations

import concurrent.futures
import json
import time
import uuid
from collections import Counter

import httpx
import pytest

from processor.ops.pgcluster import free_port
from processor.settings import derive_signing_secret
from processor.signing import SignatureError
from tests.support import TOKEN, enqueue, post, row, scrape, wait_for


def test_with_nothing_due_it_says_so(make_service):
    server = make_service()
    response = post(server)
    assert response.status_code == 200
    assert response.json() == {"claimed": [], "message": "No jobs to process"}


def test_a_claimed_job_is_answered_at_once_and_completed_with_the_handlers_result(
    make_service, conn, handler
):
    server = make_service()
    job_id = enqueue(conn, respond={"delay": 1.0})
    started = time.monotonic()
    response = post(server)
    answered_in = time.monotonic() - started
    assert response.json()["claimed"] == [{"id": str(job_id), "job_type": "ok", "attempt": 1}]
    assert answered_in < 0.9  # the handler is still busy: the answer did not wait for it
    done = wait_for(conn, job_id, {"completed"})
    assert done["result"] == {"handled": str(job_id), "attempt": 1}
    [call] = handler.calls_for(job_id)
    assert set(call.body) == {"job_id", "job_type", "attempt", "lease_token", "user_id", "payload"}
    # Signed, and without the processor's token: a handler cannot act as the processor.
    assert call.authorization == ""
    secret = derive_signing_secret(TOKEN)
    assert call.verify(secret) > 0
    assert len(call.delivery) == 32
    with pytest.raises(SignatureError, match="does not match"):
        call.verify(secret, raw=call.raw + b" ")
    with pytest.raises(SignatureError, match="does not match"):
        call.verify(secret, path="/process-image")  # bound to the route it was sent to


def test_wait_returns_the_outcome(make_service, conn):
    server = make_service()
    job_id = enqueue(conn)
    body = post(server, {"wait": True}).json()
    assert body["outcomes"] == [
        {"id": str(job_id), "job_type": "ok", "attempt": 1, "status": "completed"}
    ]
    assert row(conn, job_id)["status"] == "completed"


def test_a_4xx_from_the_handler_fails_the_job_at_once_with_its_reason(make_service, conn):
    server = make_service()
    job_id = enqueue(
        conn, "bad", respond={"status": 422, "body": {"error": "product.name is required"}}
    )
    outcome = post(server, {"wait": True}).json()["outcomes"][0]
    assert outcome["status"] == "failed"
    job = row(conn, job_id)
    assert job["status"] == "failed"
    assert job["retry_count"] == 0
    assert job["error_message"] == (
        "handler answered 422 Unprocessable Entity: product.name is required"
    )


@pytest.mark.parametrize(
    "respond",
    [
        {"status": 503, "text": "upstream overloaded"},
        {"status": 429, "body": {"detail": "slow down"}},
        {"status": 500, "body": {"error": {"message": "kaboom"}}},
    ],
)
def test_a_5xx_or_429_from_the_handler_schedules_a_retry_with_backoff(make_service, conn, respond):
    server = make_service()
    job_id = enqueue(conn, "flaky", respond=respond)
    assert post(server, {"wait": True}).json()["outcomes"][0]["status"] == "pending"
    job = row(conn, job_id)
    assert (job["status"], job["retry_count"]) == ("pending", 1)
    assert str(respond["status"]) in job["error_message"]
    assert job["run_at"] > job["updated_at"]  # not due again yet: backing off


def test_a_handler_timeout_is_retried(make_service, conn, handler_url):
    routes = json.dumps({"slow": {"url": f"{handler_url}/slow", "timeout": 0.3}})
    server = make_service({"JOB_ROUTES": routes})
    job_id = enqueue(conn, "slow", respond={"delay": 2})
    post(server, {"wait": True})
    job = row(conn, job_id)
    assert job["status"] == "pending"
    assert job["error_message"] == "handler timed out after 0.3s"


def test_an_unreachable_handler_is_retried(make_service, conn):
    dead = f"http://127.0.0.1:{free_port()}/nothing-listens-here"
    server = make_service({"JOB_ROUTES": json.dumps({"gone": dead})})
    job_id = enqueue(conn, "gone")
    post(server, {"wait": True})
    job = row(conn, job_id)
    assert job["status"] == "pending"
    assert job["error_message"].startswith("handler unreachable:")


def test_an_unknown_job_type_fails_at_once_listing_the_known_types(make_service, conn):
    server = make_service()
    job_id = enqueue(conn, "no-such-type")
    post(server, {"wait": True})
    job = row(conn, job_id)
    assert job["status"] == "failed"
    assert job["error_message"].startswith("unknown job type 'no-such-type': this processor runs ")
    for known in ("generate-image", "generate-complete-pack", "generate-aplus", "ok"):
        assert known in job["error_message"]


def test_a_job_that_fails_transiently_completes_on_a_later_attempt(make_service, conn, handler):
    server = make_service()
    job_id = enqueue(conn, "flaky", respond={"fail_times": 2})
    for _ in range(3):
        conn.execute("update job_queue set run_at = now() where id = %s", (job_id,))
        post(server, {"wait": True})
    job = row(conn, job_id)
    assert (job["status"], job["retry_count"]) == ("completed", 2)
    assert [c.attempt for c in handler.calls_for(job_id)] == [1, 2, 3]
    assert [e["attempt"] for e in job["errors"]] == [1, 2]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer wrong-token-wrong-token"}, "invalid bearer token"),
        ({"Authorization": f"Basic {TOKEN}"}, "malformed Authorization header"),
        ({"Authorization": "Bearer"}, "malformed Authorization header"),
    ],
)
def test_a_missing_or_wrong_token_gets_401_and_claims_nothing(make_service, conn, headers, reason):
    server = make_service()
    job_id = enqueue(conn)
    response = httpx.post(f"{server.url}/process-jobs", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert reason in response.json()["error"]
    assert TOKEN not in response.text
    assert row(conn, job_id)["status"] == "pending"


def test_the_previous_token_is_accepted_during_rotation(make_service, conn):
    server = make_service(
        {"PROCESSOR_TOKEN": "new-token-Lk7Xw3Qz9Vm2Rp5Tc8", "PROCESSOR_TOKEN_PREVIOUS": TOKEN}
    )
    assert post(server).status_code == 200
    assert post(server, token="new-token-Lk7Xw3Qz9Vm2Rp5Tc8").status_code == 200
    assert post(server, token="neither-of-the-two-tokens").status_code == 401


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "body is not valid JSON"),
        ("[1, 2]", "body must be a JSON object, got array"),
        ('{"limit": 0}', "limit must be an integer from 1 to 50"),
        ('{"limit": "5"}', "limit must be an integer"),
        ('{"limit": true}', "limit must be an integer"),
        ('{"limit": 51}', "limit must be an integer from 1 to 50"),
        ('{"job_types": "ok"}', "job_types must be a list of 1 to 100 job type names"),
        ('{"job_types": [""]}', "job_types must be a list of 1 to 100 job type names"),
        ('{"wait": "yes"}', "wait must be true or false"),
        ('{"limt": 2}', "unknown field(s): limt"),
    ],
)
def test_a_malformed_body_gets_400_naming_the_problem_and_claims_nothing(
    make_service, conn, body, reason
):
    server = make_service()
    job_id = enqueue(conn)
    response = post(server, body)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert row(conn, job_id)["status"] == "pending"


def test_limit_and_job_types_select_what_is_claimed(make_service, conn):
    server = make_service()
    ok_jobs = {str(enqueue(conn, "ok")) for _ in range(3)}
    echo_job = enqueue(conn, "echo")
    body = post(server, {"limit": 10, "job_types": ["ok"], "wait": True}).json()
    assert {c["id"] for c in body["claimed"]} == ok_jobs
    assert row(conn, echo_job)["status"] == "pending"


def test_sixteen_concurrent_posts_over_200_jobs_claim_each_exactly_once(
    make_service, conn, handler
):
    server = make_service()
    conn.execute("""insert into job_queue (job_type, payload)
                    select 'ok', '{"respond": {"delay": 0.01}}' from generate_series(1, 200)""")

    def drain(_: int) -> list[str]:
        got = []
        with httpx.Client(timeout=60) as client:
            while True:
                body = client.post(
                    f"{server.url}/process-jobs",
                    json={"limit": 3, "wait": True},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ).json()
                if not body["claimed"]:
                    return got
                got.extend(c["id"] for c in body["claimed"])

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        claimed = [job_id for ids in pool.map(drain, range(16)) for job_id in ids]
    counts = Counter(claimed)
    assert len(counts) == 200 and set(counts.values()) == {1}
    handled = Counter(c.job_id for c in handler.calls)
    assert len(handled) == 200 and set(handled.values()) == {1}
    statuses = conn.execute("select status, count(*) from job_queue group by status").fetchall()
    assert statuses == [{"status": "completed", "count": 200}]


def test_the_heartbeat_keeps_the_lease_of_a_long_running_job(make_service, conn):
    server = make_service({"LEASE_SECONDS": "3"})
    job_id = enqueue(conn, "slow", respond={"delay": 5})
    post(server)
    time.sleep(4)  # past the first lease: only the heartbeat keeps it alive
    requeued = conn.execute("select requeue_expired_jobs() as n").fetchone()["n"]
    assert requeued == 0
    assert row(conn, job_id)["status"] == "processing"
    assert wait_for(conn, job_id, {"completed"})["retry_count"] == 0


def test_a_worker_whose_job_was_taken_away_records_nothing(make_service, conn, handler):
    server = make_service({"LEASE_SECONDS": "3"})
    job_id = enqueue(conn, "slow", respond={"delay": 3})
    post(server)
    time.sleep(0.3)
    conn.execute("select cancel_job(%s)", (job_id,))
    time.sleep(1.5)  # the next heartbeat notices the lease is gone
    job = row(conn, job_id)
    assert (job["status"], job["result"], job["errors"]) == ("cancelled", None, [])


def test_get_job_reports_status_attempts_and_errors(make_service, conn):
    server = make_service()
    job_id = enqueue(conn, "bad", respond={"status": 400, "body": {"detail": "no"}})
    post(server, {"wait": True})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = httpx.get(f"{server.url}/jobs/{job_id}", headers=auth).json()
    assert body["status"] == "failed"
    assert body["attempt"] == 1
    assert body["errors"][0]["error"] == "handler answered 400 Bad Request: no"
    assert "lease_token" not in body
    assert httpx.get(f"{server.url}/jobs/{job_id}").status_code == 401
    refused = httpx.get(f"{server.url}/jobs/nope", headers=auth)
    assert refused.status_code == 400
    assert "job id must be a job id or its first 8 or more characters (0-9, a-f)" in refused.text
    assert httpx.get(f"{server.url}/jobs/{uuid.uuid4()}", headers=auth).status_code == 404
    # Its first 8 characters, as the page and `processor jobs` show them, answer the same job;
    # characters that two jobs share are refused with both named.
    short = httpx.get(f"{server.url}/jobs/{str(job_id)[:8]}", headers=auth)
    assert short.status_code == 200 and short.json()["id"] == str(job_id)
    twins = ["0badcafe-0000-4000-8000-000000000001", "0badcafe-0000-4000-8000-000000000002"]
    for twin in twins:
        conn.execute("insert into job_queue (id, job_type) values (%s, 'ok')", (twin,))
    both = httpx.get(f"{server.url}/jobs/0badcafe", headers=auth)
    assert both.status_code == 400 and twins[0] in both.text and twins[1] in both.text
    assert httpx.get(f"{server.url}/jobs/0badcafe9", headers=auth).status_code == 404


def test_healthz_checks_the_database(make_service, cluster, database_url):
    server = make_service()
    assert httpx.get(f"{server.url}/healthz").json()["database"] == "ok"
    cluster.drop_database(database_url.rsplit("/", 1)[1])  # the database goes away
    response = httpx.get(f"{server.url}/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "error"


def test_expired_leases_are_requeued_by_the_next_call(make_service, conn):
    server = make_service()
    job_id = enqueue(conn)
    conn.execute(
        """update job_queue set status = 'processing', lease_token = gen_random_uuid(),
                    locked_by = 'dead-worker', locked_until = now() - interval '1 minute'
                    where id = %s""",
        (job_id,),
    )
    body = post(server, {"wait": True}).json()
    assert body["requeued_expired"] == 1
    assert body["claimed"] == [{"id": str(job_id), "job_type": "ok", "attempt": 2}]
    assert row(conn, job_id)["status"] == "completed"


def test_metrics_count_jobs_by_type_and_status_and_attempts_by_outcome(make_service, conn):
    server = make_service()
    enqueue(conn, "ok")
    enqueue(conn, "bad", respond={"status": 400})
    enqueue(conn, 'we"ird')
    post(server, {"limit": 3, "job_types": ["ok", "bad"], "wait": True})
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    m = scrape(server.url)
    assert m['processor_jobs{job_type="ok",status="completed"}'] == 1
    assert m['processor_jobs{job_type="bad",status="failed"}'] == 1
    assert m['processor_jobs{job_type="we"ird",status="pending"}'] == 1
    assert m['processor_attempts_total{outcome="completed"}'] == 1
    assert m['processor_attempts_total{outcome="failed"}'] == 1
    assert m["processor_running_jobs"] == 0
    # One pickup and one run observed per attempt, by type (and outcome).
    assert m['processor_pickup_latency_seconds_count{job_type="ok"}'] == 1
    assert m['processor_run_seconds_count{job_type="bad",outcome="failed"}'] == 1
    assert m['processor_run_seconds_bucket{job_type="ok",le="+Inf",outcome="completed"}'] == 1
    # The third job waits, due: one job against the 20 slots of one processor.
    assert m['processor_type_waiting{job_type="we"ird"}'] == 1
    assert m['processor_oldest_due_seconds{job_type="we"ird"}'] > 0
    assert m["processor_scaling_metric"] == pytest.approx(1 / 20)


def test_the_token_never_reaches_the_logs(make_service, conn):
    from structlog.testing import capture_logs

    server = make_service()
    enqueue(conn, "ok")
    enqueue(conn, "bad", respond={"status": 422, "body": {"error": "nope"}})
    with capture_logs() as logs:
        post(server, {"limit": 2, "wait": True})
        post(server, token="wrong-token-wrong-token-wrong")
        httpx.get(f"{server.url}/jobs/{uuid.uuid4()}", headers={"Authorization": f"Bearer {TOKEN}"})
    events = {entry["event"] for entry in logs}
    assert {"job_claimed", "job_completed", "job_failed"} <= events  # the logs were captured
    assert TOKEN not in repr(logs)
