"""Jobs that wait for jobs, in SQL as users write it: depends_on on a plain INSERT or through
enqueue_job, whole graphs through enqueue_workflow, failure and cancellation down the graph,
retries that re-open it, retention, the reaper and the races (migration 0025)."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tests.support import add_job, claim, job


def start(conn: psycopg.Connection, job_id: uuid.UUID) -> uuid.UUID:
    """Claims this one job; returns its lease token."""
    rows = conn.execute(
        "select lease_token from mark_job_processing(%s, 'w1', interval '1 minute')", (job_id,)
    ).fetchall()
    assert rows, f"job {job_id} could not be started: {job(conn, job_id)['status']}"
    return rows[0]["lease_token"]


def complete(conn: psycopg.Connection, job_id: uuid.UUID, result: object = None) -> None:
    token = start(conn, job_id)
    done = conn.execute(
        "select * from complete_jobs(array[%s]::uuid[], array[%s]::uuid[], array[%s]::jsonb[])",
        (job_id, token, Jsonb(result)),
    ).fetchall()
    assert len(done) == 1


def fail(conn: psycopg.Connection, job_id: uuid.UUID, error: str = "boom") -> None:
    token = start(conn, job_id)
    conn.execute(
        "select * from fail_jobs(array[%s]::uuid[], array[%s]::uuid[], array[%s], array[false])",
        (job_id, token, error),
    )


def age_waiting(conn: psycopg.Connection, extra: str = "") -> None:
    """Makes every waiting job look unchanged for two minutes (with triggers off: the touch
    trigger would stamp updated_at again)."""
    conn.execute("set session_replication_role = replica")
    conn.execute(
        f"update job_queue set updated_at = now() - interval '2 minutes'{extra} "
        "where status = 'waiting'"
    )
    conn.execute("set session_replication_role = origin")


def status(conn: psycopg.Connection, *ids: uuid.UUID) -> list[str]:
    return [job(conn, i)["status"] for i in ids]


def enqueue(conn: psycopg.Connection, job_type: str = "t", **kw: object) -> uuid.UUID:
    args = ", ".join(f"p_{k} => %({k})s" for k in kw)
    sql = f"select enqueue_job(%(job_type)s{', ' + args if args else ''}) as id"
    return conn.execute(sql, {"job_type": job_type, **kw}).fetchone()["id"]


def workflow(conn: psycopg.Connection, nodes: list[dict], **kw: object) -> dict[str, uuid.UUID]:
    args = "".join(f", p_{k} => %({k})s" for k in kw)
    rows = conn.execute(
        f"select name, job_id from enqueue_workflow(%(nodes)s{args})", {"nodes": Jsonb(nodes), **kw}
    ).fetchall()
    return {r["name"]: r["job_id"] for r in rows}


def test_a_dependent_waits_out_of_line_and_is_due_the_moment_its_last_dependency_finishes(conn):
    a, b = add_job(conn), add_job(conn)
    d = enqueue(conn, "after", depends_on=[a, b, a])
    row = job(conn, d)
    assert (row["status"], row["waiting_on"], row["depends_on"]) == ("waiting", 2, [a, b])
    assert row["turn"] is None and row["workflow_id"] == a
    assert job(conn, a)["has_dependents"] and job(conn, a)["workflow_id"] == a
    assert {r["id"] for r in claim(conn, limit=10, types=["after"])} == set()

    complete(conn, a, {"made": 1})
    assert (job(conn, d)["status"], job(conn, d)["waiting_on"]) == ("waiting", 1)
    complete(conn, b)
    row = job(conn, d)
    assert (row["status"], row["waiting_on"]) == ("pending", None)
    assert row["turn"] is not None  # placed in line like an inserted job
    assert [r["id"] for r in claim(conn, types=["after"])] == [d]


def test_a_plain_insert_with_depends_on_waits_too_and_finished_dependencies_do_not_count(conn):
    done = add_job(conn)
    complete(conn, done)
    running = add_job(conn)
    d = add_job(conn, "after", depends_on=[done, running])
    assert (job(conn, d)["status"], job(conn, d)["waiting_on"]) == ("waiting", 1)
    only_done = add_job(conn, "after", depends_on=[done])
    assert job(conn, only_done)["status"] == "pending"


def test_unknown_dependencies_and_cycles_are_refused_naming_them(conn):
    ghost = uuid.uuid4()
    real = add_job(conn)
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match=str(ghost)):
        enqueue(conn, depends_on=[real, ghost])
    me = uuid.uuid4()
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=f"{me} depends on itself"):
        add_job(conn, id=me, depends_on=[me])
    with pytest.raises(psycopg.errors.InvalidParameterValue) as cycle:
        workflow(
            conn,
            [
                {"name": "a", "job_type": "t", "depends_on": ["c"]},
                {"name": "b", "job_type": "t", "depends_on": ["a"]},
                {"name": "c", "job_type": "t", "depends_on": ["b"]},
                {"name": "free", "job_type": "t"},
            ],
        )
    message = str(cycle.value)
    assert "the graph has a cycle" in message
    assert all(f'"{n}"' in message for n in "abc") and "free" not in message
    assert conn.execute("select count(*) as n from job_queue").fetchone()["n"] == 1


@pytest.mark.parametrize(
    ("nodes", "problem"),
    [
        ([], "from 1 to 10000 nodes"),
        ([{"name": "a"}], 'node 1 ("a") job_type must be a non-empty string'),
        ([{"name": "a", "job_type": "t", "depends-on": ["b"]}], "unknown key(s) depends-on"),
        ([{"name": "a", "job_type": "t"}, {"name": "a", "job_type": "t"}], '"a" is used more'),
        ([{"name": "a", "job_type": "t", "depends_on": ["zz"]}], 'depends on "zz", which is not'),
        (
            [{"name": "a", "job_type": "t", "payload": [1]}],
            "payload must be a JSON object, got array",
        ),
        ([{"name": "a", "job_type": "t", "max_retries": 99}], "from 0 to 25, got 99"),
        ([{"name": "a", "job_type": "t", "on_dependency_failure": "x"}], "cancel or run"),
    ],
)
def test_enqueue_workflow_refuses_a_bad_graph_whole_saying_what_is_wrong(conn, nodes, problem):
    with pytest.raises(psycopg.Error, match=problem.replace("(", r"\(").replace(")", r"\)")):
        workflow(conn, nodes)
    assert conn.execute("select count(*) as n from job_queue").fetchone()["n"] == 0


def test_enqueue_workflow_inserts_a_graph_at_once_under_one_workflow_id(conn):
    ids = workflow(
        conn,
        [
            {"name": "main", "job_type": "image", "payload": {"kind": "main"}},
            {"name": "lifestyle", "job_type": "image", "max_retries": 1, "priority": 3},
            {"name": "aplus", "job_type": "aplus", "depends_on": ["main", "lifestyle"]},
            {
                "name": "notify",
                "job_type": "mail",
                "depends_on": ["aplus"],
                "on_dependency_failure": "run",
            },
        ],
        user_id="seller-7",
        idempotency_key="pack-42",
    )
    assert list(ids) == ["main", "lifestyle", "aplus", "notify"]
    rows = {n: job(conn, i) for n, i in ids.items()}
    assert {r["workflow_id"] for r in rows.values()} == {ids["main"]}
    assert {r["user_id"] for r in rows.values()} == {"seller-7"}
    assert [rows[n]["status"] for n in ids] == ["pending", "pending", "waiting", "waiting"]
    assert (rows["lifestyle"]["max_retries"], rows["lifestyle"]["priority"]) == (1, 3)
    assert rows["aplus"]["depends_on"] == [ids["main"], ids["lifestyle"]]
    assert rows["notify"]["on_dependency_failure"] == "run"
    assert rows["main"]["node_name"] == "main"
    again = workflow(conn, [{"name": "main", "job_type": "image"}], idempotency_key="pack-42")
    assert again == ids  # the same call twice: the same jobs, nothing new
    view = conn.execute(
        "select * from job_queue_workflows where workflow_id = %s", (ids["main"],)
    ).fetchone()
    assert (view["jobs"], view["pending"], view["waiting"], view["finished"]) == (4, 2, 2, False)


def test_the_bound_on_nodes_per_workflow_is_the_settings_and_is_refused_past_it(conn):
    conn.execute("update job_queue_settings set max_workflow_nodes = 3")
    nodes = [{"name": f"n{i}", "job_type": "t"} for i in range(4)]
    with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="from 1 to 3 nodes"):
        workflow(conn, nodes)
    assert len(workflow(conn, nodes[:3])) == 3


def test_a_failure_cancels_down_the_graph_and_a_retry_reopens_what_it_cancelled(conn):
    ids = workflow(
        conn,
        [
            {"name": "a", "job_type": "t", "max_retries": 0},
            {"name": "b", "job_type": "t"},
            {"name": "c", "job_type": "t", "depends_on": ["a", "b"]},
            {"name": "d", "job_type": "t", "depends_on": ["c"]},
            {
                "name": "report",
                "job_type": "t",
                "depends_on": ["a"],
                "on_dependency_failure": "run",
            },
        ],
    )
    a, b, c, d, report = ids.values()
    fail(conn, a, "the provider refused the prompt")
    assert status(conn, c, d, report) == ["cancelled", "cancelled", "pending"]
    assert job(conn, c)["error_message"] == (
        f"cancelled: its dependency {a} (a) failed: the provider refused the prompt"
    )
    assert job(conn, d)["error_message"].startswith(
        f"cancelled: its dependency {c} (c) was cancelled"
    )
    assert (job(conn, c)["ended_by"], job(conn, d)["ended_by"]) == (a, c)

    assert conn.execute("select retry_job(%s) as ok", (a,)).fetchone()["ok"]
    assert status(conn, a, c, d) == ["pending", "waiting", "waiting"]
    assert (job(conn, c)["waiting_on"], job(conn, d)["waiting_on"]) == (2, 1)
    assert job(conn, c)["error_message"] is None and job(conn, c)["ended_by"] is None
    complete(conn, a)
    complete(conn, b)
    assert status(conn, c, d) == ["pending", "waiting"]
    complete(conn, c)
    complete(conn, d)
    view = conn.execute("select * from job_queue_workflows where workflow_id = %s", (a,)).fetchone()
    assert view["finished"] is False  # report is still pending
    complete(conn, report)
    view = conn.execute("select * from job_queue_workflows where workflow_id = %s", (a,)).fetchone()
    assert (view["completed"], view["finished"], view["progress"]) == (5, True, 1)


def test_a_dependency_retried_while_its_dependent_waits_is_counted_again(conn):
    a, b = add_job(conn, max_retries=0), add_job(conn)
    d = enqueue(conn, depends_on=[a, b], on_dependency_failure="run")
    complete(conn, a)
    assert job(conn, d)["waiting_on"] == 1
    conn.execute("select retry_job(%s)", (a,))
    conn.execute("update job_queue set status = 'failed' where id = %s", (a,))  # made by hand
    conn.execute("select retry_job(%s)", (a,))
    assert (job(conn, d)["status"], job(conn, d)["waiting_on"]) == ("waiting", 2)
    complete(conn, b)
    complete(conn, a)
    assert job(conn, d)["status"] == "pending"


def test_cancelling_a_workflow_cancels_its_waiting_pending_and_running_jobs(conn):
    ids = workflow(
        conn,
        [
            {"name": "a", "job_type": "t"},
            {"name": "b", "job_type": "t"},
            {"name": "c", "job_type": "t", "depends_on": ["a"], "on_dependency_failure": "run"},
        ],
    )
    complete(conn, ids["b"])
    token = start(conn, ids["a"])
    assert conn.execute("select cancel_workflow(%s) as n", (ids["a"],)).fetchone()["n"] == 2
    assert status(conn, *ids.values()) == ["cancelled", "completed", "cancelled"]
    assert not conn.execute(
        "select * from extend_job_leases(array[%s]::uuid[], array[%s]::uuid[], '1 minute')",
        (ids["a"], token),
    ).fetchall()  # the running job's lease is gone: its processor stops it


def test_cancelling_one_job_cancels_what_waits_on_it_by_its_rule(conn):
    a = add_job(conn)
    cancelled_with = enqueue(conn, depends_on=[a])
    runs_anyway = enqueue(conn, depends_on=[a], on_dependency_failure="run")
    assert conn.execute("select cancel_job(%s) as ok", (a,)).fetchone()["ok"]
    assert status(conn, cancelled_with, runs_anyway) == ["cancelled", "pending"]
    assert "was cancelled" in job(conn, cancelled_with)["error_message"]
    # and a waiting job can itself be cancelled
    w = enqueue(conn, depends_on=[add_job(conn)])
    assert conn.execute("select cancel_job(%s) as ok", (w,)).fetchone()["ok"]


def test_retry_jobs_over_a_workflow_retries_dependencies_before_dependents(conn):
    ids = workflow(
        conn,
        [
            {"name": "a", "job_type": "t"},
            {"name": "b", "job_type": "t", "depends_on": ["a"]},
            {"name": "c", "job_type": "t", "depends_on": ["b"]},
        ],
    )
    conn.execute("select cancel_workflow(%s)", (ids["a"],))
    rows = conn.execute(
        "select job_id, retried from retry_jobs('cancelled', p_workflow_id => %s)", (ids["a"],)
    ).fetchall()
    assert {r["job_id"] for r in rows if r["retried"]} == set(ids.values())
    assert status(conn, *ids.values()) == ["pending", "waiting", "waiting"]
    assert [job(conn, i)["waiting_on"] for i in (ids["b"], ids["c"])] == [1, 1]


def test_retention_keeps_every_job_of_an_unfinished_workflow(conn):
    ids = workflow(
        conn,
        [{"name": "a", "job_type": "t"}, {"name": "b", "job_type": "t", "depends_on": ["a"]}],
    )
    complete(conn, ids["a"])
    loner = add_job(conn)
    complete(conn, loner)
    conn.execute(
        "update job_queue set completed_at = now() - interval '90 days' where status = 'completed'"
    )
    pruned = conn.execute("select * from prune_jobs()").fetchall()
    assert {r["kind"]: r["deleted"] for r in pruned}["completed"] == 1
    assert job(conn, ids["a"]) is not None and job(conn, loner) is None
    complete(conn, ids["b"])
    conn.execute("update job_queue set completed_at = now() - interval '90 days'")
    conn.execute("select * from prune_jobs()")
    assert conn.execute("select count(*) as n from job_queue").fetchone()["n"] == 0


def test_the_reaper_fails_a_job_whose_dependency_was_deleted_and_fixes_wrong_counts(conn):
    a = add_job(conn)
    orphan = enqueue(conn, "after", depends_on=[a])
    done = add_job(conn)
    complete(conn, done)
    conn.execute("set session_replication_role = replica")  # written with triggers off
    miscounted = add_job(conn, "after", status="waiting", waiting_on=3, depends_on=[done])
    conn.execute("set session_replication_role = origin")
    conn.execute("delete from job_queue where id = %s", (a,))
    # Nothing changes for a minute: a job counted down a moment ago is left alone.
    assert conn.execute("select job_queue_reap_waiting() as n").fetchone()["n"] == 0
    age_waiting(conn)
    assert conn.execute("select job_queue_reap_waiting() as n").fetchone()["n"] == 2
    row = job(conn, orphan)
    assert row["status"] == "failed"
    assert row["error_message"] == f"its dependency no longer exists (deleted): {a}"
    assert (job(conn, miscounted)["status"], job(conn, miscounted)["waiting_on"]) == (
        "pending",
        None,
    )


def test_the_reaper_walks_every_waiting_job_in_turn(conn):
    gate = add_job(conn)
    waiting = [enqueue(conn, depends_on=[gate]) for _ in range(5)]
    age_waiting(conn, ", waiting_on = 9")
    fixed = [
        conn.execute("select job_queue_reap_waiting(2) as n").fetchone()["n"] for _ in range(3)
    ]
    assert fixed == [2, 2, 1]
    assert {job(conn, w)["waiting_on"] for w in waiting} == {1}


def test_why_a_waiting_job_waits_names_what_it_waits_for(conn):
    ids = workflow(
        conn,
        [
            {"name": "main", "job_type": "image"},
            {"name": "side", "job_type": "image"},
            {"name": "aplus", "job_type": "aplus", "depends_on": ["main", "side"]},
        ],
    )
    start(conn, ids["main"])
    reason = conn.execute("select job_wait_reason(%s) as r", (ids["aplus"],)).fetchone()["r"]
    assert reason == (
        f"waiting for 2 of its 2 dependencies: main {str(ids['main'])[:8]} (processing), "
        f"side {str(ids['side'])[:8]} (pending)"
    )


def test_two_last_dependencies_finishing_at_once_release_the_dependent_exactly_once(
    database_url,
):
    """The fan-in race, forced with two connections: the second finisher's statement starts
    (and takes its snapshot, in which the first dependency is still running) while the first
    finisher's transaction is open. It waits for the dependent's row lock, then counts down
    from the row the first one committed: 2 -> 1 -> 0, released once, never stranded."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as setup:
        a, b = add_job(setup), add_job(setup)
        d = enqueue(setup, "after", depends_on=[a, b])
        tokens = {i: start(setup, i) for i in (a, b)}
    sql = "select complete_jobs(array[%s]::uuid[], array[%s]::uuid[], array[null]::jsonb[])"
    with psycopg.connect(database_url) as one, psycopg.connect(database_url) as two:
        one.execute(sql, (a, tokens[a]))
        second = threading.Thread(target=lambda: two.execute(sql, (b, tokens[b])))
        second.start()
        time.sleep(0.3)
        assert second.is_alive()  # waiting for the dependent's row lock
        with psycopg.connect(database_url, row_factory=dict_row) as look:
            assert job(look, d)["waiting_on"] == 2  # neither has committed
        one.commit()
        second.join(10)
        assert not second.is_alive()
        two.commit()
    with psycopg.connect(database_url, row_factory=dict_row) as check:
        row = job(check, d)
    assert (row["status"], row["waiting_on"]) == ("pending", None)


