"""What an attacker or a fault would try against the processor (issue 14), each reproduced:
one attempt is one delivery, signed calls stay on their route, operator output is inert, and
every odd input gets a clear answer that loses nothing."""

from __future__ import annotations

import json

from tests.integration.test_service import enqueue, post, row, wait_for
from tests.support import RawHandler

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
