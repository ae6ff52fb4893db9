"""Spend budgets and job prices in the database (issue 27, first part): the setters and their
refusals, calendar periods in a stated time zone, what each budget has spent in its period, and
a job's estimated cost from its type's price and its checkpoints."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from tests.support import add_job, store_images


def budgets(conn) -> dict[tuple[str, str], dict]:
    rows = conn.execute("select *, period::text as period from spend_budgets_now").fetchall()
    return {(r["scope"], r["key"]): r for r in rows}


def test_budgets_are_set_changed_and_removed_for_groups_types_and_the_service(conn):
    conn.execute("select set_spend_budget('seller-7', 5.00)")
    conn.execute("select set_spend_budget('*', 1.00, '1 week')")
    conn.execute("select set_job_type_budget('generate-image', 20, '1 hour')")
    conn.execute("select set_service_budget(100, '1 month')")
    conn.execute("select set_spend_budget('seller-7', 7.50)")  # changed in place
    got = {k: (float(r["budget_usd"]), str(r["period"])) for k, r in budgets(conn).items()}
    assert got == {
        ("group", "seller-7"): (7.5, "1 day"),
        ("group", "*"): (1.0, "7 days"),
        ("type", "generate-image"): (20.0, "01:00:00"),
        ("service", "*"): (100.0, "1 mon"),
    }
    conn.execute("select set_spend_budget('seller-7', null)")  # back under the default
    assert budgets(conn)[("group", "seller-7")]["own"] is False
    assert float(budgets(conn)[("group", "seller-7")]["budget_usd"]) == 1.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            "select set_spend_budget('s', 1, '2 days')",
            "period must be 1 hour, 1 day, 1 week or 1 month, got 2 days",
        ),
        ("select set_spend_budget('s', -1)", "usd must be a number from 0 to 1000000000, got -1"),
        ("select set_spend_budget('', 1)", "the key must be 1 to 200 characters"),
        (
            "select set_job_type_price('t', -0.5)",
            "usd must be a number from 0 to 1000000, got -0.5",
        ),
        ("update job_queue_settings set budget_time_zone = 'Mars/Olympus'", "budget_time_zone"),
    ],
)
def test_bad_budgets_and_prices_are_refused_saying_what_is_wrong(conn, call, message):
    with pytest.raises(psycopg.Error, match=message):
        conn.execute(call)


def test_periods_follow_the_calendar_of_the_stated_time_zone(conn):
    at = datetime(2026, 12, 6, 23, 30, tzinfo=UTC)  # a Sunday; Monday 00:30 in Berlin
    window = "select starts, resets from spend_budget_window(%s::interval, %s)"
    day = conn.execute(window, ("1 day", at)).fetchone()
    assert (day["starts"], day["resets"]) == (
        datetime(2026, 12, 6, tzinfo=UTC),
        datetime(2026, 12, 7, tzinfo=UTC),
    )
    conn.execute("update job_queue_settings set budget_time_zone = 'Europe/Berlin'")
    day = conn.execute(window, ("1 day", at)).fetchone()
    assert (day["starts"], day["resets"]) == (
        datetime(2026, 12, 6, 23, tzinfo=UTC),  # Monday 00:00 in Berlin
        datetime(2026, 12, 7, 23, tzinfo=UTC),
    )
    week = conn.execute(window, ("7 days", at)).fetchone()
    assert week["starts"] == datetime(2026, 12, 6, 23, tzinfo=UTC)  # weeks start on Monday
    month = conn.execute(window, ("1 month", at)).fetchone()
    assert (month["starts"], month["resets"]) == (
        datetime(2026, 11, 30, 23, tzinfo=UTC),
        datetime(2026, 12, 31, 23, tzinfo=UTC),
    )


def call(conn, job_id, cost: float, at: str = "now()") -> None:
    conn.execute(
        "insert into provider_calls (job_id, attempt, user_id, provider, model, operation,"
        f" status, duration_ms, images, cost_usd, created_at) values (%s, 1, null, 'gemini',"
        f" 'm', 'image', 'ok', 10, 1, %s, {at})",
        (job_id, cost),
    )


def test_what_each_budget_has_spent_in_its_period(conn):
    mine = add_job(conn, "generate-image", user_id="seller-7")
    shop = add_job(conn, "generate-aplus", user_id="u9", concurrency_key="shop-1")
    other = add_job(conn, "generate-image", user_id="seller-8")
    call(conn, mine, 0.25)
    call(conn, mine, 0.50)
    call(conn, mine, 9.00, "now() - interval '2 days'")  # an earlier period
    call(conn, shop, 1.00)
    call(conn, other, 2.00)
    conn.execute("select set_spend_budget('seller-7', 5)")
    conn.execute("select set_spend_budget('shop-1', 5)")
    conn.execute("select set_spend_budget('*', 1)")
    conn.execute("select set_job_type_budget('generate-image', 50)")
    conn.execute("select set_service_budget(100)")
    spent = {k: r["spent_usd"] for k, r in budgets(conn).items()}
    assert {k: (None if v is None else float(v)) for k, v in spent.items()} == {
        ("group", "seller-7"): 0.75,
        ("group", "shop-1"): 1.0,
        ("group", "*"): None,  # a default for many groups: no single figure
        ("group", "seller-8"): 2.0,  # one of them: under the default, with what it spent
        ("type", "generate-image"): 2.75,
        ("service", "*"): 3.75,
    }


def test_a_jobs_estimate_is_its_price_for_what_is_left_to_make(conn):
    pack = add_job(
        conn, "generate-complete-pack", payload={"project_id": "p1", "product": {"name": "M"}}
    )
    assert conn.execute("select job_estimated_cost(%s) as c", (pack,)).fetchone()["c"] is None
    conn.execute("select set_job_type_price('generate-complete-pack', 0.60)")
    estimate = "select job_estimated_cost(%s) as c"
    assert float(conn.execute(estimate, (pack,)).fetchone()["c"]) == 0.60
    # It ran before and stored 4 of its 6 images (checkpoints).
    conn.execute("update job_queue set processed_at = now() where id = %s", (pack,))
    store_images(conn, pack, ["main", "lifestyle", "infographic", "detail"])
    assert float(conn.execute(estimate, (pack,)).fetchone()["c"]) == 0.20  # the missing 2
    other = add_job(conn, "thumbnail", payload={"x": 1})
    assert conn.execute(estimate, (other,)).fetchone()["c"] is None  # no price, no ledger


def test_budgets_and_prices_from_the_command_line(database_url, conn, monkeypatch, capsys):
    from processor.cli.commands import main

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["budgets"]) == 0
    assert "no budgets" in capsys.readouterr().out
    assert main(["set-budget", "5", "--group", "seller-7"]) == 0
    assert main(["set-budget", "$20", "--type", "generate-image", "--period", "week"]) == 0
    assert main(["set-budget", "100", "--service", "--period", "month"]) == 0
    assert main(["set-price", "generate-complete-pack", "0.60"]) == 0
    out = capsys.readouterr().out
    assert "group seller-7: $5 per day" in out and "generate-complete-pack: $0.60 a job" in out
    job = add_job(conn, "generate-image", user_id="seller-7")
    call(conn, job, 4.80)
    assert main(["budgets"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert lines[1][:7] == ["group", "seller-7", "$4.80", "$0.00", "$5.00", "96%", "day"]
    assert any(line[:3] == ["type", "generate-image", "$4.80"] for line in lines)
    assert main(["set-budget", "none", "--group", "seller-7"]) == 0
    assert ("group", "seller-7") not in budgets(conn)
    assert (
        float(
            conn.execute(
                "select usd from job_type_prices where job_type = 'generate-complete-pack'"
            ).fetchone()["usd"]
        )
        == 0.60
    )
    with pytest.raises(SystemExit):
        main(["set-budget", "-3", "--group", "g"])
    assert "must be an amount of at least 0, got '-3'" in capsys.readouterr().err