def test_a_dependent_inserted_while_its_dependency_finishes_is_never_stranded(database_url):
    """Both orders of the insert/finish race, each forced with two open transactions."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as setup:
        first, second = add_job(setup), add_job(setup)
        tokens = {i: start(setup, i) for i in (first, second)}
    finish_sql = "select complete_jobs(array[%s]::uuid[], array[%s]::uuid[], array[null]::jsonb[])"
    insert_sql = "insert into job_queue (job_type, depends_on) values ('after', %s) returning id"
    results: dict[str, uuid.UUID] = {}

    # Finisher first, insert while it is open: the insert waits, then counts it finished.
    with psycopg.connect(database_url) as finisher, psycopg.connect(database_url) as inserter:
        finisher.execute(finish_sql, (first, tokens[first]))
        t = threading.Thread(
            target=lambda: results.update(a=inserter.execute(insert_sql, ([first],)).fetchone()[0])
        )
        t.start()
        time.sleep(0.3)
        assert t.is_alive()  # held by the finisher's row lock
        finisher.commit()
        t.join(10)
        inserter.commit()

    # Insert first, finish while it is open: the finisher waits, then counts the new dependent.
    with psycopg.connect(database_url) as finisher, psycopg.connect(database_url) as inserter:
        results["b"] = inserter.execute(insert_sql, ([second],)).fetchone()[0]
        t = threading.Thread(target=lambda: finisher.execute(finish_sql, (second, tokens[second])))
        t.start()
        time.sleep(0.3)
        assert t.is_alive()
        inserter.commit()
        t.join(10)
        finisher.commit()

    with psycopg.connect(database_url, row_factory=dict_row) as check:
        assert status(check, results["a"], results["b"]) == ["pending", "pending"]


def test_suspending_creates_children_once_and_the_parent_waits_without_its_slot(conn):
    parent = add_job(conn, "pack")
    token = start(conn, parent)
    children = [
        {"name": "main", "job_type": "image", "payload": {"kind": "main"}},
        {"name": "aplus", "job_type": "aplus", "depends_on": ["main"]},
    ]
    rows = conn.execute(
        "select * from suspend_job(%s, %s, %s)", (parent, token, Jsonb(children))
    ).fetchall()
    assert [(r["name"], r["created"]) for r in rows] == [("main", True), ("aplus", True)]
    kids = {r["name"]: r["job_id"] for r in rows}
    p = job(conn, parent)
    assert (p["status"], p["waiting_on"], p["lease_token"], p["suspensions"]) == (
        "waiting",
        2,
        None,
        1,
    )
    assert job(conn, kids["main"])["parent_id"] == parent
    assert job(conn, kids["aplus"])["depends_on"] == [kids["main"]]
    assert {job(conn, k)["workflow_id"] for k in kids.values()} == {parent}
    # A stale lease creates nothing.
    assert (
        conn.execute(
            "select * from suspend_job(%s, %s, %s)", (parent, token, Jsonb(children))
        ).fetchall()
        == []
    )
    complete(conn, kids["main"])
    complete(conn, kids["aplus"])
    assert job(conn, parent)["status"] == "pending"
    token = start(conn, parent)
    # Asking again for children that have all finished would only call it again: refused, so
    # the processor fails the job with the reason instead of looping.
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="already finished"):
        conn.execute("select * from suspend_job(%s, %s, %s)", (parent, token, Jsonb(children)))
    assert conn.execute("select count(*) as n from job_queue").fetchone()["n"] == 3


def test_a_failed_child_is_run_again_when_the_retried_parent_asks_for_it(conn):
    parent = add_job(conn, "pack", on_dependency_failure="run")
    token = start(conn, parent)
    [kid] = conn.execute(
        "select job_id from suspend_job(%s, %s, %s)",
        (parent, token, Jsonb([{"name": "main", "job_type": "image", "max_retries": 0}])),
    ).fetchall()
    fail(conn, kid["job_id"])
    assert job(conn, parent)["status"] == "failed"  # a child's failure fails its parent
    conn.execute("select retry_job(%s)", (parent,))
    assert job(conn, parent)["status"] == "pending"  # nothing unfinished to wait for
    token = start(conn, parent)
    conn.execute(
        "select * from suspend_job(%s, %s, %s)",
        (parent, token, Jsonb([{"name": "main", "job_type": "image"}])),
    )
    assert status(conn, kid["job_id"], parent) == ["pending", "waiting"]


def test_cancelling_a_waiting_parent_cancels_its_unfinished_children(conn):
    parent = add_job(conn, "pack")
    token = start(conn, parent)
    kids = conn.execute(
        "select name, job_id from suspend_job(%s, %s, %s)",
        (parent, token, Jsonb([{"name": n, "job_type": "image"} for n in ("a", "b", "c")])),
    ).fetchall()
    a, b, c = (k["job_id"] for k in kids)
    complete(conn, a)
    start(conn, b)
    assert conn.execute("select cancel_job(%s) as ok", (parent,)).fetchone()["ok"]
    assert status(conn, parent, a, b, c) == ["cancelled", "completed", "cancelled", "cancelled"]
    assert job(conn, c)["error_message"] == f"cancelled with its parent {parent}"


def test_a_parent_that_keeps_asking_for_children_is_stopped(conn):
    parent = add_job(conn, "pack")
    token = start(conn, parent)
    with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="already waited for children"):
        conn.execute(
            "select * from suspend_job(%s, %s, %s, 0)",
            (parent, token, Jsonb([{"name": "a", "job_type": "t"}])),
        )


def test_a_finished_dependency_with_cancel_rule_cancels_a_new_dependent_at_once(conn):
    a = add_job(conn, max_retries=0)
    fail(conn, a)
    d = enqueue(conn, depends_on=[a])
    row = job(conn, d)
    assert (row["status"], row["ended_by"]) == ("cancelled", a)
    conn.execute("select retry_job(%s)", (a,))
    assert job(conn, d)["status"] == "waiting"


def test_a_long_chain_cancels_and_reopens_without_deep_recursion(conn):
    first = add_job(conn, max_retries=0)
    chain = [first]
    for _ in range(300):
        chain.append(enqueue(conn, depends_on=[chain[-1]]))
    fail(conn, first)
    assert set(status(conn, *chain[1:])) == {"cancelled"}
    conn.execute("select retry_job(%s)", (first,))
    assert set(status(conn, *chain[1:])) == {"waiting"}
    assert (
        conn.execute("select count(*) as n from job_queue where ended_by is not null").fetchone()[
            "n"
        ]
        == 0
    )


def test_timestamps_of_a_released_job_show_when_it_became_due(conn):
    a = add_job(conn)
    d = enqueue(conn, depends_on=[a], run_at=None)
    conn.execute("update job_queue set run_at = now() - interval '1 hour' where id = %s", (d,))
    complete(conn, a)
    row = job(conn, d)
    assert row["run_at"] > row["created_at"] - timedelta(seconds=1)
    assert row["run_at"] >= conn.execute("select now() - interval '5 seconds' as t").fetchone()["t"]


def test_cancelling_a_parent_while_its_child_finishes_never_deadlocks(database_url):
    """A finisher holds the child, then locks the parent (it counts the parent down). Cancel
    locks the parent's unfinished children before the parent, so the two only ever wait for
    each other one way. Forced: the child is held (as a finisher holds it mid-statement) while
    the cancel starts; then the finisher counts the parent down and commits."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as setup:
        parent = add_job(setup, "pack")
        token = start(setup, parent)
        [child] = setup.execute(
            "select job_id from suspend_job(%s, %s, %s)",
            (parent, token, Jsonb([{"name": "main", "job_type": "image"}])),
        ).fetchall()
        child = child["job_id"]
        child_token = start(setup, child)
    outcome: dict[str, object] = {}
    with psycopg.connect(database_url) as finisher, psycopg.connect(database_url) as canceller:
        finisher.execute("select 1 from job_queue where id = %s for no key update", (child,))

        def cancel() -> None:
            try:
                outcome["ok"] = canceller.execute("select cancel_job(%s)", (parent,)).fetchone()[0]
                canceller.commit()
            except psycopg.Error as exc:
                outcome["error"] = exc

        t = threading.Thread(target=cancel)
        t.start()
        time.sleep(0.3)
        assert t.is_alive()  # waiting for the child, not holding the parent
        finisher.execute(
            "select complete_jobs(array[%s]::uuid[], array[%s]::uuid[], array[null]::jsonb[])",
            (child, child_token),
        )
        finisher.commit()
        t.join(10)
    assert "error" not in outcome, outcome
    with psycopg.connect(database_url, row_factory=dict_row) as check:
        assert status(check, child, parent) == ["completed", "cancelled"]


