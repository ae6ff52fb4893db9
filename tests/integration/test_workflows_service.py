"""Workflows through the running processor: what a dependent's handler call carries, handlers
that answer 202 with children and are called again, and the bounds that fail a job with a
reason instead of sending what no handler should get."""

from __future__ import annotations

import json
import uuid

import httpx
from psycopg.types.json import Jsonb

from tests.support import TOKEN, post, row, run_until, scrape, signed_in, wait_for


def enqueue(conn, respond: dict | None = None, job_type: str = "ok", **kw: object) -> uuid.UUID:
    args = "".join(f", p_{k} => %({k})s" for k in kw)
    return conn.execute(
        f"select enqueue_job(%(job_type)s, %(payload)s{args}) as id",
        {"job_type": job_type, "payload": Jsonb({"respond": respond} if respond else {}), **kw},
    ).fetchone()["id"]


def test_a_dependents_call_carries_what_its_dependencies_came_to(make_service, conn, handler):
    server = make_service()
    made = enqueue(conn, {"body": {"result": {"url": "https://cdn.example/a.png"}}})
    refused = enqueue(conn, {"status": 422, "body": {"error": "prompt refused"}}, max_retries=0)
    after = enqueue(conn, depends_on=[made, refused], on_dependency_failure="run")
    assert row(conn, after)["status"] == "waiting"
    done = run_until(server, conn, after, {"completed"})
    [call] = handler.calls_for(after)
    assert call.body["dependencies"] == [
        {
            "job_id": str(made),
            "name": None,
            "job_type": "ok",
            "parent_id": None,
            "status": "completed",
            "result": {"url": "https://cdn.example/a.png"},
            "error": None,
        },
        {
            "job_id": str(refused),
            "name": None,
            "job_type": "ok",
            "parent_id": None,
            "status": "failed",
            "result": None,
            "error": "handler answered 422 Unprocessable Entity: prompt refused",
        },
    ]
    assert done["result"]["saw"] == ["completed", "failed"]
    # A job without dependencies gets no such key.
    assert "dependencies" not in handler.calls_for(made)[0].body


def test_a_handler_answering_202_with_children_gives_its_slot_back_and_is_called_again(
    make_service, conn, handler
):
    server = make_service()
    children = [
        {"name": "main", "job_type": "ok"},
        {"name": "lifestyle", "job_type": "ok"},
        {"name": "aplus", "job_type": "ok", "depends_on": ["main", "lifestyle"]},
    ]
    parent = enqueue(conn, {"children": children})
    outcome = post(server, {"wait": True}).json()["outcomes"]
    assert outcome == [{"id": str(parent), "job_type": "ok", "attempt": 1, "status": "waiting"}]
    waiting = row(conn, parent)
    assert (waiting["status"], waiting["waiting_on"], waiting["lease_token"]) == (
        "waiting",
        3,
        None,
    )
    metrics = scrape(server.url)  # /metrics counts waiting jobs per type
    assert metrics['processor_jobs{job_type="ok",status="waiting"}'] == 2  # parent and aplus
    assert metrics['processor_attempts_total{outcome="waiting"}'] == 1
    done = run_until(server, conn, parent, {"completed"})
    calls = handler.calls_for(parent)
    assert [c.attempt for c in calls] == [1, 1]  # called again, in the same attempt
    assert [d["name"] for d in calls[1].body["dependencies"]] == ["main", "lifestyle", "aplus"]
    assert done["result"]["saw"] == ["completed"] * 3
    kids = conn.execute(
        "select node_name, parent_id, workflow_id from job_queue where parent_id = %s "
        "order by node_name",
        (parent,),
    ).fetchall()
    assert [k["node_name"] for k in kids] == ["aplus", "lifestyle", "main"]
    assert {k["workflow_id"] for k in kids} == {parent}


def test_children_the_queue_refuses_fail_the_parent_with_its_reason(make_service, conn):
    server = make_service()
    parent = enqueue(conn, {"children": [{"name": "main"}]})
    post(server, {"wait": True})
    failed = row(conn, parent)
    assert failed["status"] == "failed"
    assert failed["error_message"] == (
        'handler asked for children the queue refused: children: node 1 ("main") '
        "job_type must be a non-empty string"
    )
    not_a_list = enqueue(conn, {"status": 202, "body": {"children": {"name": "x"}}})
    post(server, {"wait": True})
    assert row(conn, not_a_list)["error_message"] == (
        "handler answered 202 with children that are not a non-empty JSON array of jobs "
        "(got object)"
    )


def test_dependency_outcomes_past_the_call_bound_fail_the_dependent_saying_why(make_service, conn):
    server = make_service(env={"MAX_REQUEST_BYTES": "4096"})
    big = enqueue(conn, {"bytes": 5000})
    after = enqueue(conn, depends_on=[big])
    failed = run_until(server, conn, after, {"failed"})
    assert "handler calls are limited to 4096 (MAX_REQUEST_BYTES)" in failed["error_message"]
    assert failed["retry_count"] == 0  # not retried: it would not fit next time either


