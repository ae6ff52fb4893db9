"""The command line, run as a user runs it, against a real database."""

from __future__ import annotations

import json
import uuid

from processor.cli import main


def test_enqueue_status_cancel_and_retry(database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert (
        main(["enqueue", "generate-image", '{"product": {"name": "Mug"}}', "--priority", "5"]) == 0
    )
    job_id = capsys.readouterr().out.strip()
    uuid.UUID(job_id)

    assert main(["status", job_id]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["status"], shown["priority"], shown["payload"]) == (
        "pending",
        5,
        {"product": {"name": "Mug"}},
    )

    assert main(["cancel", job_id]) == 0
    assert main(["cancel", job_id]) == 1  # already cancelled
    assert main(["retry", job_id]) == 0
    capsys.readouterr()
    assert main(["stats"]) == 0
    assert "generate-image" in capsys.readouterr().out


def test_enqueue_refuses_a_payload_that_is_not_an_object(database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["enqueue", "t", "[1]"]) == 2
    assert "payload must be a JSON object" in capsys.readouterr().err
    assert main(["enqueue", "t", "{oops"]) == 2
    assert "payload is not valid JSON" in capsys.readouterr().err


def test_commands_without_a_database_url_say_so(monkeypatch, capsys):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["migrate"]) == 2
    assert "DATABASE_URL is not set" in capsys.readouterr().err


def test_migrate_twice(database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["migrate"]) == 0
    assert capsys.readouterr().out.strip() == "up to date"


def test_prune_deletes_old_finished_jobs_and_with_files_their_files(
    database_url, monkeypatch, capsys, tmp_path
):
    import psycopg

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("LOCAL_STORAGE_DIR", str(tmp_path))
    with psycopg.connect(database_url, autocommit=True) as conn:
        old, recent, pending = (
            conn.execute("insert into job_queue (job_type) values ('t') returning id").fetchone()[0]
            for _ in range(3)
        )
        conn.execute(
            "update job_queue set status = 'completed', completed_at = now() - interval '20 days'"
            " where id = %s",
            (old,),
        )
        conn.execute(
            "update job_queue set status = 'completed', completed_at = now() where id = %s",
            (recent,),
        )
        stored = tmp_path / "p1" / str(old) / "main.jpg"
        stored.parent.mkdir(parents=True)
        stored.write_bytes(b"jpeg")
        conn.execute(
            "insert into generated_images (job_id, project_id, kind, slot, storage_path, url,"
            " width, height, mime_type, provider, model) values (%s, 'p1', 'main', 'main', %s,"
            " 'u', 1, 1, 'image/jpeg', 'demo', 'm')",
            (old, f"p1/{old}/main.jpg"),
        )
        assert main(["prune", "--with-files", "--batch", "1"]) == 0
        out = capsys.readouterr().out
        assert "deleted 1 completed and 0 failed or cancelled job(s)" in out
        assert "1 file(s)" in out
        assert not stored.exists()
        left = {r[0] for r in conn.execute("select id from job_queue").fetchall()}
        assert left == {recent, pending}
        # An age given on the command line overrides job_queue_settings.
        assert main(["prune", "--completed-days", "0"]) == 0
        assert "deleted 1 completed" in capsys.readouterr().out