def test_a_retry_reopening_two_levels_at_once_counts_each_dependency_once(conn):
    """x; y depends on x; d on x and y. x's failure ends both; its retry re-opens both in
    one pass, and d counts y once (when y has moved), whichever of the two ids is lower."""
    for _ in range(6):
        x = add_job(conn, max_retries=0)
        y = enqueue(conn, depends_on=[x])
        d = enqueue(conn, depends_on=[x, y])
        fail(conn, x)
        assert status(conn, y, d) == ["cancelled", "cancelled"]
        conn.execute("select retry_job(%s)", (x,))
        assert [(job(conn, i)["status"], job(conn, i)["waiting_on"]) for i in (y, d)] == [
            ("waiting", 1),
            ("waiting", 2),
        ]
        complete(conn, x)
        complete(conn, y)
        assert status(conn, d) == ["pending"]


def test_children_asked_for_again_are_rerun_with_their_own_counts(conn):
    parent = add_job(conn, "pack", on_dependency_failure="run")
    token = start(conn, parent)
    kids = [
        {"name": "first", "job_type": "t", "max_retries": 0},
        {"name": "second", "job_type": "t", "depends_on": ["first"]},
    ]
    rows = conn.execute(
        "select name, job_id from suspend_job(%s, %s, %s)", (parent, token, Jsonb(kids))
    ).fetchall()
    first, second = (r["job_id"] for r in rows)
    fail(conn, first)
    assert status(conn, second, parent) == ["cancelled", "failed"]
    conn.execute("select retry_job(%s)", (parent,))
    token = start(conn, parent)
    conn.execute("select * from suspend_job(%s, %s, %s)", (parent, token, Jsonb(kids)))
    assert [(job(conn, i)["status"], job(conn, i)["waiting_on"]) for i in (first, second)] == [
        ("pending", None),
        ("waiting", 1),
    ]
    assert (job(conn, parent)["status"], job(conn, parent)["waiting_on"]) == ("waiting", 2)


