"""The privilege tier: a cluster laid out as a hosted Supabase project is (bootstrap superuser
supabase_admin, `postgres` a non-superuser with Supabase's attributes, the anon, authenticated,
service_role and authenticator roles, and Supabase's default privileges, which grant ALL on
every new object in public to the three API roles). Every migration is applied as `postgres`,
then the whole grant table is compared with the allow-list the README gives."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from processor.ops.migrate import migrate
from tests.support import throwaway_cluster

HERE = Path(__file__).resolve().parents[1] / "sql"

# (kind, object, role) -> privileges. Anything not here must not exist: anon holds nothing.
ALLOWED: dict[tuple[str, str, str], set[str]] = {
    ("table", "job_queue", "authenticated"): {"SELECT"},
    ("table", "generated_images", "authenticated"): {"SELECT"},
    ("table", "aplus_contents", "authenticated"): {"SELECT"},
    ("table", "provider_calls", "authenticated"): {"SELECT"},
    ("table", "job_queue", "service_role"): {"SELECT", "INSERT"},
    ("table", "generated_images", "service_role"): {"SELECT"},
    ("table", "aplus_contents", "service_role"): {"SELECT"},
    ("table", "provider_calls", "service_role"): {"SELECT"},
    ("view", "credit_balances", "service_role"): {"SELECT"},
    ("view", "provider_spend_daily", "service_role"): {"SELECT"},
    ("view", "provider_spend_by_user", "service_role"): {"SELECT"},
    ("view", "provider_spend_by_project", "service_role"): {"SELECT"},
    ("view", "provider_spend_by_provider", "service_role"): {"SELECT"},
    ("function", "cancel_job(uuid)", "service_role"): {"EXECUTE"},
    ("function", "retry_job(uuid)", "service_role"): {"EXECUTE"},
    ("function", "grant_credits(text,integer,text)", "service_role"): {"EXECUTE"},
    (
        "function",
        "enqueue_job(text,jsonb,text,bigint,timestamp with time zone,integer,text,text,text,"
        "uuid[],text)",
        "service_role",
    ): {"EXECUTE"},
    # Workflows (0025): an app's backend enqueues, cancels, retries and watches them.
    ("function", "enqueue_workflow(jsonb,text,bigint,text,text,text)", "service_role"): {"EXECUTE"},
    ("function", "cancel_workflow(uuid)", "service_role"): {"EXECUTE"},
    ("function", "retry_workflow(uuid)", "service_role"): {"EXECUTE"},
    ("view", "job_queue_workflows", "service_role"): {"SELECT"},
    # job_queue's traceparent check calls it: service_role's plain INSERTs need it.
    ("function", "processor_valid_traceparent(text)", "service_role"): {"EXECUTE"},
}
OWN_ROWS = {"job_queue", "generated_images", "aplus_contents", "provider_calls"}


@pytest.fixture(scope="module")
def supabase() -> Iterator[str]:
    """The URL of a Supabase-like database, migrated as the non-superuser `postgres`."""
    with throwaway_cluster("processor-supabase-", superuser="supabase_admin") as pg:
        with psycopg.connect(pg.url, autocommit=True) as admin:
            admin.execute((HERE / "supabase_layout.sql").read_text())
        url = pg.url.replace("supabase_admin@", "postgres@")
        migrate(url)
        yield url


@pytest.fixture
def db(supabase: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(supabase, row_factory=dict_row) as conn:
        yield conn
        conn.rollback()


def grants(conn: psycopg.Connection) -> dict[tuple[str, str, str], set[str]]:
    table: dict[tuple[str, str, str], set[str]] = {}
    for r in conn.execute((HERE / "grants.sql").read_text()):
        table.setdefault((r["kind"], r["name"], r["grantee"]), set()).add(r["privilege"])
    return table


def test_the_migrations_ran_as_a_non_superuser(db):
    assert db.execute("select rolsuper from pg_roles where rolname = current_user").fetchone() == {
        "rolsuper": False
    }
    # Supabase's default privileges were in force: a table made now is open to anon.
    db.execute("create table probe (x int)")
    assert ("table", "probe", "anon") in grants(db)


def test_the_grant_table_is_exactly_the_allow_list(db):
    held = grants(db)
    assert held == ALLOWED
    assert not [k for k in held if k[2] in ("anon", "public")]


def test_every_table_authenticated_may_read_has_rls_and_an_own_row_policy(db):
    readable = {name for kind, name, role in ALLOWED if role == "authenticated"}
    assert readable == OWN_ROWS
    for name in readable:
        row = db.execute(
            "select c.relrowsecurity, count(p.*) filter (where p.polname = %s) as policies "
            "from pg_class c left join pg_policy p on p.polrelid = c.oid "
            "where c.relname = %s group by 1",
            (f"{name}_owner_read", name),
        ).fetchone()
        assert row == {"relrowsecurity": True, "policies": 1}, name


@pytest.mark.parametrize(
    "statement",
    [
        "delete from processor_migrations",
        "update processor_migrations set checksum = 'x'",
        "truncate generated_images",
        "truncate aplus_contents",
        "select * from job_queue",
        "insert into job_queue (job_type) values ('x')",
        "select nextval('generated_images_id_seq')",
        "select enqueue_job('x', '{}')",
        "select claim_jobs('w', 1)",
        "select * from processor_settings",
        "select * from credit_balances",
        "select processor_scaling_metric()",
        "select * from retry_jobs(p_dry_run => true)",
        "select * from cancel_jobs(p_dry_run => true)",
        "select * from job_queue_table_health",
    ],
)
def test_anon_is_refused_everything(db, statement):
    db.execute("set local role anon")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute(statement)


def test_authenticated_reads_only_its_own_jobs_and_writes_nothing(db):
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    for user in (mine, theirs):
        db.execute("select enqueue_job('x', '{}', %s)", (user,))
    db.execute("set local role authenticated")
    db.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps({"sub": mine}),))
    rows = db.execute("select user_id from job_queue").fetchall()
    assert rows == [{"user_id": mine}]
    for statement in ("update job_queue set priority = 9", "select cancel_job(gen_random_uuid())"):
        db.execute("savepoint s")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute(statement)
        db.execute("rollback to savepoint s")


def test_service_role_enqueues_reads_cancels_and_retries_with_credits_on(db):
    user = str(uuid.uuid4())
    db.execute("update job_queue_settings set credits_enabled = true")
    db.execute("insert into credit_prices (job_type, credits) values ('paid', 2)")
    db.execute("select grant_credits(%s, 10)", (user,))
    db.execute("set local role service_role")
    job = db.execute("select enqueue_job('paid', '{}', %s) as id", (user,)).fetchone()["id"]
    plain = db.execute(
        "insert into job_queue (job_type, user_id) values ('paid', %s) returning id", (user,)
    ).fetchone()["id"]
    assert db.execute("select cancel_job(%s) as ok", (job,)).fetchone() == {"ok": True}
    assert db.execute("select retry_job(%s) as ok", (job,)).fetchone() == {"ok": True}
    assert db.execute("select grant_credits(%s, 5) as b", (user,)).fetchone()["b"] is not None
    balance = db.execute("select held from credit_balances where user_id = %s", (user,)).fetchone()
    assert balance == {"held": 4}  # both jobs hold their 2 credits again
    assert {r["id"] for r in db.execute("select id from job_queue")} >= {job, plain}
    for statement in (
        "delete from job_queue",
        "update job_queue set status = 'completed'",
        "select * from credit_ledger",
        "select * from processor_migrations",
        "select claim_jobs('w', 1)",
        "select * from retry_jobs()",
        "select * from cancel_jobs()",
    ):
        db.execute("savepoint s")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute(statement)
        db.execute("rollback to savepoint s")


def test_migrating_again_changes_nothing(supabase, db):
    before = grants(db)
    db.rollback()
    assert migrate(supabase) == []
    assert grants(db) == before


def test_every_definer_function_pins_its_search_path_with_pg_temp_last(db):
    """A SECURITY DEFINER function runs with its owner's rights; unless its search_path names
    pg_temp last, PostgreSQL searches the caller's temporary schema first for the tables it
    reads by their bare names."""
    rows = db.execute(
        """
        select p.oid::regprocedure::text as fn,
               (select c from unnest(p.proconfig) c where c like 'search_path=%%') as path
        from pg_proc p
        where p.prosecdef and p.pronamespace = 'public'::regnamespace
          and not exists (select 1 from pg_depend d
                          where d.classid = 'pg_proc'::regclass and d.objid = p.oid
                            and d.deptype = 'e')
        """
    ).fetchall()
    assert len(rows) >= 11  # the scan sees the definer functions
    wrong = [r for r in rows if r["path"] != "search_path=pg_catalog, public, pg_temp"]
    assert wrong == []


def test_a_temp_table_cannot_shadow_the_limits_a_definer_function_reads(db):
    """service_role may only EXECUTE enqueue_job. A temporary job_queue_settings with its own
    limits, made in the caller's session, changes nothing: a payload nested 2,000 deep is
    refused at the real limit of 64."""
    db.execute("set local role service_role")
    db.execute(
        "create temp table job_queue_settings as select true as id, 100000 as max_payload_depth,"
        " 100000000 as max_payload_bytes, false as credits_enabled"
    )
    deep = "[" * 2000 + "]" * 2000
    with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="nests more than 64 levels"):
        db.execute("select enqueue_job('x', jsonb_build_object('a', %s::jsonb))", (deep,))


def test_the_new_objects_are_closed_to_the_api_roles(db):
    """What 0015 adds (the delivery record, its function, the known types) is the processor's
    own: no API role reads, writes or calls it."""
    for role in ("anon", "authenticated", "service_role"):
        for statement in (
            "select * from processor_deliveries",
            "select use_delivery(md5('x'), '/process-image', null)",
            "select * from known_job_types()",
        ):
            db.execute("savepoint s")
            db.execute(f"set local role {role}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.execute(statement)
            db.execute("rollback to savepoint s")


def test_refreshing_the_queues_statistics_is_closed_to_the_api_roles(db):
    """0022's job_queue_refresh_statistics runs ANALYZE as the table's owner: the processors
    call it, no API role may."""
    for role in ("anon", "authenticated", "service_role"):
        db.execute("savepoint s")
        db.execute(f"set local role {role}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("select job_queue_refresh_statistics()")
        db.execute("rollback to savepoint s")


def test_workflows_are_the_backends_and_closed_to_the_browser_roles(db):
    """0025: service_role enqueues a graph, and a plain INSERT with depends_on (whose trigger
    marks the dependency, a row service_role may not update itself); anon and authenticated
    reach none of it, and no API role reaches the processor's own calls."""
    db.execute("set local role service_role")
    first = db.execute(
        'select job_id from enqueue_workflow(\'[{"name": "a", "job_type": "t"}]\')'
    ).fetchone()["job_id"]
    after = db.execute(
        "insert into job_queue (job_type, depends_on) values ('t', array[%s]::uuid[]) "
        "returning status",
        (first,),
    ).fetchone()
    assert after["status"] == "waiting"
    for column, value in (("parent_id", str(first)), ("idempotency_key", f"child:{first}:main")):
        db.execute("savepoint s")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="processor's own"):
            db.execute(
                f"insert into job_queue (job_type, {column}) values ('t', %s)", (value,)
            )  # a child reserves no credits, and its parent would adopt it
        db.execute("rollback to savepoint s")
    assert (
        db.execute(
            "select jobs from job_queue_workflows where workflow_id = %s", (first,)
        ).fetchone()["jobs"]
        == 2
    )
    db.execute("reset role")
    statements = {
        "anon": [
            "select * from enqueue_workflow('[]')",
            "select * from job_queue_workflows",
            "select cancel_workflow(gen_random_uuid())",
        ],
        "authenticated": [
            "select * from enqueue_workflow('[]')",
            "select * from job_queue_workflows",
            "select retry_workflow(gen_random_uuid())",
        ],
        "service_role": [
            "select * from suspend_job(gen_random_uuid(), gen_random_uuid(), '[]')",
            "select job_queue_reap_waiting()",
            "select job_queue_settle()",
        ],
    }
    for role, tried in statements.items():
        for statement in tried:
            db.execute("savepoint s")
            db.execute(f"set local role {role}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.execute(statement)
            db.execute("rollback to savepoint s")
