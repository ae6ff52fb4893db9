"""The scheduler under pressure (issue 24): a claim transaction left open, pause beside claims,
caps under limit changes and on the get_next_job + mark_job_processing path, fair share off
with caps, a new group beside a capped one, jobs the lanes never heard of. Real sessions on a
real database; each case is forced with explicit connections rather than timed."""

from __future__ import annotations

import threading
import time
from collections import Counter

import psycopg
import pytest
from psycopg.rows import dict_row

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


def test_jobs_the_lanes_never_heard_of_are_claimed_within_the_rebuild_interval(conn):
    """A row written with triggers off (a data-only restore) and a job whose lane and wake were
    lost, beside two busy sellers: both are claimed once the rebuild interval has passed, and
    not stranded forever."""
    conn.execute("update job_queue_settings set rebuild_every = interval '1 second'")
    add(conn, 1, "warm")
    assert len(claim(conn, 1)) == 1  # lanes exist and the first rebuild has run
    add(conn, 20, "busy-1")
    add(conn, 20, "busy-2")
    conn.execute("set session_replication_role = replica")
    conn.execute("insert into job_queue (job_type, user_id) values ('ok', 'restored')")
    conn.execute("set session_replication_role = origin")
    add(conn, 1, "lost")
    conn.execute("select job_queue_fold_wakes()")
    conn.execute("delete from job_queue_lanes where group_key = 'lost'")  # the lost wake
    assert conn.execute("select count(*) as n from job_queue_wakes").fetchone()["n"] == 0
    # Neither is known to the lanes yet: the busy sellers share the claims.
    assert {r["user_id"] for r in claim(conn, 4)} == {"busy-1", "busy-2"}
    time.sleep(1.1)
    assert {"restored", "lost"} <= {r["user_id"] for r in claim(conn, 10)}


def test_with_nothing_else_due_a_job_the_lanes_never_heard_of_is_claimed_at_once(conn):
    """With no other lane due (nothing to share), a claim takes jobs in global order, so a row
    written with triggers off does not even wait for the rebuild."""
    conn.execute("update job_queue_settings set rebuild_every = interval '1 hour'")
    conn.execute("set session_replication_role = replica")
    conn.execute("insert into job_queue (job_type, user_id) values ('ok', 'restored')")
    conn.execute("set session_replication_role = origin")
    assert [r["user_id"] for r in claim(conn, 5)] == ["restored"]


def test_the_rebuild_finds_nothing_to_add_when_nothing_is_missing(conn):
    conn.execute("update job_queue_settings set rebuild_every = interval '0'")
    for g in range(50):
        add(conn, 3, f"g{g}")
    claim(conn, 1)
    assert conn.execute("select job_queue_rebuild_lanes() as n").fetchone()["n"] == 0


def test_a_claim_of_zero_claims_nothing(conn):
    add(conn, 3, "u")
    assert claim(conn, 0) == []
    assert conn.execute("select count(*) as n from claim_jobs('w', -1)").fetchone()["n"] == 0
    assert running(conn) == 0


def test_a_paused_type_keeps_no_pile_of_wakes_and_resumes_every_lane(conn):
    """100 sellers' jobs arrive for a paused type: its wakes are used up by the claims of other
    types (they grew without bound before), and resume_job_type wakes all 100 lanes from
    job_queue."""
    conn.execute("select pause_job_type('pack')")
    for g in range(100):
        add(conn, 3, f"seller-{g}", job_type="pack")
    add(conn, 5, "u", job_type="ok")
    assert {r["job_type"] for r in claim(conn, 10)} == {"ok"}
    assert conn.execute("select count(*) as n from job_queue_wakes").fetchone()["n"] == 0
    conn.execute("select resume_job_type('pack')")
    taken = [r for _ in range(4) for r in claim(conn, 50)]
    assert len({r["user_id"] for r in taken}) == 100  # every seller's lane is back


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