def test_a_parent_suspending_counts_its_own_unfinished_dependencies_too(conn):
    x = add_job(conn, max_retries=0)
    parent = enqueue(conn, "pack", depends_on=[x], on_dependency_failure="run")
    fail(conn, x)
    token = start(conn, parent)
    conn.execute("select retry_job(%s)", (x,))  # its dependency is running again
    conn.execute(
        "select * from suspend_job(%s, %s, %s)",
        (parent, token, Jsonb([{"name": "c", "job_type": "t"}])),
    )
    assert (job(conn, parent)["status"], job(conn, parent)["waiting_on"]) == ("waiting", 2)


def test_settings_a_caller_forges_do_not_steer_the_settle(conn):
    """The list of what moved is a table only the owner writes; the flag that defers the settle
    is set by every entry point itself."""
    x, y = add_job(conn), add_job(conn)
    d = enqueue(conn, depends_on=[x, y])
    complete(conn, x)
    conn.execute("select set_config('processor.moved', %s, false)", (str(x),))
    conn.execute("select set_config('processor.settling', 'on', false)")
    conn.execute("select cancel_workflow(gen_random_uuid())")
    assert (job(conn, d)["status"], job(conn, d)["waiting_on"]) == ("waiting", 1)
    conn.execute("select cancel_job(%s)", (y,))  # settles despite the session's 'on'
    assert job(conn, d)["status"] == "cancelled"


