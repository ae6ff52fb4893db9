from __future__ import annotations

import shutil

import pytest

from processor.errors import MigrationError
from processor.ops import migrate


def test_a_second_migrate_changes_nothing(database_url, conn):
    before = conn.execute("select version, applied_at from processor_migrations").fetchall()
    assert migrate.migrate(database_url) == []
    after = conn.execute("select version, applied_at from processor_migrations").fetchall()
    assert before == after and len(after) == len(migrate.available())


def test_a_fresh_database_gets_every_contract_function(cluster):
    cluster.create_database("fresh_db")
    try:
        applied = migrate.migrate(cluster.url_for("fresh_db"))
        assert [m.version for m in applied] == [m.version for m in migrate.available()]
        import psycopg

        with psycopg.connect(cluster.url_for("fresh_db")) as c:
            names = {
                r[0]
                for r in c.execute(
                    "select proname from pg_proc where pronamespace = 'public'::regnamespace"
                )
            }
    finally:
        cluster.drop_database("fresh_db")
    assert {
        "enqueue_job",
        "get_next_job",
        "mark_job_processing",
        "mark_job_completed",
        "mark_job_failed",
        "extend_job_lease",
        "requeue_expired_jobs",
        "cancel_job",
        "retry_job",
    } <= names


def test_an_applied_migration_that_was_edited_is_refused(database_url, tmp_path):
    for m in migrate.available():
        shutil.copy(m.path, tmp_path / m.path.name)
    first = sorted(tmp_path.iterdir())[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="was changed after it was applied"):
        migrate.migrate(database_url, migrate.available(tmp_path))


def test_a_failing_migration_is_rolled_back_and_named(database_url, conn, tmp_path):
    for m in migrate.available():
        shutil.copy(m.path, tmp_path / m.path.name)
    (tmp_path / "9999_broken.sql").write_text("create table t_ok (id int);\nselect nonsense;")
    with pytest.raises(MigrationError, match=r'9999_broken\.sql failed: column "nonsense"'):
        migrate.migrate(database_url, migrate.available(tmp_path))
    assert conn.execute("select to_regclass('t_ok') as t").fetchone()["t"] is None


def test_on_a_supabase_shaped_database_users_read_only_their_own_rows(cluster):
    import psycopg

    cluster.create_database("supabase_like")
    url = cluster.url_for("supabase_like")
    try:
        with psycopg.connect(url, autocommit=True) as c:
            # What Supabase provides before our migrations run.
            c.execute(
                "do $$ begin create role authenticated; exception when duplicate_object "
                "then null; end $$"
            )
            c.execute("create schema auth")
            c.execute(
                "create function auth.uid() returns uuid language sql stable as "
                "$$ select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$"
            )
            c.execute("grant usage on schema auth to authenticated")
            c.execute("create publication supabase_realtime")
        migrate.migrate(url)
        alice, bob = "00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"
        with psycopg.connect(url, autocommit=True) as c:
            c.execute(
                "insert into job_queue (job_type, user_id) values ('t', %s), ('t', %s)",
                (alice, bob),
            )
            published = {
                r[0]
                for r in c.execute(
                    "select tablename from pg_publication_tables "
                    "where pubname = 'supabase_realtime'"
                )
            }
            # Supabase's guidance: (select auth.uid()), evaluated once per statement.
            policies = dict(
                c.execute(
                    "select tablename, qual from pg_policies where policyname like '%%owner_read'"
                ).fetchall()
            )
            c.execute(
                "insert into provider_calls (attempt, user_id, provider, model, operation,"
                " status, duration_ms) values (1, %s, 'demo', 'm', 'image', 'ok', 5),"
                " (1, %s, 'demo', 'm', 'image', 'ok', 5)",
                (alice, bob),
            )
            c.execute("set role authenticated")
            c.execute("select set_config('request.jwt.claim.sub', %s, false)", (alice,))
            visible = [r[0] for r in c.execute("select user_id from job_queue")]
            own_calls = [r[0] for r in c.execute("select user_id from provider_calls")]
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("select * from claim_jobs('sneaky')")
            c.execute("reset role")
    finally:
        cluster.drop_database("supabase_like")
    assert visible == [alice]
    assert own_calls == [alice]
    assert set(policies) >= {"job_queue", "generated_images", "aplus_contents", "provider_calls"}
    for table, qual in policies.items():
        assert "SELECT auth.uid()" in qual, (table, qual)
    assert published == {"job_queue", "generated_images"}
