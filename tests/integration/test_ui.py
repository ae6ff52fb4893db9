"""The status page over HTTP: sign-in and its cookie, CSRF on every form, filters and pages,
and query plans that stay on indexes (the list is read newest-first a page at a time)."""

from __future__ import annotations

import re

import httpx
import psycopg.sql
import pytest

from tests.support import TOKEN, csrf, signed_in


def test_pages_need_a_session_and_the_token_never_appears_in_a_url_or_cookie(make_service):
    server = make_service()
    home = httpx.get(f"{server.url}/", follow_redirects=False)
    assert home.status_code == 307 and home.headers["location"] == "/ui"
    anonymous = httpx.get(f"{server.url}/ui/jobs", follow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/ui/login?next=%2Fui%2Fjobs"
    wrong = httpx.post(f"{server.url}/ui/login", data={"token": "not-the-token-at-all"})
    assert wrong.status_code == 401 and "That is not the token" in wrong.text
    client = signed_in(server)
    cookie = client.cookies.jar
    [session] = [c for c in cookie if c.name == "processor_session"]
    assert TOKEN not in session.value
    header = client.post("/ui/login", data={"token": TOKEN}).headers["set-cookie"]
    assert "HttpOnly" in header and "SameSite=strict" in header and "Path=/ui" in header
    page = client.get("/ui")
    assert page.status_code == 200 and "Jobs by type and status" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    # A forged cookie is no session.
    forged = httpx.get(
        f"{server.url}/ui", cookies={"processor_session": session.value[:-2] + "xx"},
        follow_redirects=False,
    )  # fmt: skip
    assert forged.status_code == 303


def test_cancel_and_retry_need_the_csrf_token(make_service, conn):
    server = make_service()
    job_id = conn.execute("select enqueue_job('ok', '{}')").fetchone()["enqueue_job"]
    client = signed_in(server)
    page = client.get(f"/ui/jobs/{job_id}").text
    assert "Cancel" in page
    assert client.post(f"/ui/jobs/{job_id}/cancel", data={}).status_code == 403
    assert client.post(f"/ui/jobs/{job_id}/cancel", data={"csrf": "guess"}).status_code == 403
    foreign = client.post(
        f"/ui/jobs/{job_id}/cancel",
        data={"csrf": csrf(page)},
        headers={"Origin": "https://evil.example"},
    )
    assert foreign.status_code == 403
    status = lambda: conn.execute(  # noqa: E731
        "select status from job_queue where id = %s", (job_id,)
    ).fetchone()["status"]
    assert status() == "pending"
    done = client.post(f"/ui/jobs/{job_id}/cancel", data={"csrf": csrf(page)})
    assert done.status_code == 303 and status() == "cancelled"
    page = client.get(f"/ui/jobs/{job_id}").text
    client.post(f"/ui/jobs/{job_id}/retry", data={"csrf": csrf(page)})
    assert status() == "pending"
    out = client.post("/ui/logout", data={"csrf": csrf(page)})
    assert out.status_code == 303
    assert client.get("/ui", follow_redirects=False).status_code == 303


def test_the_filtered_list_retries_every_match_after_a_dry_run_with_the_csrf_token(
    make_service, conn
):
    server = make_service()
    conn.execute(
        "insert into job_queue (job_type, status, user_id, error_message, completed_at)"
        " select t, 'failed', u, 'provider down', now()"
        " from unnest(array['img', 'img', 'img', 'pack']) t, unnest(array['u1', 'u2']) u"
    )
    client = signed_in(server)
    page = client.get("/ui/jobs", params={"status": "failed", "type": "img", "user": "u1"}).text
    assert "Retry every failed job of img of u1…" in page
    assert "/ui/bulk/" not in client.get("/ui/jobs").text  # no status filter: no bulk action
    form = {"status": "failed", "type": "img", "user": "u1"}
    assert client.post("/ui/bulk/retry", data=form).status_code == 403  # no CSRF token
    failed = lambda: conn.execute(  # noqa: E731
        "select count(*) as n from job_queue where status = 'failed'"
    ).fetchone()["n"]
    preview = client.post("/ui/bulk/retry", data={**form, "csrf": csrf(page)})
    assert preview.status_code == 200 and "Dry run: nothing has changed. 3 jobs" in preview.text
    assert failed() == 8
    done = client.post("/ui/bulk/retry", data={**form, "csrf": csrf(page), "confirm": "yes"})
    assert done.status_code == 200 and "3 of 3 jobs retried." in done.text
    assert failed() == 5
    left = conn.execute(
        "select count(*) as n from job_queue where status = 'pending' and job_type = 'img'"
        " and user_id = 'u1'"
    ).fetchone()["n"]
    assert left == 3
    wrong = client.post("/ui/bulk/retry", data={"status": "pending", "csrf": csrf(page)})
    assert wrong.status_code == 400 and "filter the list to failed or cancelled" in wrong.text
    cancel = client.post(
        "/ui/bulk/cancel", data={"status": "pending", "csrf": csrf(page), "confirm": "yes"}
    )
    assert "3 of 3 jobs cancelled." in cancel.text


def test_the_list_filters_pages_and_finds_a_job_by_id(make_service, conn):
    server = make_service()
    conn.execute(
        "insert into job_queue (job_type, payload, user_id, created_at)"
        " select case when g % 2 = 0 then 'even' else 'odd' end,"
        "        jsonb_build_object('project_id', 'p' || (g % 3)), 'u' || (g % 5),"
        "        now() - make_interval(secs => g)"
        " from generate_series(1, 120) g"
    )
    client = signed_in(server)
    first = client.get("/ui/jobs").text
    assert first.count('class="mono"') == 50 and "older →" in first
    older = re.search(r'href="(/ui/jobs\?before=[^"]+)"', first).group(1).replace("&amp;", "&")
    second = client.get(older).text
    ids = lambda page: set(re.findall(r'href="/ui/jobs/([0-9a-f-]{36})"', page))  # noqa: E731
    assert len(ids(second)) == 50 and not ids(first) & ids(second)
    even_p0 = client.get("/ui/jobs", params={"type": "even", "project": "p0", "user": "u0"}).text
    expected = conn.execute(
        "select count(*) as n from job_queue where job_type = 'even' and user_id = 'u0'"
        " and payload->>'project_id' = 'p0'"
    ).fetchone()["n"]
    assert len(ids(even_p0)) == expected > 0
    some = conn.execute("select id from job_queue limit 1").fetchone()["id"]
    found = client.get("/ui/jobs", params={"q": str(some)})
    assert found.status_code == 303 and found.headers["location"] == f"/ui/jobs/{some}"
    assert client.get(f"/ui/jobs/{some}").status_code == 200
    # The first 8 characters, as the list shows them, find it too; a prefix of two jobs says so.
    found = client.get("/ui/jobs", params={"q": str(some)[:8].upper()})
    assert found.status_code == 303 and found.headers["location"] == f"/ui/jobs/{some}"
    for twin in ("0badcafe-0000-4000-8000-000000000001", "0badcafe-0000-4000-8000-000000000002"):
        conn.execute("insert into job_queue (id, job_type) values (%s, 'odd')", (twin,))
    page = client.get("/ui/jobs", params={"q": "0badcafe"})
    assert page.status_code == 200
    assert "0badcafe matches more than one job (0badcafe-0000-4000-8000-000000000001, " in page.text
    page = client.get("/ui/jobs", params={"q": "0badcafe1"})
    assert "No job id starts with “0badcafe1”" in page.text
    for short in ("0badcaf", "generate-image"):  # too short, or not an id at all
        page = client.get("/ui/jobs", params={"q": short}).text
        assert f"“{short}” is not a job id: it must be a job id or its first 8 or more" in page
        assert "No job id starts with" not in page


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        ({}, "job_queue_newest_idx"),
        ({"status": "failed"}, "job_queue_newest_idx"),
        ({"job_type": "t3"}, "job_queue_newest_idx"),
        ({"user_id": "u7"}, "job_queue_user_idx"),
        ({"project_id": "p7"}, "job_queue_project_newest_idx"),
    ],
)
def test_the_list_query_reads_an_index_newest_first_without_sorting(conn, filters, index):
    conn.execute(
        "insert into job_queue (job_type, status, user_id, payload, created_at)"
        " select 't' || (g % 10), (array['pending','completed','failed'])[1 + g % 3],"
        "        'u' || (g % 100), jsonb_build_object('project_id', 'p' || (g % 100)),"
        "        now() - make_interval(secs => g)"
        " from generate_series(1, 50000) g"
    )
    conn.execute("analyze job_queue")
    from processor.sql import query

    params = {
        "status": None, "job_type": None, "user_id": None, "project_id": None,
        "workflow_id": None, "before_at": None, "before_id": None, "limit": 51, **filters,
    }  # fmt: skip
    text = query("list_jobs")
    with conn.cursor() as cur:
        # Planned with the values, as the page runs it (unprepared).
        plan = "\n".join(
            r["QUERY PLAN"]
            for r in cur.execute(psycopg.sql.SQL("explain ") + text, params).fetchall()
        )  # fmt: skip
    assert index in plan, plan
    # No full sort and no table scan: at most an incremental sort of equal timestamps.
    assert "Seq Scan" not in plan and not re.search(r"(^|->  )Sort ", plan), plan