def test_retention_keeps_a_finished_job_another_workflow_still_waits_for(conn):
    old = add_job(conn)
    complete(conn, old)
    other = add_job(conn)
    waits = enqueue(conn, depends_on=[other, old])  # joins other's workflow, not old's
    conn.execute(
        "update job_queue set completed_at = now() - interval '90 days' where id = %s", (old,)
    )
    conn.execute("select * from prune_jobs()")
    assert job(conn, old) is not None
    assert job(conn, waits)["status"] == "waiting"


@pytest.mark.parametrize(
    ("node", "problem"),
    [
        ({"run_at": "not a date"}, "run_at must be a time as an ISO 8601 string"),
        ({"concurrency_key": ""}, "concurrency_key must be 1 to 200 characters"),
        ({"user_id": "u" * 201}, "user_id must be at most 200 characters"),
    ],
)
def test_node_options_are_checked_with_the_node_named(conn, node, problem):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=problem):
        workflow(conn, [{"name": "a", "job_type": "t"}, {"name": "b", "job_type": "t", **node}])


def test_whole_numbers_written_with_a_fraction_are_taken(conn):
    ids = workflow(conn, [{"name": "a", "job_type": "t", "priority": 2.0, "max_retries": 1.0}])
    assert (job(conn, ids["a"])["priority"], job(conn, ids["a"])["max_retries"]) == (2, 1)