def passes(conn) -> float:
    return conn.execute("select coalesce(sum(pass), 0) as s from job_queue_lanes").fetchone()["s"]


def test_get_next_job_moves_its_lane_one_turn(conn):
    """get_next_job picks once: `where id = (job_queue_pick(…))[1]` made PostgreSQL call the
    volatile pick for every row of job_queue (7 s a call at 120,000 jobs), moving the lane a
    turn each time."""
    add(conn, 20, "early")
    claim(conn, 20)  # rows ahead of the pending ones in a sequential scan
    add(conn, 30, "a")
    add(conn, 30, "b")
    claim(conn, 2)  # folds the wakes: two lanes, so the fair pick is used
    before = passes(conn)
    with conn.transaction():
        job = conn.execute("select * from get_next_job()").fetchone()
    assert job["user_id"] in {"a", "b"}
    assert passes(conn) - before == 1


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


def test_a_pause_beside_a_resume_leaves_the_pause_in_force(conn, database_url):
    """A resume of one type committed beside a pause of another: each writer reads both tables
    only after the other commits, so the flag stays set and the one lane of the paused type is
    not claimed in global order."""
    conn.execute("select pause_job_type('old')")
    add(conn, 3, "shop", job_type="new")
    pausing = connect(database_url, autocommit=False)
    pausing.execute("select pause_job_type('new')")  # not committed yet

    def resume_old() -> None:
        with connect(database_url) as other:
            other.execute("select resume_job_type('old')")

    resumed = threading.Thread(target=resume_old)
    resumed.start()
    time.sleep(0.3)
    assert resumed.is_alive()  # waits for the pause to commit, then reads it
    pausing.commit()
    pausing.close()
    resumed.join(5)
    assert not resumed.is_alive()
    assert limited(conn)
    assert claim(conn, 5) == []
    conn.execute("select resume_job_type('new')")
    assert not limited(conn)
    assert len(claim(conn, 5)) == 3


def test_a_claim_ends_beside_an_empty_lane_another_transaction_holds(conn, database_url):
    """A lane whose jobs are all finished, held by another transaction (a claim that locked it
    and has not committed), cannot be deleted: the claim used to read it again every round,
    find it empty again, and never end (16 callers spun for minutes, each holding a lane
    another wanted). It takes what there is and returns."""
    add(conn, 1, "empty")
    add(conn, 1, "f")
    add(conn, 1, "g")
    conn.execute("select job_queue_fold_wakes()")
    conn.execute("update job_queue set status = 'completed' where user_id = 'empty'")
    holder = connect(database_url, autocommit=False)
    try:
        holder.execute("select 1 from job_queue_lanes where group_key = 'empty' for update")
        conn.execute("set statement_timeout = '5s'")
        assert sorted(r["user_id"] for r in claim(conn, 5)) == ["f", "g"]
    finally:
        holder.rollback()
        holder.close()


def test_the_claim_that_takes_a_lanes_last_job_lets_the_lane_go(conn, database_url):
    """Lanes emptied by a claim go in that claim (one statement a round), except one another
    transaction holds, which stays until a later claim finds it empty."""
    for g in range(50):
        add(conn, 1, f"seller-{g}")
    conn.execute("select job_queue_fold_wakes()")
    holder = connect(database_url, autocommit=False)
    try:
        holder.execute("select 1 from job_queue_lanes where group_key = 'seller-7' for update")
        assert len(claim(conn, 50)) == 50
        left = conn.execute("select array_agg(group_key) as g from job_queue_lanes").fetchone()
        assert left["g"] == ["seller-7"]
    finally:
        holder.rollback()
        holder.close()
    add(conn, 2, "other")  # a second lane due: the fair pick runs and meets the empty one
    assert [r["user_id"] for r in claim(conn, 5)] == ["other", "other"]
    assert conn.execute("select count(*) as n from job_queue_lanes").fetchone()["n"] == 0
