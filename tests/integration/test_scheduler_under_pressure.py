"""The scheduler under pressure (issue 24): a claim transaction left open, pause beside claims,
caps under limit changes and on the get_next_job + mark_job_processing path, fair share off
with caps, a new group beside a capped one, rows written with triggers off, held groups. Real
sessions on a real database; each case is forced with explicit connections rather than timed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import psycopg
import pytest
from psycopg.rows import dict_row

from processor.db import Database
from processor.queue.jobs import JobQueue
from processor.queue.statistics import StatisticsKeeper
from tests.support import add_jobs as add


def connect(url: str, autocommit: bool = True) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=autocommit, row_factory=dict_row)


def claim(conn, limit: int = 1, job_types: list[str] | None = None) -> list[dict]:
    return conn.execute(
        "select id, job_type, user_id from claim_jobs('w', %s, %s)", (limit, job_types)
    ).fetchall()


def running(conn, group: str | None = None) -> int:
    return conn.execute(
        "select count(*) as n from job_queue where status = 'processing' "
        "and (%(g)s::text is null or user_id = %(g)s)",
        {"g": group},
    ).fetchone()["n"]


HELD = float("-inf")  # job_queue.turn of a job held while its group is at its cap


def turns(conn, group: str) -> list:
    return [
        r["turn"]
        for r in conn.execute(
            "select turn from job_queue where user_id = %s and status = 'pending' "
            "order by run_at, created_at",
            (group,),
        )
    ]


def test_a_claim_left_open_holds_back_only_the_rows_it_took(conn, database_url):
    """A processor that froze mid-claim (BEGIN; claim_jobs; no COMMIT) while jobs keep arriving
    in its lane: every other claim goes on within its statement timeout, takes the other lanes'
    jobs and that lane's other jobs, and the rest after the stuck transaction ends."""
    add(conn, 1, "stuck")
    stuck = connect(database_url, autocommit=False)
    try:
        [held] = claim(stuck, 1)
        assert held["user_id"] == "stuck"
        add(conn, 3, "stuck")  # wakes for the lane the open transaction updated
        add(conn, 3, "other")
        other = connect(database_url)
        other.execute("set statement_timeout = '2s'")
        taken = []
        for _ in range(4):
            taken += claim(other, 2)  # waited until the timeout here before: 0 jobs/s
        assert Counter(r["user_id"] for r in taken) == {"stuck": 3, "other": 3}
        assert held["id"] not in {r["id"] for r in taken}
        stuck.commit()
        add(conn, 1, "stuck")
        assert [r["user_id"] for r in claim(other, 5)] == ["stuck"]
        other.close()
    finally:
        stuck.close()