def test_a_reopened_job_that_waits_on_one_staying_ended_stays_ended_too(conn):
    """X, Y; A on X and Y; B on X and A. X and Y fail; retrying X re-opens A and B in one pass,
    but A stays cancelled (Y still failed), so B must stay cancelled too, not run."""
    x, y = add_job(conn, max_retries=0), add_job(conn, max_retries=0)
    a = enqueue(conn, depends_on=[x, y])
    b = enqueue(conn, depends_on=[x, a])
    fail(conn, x)
    fail(conn, y)
    conn.execute("select retry_job(%s)", (x,))
    assert status(conn, a, b) == ["cancelled", "cancelled"]
    complete(conn, x)
    assert status(conn, a, b) == ["cancelled", "cancelled"]


def test_a_child_of_an_ended_parent_is_not_retried_alone(conn):
    parent = add_job(conn, "pack")
    token = start(conn, parent)
    [kid] = conn.execute(
        "select job_id from suspend_job(%s, %s, %s)",
        (parent, token, Jsonb([{"name": "main", "job_type": "image"}])),
    ).fetchall()
    conn.execute("select cancel_job(%s)", (parent,))
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="retry the parent"):
        conn.execute("select retry_job(%s)", (kid["job_id"],))


def test_a_childs_failure_fails_its_parent_whatever_its_rule_and_stops_unstarted_siblings(conn):
    parent = add_job(conn, "pack", on_dependency_failure="run")
    token = start(conn, parent)
    kids = {
        r["name"]: r["job_id"]
        for r in conn.execute(
            "select name, job_id from suspend_job(%s, %s, %s)",
            (parent, token, Jsonb([{"name": n, "job_type": "image", "max_retries": 0}
                                   for n in ("a", "b", "c")])),
        ).fetchall()
    }  # fmt: skip
    start(conn, kids["b"])  # running: it finishes, as an image in flight always has
    fail(conn, kids["a"])
    assert status(conn, parent, kids["b"], kids["c"]) == ["failed", "processing", "cancelled"]
    assert job(conn, kids["c"])["ended_by"] == parent
    conn.execute("select retry_job(%s)", (kids["a"],))  # the failed one, alone
    assert status(conn, parent, kids["a"], kids["c"]) == ["waiting", "pending", "pending"]
    assert job(conn, parent)["waiting_on"] == 3


