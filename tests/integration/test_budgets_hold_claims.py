"""Spend budgets hold claims (issue 27): a job starts only when its estimate fits every budget it
falls under, reserved at the claim; a job that does not fit waits (its group sits out claims)
with the reason in words, until the budget is raised or its period resets; when the job stops
running its reservation is replaced by what its calls cost. Nothing fails because of a budget.

The period's reset is brought about by moving the ledger and the counters a day back, and
telling the claims the reset is due (job_queue_scheduler.budget_resets_at), as the clock would."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tests.support import add_job, claim, job, store_images

IMAGE = {"project_id": "p1", "kind": "main", "product": {"name": "Mug"}}


@pytest.fixture(autouse=True)
def _claims_in_the_common_case(conn):
    """The claims here take the common case (job_queue_pick_within_budgets): a fresh database's
    first claim would take the general path instead, to put held jobs back in line."""
    conn.execute("update job_queue_scheduler set rebuilt_at = now()")


def images(conn, n: int, user: str, job_type: str = "generate-image") -> list[uuid.UUID]:
    return [add_job(conn, job_type, payload=IMAGE, user_id=user) for _ in range(n)]


def call(conn, job_id, cost: float) -> None:
    conn.execute(
        "insert into provider_calls (job_id, attempt, user_id, provider, model, operation,"
        " status, duration_ms, images, cost_usd) values (%s, 1, null, 'gemini', 'm', 'image',"
        " 'ok', 10, 1, %s)",
        (job_id, cost),
    )


def complete(conn, job_id) -> None:
    token = job(conn, job_id)["lease_token"]
    done = conn.execute(
        "select complete_jobs(array[%s]::uuid[], array[%s]::uuid[], array['{}'::jsonb])",
        (job_id, token),
    ).fetchall()
    assert len(done) == 1


def reason(conn, job_id) -> str:
    return conn.execute("select job_wait_reason(%s) as r", (job_id,)).fetchone()["r"]


def budget(conn, scope: str = "group", key: str = "seller-7") -> dict:
    row = conn.execute(
        "select spent_usd, reserved_usd, budget_usd from spend_budgets_now"
        " where scope = %s and key = %s",
        (scope, key),
    ).fetchone()
    return {k: float(v) for k, v in row.items()}


def running(conn, user: str | None = None) -> int:
    return conn.execute(
        "select count(*) as n from job_queue where status = 'processing'"
        " and (%(u)s::text is null or user_id = %(u)s)",
        {"u": user},
    ).fetchone()["n"]


def test_three_run_the_fourth_waits_raising_releases_it_at_once_the_next_period_the_rest(conn):
    conn.execute("select set_job_type_price('generate-image', 0.30)")
    conn.execute("select set_spend_budget('seller-7', 1.00)")
    ids = images(conn, 6, "seller-7")

    taken = claim(conn, 10)
    assert len(taken) == 3 and {r["user_id"] for r in taken} == {"seller-7"}
    fourth = ids[3]
    assert job(conn, fourth)["status"] == "pending"
    assert job(conn, fourth)["turn"] == float("-inf")  # its group sits out the claims
    assert reason(conn, fourth) == (
        "seller-7's budget: $0.90 of $1.00 spent today ($0.90 of it reserved by 3 running"
        " jobs); this job needs about $0.30; resets at 00:00 UTC"
    )
    assert claim(conn, 10) == []

    for r in taken:  # each made one call of what it was expected to cost
        call(conn, r["id"], 0.30)
        complete(conn, r["id"])
    assert budget(conn) == {"spent_usd": 0.90, "reserved_usd": 0.0, "budget_usd": 1.00}
    assert reason(conn, fourth) == (
        "seller-7's budget: $0.90 of $1.00 spent today; this job needs about $0.30;"
        " resets at 00:00 UTC"
    )
    assert claim(conn, 10) == []
    assert {job(conn, i)["status"] for i in ids[3:]} == {"pending"}  # waiting, never failed

    conn.execute("select set_spend_budget('seller-7', 1.20)")  # room for exactly one more
    assert job(conn, fourth)["turn"] != float("-inf")  # released at once, by the raise
    assert [r["id"] for r in claim(conn, 10)] == [fourth]

    # The next period: yesterday's calls and counters, and the reset falls due.
    conn.execute("update provider_calls set created_at = created_at - interval '1 day'")
    conn.execute("update spend_counters set starts = starts - interval '1 day'")
    conn.execute("update job_queue_scheduler set budget_resets_at = now()")
    assert {r["id"] for r in claim(conn, 10)} == set(ids[4:])
    assert running(conn, "seller-7") == 3
    assert (
        conn.execute(
            "select count(*) as n from job_queue where status in ('failed', 'cancelled')"
        ).fetchone()["n"]
        == 0
    )


def test_twenty_parallel_claims_from_two_processors_never_overspend(database_url, conn):
    conn.execute("select set_job_type_price('generate-image', 0.30)")
    conn.execute("select set_spend_budget('seller-7', 3.00)")
    images(conn, 40, "seller-7")
    barrier = threading.Barrier(20)
    got: list[int] = []
    errors: list[BaseException] = []

    def claimer(worker: str) -> None:
        try:
            with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as c:
                barrier.wait()
                empty = 0
                while empty < 3:  # a claim that missed the lock takes nothing: ask again
                    rows = c.execute("select id from claim_jobs(%s, 2)", (worker,)).fetchall()
                    got.append(len(rows))
                    empty = 0 if rows else empty + 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=claimer, args=(f"processor-{i % 2}/{i}",)) for i in range(20)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(got) == running(conn) == 10  # $3.00 / $0.30, not one more
    assert budget(conn)["reserved_usd"] == 3.00


def test_a_budgeted_seller_beside_unbudgeted_ones_holds_none_of_them_back(conn):
    conn.execute("select set_job_type_price('generate-image', 0.30)")
    conn.execute("select set_spend_budget('seller-7', 1.00)")
    spent = add_job(conn, "generate-image", payload=IMAGE, user_id="seller-7", status="completed")
    call(conn, spent, 1.00)  # seller-7 has spent its day
    mine = images(conn, 50, "seller-7")
    others = [i for user in ("a", "b", "c") for i in images(conn, 10, user)]

    taken = claim(conn, 30)
    assert {r["id"] for r in taken} == set(others)  # the first claim takes all of theirs
    assert {job(conn, i)["turn"] for i in mine} == {float("-inf")}
    assert claim(conn, 30) == []
    assert {job(conn, i)["status"] for i in mine} == {"pending"}


def test_what_a_job_reserved_is_replaced_by_what_its_calls_cost_either_way(conn):
    conn.execute("select set_job_type_price('generate-image', 0.30)")
    conn.execute("select set_spend_budget('seller-7', 5.00)")
    conn.execute("select set_service_budget(100)")
    cheap, dear = images(conn, 2, "seller-7")
    assert len(claim(conn, 2)) == 2
    assert budget(conn) == {"spent_usd": 0.0, "reserved_usd": 0.60, "budget_usd": 5.00}

    call(conn, cheap, 0.10)  # mid-run: counted once, as spent, no longer as reserved
    assert budget(conn) == {"spent_usd": 0.10, "reserved_usd": 0.50, "budget_usd": 5.00}
    complete(conn, cheap)  # cost less than its estimate: the rest is given back
    assert budget(conn) == {"spent_usd": 0.10, "reserved_usd": 0.30, "budget_usd": 5.00}

    call(conn, dear, 0.25)
    call(conn, dear, 0.25)  # past its estimate: what it cost counts, nothing is held
    assert budget(conn) == {"spent_usd": 0.60, "reserved_usd": 0.0, "budget_usd": 5.00}
    complete(conn, dear)
    assert budget(conn) == {"spent_usd": 0.60, "reserved_usd": 0.0, "budget_usd": 5.00}
    assert budget(conn, "service", "*")["spent_usd"] == 0.60
    ledger = conn.execute("select sum(cost_usd) as s from provider_calls").fetchone()["s"]
    assert float(ledger) == 0.60


def test_a_job_with_4_of_6_images_stored_reserves_only_the_missing_2(conn):
    conn.execute("select set_job_type_price('generate-complete-pack', 0.60)")
    conn.execute("select set_spend_budget('seller-7', 5.00)")
    pack = add_job(
        conn,
        "generate-complete-pack",
        payload={"project_id": "p1", "product": {"name": "Mug"}},
        user_id="seller-7",
    )
    # It ran before and stored four images (checkpoints), then failed and was retried.
    conn.execute(
        "update job_queue set processed_at = now() - interval '1 hour', retry_count = 1"
        " where id = %s",
        (pack,),
    )
    store_images(conn, pack, ["main", "lifestyle", "infographic", "detail"])
    assert [r["id"] for r in claim(conn)] == [pack]
    held = job(conn, pack)
    assert (float(held["budget_estimate"]), float(held["budget_reserved"])) == (0.20, 0.20)
    assert budget(conn)["reserved_usd"] == 0.20


def test_type_and_service_budgets_hold_their_work_and_no_other(conn):
    conn.execute("select set_job_type_price('generate-image', 0.30)")
    conn.execute("select set_job_type_price('generate-aplus', 1.00)")
    conn.execute("select set_job_type_budget('generate-image', 0.60)")
    images(conn, 4, "a")
    aplus = images(conn, 3, "b", "generate-aplus")
    taken = claim(conn, 10)
    assert sorted(r["job_type"] for r in taken) == ["generate-aplus"] * 3 + ["generate-image"] * 2
    assert budget(conn, "type", "generate-image")["reserved_usd"] == 0.60  # (by the slow path)
    waiting = conn.execute(
        "select id from job_queue where status = 'pending' order by id limit 1"
    ).fetchone()["id"]
    assert reason(conn, waiting).startswith(
        "job type generate-image's budget: $0.60 of $0.60 spent today"
    )
    for i in aplus:
        complete(conn, i)  # nothing recorded: cost nothing
    conn.execute("select set_service_budget(0.70)")  # 0.60 reserved: room for no A+ job
    more = images(conn, 1, "c", "generate-aplus")
    assert claim(conn, 10) == []
    assert reason(conn, more[0]).startswith("the service's budget: $0.60 of $0.70 spent today")


def test_a_job_without_an_estimate_runs_alone_under_its_budget_while_there_is_room(conn):
    conn.execute("select set_spend_budget('seller-7', 1.00)")
    first, second, third = [
        add_job(conn, "thumbnail", payload={"x": 1}, user_id="seller-7") for _ in "abc"
    ]
    # One at a time: however little it turns out to cost, only one job's cost is unknown.
    assert [r["id"] for r in claim(conn, 3)] == [first]
    held = job(conn, first)
    assert (held["budget_estimate"], float(held["budget_reserved"])) == (None, 0.0)
    assert claim(conn, 3) == []
    call(conn, first, 0.40)  # its calls count when they are made
    complete(conn, first)
    assert [r["id"] for r in claim(conn, 3)] == [second]
    call(conn, second, 0.60)
    complete(conn, second)
    assert claim(conn, 3) == []  # $1.00 spent
    assert job(conn, third)["status"] == "pending"


def test_get_next_job_and_mark_job_processing_keep_to_the_budget(conn):
    conn.execute("select set_job_type_price('generate-image', 0.30)")
    conn.execute("select set_spend_budget('seller-7', 0.50)")
    first, second = images(conn, 2, "seller-7")
    got = conn.execute("select id from get_next_job()").fetchone()["id"]
    assert got == first
    assert budget(conn)["reserved_usd"] == 0.0  # not started: it holds nothing
    start = "select id from mark_job_processing(%s, 'w1')"
    assert conn.execute(start, (first,)).fetchone()["id"] == first
    assert conn.execute(start, (second,)).fetchone() is None  # 0.30 + 0.30 > 0.50
    assert job(conn, second)["status"] == "pending"


def test_in_one_global_order_a_job_over_budget_is_passed_over(conn):
    conn.execute("update job_queue_settings set fair_share = false")
    conn.execute("select set_job_type_price('generate-image', 0.30)")
    conn.execute("select set_spend_budget('seller-7', 0.30)")
    mine = images(conn, 3, "seller-7")
    theirs = images(conn, 2, "seller-8")
    assert {r["id"] for r in claim(conn, 10)} == {mine[0], *theirs}


def test_credits_and_budgets_compose_and_neither_leaks_the_others_holds(conn):
    conn.execute("update job_queue_settings set credits_enabled = true")
    conn.execute("select grant_credits('seller-7', 100)")
    conn.execute("select set_job_type_price('generate-image', 0.30)")
    conn.execute("select set_spend_budget('seller-7', 5.00)")

    def holds() -> tuple[int, int]:
        credits = conn.execute(
            "select held from credit_balances where user_id = 'seller-7'"
        ).fetchone()["held"]
        budgets = conn.execute(
            "select count(*) as n from job_queue"
            " where status = 'processing' and budget_reserved is not null"
        ).fetchone()["n"]
        return credits, budgets

    cancelled, failed, kept = images(conn, 3, "seller-7")
    assert holds()[1] == 0 and holds()[0] > 0  # credits at insert, budgets at the start
    assert len(claim(conn, 3)) == 3
    per_job = holds()[0] // 3
    assert holds() == (3 * per_job, 3)
    conn.execute("select cancel_job(%s)", (cancelled,))
    assert holds() == (2 * per_job, 2)
    token = job(conn, failed)["lease_token"]
    conn.execute("select mark_job_failed(%s, %s, 'boom', false)", (failed, token))
    assert holds() == (per_job, 1)
    conn.execute("update job_queue_settings set credits_enabled = false")  # credits off
    assert holds() == (0, 1)  # the budget's hold stays
    conn.execute("update job_queue_settings set credits_enabled = true")
    conn.execute("select set_spend_budget('seller-7', null)")  # budgets switched off
    complete(conn, kept)
    assert job(conn, kept)["status"] == "completed" and holds() == (0, 0)
    conn.execute("select set_spend_budget('seller-7', 5.00)")  # and on again: nothing held
    assert budget(conn)["reserved_usd"] == 0.0


def test_a_group_that_reaches_its_budget_is_noted_once_per_period(conn):
    conn.execute("select set_job_type_price('generate-image', 0.30)")
    conn.execute("select set_spend_budget('seller-7', 0.30)")
    images(conn, 3, "seller-7")
    claim(conn, 10)
    conn.execute("select job_queue_release_all_held()")
    claim(conn, 10)
    rows = conn.execute("select scope, key from spend_budget_reached").fetchall()
    assert rows == [{"scope": "group", "key": "seller-7"}]


def test_the_ledger_prices_a_type_without_a_price_from_its_completed_jobs(conn):
    done = [add_job(conn, "thumbnail", payload={"x": i}) for i in range(10)]
    for n, i in enumerate(done):
        call(conn, i, 0.01 * (n + 1))
    conn.execute(
        "update job_queue set status = 'completed', completed_at = now() where id = any (%s)",
        (done,),
    )
    assert conn.execute("select job_queue_refresh_type_costs() as n").fetchone()["n"] == 1
    fresh = add_job(conn, "thumbnail", payload={"x": 99})
    estimate = conn.execute("select job_estimated_cost(%s) as c", (fresh,)).fetchone()["c"]
    assert float(estimate) == 0.09  # the 90th percentile of 0.01 … 0.10


def test_the_service_shows_a_seller_held_by_its_budget_and_logs_it_once(
    make_service, database_url, conn, monkeypatch, capsys
):
    import asyncio

    import httpx
    from markupsafe import escape
    from structlog.testing import capture_logs

    from processor.cli.commands import main
    from processor.db import Database
    from processor.queue.jobs import JobQueue
    from processor.queue.rescue import LeaseRescue
    from tests.support import TOKEN, csrf, post, scrape, signed_in, wait_for

    conn.execute("select set_job_type_price('ok', 0.30)")
    conn.execute("select set_spend_budget('seller-7', 0.50)")
    conn.execute("select set_service_budget(100)")
    first, second = [add_job(conn, "ok", user_id="seller-7") for _ in "ab"]
    other = add_job(conn, "ok", user_id="seller-8")
    server = make_service()
    assert post(server, {"limit": 10, "wait": True}).status_code == 200
    assert wait_for(conn, first, {"completed"})["status"] == "completed"
    assert wait_for(conn, other, {"completed"})["status"] == "completed"
    assert job(conn, second)["status"] == "pending"  # 0.30 + 0.30 > 0.50: never started

    # The first job's calls cost nothing (the scripted handler makes none): its $0.30 went
    # back when it ended, so the second fits now, and the next claim takes it.
    assert post(server, {"limit": 10, "wait": True}).status_code == 200
    assert wait_for(conn, second, {"completed"})["status"] == "completed"

    third = add_job(conn, "ok", user_id="seller-7")
    call(conn, second, 0.45)  # a late call: seller-7 has $0.05 left
    assert post(server, {"limit": 10}).status_code == 200
    assert job(conn, third)["status"] == "pending"
    words = (
        "seller-7's budget: $0.45 of $0.50 spent today; this job needs about $0.30;"
        " resets at 00:00 UTC"
    )
    answer = httpx.get(
        f"{server.url}/jobs/{third}", headers={"Authorization": f"Bearer {TOKEN}"}
    ).json()
    assert answer["status"] == "pending" and answer["waiting_because"] == words
    page = signed_in(server)
    assert str(escape(words)) in page.get(f"/ui/jobs/{third}").text
    overview = page.get("/ui").text
    assert "$0.45 of $0.50 · held" in overview
    assert "seller-7" in overview.split('id="budgets"')[1]  # the budgets table lists it
    form = {"csrf": csrf(overview), "scope": "group", "key": "seller-7", "period": "day"}
    refused = page.post("/ui/budgets", data={**form, "usd": "lots"})
    assert refused.status_code == 400 and "must be a number of USD" in refused.text
    assert page.post("/ui/budgets", data={**form, "usd": "1", "csrf": "x"}).status_code == 403
    metrics = scrape(server.url)
    assert metrics["processor_budget_groups_held"] == 1
    assert metrics["processor_service_spent_usd"] == 0.45
    assert metrics['processor_budget_top_group_spent_usd{group="seller-7"}'] == 0.45

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["status", str(third)]) == 0
    assert "seller-7's budget: $0.45 of $0.50 spent today" in capsys.readouterr().out

    async def rescue_twice() -> None:
        db = Database(database_url)
        await db.open()
        try:
            for _ in range(2):  # two passes, as two processors would: one line in all
                await LeaseRescue(JobQueue(db), every=0, reap_every=0).requeue_expired_jobs()
        finally:
            await db.close()

    with capture_logs() as logs:
        asyncio.run(rescue_twice())
    # Raised from the page: released at once, and the next claim starts it.
    answer = page.post("/ui/budgets", data={**form, "usd": "$0.80"})
    assert answer.status_code == 303
    assert job(conn, third)["turn"] != float("-inf")
    assert post(server, {"limit": 10, "wait": True}).status_code == 200
    assert wait_for(conn, third, {"completed"})["status"] == "completed"
    page.post("/ui/budgets", data={**form, "scope": "service", "usd": ""})  # removed
    assert (
        conn.execute("select count(*) as n from spend_budgets where scope = 'service'").fetchone()[
            "n"
        ]
        == 0
    )
    reached = [e for e in logs if e["event"] == "budget_reached"]
    assert len(reached) == 1
    assert (reached[0]["scope"], reached[0]["key"], reached[0]["budget_usd"]) == (
        "group",
        "seller-7",
        0.5,
    )


def test_a_held_group_whose_next_job_still_does_not_fit_stays_out_of_line(conn):
    conn.execute("select set_job_type_price('generate-image', 0.30)")
    conn.execute("select set_spend_budget('seller-7', 0.35)")
    ids = images(conn, 3, "seller-7")
    assert len(claim(conn, 10)) == 1  # $0.05 left: no room for another $0.30 job
    held = {job(conn, i)["turn"] for i in ids[1:]}
    assert held == {float("-inf")}
    # The periodic release (every rebuild_every) and a raise that is still too small leave it
    # out of line: claims keep costing it nothing.
    conn.execute("select job_queue_release_all_held()")
    conn.execute("select set_spend_budget('seller-7', 0.40)")
    assert {job(conn, i)["turn"] for i in ids[1:]} == {float("-inf")}
    conn.execute("select set_spend_budget('seller-7', 0.60)")
    assert {job(conn, i)["turn"] for i in ids[1:]} != {float("-inf")}
    assert len(claim(conn, 10)) == 1


def test_changing_the_budgets_time_zone_keeps_what_was_spent_counted(conn):
    conn.execute("select set_job_type_price('generate-image', 0.30)")
    conn.execute("select set_spend_budget('seller-7', 1.00, '1 month')")
    spent = add_job(conn, "generate-image", payload=IMAGE, user_id="seller-7", status="completed")
    call(conn, spent, 0.90)
    images(conn, 3, "seller-7")
    assert claim(conn, 10) == []
    # A zone whose month began at the same time or earlier: the $0.90 is still in it.
    conn.execute("update job_queue_settings set budget_time_zone = 'Pacific/Kiritimati'")
    assert budget(conn)["spent_usd"] == 0.90
    assert claim(conn, 10) == []


def test_a_cheaper_job_held_behind_a_dear_one_is_released_when_it_fits(conn):
    conn.execute("select set_job_type_price('generate-aplus', 0.80)")
    conn.execute("select set_job_type_price('generate-image', 0.10)")
    conn.execute("select set_spend_budget('seller-7', 1.00)")
    spent = add_job(conn, "generate-image", payload=IMAGE, user_id="seller-7", status="completed")
    call(conn, spent, 0.50)
    dear = images(conn, 1, "seller-7", "generate-aplus")[0]
    assert claim(conn, 10) == []  # $0.50 left: the $0.80 job holds its group
    cheap = images(conn, 1, "seller-7")[0]  # placed behind it, held with it
    assert job(conn, cheap)["turn"] == float("-inf")
    conn.execute("select job_queue_release_all_held()")  # the periodic release
    assert [r["id"] for r in claim(conn, 10)] == [cheap]
    assert job(conn, dear)["status"] == "pending"


def test_in_one_global_order_a_thousand_jobs_over_budget_hide_no_one(conn):
    conn.execute("update job_queue_settings set fair_share = false")
    conn.execute("select set_job_type_price('generate-image', 0.30)")
    conn.execute("select set_spend_budget('seller-7', 0.10)")
    conn.execute(
        "insert into job_queue (job_type, payload, user_id, priority)"
        " select 'generate-image', %s, 'seller-7', 1 from generate_series(1, 1100)",
        (Jsonb(IMAGE),),
    )
    theirs = images(conn, 1, "seller-8")[0]
    assert [r["id"] for r in claim(conn)] == [theirs]


def test_raising_a_budget_keeps_the_spend_of_jobs_pruned_since(conn):
    conn.execute("select set_spend_budget('shop-1', 5.00)")
    gone = add_job(conn, "generate-image", payload=IMAGE, user_id="u1", concurrency_key="shop-1")
    call(conn, gone, 2.00)
    conn.execute("delete from job_queue where id = %s", (gone,))  # as prune_jobs does
    conn.execute("select set_spend_budget('shop-1', 6.00)")
    assert budget(conn, "group", "shop-1")["spent_usd"] == 2.00


def test_setting_a_budget_beside_a_call_being_recorded_says_so_and_sets_nothing(database_url, conn):
    conn.execute("select set_service_budget(100)")
    with psycopg.connect(database_url) as open_call:  # a transaction left open
        open_call.execute(
            "insert into provider_calls (job_id, attempt, user_id, provider, model, operation,"
            " status, duration_ms, cost_usd) values (null, 1, 'u1', 'gemini', 'm', 'image',"
            " 'ok', 1, 0.5)"
        )
        with pytest.raises(psycopg.errors.LockNotAvailable, match="still open"):
            conn.execute("select set_spend_budget('seller-7', 1.00)")
        open_call.rollback()
    assert conn.execute("select count(*) as n from spend_budgets").fetchone()["n"] == 1


def test_a_job_deleted_while_it_ran_holds_nothing_of_its_budget(conn):
    conn.execute("select set_job_type_price('generate-image', 0.30)")
    conn.execute("select set_spend_budget('seller-7', 1.00)")
    gone = images(conn, 1, "seller-7")[0]
    assert len(claim(conn)) == 1
    assert budget(conn)["reserved_usd"] == 0.30
    conn.execute("delete from job_queue where id = %s", (gone,))
    assert budget(conn)["reserved_usd"] == 0.0


def test_a_job_capped_and_budgeted_reserves_and_a_row_written_with_a_hold_holds_nothing(conn):
    conn.execute("select set_job_type_price('generate-image', 0.30)")
    conn.execute("select set_spend_budget('seller-7', 1.00)")
    conn.execute("select set_concurrency_limit('seller-7', 2)")
    forged = add_job(conn, "generate-image", payload=IMAGE, user_id="seller-8", budget_reserved=50)
    images(conn, 3, "seller-7")
    taken = claim(conn, 10)
    assert sorted(r["user_id"] for r in taken) == ["seller-7", "seller-7", "seller-8"]
    assert budget(conn)["reserved_usd"] == 0.60  # two at the cap, each $0.30
    assert job(conn, forged)["budget_reserved"] is None  # written with one: holds nothing


def test_a_payload_the_estimate_cannot_read_stops_no_claim(conn):
    conn.execute("select set_service_budget(100)")
    conn.execute("select set_job_type_price('generate-complete-pack', 0.60)")
    bad = add_job(
        conn,
        "generate-complete-pack",
        payload={"project_id": "p1", "product": {"name": "M"}, "include_aplus": 2},
    )
    good = images(conn, 1, "seller-8")[0]
    assert {r["id"] for r in claim(conn, 10)} == {bad, good}  # its handler refuses it


def test_a_group_held_behind_a_job_without_an_estimate_comes_back_in_line(conn):
    conn.execute("select set_job_type_price('generate-aplus', 5.00)")
    conn.execute("select set_spend_budget('seller-7', 1.00)")
    dear = images(conn, 1, "seller-7", "generate-aplus")[0]
    assert claim(conn, 10) == []  # $5.00 > $1.00: held
    unknown = add_job(conn, "thumbnail", payload={"x": 1}, user_id="seller-7")
    assert job(conn, unknown)["turn"] == float("-inf")  # placed behind it
    assert "back in line when a job of the group ends" in reason(conn, unknown)
    assert "more than the whole budget" in reason(conn, dear)
    conn.execute("select job_queue_release_all_held()")
    assert [r["id"] for r in claim(conn, 10)] == [unknown]


def test_a_job_without_an_estimate_says_it_waits_for_the_other(conn):
    conn.execute("select set_spend_budget('seller-7', 1.00)")
    first, second = [add_job(conn, "thumbnail", payload={"x": 1}, user_id="seller-7") for _ in "ab"]
    assert [r["id"] for r in claim(conn, 10)] == [first]
    assert "this job has no estimate, and one without an estimate is running" in reason(
        conn, second
    )


def test_many_groups_over_budget_ahead_in_line_hide_no_one_with_fair_share(conn):
    conn.execute("select set_job_type_price('generate-image', 0.30)")
    conn.execute("select set_spend_budget('*', 0.10)")
    conn.execute("select set_spend_budget('lucky', 10)")
    for g in range(12):
        images(conn, 1, f"seller-{g}")
    mine = [  # behind all of them in line
        add_job(conn, "generate-image", payload=IMAGE, user_id="lucky", priority=-1)
        for _ in range(3)
    ]
    assert {r["id"] for r in claim(conn, 10)} == set(mine)


def test_a_re_seed_keeps_the_spend_of_pruned_jobs_by_their_group_and_type(conn):
    conn.execute("select set_job_type_budget('generate-image', 5.00, '1 month')")
    conn.execute("select set_spend_budget('shop-1', 5.00, '1 month')")
    gone = add_job(conn, "generate-image", payload=IMAGE, user_id="u1", concurrency_key="shop-1")
    call(conn, gone, 0.90)
    conn.execute("delete from job_queue where id = %s", (gone,))
    conn.execute("update job_queue_settings set budget_time_zone = 'Europe/Berlin'")  # re-seeds
    assert budget(conn, "group", "shop-1")["spent_usd"] == 0.90
    assert budget(conn, "type", "generate-image")["spent_usd"] == 0.90


def test_periods_that_equal_calendar_ones_only_as_intervals_are_refused(conn):
    for period in ("30 days", "24 hours"):
        with pytest.raises(psycopg.Error, match="period must be 1 hour, 1 day, 1 week or 1 month"):
            conn.execute("select set_spend_budget('s', 1, %s::interval)", (period,))


def test_a_raise_that_releases_jobs_wakes_the_processors(database_url, conn):
    conn.execute("select set_job_type_price('generate-image', 0.30)")
    conn.execute("select set_spend_budget('seller-7', 0.30)")
    images(conn, 2, "seller-7")
    assert len(claim(conn, 10)) == 1  # the second is held
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("listen job_queue_insert")
        conn.execute("select set_spend_budget('seller-7', 0.40)")  # still no room: no wake
        assert list(listener.notifies(timeout=0.5, stop_after=1)) == []
        conn.execute("select set_spend_budget('seller-7', 0.60)")
        woken = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in woken] == ["job_queue_insert"]


def test_budgeted_claims_through_a_transaction_pooler_reserve_and_never_overspend(
    poolers, database_url, conn
):
    conn.execute("select set_job_type_price('generate-image', 0.30)")
    conn.execute("select set_spend_budget('seller-7', 1.50)")
    images(conn, 20, "seller-7")
    others = images(conn, 5, "seller-8")
    url = poolers["transaction"].url_for(database_url)

    def claimer(n: int) -> int:
        taken = 0
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as c:
            for _ in range(10):
                taken += len(c.execute("select id from claim_jobs(%s, 2)", (f"w{n}",)).fetchall())
        return taken

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert running(conn, "seller-7") == 5  # $1.50 / $0.30
    assert budget(conn)["reserved_usd"] == 1.50  # each start wrote its reservation
    assert {job(conn, i)["status"] for i in others} == {"processing"}


def test_a_claim_left_open_holds_back_only_budgeted_work(database_url, conn):
    conn.execute("select set_job_type_price('generate-image', 0.30)")
    conn.execute("select set_spend_budget('seller-7', 5.00)")
    for _ in range(3):  # first in line
        add_job(conn, "generate-image", payload=IMAGE, user_id="seller-7", priority=1)
    free = images(conn, 2, "seller-8")
    with psycopg.connect(database_url) as stuck:  # a claimer frozen mid-claim
        assert len(stuck.execute("select id from claim_jobs('frozen', 1)").fetchall()) == 1
        taken = {r["id"] for r in claim(conn, 10)}  # waits 100 ms for the lock, no more
        assert taken == set(free)
        stuck.rollback()
    assert len(claim(conn, 10)) == 3  # once it is gone, the budgeted work starts