def test_pause_and_resume_beside_held_claims_never_wait_or_deadlock(conn, database_url):
    """pause_job_type used to update every lane of the type and wait for a lane a claim held:
    with a claim transaction open it now returns at once; and pause/resume in a loop beside
    claims that hold their lanes a moment raises no deadlock."""
    for g in range(20):
        add(conn, 20, f"g{g}", job_type="pack")
    holder = connect(database_url, autocommit=False)
    claim(holder, 5, ["pack"])  # holds those lanes
    admin = connect(database_url)
    admin.execute("set lock_timeout = '1s'")
    began = time.monotonic()
    admin.execute("select pause_job_type('pack')")
    assert time.monotonic() - began < 0.5
    admin.execute("select resume_job_type('pack')")
    holder.commit()
    holder.close()

    errors: list[Exception] = []
    stop = time.monotonic() + 3

    def claimer() -> None:
        with connect(database_url, autocommit=False) as c:
            while time.monotonic() < stop:
                try:
                    claim(c, 3, ["pack"])
                    time.sleep(0.01)  # the claim's lanes stay held a moment
                    c.rollback()  # the jobs stay pending for the next round
                except psycopg.Error as exc:
                    errors.append(exc)
                    c.rollback()

    def pauser() -> None:
        with connect(database_url) as c:
            while time.monotonic() < stop:
                try:
                    c.execute("select pause_job_type('pack')")
                    c.execute("select resume_job_type('pack')")
                except psycopg.Error as exc:
                    errors.append(exc)

    threads = [threading.Thread(target=f) for f in (claimer, claimer, pauser)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    admin.close()


def test_the_pair_in_one_transaction_holds_a_group_cap_across_sessions(conn, database_url):
    """get_next_job + mark_job_processing in one transaction, two sessions at once, group cap
    1: one starts a job, the other gets none (both started one before)."""
    add(conn, 10, "shop")
    conn.execute("select set_concurrency_limit('shop', 1)")
    a, b = connect(database_url, autocommit=False), connect(database_url, autocommit=False)
    try:
        got_a = a.execute("select (get_next_job()).*").fetchone()
        assert got_a["id"] is not None
        got_b = b.execute("select (get_next_job()).*").fetchone()  # waits 100 ms at most
        assert got_b["id"] is None
        assert a.execute("select * from mark_job_processing(%s, 'a')", (got_a["id"],)).fetchall()
        a.commit()
        b.commit()
        assert running(conn, "shop") == 1
    finally:
        a.close()
        b.close()


def test_the_pair_in_two_transactions_holds_a_group_cap(conn, database_url):
    """get_next_job in one transaction, mark_job_processing later in another, by two workers
    holding two different jobs of a group capped at 1: mark_job_processing counts again under
    the lock and starts only one of them (it started both)."""
    add(conn, 10, "shop")
    conn.execute("select set_concurrency_limit('shop', 1)")
    first, second = (
        r["id"] for r in conn.execute("select id from job_queue order by run_at limit 2")
    )
    a, b = connect(database_url), connect(database_url)
    assert len(a.execute("select * from mark_job_processing(%s, 'a')", (first,)).fetchall()) == 1
    assert b.execute("select * from mark_job_processing(%s, 'b')", (second,)).fetchall() == []
    assert running(conn, "shop") == 1
    a.close()
    b.close()


def test_mark_job_processing_refuses_a_paused_type_or_a_job_not_due(conn):
    add(conn, 1, "u", job_type="pack")
    job = conn.execute("select id from job_queue").fetchone()["id"]
    conn.execute("select pause_job_type('pack')")
    assert conn.execute("select * from mark_job_processing(%s, 'w')", (job,)).fetchall() == []
    conn.execute("select resume_job_type('pack')")
    conn.execute("update job_queue set run_at = now() + interval '1 hour' where id = %s", (job,))
    assert conn.execute("select * from mark_job_processing(%s, 'w')", (job,)).fetchall() == []
    conn.execute("update job_queue set run_at = now() where id = %s", (job,))
    assert len(conn.execute("select * from mark_job_processing(%s, 'w')", (job,)).fetchall()) == 1


def test_a_limit_change_waits_for_claims_in_flight_or_says_why_not(conn, database_url):
    """Caps appearing while a claim without caps is in flight: the change waits for it (so no
    claim that began before commits past the new cap); a claim left open makes the change
    fail with the reason instead of letting that claim's 50 jobs go past a cap of 1."""
    add(conn, 60, "shop")
    open_claim = connect(database_url, autocommit=False)
    try:
        assert len(claim(open_claim, 50)) == 50
        with pytest.raises(psycopg.errors.LockNotAvailable, match="a claim is still open"):
            conn.execute("select set_concurrency_limit('shop', 1)")
        open_claim.rollback()
    finally:
        open_claim.close()
    conn.execute("select set_concurrency_limit('shop', 1)")
    assert len(claim(conn, 50)) == 1
    assert running(conn, "shop") == 1


def test_a_cap_lowered_while_a_claim_waits_for_the_lock_is_the_cap_it_holds(conn, database_url):
    """The type cap was read before the caps lock: a claim waiting for the lock while the cap
    fell from 5 to 1 then took 4. The cap is now read after the lock."""
    add(conn, 20, "u", job_type="pack")
    add(conn, 1, "v", job_type="other")
    conn.execute("select set_job_type_limit('pack', 5)")
    holder = connect(database_url, autocommit=False)
    claim(holder, 1, ["other"])  # counts caps: holds the caps lock
    waiter = connect(database_url)
    took: list[int] = []
    thread = threading.Thread(target=lambda: took.append(len(claim(waiter, 10, ["pack"]))))
    thread.start()
    time.sleep(0.02)  # the waiter is in its claim, waiting for the caps lock
    # Lowered as set_job_type_limit would once the claims in flight ended (the holder still
    # shares the limits key, so the function itself would refuse now).
    conn.execute("update job_type_limits set max_running = 1 where job_type = 'pack'")
    time.sleep(0.01)
    holder.commit()
    thread.join()
    holder.close()
    waiter.close()
    assert took in ([1], [0])  # 0 when the wait passed 100 ms and capped work was left
    assert running(conn) - 1 <= 1  # the 'other' job, and at most one pack


def test_fair_share_off_keeps_global_order_and_caps(conn):
    add(conn, 5, "a")
    add(conn, 5, "b")
    conn.execute("update job_queue set run_at = run_at + interval '1 second' where user_id = 'b'")
    conn.execute("update job_queue_settings set fair_share = false")
    conn.execute("select set_concurrency_limit('*', 10)")  # caps exist: used to bring turns back
    order = [r["user_id"] for _ in range(10) for r in claim(conn, 1)]
    assert order == ["a"] * 5 + ["b"] * 5
    conn.execute("update job_queue set status = 'pending' where status = 'processing'")
    conn.execute("select set_concurrency_limit('a', 2)")
    assert Counter(r["user_id"] for r in claim(conn, 10)) == {"a": 2, "b": 5}


def test_a_new_group_enters_where_the_others_are_served_not_ahead(conn):
    """S is capped at 1 with a backlog; A and B have been served 600 turns. A new group N then
    gets its share of the next claims, not all of them (it started at S's low pass before)."""
    add(conn, 50, "S")
    add(conn, 2000, "A")
    add(conn, 2000, "B")
    conn.execute("select set_concurrency_limit('S', 1)")
    for _ in range(600):
        claim(conn, 1)
    conn.execute("update job_queue set status = 'completed' where status = 'processing' "
                 "and user_id <> 'S'")  # fmt: skip
    add(conn, 500, "N")
    served = Counter(r["user_id"] for _ in range(90) for r in claim(conn, 1))
    assert served["N"] <= 35, served  # a third of 90, give or take a turn
    assert served["A"] >= 25 and served["B"] >= 25


def test_a_row_written_with_triggers_off_takes_its_turn_in_the_next_claim(conn):
    """A row written with triggers off (a data-only restore) is not in line; the next claim
    places it first thing, at the frontier beside two busy sellers, and it is served within
    the round."""
    add(conn, 20, "busy-1")
    add(conn, 20, "busy-2")
    claim(conn, 4)
    conn.execute("set session_replication_role = replica")
    conn.execute("insert into job_queue (job_type, user_id) values ('ok', 'restored')")
    conn.execute("set session_replication_role = origin")
    assert turns(conn, "restored") == [None]
    assert "restored" in {r["user_id"] for r in claim(conn, 3)}


def test_with_nothing_else_due_a_row_written_with_triggers_off_is_claimed_at_once(conn):
    conn.execute("set session_replication_role = replica")
    conn.execute("insert into job_queue (job_type, user_id) values ('ok', 'restored')")
    conn.execute("set session_replication_role = origin")
    assert [r["user_id"] for r in claim(conn, 5)] == ["restored"]


def test_a_group_at_its_cap_is_held_out_of_line_and_back_when_a_job_ends(conn):
    """Jobs of a group at its cap leave the line (later claims do not step over them) and come
    back, as many as there is room for, when one of its jobs ends; new jobs of the group wait
    behind the held ones."""
    add(conn, 30, "capped")
    add(conn, 30, "free")
    conn.execute("select set_concurrency_limit('capped', 2)")
    assert Counter(r["user_id"] for r in claim(conn, 10)) == {"capped": 2, "free": 8}
    assert set(turns(conn, "capped")) == {HELD}  # all 28 held
    add(conn, 1, "capped")
    assert turns(conn, "capped")[-1] == HELD
    done = conn.execute(
        "select id from job_queue where user_id = 'capped' and status = 'processing' limit 1"
    ).fetchone()["id"]
    conn.execute("update job_queue set status = 'completed' where id = %s", (done,))
    back = [t for t in turns(conn, "capped") if t != HELD]
    assert len(back) == 1  # room for one
    assert Counter(r["user_id"] for r in claim(conn, 10))["capped"] == 1


def test_held_jobs_whose_release_was_missed_go_back_within_the_interval(conn):
    """The job that freed the slot ended with triggers off, so nothing released the held jobs:
    a claim puts them back once rebuild_every has passed."""
    conn.execute("update job_queue_settings set rebuild_every = interval '1 hour'")
    add(conn, 5, "capped")
    conn.execute("select set_concurrency_limit('capped', 1)")
    assert len(claim(conn, 5)) == 1
    conn.execute("set session_replication_role = replica")
    conn.execute("update job_queue set status = 'completed' where status = 'processing'")
    conn.execute("set session_replication_role = origin")
    assert claim(conn, 5) == []  # still held
    conn.execute("update job_queue_settings set rebuild_every = interval '0'")
    assert [r["user_id"] for r in claim(conn, 5)] == ["capped"]


def test_a_claim_of_zero_claims_nothing(conn):
    add(conn, 3, "u")
    assert claim(conn, 0) == []
    assert conn.execute("select count(*) as n from claim_jobs('w', -1)").fetchone()["n"] == 0
    assert running(conn) == 0


def test_a_resumed_type_returns_at_the_frontier_not_ahead_of_everyone(conn):
    """100 sellers' jobs wait in a paused type while another type is served 40 turns: on
    resume they come back beside the others, not all ahead by their old turns."""
    conn.execute("select pause_job_type('pack')")
    for g in range(100):
        add(conn, 3, f"seller-{g}", job_type="pack")
    add(conn, 200, "u", job_type="ok")
    assert {r["job_type"] for r in claim(conn, 40)} == {"ok"}
    conn.execute("select resume_job_type('pack')")
    low = conn.execute(
        "select min(turn) as t from job_queue where job_type = 'pack' and status = 'pending'"
    ).fetchone()["t"]
    assert low >= 39
    taken = [r for _ in range(4) for r in claim(conn, 50)]
    assert len({r["user_id"] for r in taken}) == 101  # every seller, and u among them


def test_mark_job_processing_never_hangs_behind_a_claim_left_open(conn, database_url):
    """With caps set and another session's claim holding the caps lock, mark_job_processing
    gives up after 100 ms and starts nothing (the job stays pending) instead of waiting."""
    add(conn, 3, "shop")
    add(conn, 1, "other", job_type="other")
    conn.execute("select set_concurrency_limit('shop', 2)")
    job = conn.execute("select id from job_queue where user_id = 'shop' limit 1").fetchone()["id"]
    holder = connect(database_url, autocommit=False)
    try:
        claim(holder, 1, ["other"])  # holds the caps lock
        began = time.monotonic()
        assert conn.execute("select * from mark_job_processing(%s, 'w')", (job,)).fetchall() == []
        assert time.monotonic() - began < 1
    finally:
        holder.rollback()
        holder.close()
    assert len(conn.execute("select * from mark_job_processing(%s, 'w')", (job,)).fetchall()) == 1


def frontier(conn) -> float:
    row = conn.execute("select pass from job_queue_turns where priority = 0").fetchone()
    return row["pass"] if row else 0


def test_get_next_job_takes_what_claim_jobs_would_and_calls_the_pick_once(conn):
    """get_next_job picks once (`where id = (job_queue_pick(…))[1]` made PostgreSQL call the
    volatile pick for every row of job_queue: 7 s a call at 120,000 jobs) and in claim_jobs'
    order: groups in turn."""
    add(conn, 20, "early")
    claim(conn, 20)  # rows ahead of the pending ones in a sequential scan
    add(conn, 30, "a")
    add(conn, 30, "b")
    got = []
    for _ in range(6):
        with conn.transaction():
            job = conn.execute("select * from get_next_job()").fetchone()
            conn.execute("select mark_job_processing(%s, 'w')", (job["id"],))
            got.append(job["user_id"])
    assert Counter(got) == {"a": 3, "b": 3}
    # early's turns 0-19, then a's and b's 19, 20 and 21: the frontier is less than 16 turns
    # behind that, and never past it (a pick per row scanned would have taken far more).
    assert 21 - 16 < frontier(conn) <= 21


def limited(conn) -> bool:
    return conn.execute("select limited from job_queue_limited").fetchone()["limited"]


def test_the_limited_flag_follows_every_cap_and_pause(conn):
    """Claims read job_queue_limited instead of the two limit tables: every way a cap or pause
    comes or goes keeps it true exactly while one is in force."""
    assert not limited(conn)
    conn.execute("select set_concurrency_limit('shop', 2)")
    assert limited(conn)
    conn.execute("select set_concurrency_limit('shop', null)")  # a weight-only row stays
    assert not limited(conn)
    conn.execute("select set_job_type_limit('pack', 3)")
    assert limited(conn)
    conn.execute("delete from job_type_limits")
    assert not limited(conn)
    conn.execute("select pause_job_type('pack')")
    assert limited(conn)
    conn.execute("select resume_job_type('pack')")
    assert not limited(conn)


def waits_for_commit(open_txn, database_url: str, statement: str) -> None:
    """Runs statement in another session while open_txn has not committed: it waits (still
    running after 0.3 s), then ends once open_txn commits (which closes it)."""

    def run() -> None:
        with connect(database_url) as other:
            other.execute(statement)

    other = threading.Thread(target=run)
    other.start()
    time.sleep(0.3)
    assert other.is_alive()
    open_txn.commit()
    open_txn.close()
    other.join(5)
    assert not other.is_alive()


def test_a_pause_beside_a_resume_leaves_the_pause_in_force(conn, database_url):
    """A resume of one type committed beside a pause of another: each writer reads both tables
    only after the other commits, so the flag stays set and the one lane of the paused type is
    not claimed in global order."""
    conn.execute("select pause_job_type('old')")
    add(conn, 3, "shop", job_type="new")
    pausing = connect(database_url, autocommit=False)
    pausing.execute("select pause_job_type('new')")  # not committed yet
    waits_for_commit(pausing, database_url, "select resume_job_type('old')")
    assert limited(conn)
    assert claim(conn, 5) == []
    conn.execute("select resume_job_type('new')")
    assert not limited(conn)
    assert len(claim(conn, 5)) == 3


def finish_running(conn) -> None:
    conn.execute("update job_queue set status = 'completed' where status = 'processing'")


def test_a_new_group_of_a_capped_type_enters_beside_its_backlog_not_behind_it(conn):
    """A type held back by its cap falls behind the others in turns. A seller who adds a job
    of it goes in beside the importer's next jobs (the type's own frontier), not behind the
    whole backlog at the other types' position."""
    conn.execute("select set_job_type_limit('capped', 2)")
    add(conn, 300, "importer", job_type="capped")
    add(conn, 1000, "other", job_type="ok")
    for _ in range(50):  # 2 capped + 3 ok a claim: the ok line runs ahead
        claim(conn, 5)
        finish_running(conn)
    add(conn, 1, "seller", job_type="capped")
    taken = claim(conn, 5)
    assert "seller" in {r["user_id"] for r in taken if r["job_type"] == "capped"}


def test_a_paused_types_held_jobs_never_take_their_groups_room(conn):
    """Group g (cap 1) is held with jobs of two types; one type is then paused. The slot that
    frees goes to the type that may run, so g's work goes on."""
    conn.execute("select set_concurrency_limit('g', 1)")
    add(conn, 3, "g", job_type="later")
    add(conn, 3, "g", job_type="ok")
    assert len(claim(conn, 5)) == 1
    assert claim(conn, 5) == []  # at its cap: both types' jobs held
    assert set(turns(conn, "g")) == {HELD}
    conn.execute("select pause_job_type('later')")
    finish_running(conn)
    assert [r["job_type"] for r in claim(conn, 5)] == ["ok"]


def test_a_slot_freed_while_a_claim_holds_its_group_is_not_lost(conn, database_url):
    """A claim counts g's running job and holds g; before it commits, that job ends. The end
    waits (at most 100 ms) for the claim's caps lock, then sees the held jobs and puts one
    back: g is not left with nothing running and everything held until the periodic release."""
    conn.execute("update job_queue_settings set rebuild_every = interval '1 hour'")
    conn.execute("select set_concurrency_limit('g', 1)")
    add(conn, 5, "g")
    assert len(claim(conn, 1)) == 1
    holder = connect(database_url, autocommit=False)
    ended = threading.Event()

    def end_the_running_job() -> None:
        with connect(database_url) as other:
            finish_running(other)
        ended.set()

    try:
        assert claim(holder, 5) == []  # holds g, and the caps lock, uncommitted
        ender = threading.Thread(target=end_the_running_job)
        ender.start()
        time.sleep(0.03)
        assert not ended.is_set()  # waiting for the caps lock
        holder.commit()
        ender.join(5)
    finally:
        holder.close()
    assert ended.is_set()
    assert len(claim(conn, 5)) == 1


PAUSED = float("inf")  # job_queue.turn of a job out of line while its type is paused


def pick_limited_calls(conn) -> int:
    """Calls of the per-type pick in the current transaction (track_functions is on)."""
    return conn.execute(
        "select coalesce(pg_stat_get_xact_function_calls("
        "'job_queue_pick_limited(integer, text[], text[], boolean, jsonb)'::regprocedure), 0)"
        " as n"
    ).fetchone()["n"]


def test_a_paused_types_jobs_wait_out_of_line_and_claims_stay_one_statement(conn, database_url):
    """Pausing takes the type's jobs out of line, those written while it is paused never enter
    it, and claims beside the pause do not fall back to reading the line type by type; resume
    puts them back in line."""
    add(conn, 3, "shop", job_type="pack")
    conn.execute("select pause_job_type('pack')")
    add(conn, 2, "shop", job_type="pack")
    add(conn, 4, "u", job_type="ok")
    assert set(turns(conn, "shop")) == {PAUSED}
    with connect(database_url, autocommit=False) as c:
        c.execute("set track_functions = 'all'")
        assert {r["job_type"] for r in claim(c, 10)} == {"ok"}
        assert pick_limited_calls(c) == 0
        c.commit()
    conn.execute("select resume_job_type('pack')")
    assert PAUSED not in set(turns(conn, "shop"))
    assert [r["job_type"] for r in claim(conn, 10)] == ["pack"] * 5


def test_a_job_written_beside_a_pause_is_left_out_then_taken_out_of_line(conn, database_url):
    """A job inserted before a pause but committed after it is in line with its type paused:
    the claim that reaches it takes it out of line instead of taking it."""
    conn.execute("update job_queue_settings set rebuild_every = interval '1 hour'")
    assert claim(conn, 1) == []  # the periodic sweep has run: the next is an hour away
    writer = connect(database_url, autocommit=False)
    for g in range(6):  # placed in line: pack is not paused yet
        add(writer, 1, f"shop-{g}", job_type="pack")
    conn.execute("select pause_job_type('pack')")
    writer.commit()
    writer.close()
    [turn] = turns(conn, "shop-0")
    assert turn not in (PAUSED, HELD, None)  # in line, its type paused
    add(conn, 2, "u", job_type="ok")
    # the one-job claim meets them first, takes them all out of line, and reads on
    assert [r["job_type"] for r in claim(conn, 1)] == ["ok"]
    assert {t for g in range(6) for t in turns(conn, f"shop-{g}")} == {PAUSED}
    assert [r["job_type"] for r in claim(conn, 5)] == ["ok"]


def test_a_job_written_beside_a_resume_goes_back_in_line_within_the_interval(conn, database_url):
    """A job inserted while its type was paused (so out of line) but committed after the
    resume is out of line with its type running: the periodic sweep puts it in line."""
    conn.execute("update job_queue_settings set rebuild_every = interval '1 hour'")
    assert claim(conn, 1) == []  # the periodic sweep has run: the next is an hour away
    conn.execute("select pause_job_type('pack')")
    writer = connect(database_url, autocommit=False)
    add(writer, 1, "shop", job_type="pack")
    conn.execute("select resume_job_type('pack')")
    writer.commit()
    writer.close()
    assert turns(conn, "shop") == [PAUSED]
    assert claim(conn, 5) == []
    conn.execute("update job_queue_settings set rebuild_every = interval '0'")
    assert [r["user_id"] for r in claim(conn, 5)] == ["shop"]


def rows_read(conn) -> int:
    """Table and index entries this transaction has read from job_queue so far."""
    return conn.execute(
        "select sum(pg_stat_get_xact_tuples_returned(r)) as n from ("
        " select 'job_queue'::regclass::oid as r"  # a table's: rows read by sequential scans
        " union all select indexrelid from pg_index where indrelid = 'job_queue'::regclass) t"
    ).fetchone()["n"]


def test_placing_a_big_insert_reads_a_few_entries_a_row_on_a_new_connection(conn, database_url):
    """The insert trigger keeps its plans for the session, made on the first inserts while the
    table is nearly empty. A draft of job_queue_next_turn kept one that read every job of the
    group for each row placed: 4.5 million entries here. Counted, not timed: 3,000 rows into
    one group read a few entries each."""
    with connect(database_url, autocommit=False) as c:
        add(c, 1, "importer")  # plans made here, on an empty table
        c.commit()
        add(c, 3000, "importer")
        assert rows_read(c) < 20 * 3000
        c.commit()
    assert len(set(turns(conn, "importer"))) == 3001  # one turn each, in order


def test_a_job_started_from_out_of_line_places_nothing_after_it(conn, database_url):
    """A job committed out of line just after its type resumed, and started by
    mark_job_processing before the sweep put it back: its turn (+Infinity) is not where its
    group's next job goes."""
    conn.execute("update job_queue_settings set rebuild_every = interval '1 hour'")
    assert claim(conn, 1) == []  # the periodic sweep has run
    conn.execute("select pause_job_type('pack')")
    writer = connect(database_url, autocommit=False)
    add(writer, 1, "shop", job_type="pack")
    conn.execute("select resume_job_type('pack')")
    writer.commit()
    writer.close()
    [job] = conn.execute("select id from job_queue where user_id = 'shop'").fetchall()
    assert conn.execute("select mark_job_processing(%s, 'w') is not null as ok", (job["id"],))
    assert running(conn, "shop") == 1
    add(conn, 1, "shop", job_type="pack")
    [turn] = turns(conn, "shop")
    assert turn not in (PAUSED, HELD, None)
    assert [r["user_id"] for r in claim(conn, 5)] == ["shop"]


def test_a_paused_types_held_jobs_never_hold_their_groups_other_work(conn):
    """Group g (cap 1) has a job of type a running and the rest held; a is paused, so its held
    jobs leave the hold too. When the running job ends, g's next job of another type goes in
    line at once (not held behind a paused type's jobs until the periodic release)."""
    conn.execute("update job_queue_settings set rebuild_every = interval '1 hour'")
    conn.execute("select set_concurrency_limit('g', 1)")
    add(conn, 3, "g", job_type="a")
    assert len(claim(conn, 5)) == 1
    assert set(turns(conn, "g")) == {HELD}
    conn.execute("select pause_job_type('a')")
    assert set(turns(conn, "g")) == {PAUSED}
    finish_running(conn)
    add(conn, 1, "g", job_type="b")
    assert [r["job_type"] for r in claim(conn, 5)] == ["b"]


def test_resumed_jobs_go_behind_their_groups_held_jobs_in_order(conn):
    """g (cap 1): a1 runs, a2 and a3 are held; a is paused and a4 written; a1 ends; on resume
    g's jobs come back in the order they became due: a2 first, not a4 ahead of the rest."""
    conn.execute("select set_concurrency_limit('g', 1)")
    add(conn, 3, "g", job_type="a")
    [first] = claim(conn, 5)
    conn.execute("select pause_job_type('a')")
    add(conn, 1, "g", job_type="a")
    finish_running(conn)
    conn.execute("select resume_job_type('a')")
    order = [
        r["id"]
        for r in conn.execute(
            "select id from job_queue where user_id = 'g' and status = 'pending' "
            "order by run_at, created_at"
        )
    ]
    assert [r["id"] for r in claim(conn, 5)] == order[:1]
    assert first["id"] not in order


def test_a_pause_beside_a_resume_of_the_same_type_leaves_its_jobs_out_of_line(conn, database_url):
    """A resume has put the type's jobs back in line but not committed; a pause of the same
    type waits for it, then takes them out again: paused, and none of them in line."""
    add(conn, 5, "shop", job_type="pack")
    conn.execute("select pause_job_type('pack')")
    resuming = connect(database_url, autocommit=False)
    resuming.execute("select resume_job_type('pack')")  # not committed yet
    waits_for_commit(resuming, database_url, "select pause_job_type('pack')")
    assert set(turns(conn, "shop")) == {PAUSED}
    assert claim(conn, 5) == []


def test_pausing_a_type_reads_its_own_jobs_not_the_whole_line(conn):
    """Taking a paused type out of line reads that type's entries. (It read every job in line,
    and every row by its key, to find them: 370 ms at 60,000 jobs with nothing to take.)"""
    add(conn, 3, "shop", job_type="pack")
    add(conn, 5000, "importer")
    for statement in ("select pause_job_type('pack')", "select job_queue_take_out_paused(null)"):
        conn.execute("begin")
        before = rows_read(conn)  # (counts not yet reported from earlier statements)
        conn.execute(statement)
        assert rows_read(conn) - before < 100
        conn.execute("commit")
        assert set(turns(conn, "shop")) == {PAUSED}


def test_no_scheduler_statement_is_compiled_with_jit(conn):
    """A function planned with sequential scans off gives a table with no usable index a cost
    of 1e10, and a generic plan costs a LIMIT given as a parameter as a tenth of the table:
    either goes past jit_above_cost, and PostgreSQL would compile the statement with LLVM on
    every call (tens to hundreds of ms). Every such function turns JIT off, and with JIT's
    default thresholds none of these calls compiles a statement."""
    compiled_on_every_call = conn.execute(
        "select coalesce(array_agg(proname::text order by proname), '{}') as names "
        "from pg_proc where pronamespace = 'public'::regnamespace "
        "and proconfig && array['enable_seqscan=off', 'plan_cache_mode=force_generic_plan'] "
        "and not 'jit=off' = any (proconfig)"
    ).fetchone()["names"]
    assert compiled_on_every_call == []
    if not conn.execute("select pg_jit_available() as a").fetchone()["a"]:
        pytest.skip("this server has no JIT provider: the compile itself cannot be observed")
    add(conn, 3, "shop", job_type="pack")
    add(conn, 20, "importer")
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    for setting in (
        "load 'auto_explain'",
        "set auto_explain.log_min_duration = 0",
        "set auto_explain.log_nested_statements = on",
        "set auto_explain.log_level = notice",
    ):
        conn.execute(setting)
    conn.execute("select pause_job_type('pack')")
    conn.execute("select job_queue_sweep_paused()")
    conn.execute("select job_queue_take_out_paused(null)")
    add(conn, 2, "late")
    conn.execute("select resume_job_type('pack')")
    compiled = [n.split("\n", 2)[1] for n in notices if "JIT:" in n]
    assert notices and compiled == []


def test_placing_many_jobs_at_once_reads_a_few_entries_a_job(conn):
    """Resuming a type and lifting a cap place the type's jobs again in one go. Each group's
    place was read while the same statement wrote, once per row, and each read walked the
    entries just written: a resume of 40,000 jobs over 2,000 groups took 172 s. Counted, not
    timed: 3,000 jobs over 300 groups read a few entries each, both ways."""
    conn.execute("select pause_job_type('pack')")
    for g in range(300):
        add(conn, 10, f"shop-{g}", job_type="pack")
    for statement in ("select resume_job_type('pack')", "select set_job_type_limit('pack', 1)"):
        conn.execute("begin")
        before = rows_read(conn)
        conn.execute(statement)
        assert rows_read(conn) - before < 20 * 3000, statement
        conn.execute("commit")
    claim(conn, 1)  # the cap of 1 holds the type's other groups
    conn.execute("begin")
    before = rows_read(conn)
    conn.execute("select set_job_type_limit('pack', null)")
    assert rows_read(conn) - before < 20 * 3000
    conn.execute("commit")
    # back in line, each group's jobs in order, the groups in turns
    got = claim(conn, 600)
    assert len(got) == 600 and Counter(r["user_id"] for r in got) == {
        f"shop-{g}": 2 for g in range(300)
    }


def test_the_frontier_keeps_up_with_claims_of_any_size(conn):
    """Claims look at the frontier only when their turns touch a window [8k, 8k + 1): one-job
    claims one time in eight, and batches of 2, 4 or 8 that start on a multiple of 8 too (a
    draft tested only the highest turn, and batches of 4 from turn 0 never moved it)."""
    for size in (1, 2, 3, 4, 8, 50):
        conn.execute("truncate job_queue_turns")
        add(conn, 200, f"importer-{size}")
        served = 0
        while served < 200:
            served += len(claim(conn, size))
            assert frontier(conn) >= max(0, served - 1 - 16), (size, served)
        finish_running(conn)


def test_placing_skips_the_entries_of_claimed_jobs_that_no_one_may_clean_yet(conn, database_url):
    """Placing a job read the type's line from its start, past every job claimed since the last
    vacuum, for each row written: entries no reader may skip while an older transaction is
    open. Under steady load a producer's insert of a few hundred rows ran for minutes. Counted,
    not timed: with 1,500 such entries, single-row inserts read from the frontier on, and an
    insert of 300 new groups reads the line once, not once a row."""
    add(conn, 2000, "importer")
    with connect(database_url, autocommit=False) as old:
        old.execute("set transaction isolation level repeatable read")
        old.execute("select count(*) from job_queue")  # a snapshot from before the claims
        for _ in range(30):
            claim(conn, 50)
        head = frontier(conn) + 1
        conn.execute("begin")
        before = rows_read(conn)
        for g in range(20):
            add(conn, 1, f"single-{g}")
        assert rows_read(conn) - before < 20 * 50
        conn.execute("commit")
        conn.execute("truncate job_queue_turns")  # no frontier: the line is read from its start
        conn.execute("begin")
        before = rows_read(conn)
        conn.execute(
            "insert into job_queue (job_type, user_id)"
            " select 'ok', 'shop-' || g from generate_series(1, 300) g"
        )
        assert rows_read(conn) - before < 1500 + 20 * 300
        conn.execute("commit")
    # every newcomer in line at the head, none ahead of the importer's next job
    newcomers = conn.execute(
        "select min(turn) as lo, count(distinct turn) as n from job_queue"
        " where user_id like 'single-%%' or user_id like 'shop-%%'"
    ).fetchone()
    assert newcomers["lo"] >= head and newcomers["n"] == 1


def test_claims_keep_their_plans_on_statistics_from_an_empty_line(conn, database_url):
    """Analyzed while every job was finished, `status = 'pending'` is estimated at one row and
    the index of all pending jobs looked cheapest: on a backlog, the pick read and sorted every
    pending job and the claim's update read them all again to find its own rows, until
    autovacuum analyzed the table again (a minute at best); placing read them all for each row
    written. Counted, not timed: with such statistics a claim reads a few entries, not the
    3,000 pending jobs; once job_queue_refresh_statistics has analyzed the table (the
    processors ask every 10 s), an insert of 100 new groups reads a few entries a row."""
    conn.execute("alter table job_queue set (autovacuum_enabled = false)")
    add(conn, 200, "importer")
    claim(conn, 200)
    finish_running(conn)
    conn.execute("vacuum analyze job_queue")  # every job finished
    conn.execute(
        "insert into job_queue (job_type, user_id)"
        " select 'ok', 'shop-' || g % 300 from generate_series(1, 3000) g"
    )
    status = conn.execute(
        "select most_common_vals::text as v from pg_stats"
        " where tablename = 'job_queue' and attname = 'status'"
    ).fetchone()
    assert status["v"] == "{completed}"
    with connect(database_url, autocommit=False) as c:  # plans made now, on those statistics
        before = rows_read(c)
        assert len(claim(c, 5)) == 5
        assert rows_read(c) - before < 100
        c.commit()
    conn.execute("select pg_stat_force_next_flush()")  # (counts reach the table's statistics)
    refresh = "select job_queue_refresh_statistics(interval '0') as a"
    assert conn.execute(refresh).fetchone()["a"] is True  # (the last analyze: a moment ago)
    assert conn.execute(refresh).fetchone()["a"] is False  # nothing changed since
    assert conn.execute("select job_queue_refresh_statistics() as a").fetchone()["a"] is False
    with connect(database_url, autocommit=False) as c:
        before = rows_read(c)
        c.execute(
            "insert into job_queue (job_type, user_id)"
            " select 'ok', 'newcomer-' || g from generate_series(1, 100) g"
        )
        assert rows_read(c) - before < 20 * 100
        c.commit()


def test_each_processor_refreshes_the_statistics_after_a_burst(conn, database_url):
    """The processors' keeper calls job_queue_refresh_statistics on its interval: after a burst
    of inserts the table is analyzed without autovacuum."""
    conn.execute("alter table job_queue set (autovacuum_enabled = false)")
    conn.execute("vacuum job_queue")  # (not analyzed in this database yet)
    add(conn, 3000, "importer")
    conn.execute("select pg_stat_force_next_flush()")

    def analyzed() -> int:
        return conn.execute(
            "select analyze_count + autoanalyze_count as n from pg_stat_user_tables"
            " where relname = 'job_queue'"
        ).fetchone()["n"]

    first = analyzed()

    async def run() -> int:
        db = Database(database_url)
        await db.open()
        keeper = StatisticsKeeper(JobQueue(db), every=0.05)
        task = asyncio.create_task(keeper.run())
        try:
            for _ in range(100):
                await asyncio.sleep(0.05)
                if keeper.analyzed:
                    break
            await asyncio.sleep(0.3)  # more checks, nothing more to do
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await db.close()
        return keeper.analyzed

    assert asyncio.run(run()) == 1
    assert analyzed() == first + 1


def test_no_check_or_trigger_condition_of_job_queue_inlines_a_sql_function(conn):
    """Every statement that writes job_queue prepares its CHECK constraints, trigger conditions
    and defaults, and a SQL function in one is inlined there: its text parsed and analyzed on
    every UPDATE, whatever the row. The traceparent check did so: 10-13 % of the server's CPU
    in a claim + complete. Functions there must be of another language."""
    inlined = conn.execute(
        """select p.proname, d.classid::regclass::text as used_by
           from pg_depend d
           join pg_proc p on p.oid = d.refobjid
           join pg_language l on l.oid = p.prolang
           where d.refclassid = 'pg_proc'::regclass and l.lanname = 'sql'
             and ((d.classid = 'pg_constraint'::regclass
                   and d.objid in (select oid from pg_constraint
                                   where conrelid = 'job_queue'::regclass))
               or (d.classid = 'pg_trigger'::regclass
                   and d.objid in (select oid from pg_trigger
                                   where tgrelid = 'job_queue'::regclass))
               or (d.classid = 'pg_attrdef'::regclass
                   and d.objid in (select oid from pg_attrdef
                                   where adrelid = 'job_queue'::regclass)))"""
    ).fetchall()
    assert inlined == []
    # the check itself still holds
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("insert into job_queue (job_type, traceparent) values ('ok', 'nonsense')")
    conn.execute(
        "insert into job_queue (job_type, traceparent) values"
        " ('ok', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01')"
    )


def test_a_claim_between_two_inserts_of_one_statement_leaves_no_stale_place(conn):
    """Placing reads a type's place once per statement. Inside one statement that inserts,
    claims and inserts again (a DO block, a function, statements sent as one string) a draft
    reused the place read before the claim: 50 jobs of a newcomer went ahead of every waiting
    group. The place is checked against the type's frontier on every row."""
    add(conn, 200, "importer")
    claim(conn, 10)
    conn.execute(
        """do $$
           begin
               insert into job_queue (job_type, user_id) values ('ok', 'first');
               perform claim_jobs('w', 100);
               insert into job_queue (job_type, user_id)
               select 'ok', 'burst' from generate_series(1, 50);
           end $$"""
    )
    waiting = conn.execute(
        "select min(turn) as t from job_queue where status = 'pending' and user_id = 'importer'"
    ).fetchone()["t"]
    assert min(turns(conn, "burst")) >= waiting - 1  # beside the importer's next job, not ahead
