from __future__ import annotations

import shutil

import pytest

from processor import migrate
from processor.errors import MigrationError


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