def test_child_keys_are_refused_from_the_enqueue_functions_too(conn):
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="processor's own"):
        enqueue(conn, idempotency_key="child:00000000-0000-0000-0000-000000000000:main")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="processor's own"):
        workflow(conn, [{"name": "a", "job_type": "t"}], idempotency_key="child:x:a")


def test_a_retry_wakes_the_processors_as_an_insert_does(conn, database_url):
    a = add_job(conn, max_retries=0)
    fail(conn, a)
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("listen job_queue_insert")
        conn.execute("select retry_job(%s)", (a,))
        heard = list(listener.notifies(timeout=2, stop_after=1))
    assert [n.channel for n in heard] == ["job_queue_insert"]


def suspended(conn, parent, children):
    token = start(conn, parent)
    rows = conn.execute(
        "select name, job_id from suspend_job(%s, %s, %s)", (parent, token, Jsonb(children))
    ).fetchall()
    return {r["name"]: r["job_id"] for r in rows}


def test_retrying_a_child_that_a_sibling_waits_on_reopens_parent_and_sibling(conn):
    for _ in range(4):  # (the ids' order varies: every order must work)
        parent = add_job(conn, "pack")
        kids = suspended(
            conn,
            parent,
            [
                {"name": "c1", "job_type": "t", "max_retries": 0},
                {"name": "c2", "job_type": "t", "depends_on": ["c1"]},
            ],
        )
        fail(conn, kids["c1"])
        assert job(conn, parent)["ended_by"] == kids["c1"]  # the nearest cause
        assert conn.execute("select retry_job(%s) as ok", (kids["c1"],)).fetchone()["ok"]
        assert status(conn, parent, kids["c1"], kids["c2"]) == ["waiting", "pending", "waiting"]
        complete(conn, kids["c1"])
        complete(conn, kids["c2"])
        assert status(conn, parent) == ["pending"]


