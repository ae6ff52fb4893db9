"""Scheduling between tenants, decided in the claim: groups take turns (weighted), priority
first; caps per group and per type hold across claimers; a paused type is not claimed; a
pending job says why it waits. Real claims on a real database."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support import TOKEN, csrf, scrape, signed_in, wait_until
from tests.support import add_jobs as add


def claim(conn, limit: int = 1, job_types: list[str] | None = None) -> list[dict]:
    return conn.execute(
        "select id, job_type, user_id, concurrency_key, priority, run_at "
        "from claim_jobs('w', %s, %s)",
        (limit, job_types),
    ).fetchall()


def groups_of(rows: list[dict]) -> list[str]:
    return [r["concurrency_key"] or r["user_id"] or "" for r in rows]


def finish(conn, rows: list[dict]) -> None:
    conn.execute(
        "update job_queue set status = 'completed', completed_at = now(), lease_token = null "
        "where id = any(%s)",
        ([r["id"] for r in rows],),
    )


def test_nine_sellers_behind_a_200_job_import_are_served_next(conn):
    add(conn, 200, "importer")
    claim(conn, 4)  # the importer's jobs are running
    for seller in range(9):
        add(conn, 1, f"seller-{seller}")
    served = [g for _ in range(12) for g in groups_of(claim(conn, 1))]
    assert set(served[:10]) >= {f"seller-{s}" for s in range(9)}  # all nine within 10 claims
    assert served.count("importer") <= 3
    # With fair share off, the global order returns: the importer's older jobs first.
    conn.execute("update job_queue_settings set fair_share = false")
    add(conn, 1, "late-seller")
    assert set(groups_of(claim(conn, 5))) == {"importer"}


def test_weights_share_claims_three_to_one_while_both_wait(conn):
    add(conn, 100, "heavy")
    add(conn, 100, "light")
    conn.execute("select set_concurrency_limit('heavy', null, 3)")
    served = Counter(g for _ in range(80) for g in groups_of(claim(conn, 1)))
    assert served == {"heavy": 60, "light": 20}
    # A batch claim shares the same way.
    served = Counter(groups_of(claim(conn, 40)))
    assert served == {"heavy": 30, "light": 10}


def test_priority_comes_first_and_a_group_runs_in_run_at_order(conn):
    add(conn, 5, "a")
    add(conn, 5, "b")
    conn.execute(
        "insert into job_queue (job_type, user_id, priority) values ('ok', 'b', 9), ('ok', 'a', 5)"
    )
    first = claim(conn, 2)
    assert [r["priority"] for r in first] == [9, 5]
    rest = claim(conn, 10)
    for group in ("a", "b"):
        times = [r["run_at"] for r in rest if r["user_id"] == group]
        assert times == sorted(times) and len(times) == 5


def test_the_concurrency_key_names_the_group_before_the_user(conn):
    conn.execute(
        "select enqueue_job('ok', '{}', 'alice', p_concurrency_key => 'shop-1') as id"
    ).fetchone()
    conn.execute("select enqueue_job('ok', '{}', 'alice')")
    conn.execute("select set_concurrency_limit('shop-1', 0)")
    [row] = claim(conn, 5)
    assert row["user_id"] == "alice" and row["concurrency_key"] is None
    pending = conn.execute(
        "select job_wait_reason(id) as why from job_queue where status = 'pending'"
    ).fetchone()
    assert pending["why"] == "its group shop-1 is at its cap: 0 of 0 running"


def test_caps_per_group_and_per_type_hold_and_free_up_as_jobs_end(conn):
    for g in range(6):
        add(conn, 40, f"g{g}", job_type="pack")
    add(conn, 10, "g0", job_type="ok")
    conn.execute("select set_concurrency_limit('*', 2)")
    conn.execute("select set_job_type_limit('pack', 5)")
    rows = claim(conn, 50)
    packs = [r for r in rows if r["job_type"] == "pack"]
    assert len(packs) == 5
    per_group = Counter(r["user_id"] for r in rows)
    assert max(per_group.values()) == 2
    assert per_group["g0"] == 2  # 'ok' and 'pack' jobs of g0 count against one cap
    assert claim(conn, 50) == []  # everything is at a cap
    why = conn.execute(
        "select job_wait_reason(id) as why, count(*) as n from job_queue "
        "where status = 'pending' group by 1 order by 1"
    ).fetchall()
    assert {r["why"].split(":")[0] for r in why} <= {
        "job type pack is at its cap",
        "its group g0 is at its cap",
        "its group g1 is at its cap",
        "its group g2 is at its cap",
    }
    finish(conn, [next(r for r in packs if r["user_id"] != "g0")])  # its group and type free 1
    again = claim(conn, 50)
    assert [r["job_type"] for r in again] == ["pack"]
    # A group with a row of its own and no cap is not held by the '*' default.
    conn.execute("select set_concurrency_limit('g5', null)")
    conn.execute("select set_job_type_limit('pack', null)")
    assert Counter(groups_of(claim(conn, 50)))["g5"] >= 10


def test_caps_hold_with_two_claimers_at_once_and_after_one_is_killed(database_url, conn):
    for g in range(6):
        add(conn, 40, f"g{g}")
    conn.execute("select set_concurrency_limit('*', 2), set_job_type_limit('ok', 5)")
    # g0's weight makes its share of each claim (5 of 10) larger than its cap, so the group cap
    # binds as well as the type's (one job per group per turn would never reach it).
    conn.execute("select set_concurrency_limit('g0', 2, 5)")
    worst = {"group": 0, "type": 0}
    stop = threading.Event()

    def watch() -> None:
        with psycopg.connect(database_url, autocommit=True) as c:
            while not stop.is_set():
                rows = c.execute(
                    "select user_id, count(*) from job_queue where status = 'processing' group by 1"
                ).fetchall()
                worst["group"] = max([worst["group"], *(n for _, n in rows)])
                worst["type"] = max(worst["type"], sum(n for _, n in rows))

    def worker(name: str, rounds: int) -> None:
        with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as c:
            for _ in range(rounds):
                rows = c.execute(
                    "select id, lease_token from claim_jobs(%s, 8, null, '30 seconds')", (name,)
                ).fetchall()
                time.sleep(0.01)
                c.execute(
                    "select complete_jobs(%s::uuid[], %s::uuid[], %s::jsonb[])",
                    ([r["id"] for r in rows], [r["lease_token"] for r in rows], [None] * len(rows)),
                )

    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [threading.Thread(target=worker, args=(f"p{i}", 40)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    watcher.join()
    assert worst == {"group": 2, "type": 5}
    done = conn.execute("select count(*) as n from job_queue where status = 'completed'")
    assert done.fetchone()["n"] > 40

    # A processor dies holding five jobs: its slots come back when its leases expire.
    with psycopg.connect(database_url, autocommit=True) as dead:
        held = dead.execute("select id from claim_jobs('dead', 8, null, '1 second')").fetchall()
    assert len(held) == 5
    assert claim(conn, 8) == []
    time.sleep(1.1)
    conn.execute("select requeue_expired_jobs()")
    assert len(claim(conn, 8)) == 5


def test_a_paused_type_is_not_claimed_and_resumes(conn):
    add(conn, 3, "u", job_type="pack")
    add(conn, 3, "u", job_type="ok")
    [running] = claim(conn, 1, ["pack"])
    assert conn.execute("select pause_job_type('pack') as ok").fetchone()["ok"]
    add(conn, 2, "v", job_type="pack")  # added while paused
    assert {r["job_type"] for r in claim(conn, 10)} == {"ok"}
    assert claim(conn, 10, ["pack"]) == []
    assert conn.execute("select get_next_job('{pack}') as j").fetchone()["j"] is None
    state = conn.execute("select * from job_queue_types where job_type = 'pack'").fetchone()
    assert (state["paused"], state["running"], state["waiting"]) == (True, 1, 4)
    reasons = conn.execute(
        "select distinct job_wait_reason(id) as why from job_queue where status = 'pending'"
    ).fetchall()
    assert [r["why"] for r in reasons] == [
        "job type pack is paused (resume_job_type or processor resume)"
    ]
    # The running job finishes as usual.
    finish(conn, [running])
    assert conn.execute("select resume_job_type('pack') as ok").fetchone()["ok"]
    assert not conn.execute("select resume_job_type('pack') as ok").fetchone()["ok"]
    assert len(claim(conn, 10)) == 4


def test_a_claim_restricted_to_one_type_takes_only_that_type(conn):
    add(conn, 50, "big", job_type="other")
    add(conn, 2, "me", job_type="mine")
    rows = claim(conn, 10, ["mine"])
    assert [r["job_type"] for r in rows] == ["mine", "mine"]
    assert len(claim(conn, 100, ["other"])) == 50


def turns(conn, group: str) -> list:
    return [
        r["turn"]
        for r in conn.execute(
            "select turn from job_queue where user_id = %s and status = 'pending' "
            "order by run_at, created_at",
            (group,),
        )
    ]


def test_each_due_job_has_its_place_in_line_and_a_group_returns_at_the_frontier(conn):
    """A group's jobs stand one turn apart from where claims are; a group that comes back
    after the others were served 29 turns enters at their position (b's next job), not at its
    old one."""
    add(conn, 3, "a")
    assert turns(conn, "a") == [0, 1, 2]
    add(conn, 40, "b")
    assert turns(conn, "b")[:3] == [0, 1, 2]
    assert len(claim(conn, 3)) == 3  # a and b alternate: turns 0, 0, 1
    assert len(claim(conn, 30)) == 30  # the rest of a, and b up to turn 29
    frontier = conn.execute("select pass from job_queue_turns where priority = 0").fetchone()
    assert 29 - 8 <= frontier["pass"] <= 29  # it lags by under 8 turns
    add(conn, 2, "a")
    assert turns(conn, "a") == [30, 31]  # beside b's next (turn 30), not at turn 3
    assert sorted(groups_of(claim(conn, 2))) == ["a", "b"]


def test_a_retry_and_a_job_due_later_take_their_place_when_due(conn):
    conn.execute("insert into job_queue (job_type, user_id, run_at) values "
                 "('ok', 'later', now() + interval '1 second')")  # fmt: skip
    assert turns(conn, "later") == [None]  # not in line until due
    assert claim(conn, 5) == []
    wait_until(lambda: len(claim(conn, 5)) == 1, 5, "the job at its run_at")
    # A failed attempt goes back to pending: in line again at once when due.
    conn.execute(
        "update job_queue set status = 'pending', run_at = now(), lease_token = null "
        "where user_id = 'later'"
    )
    assert turns(conn, "later") != [None]
    assert len(claim(conn, 5)) == 1
    # Backed off into the future: out of line until then.
    conn.execute(
        "update job_queue set status = 'pending', run_at = now() + interval '1 hour', "
        "lease_token = null where user_id = 'later'"
    )
    assert turns(conn, "later") == [None]


def test_wait_reasons_and_the_groups_view_agree(conn):
    add(conn, 3, "a")
    conn.execute("insert into job_queue (job_type, user_id, run_at) values "
                 "('ok', 'b', now() + interval '1 hour')")  # fmt: skip
    claim(conn, 1)
    groups = {
        r["group_key"]: (r["running"], r["waiting"], r["scheduled"])
        for r in conn.execute("select * from job_queue_groups")
    }
    assert groups == {"a": (1, 2, 0), "b": (0, 0, 1)}
    why = {
        r["user_id"]: r["why"]
        for r in conn.execute(
            "select user_id, job_wait_reason(id) as why from job_queue where status = 'pending'"
        )
    }
    assert why["a"] == "due: waiting for a free processor slot"
    assert why["b"].startswith("not due yet: due at ")


def test_limits_refuse_bad_values_with_a_reason(conn):
    for call, message in (
        ("set_concurrency_limit('', 1)", "key must be 1 to 200 characters"),
        (
            "set_concurrency_limit('a', -1)",
            "max_running must be an integer from 0 to 1000000, or null for no cap, got -1",
        ),
        ("set_concurrency_limit('a', 1, 0)", "weight must be an integer from 1 to 1000, got 0"),
        (
            "set_job_type_limit('t', 1000001)",
            "max_running must be an integer from 0 to 1000000, or null for no cap, got 1000001",
        ),
        ("enqueue_job('ok', p_concurrency_key => '')", "concurrency_key must be 1 to 200"),
    ):
        try:
            conn.execute(f"select {call}")
        except psycopg.errors.InvalidParameterValue as exc:
            assert message in str(exc)
        else:
            raise AssertionError(f"{call} was accepted")


def test_the_command_line_sets_limits_pauses_and_shows_what_the_views_hold(
    database_url, conn, monkeypatch, capsys
):
    from processor.cli.commands import main

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "120")
    add(conn, 4, "shop-1", job_type="generate-image")
    assert main(["enqueue", "generate-image", '{"project_id": "p1", "product": {"name": "Mug"}}',
                 "--concurrency-key", "shop-2"]) == 0  # fmt: skip
    job_id = capsys.readouterr().out.strip()
    assert main(["set-limit", "*", "--max-running", "1"]) == 0
    assert main(["set-limit", "shop-2", "--weight", "3"]) == 0
    assert main(["set-type-limit", "generate-image", "--max-running", "5"]) == 0
    with pytest.raises(SystemExit):  # argparse names the problem: not from 0
        main(["set-limit", "x", "--max-running", "-1"])
    capsys.readouterr()
    claim(conn, 10)
    assert main(["pause", "generate-image"]) == 0
    assert "paused generate-image" in capsys.readouterr().out

    assert main(["limits"]) == 0
    shown = capsys.readouterr().out
    view = conn.execute("select * from job_queue_groups order by group_key").fetchall()
    for g in view:  # each group's numbers, as the view has them
        line = next(x for x in shown.splitlines() if x.strip().startswith(g["group_key"]))
        assert line.split()[1:6] == [str(g["running"]), str(g["waiting"]), str(g["scheduled"]),
                                     str(g["max_running"] or "-"), str(g["weight"])]  # fmt: skip
    assert "paused" in shown and "every other group" in shown

    assert main(["jobs"]) == 0
    assert "paused" in capsys.readouterr().out  # pending jobs of the paused type
    assert main(["stats"]) == 0
    assert "generate-image (paused)" in capsys.readouterr().out
    assert main(["status", job_id]) == 0
    assert "shop-2" in capsys.readouterr().out  # its group
    waiting = conn.execute("select id from job_queue where status = 'pending' limit 1").fetchone()
    assert main(["status", str(waiting["id"])]) == 0
    assert "generate-image is paused" in capsys.readouterr().out
    assert main(["resume", "generate-image"]) == 0
    assert "resumed generate-image" in capsys.readouterr().out


def test_the_status_page_pauses_a_type_and_metrics_and_the_api_say_so(make_service, conn):
    server = make_service()
    add(conn, 3, "shop-1", job_type="slow")
    client = signed_in(server)
    page = client.get("/ui").text
    assert "Busiest groups" in page and "shop-1" in page
    assert client.post("/ui/types/slow/pause", data={}).status_code == 403  # no CSRF token
    assert client.post("/ui/types/slow/pause", data={"csrf": csrf(page)}).status_code == 303
    assert "Resume" in client.get("/ui").text
    auth = {"Authorization": f"Bearer {TOKEN}"}
    metrics = scrape(server.url)
    assert metrics['processor_type_paused{job_type="slow"}'] == 1
    assert metrics['processor_type_waiting{job_type="slow"}'] == 3
    assert metrics["processor_scaling_metric"] == 0  # a paused type needs no processor
    job_id = conn.execute("select id from job_queue limit 1").fetchone()["id"]
    job = httpx.get(f"{server.url}/jobs/{job_id}", headers=auth).json()
    assert job["waiting_because"] == "job type slow is paused (resume_job_type or processor resume)"
    page = client.get("/ui").text
    assert client.post("/ui/types/slow/resume", data={"csrf": csrf(page)}).status_code == 303
    assert scrape(server.url)['processor_type_paused{job_type="slow"}'] == 0


def test_a_paused_or_capped_type_with_no_jobs_keeps_its_name_everywhere(
    make_service, conn, database_url, monkeypatch, capsys
):
    """Paused or capped before its first job, a type is still named by the view, the CLI,
    /metrics and the status page (it was a blank, "None", and a 500)."""
    from processor.cli.commands import main

    conn.execute("select pause_job_type('generate-aplus')")
    conn.execute("select set_job_type_limit('generate-image', 2)")
    rows = conn.execute("select job_type, paused, max_running, waiting from job_queue_types")
    assert sorted((r["job_type"], r["paused"], r["max_running"], r["waiting"]) for r in rows) == [
        ("generate-aplus", True, None, 0),
        ("generate-image", False, 2, 0),
    ]
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["limits"]) == 0
    shown = capsys.readouterr().out
    assert "generate-aplus" in shown and "generate-image" in shown
    server = make_service()
    metrics = scrape(server.url)
    assert metrics['processor_type_paused{job_type="generate-aplus"}'] == 1
    page = signed_in(server).get("/ui").text
    assert "/ui/types/generate-aplus/resume" in page and "/ui/types/None/" not in page


def test_pausing_or_capping_a_type_nobody_knows_asks_for_force(
    database_url, conn, monkeypatch, capsys
):
    """`processor pause complete_pack` (the type is generate-complete-pack) used to answer
    "paused complete_pack" and pause nothing."""
    from processor.cli.commands import main

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("JOB_ROUTES", '{"thumbnail": "http://127.0.0.1:9/thumbnail"}')
    add(conn, 1, "shop-1", job_type="resize")  # known from its pending job
    for argv in (
        ["pause", "complete_pack"],
        ["set-type-limit", "complete_pack", "--max-running", "1"],
    ):
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert "unknown job type 'complete_pack'" in error and "--force" in error
        assert "generate-complete-pack" in error and "thumbnail" in error and "resize" in error
    assert conn.execute("select count(*) as n from job_type_limits").fetchone()["n"] == 0
    assert main(["pause", "resize"]) == 0 and main(["pause", "thumbnail"]) == 0
    assert main(["pause", "complete_pack", "--force"]) == 0
    assert "paused complete_pack" in capsys.readouterr().out
    paused = conn.execute("select job_type from job_type_limits where paused_at is not null")
    assert sorted(r["job_type"] for r in paused) == ["complete_pack", "resize", "thumbnail"]