def test_a_released_dependent_is_picked_up_without_another_call(make_service, conn, handler):
    """The finishing transaction notifies the listeners, as an insert does: the dependent is
    claimed by the running processor's listener, not by the next cron tick."""
    make_service(env={"LISTEN_FOR_JOBS": "on"})
    first = enqueue(conn)
    after = enqueue(conn, depends_on=[first])
    wait_for(conn, after, {"completed"}, timeout=15)
    assert handler.calls_for(after)[0].started - handler.calls_for(first)[0].started < 5
    assert row(conn, after)["processed_at"] >= row(conn, first)["completed_at"]


def graph(conn) -> dict[str, uuid.UUID]:
    nodes = [
        {"name": "main", "job_type": "ok", "max_retries": 0},
        {"name": "lifestyle", "job_type": "ok"},
        {"name": "aplus", "job_type": "ok", "depends_on": ["main", "lifestyle"]},
    ]
    rows = conn.execute("select name, job_id from enqueue_workflow(%s)", (Jsonb(nodes),)).fetchall()
    return {r["name"]: r["job_id"] for r in rows}


def test_status_and_jobs_show_a_workflow_as_one(database_url, conn, monkeypatch, capsys):
    from processor.cli.commands import main

    ids = graph(conn)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["status", str(ids["aplus"])[:8]]) == 0
    shown = capsys.readouterr().out
    lines = [line.rstrip() for line in shown.splitlines()]
    assert f"workflow {str(ids['main'])[:8]}  0 of 3 finished" in lines
    [aplus] = [line for line in lines if line.lstrip().startswith("▸")]
    assert aplus.split() == ["▸", "aplus", str(ids["aplus"])[:8], "waiting", "main,", "lifestyle"]
    assert "waiting for 2 of its 2 dependencies: main" in shown
    assert main(["status", str(ids["aplus"]), "--json"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert [n["node_name"] for n in as_json["workflow"]] == ["main", "lifestyle", "aplus"]

    conn.execute(
        "update job_queue set status = 'failed', completed_at = now() where id = %s", (ids["main"],)
    )
    assert row(conn, ids["aplus"])["status"] == "cancelled"
    assert main(["jobs", "--workflow", str(ids["main"])[:8]]) == 0
    listed = capsys.readouterr().out
    assert listed.count("ok") == 3
    assert main(["retry", "--workflow", str(ids["main"])]) == 0
    capsys.readouterr()
    assert [row(conn, i)["status"] for i in ids.values()] == ["pending", "pending", "waiting"]
    assert main(["cancel", "--status", "waiting", "--workflow", str(ids["main"])]) == 0
    assert row(conn, ids["aplus"])["status"] == "cancelled"


def test_the_job_page_and_the_api_show_the_graph(make_service, conn):
    server = make_service()
    ids = graph(conn)
    client = signed_in(server)
    page = client.get(f"/ui/jobs/{ids['aplus']}").text
    assert "Workflow" in page and "0 of 3 finished" in page
    assert (
        f'href="/ui/jobs/{ids["main"]}"' in page and f'href="/ui/jobs/{ids["lifestyle"]}"' in page
    )
    assert "main, lifestyle" in page
    assert "waiting for 2 of its 2 dependencies" in page
    listed = client.get(f"/ui/jobs?workflow={ids['main']}").text
    assert all(f"/ui/jobs/{i}" in listed for i in ids.values())
    assert client.get("/ui/jobs?workflow=nope").status_code == 400
    api = httpx.get(
        f"{server.url}/jobs/{ids['aplus']}", headers={"Authorization": f"Bearer {TOKEN}"}
    ).json()
    assert (api["status"], api["waiting_on"], api["workflow_id"]) == (
        "waiting",
        2,
        str(ids["main"]),
    )
    assert [(n["node_name"], n["status"]) for n in api["workflow"]] == [
        ("main", "pending"),
        ("lifestyle", "pending"),
        ("aplus", "waiting"),
    ]


def test_the_processor_runs_the_reaper_for_jobs_waiting_on_deleted_jobs(make_service, conn):
    server = make_service()
    gone = enqueue(conn)
    orphan = enqueue(conn, depends_on=[gone])
    conn.execute("delete from job_queue where id = %s", (gone,))
    conn.execute("set session_replication_role = replica")  # (the touch trigger stamps now())
    conn.execute(
        "update job_queue set updated_at = now() - interval '2 minutes' where id = %s", (orphan,)
    )
    conn.execute("set session_replication_role = origin")
    post(server)  # a claim runs the lease rescue, and with it the reaper
    failed = row(conn, orphan)
    assert failed["status"] == "failed"
    assert failed["error_message"] == f"its dependency no longer exists (deleted): {gone}"