def test_a_parent_with_another_failed_child_stays_failed_whatever_its_rule(conn):
    parent = add_job(conn, "pack", on_dependency_failure="run")
    kids = suspended(
        conn, parent, [{"name": n, "job_type": "t", "max_retries": 0} for n in ("c1", "c3")]
    )
    start(conn, kids["c3"])
    fail(conn, kids["c1"])
    conn.execute(
        "update job_queue set status = 'failed', completed_at = now(), "
        "locked_by = null, lease_token = null where id = %s",
        (kids["c3"],),
    )
    conn.execute("select retry_job(%s)", (kids["c1"],))
    assert status(conn, parent) == ["failed"]  # c3 failed too: not re-opened
    assert job(conn, parent)["ended_by"] == kids["c3"]


def test_the_reaper_ends_a_job_whose_dependency_failed_unseen(conn):
    a = add_job(conn, max_retries=0)
    b = enqueue(conn, depends_on=[a])
    with conn.transaction():  # the owner, with the row trigger quiet: nothing settled
        conn.execute("select set_config('processor.settling', 'batch', true)")
        conn.execute(
            "update job_queue set status = 'failed', completed_at = now() where id = %s", (a,)
        )
    assert (job(conn, b)["status"], job(conn, b)["waiting_on"]) == ("waiting", 1)
    age_waiting(conn)
    assert conn.execute("select job_queue_reap_waiting() as n").fetchone()["n"] == 1
    row = job(conn, b)
    assert (row["status"], row["ended_by"]) == ("cancelled", a)


def test_retry_jobs_skips_children_of_an_ended_parent_saying_so(conn):
    parent = add_job(conn, "pack")
    kids = suspended(conn, parent, [{"name": "c1", "job_type": "t"}])
    conn.execute("select cancel_job(%s)", (parent,))
    rows = conn.execute(
        "select job_id, retried, reason from retry_jobs('cancelled', p_job_type => 't')"
    ).fetchall()
    assert [(r["job_id"], r["retried"]) for r in rows] == [(kids["c1"], False)]
    assert "retry the parent instead" in rows[0]["reason"]
