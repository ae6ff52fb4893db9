"""The command line, run as a user runs it, against a real database."""

from __future__ import annotations

import json
import uuid

from processor.cli.commands import main

PAYLOAD = '{"project_id": "p1", "product": {"name": "Mug"}}'


def test_enqueue_status_cancel_and_retry(database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["enqueue", "generate-image", PAYLOAD, "--priority", "5"]) == 0
    job_id = capsys.readouterr().out.strip()
    uuid.UUID(job_id)

    assert main(["status", job_id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["status"], shown["priority"], shown["payload"]) == (
        "pending",
        5,
        {"project_id": "p1", "product": {"name": "Mug"}},
    )
    assert main(["status", job_id]) == 0
    human = capsys.readouterr().out
    assert "generate-image" in human and "pending" in human and "1 of 4" in human

    assert main(["cancel", job_id]) == 0
    assert main(["cancel", job_id]) == 1  # already cancelled
    assert main(["retry", job_id]) == 0
    capsys.readouterr()
    assert main(["stats"]) == 0
    assert "generate-image" in capsys.readouterr().out


def test_enqueue_refuses_a_payload_that_is_not_an_object(database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("JOB_ROUTES", '{"t": "http://127.0.0.1:9/t"}')
    assert main(["enqueue", "t", "[1]"]) == 2
    # In JSON's words, as SQL and the HTTP API say it (not Python's "list").
    assert "payload must be a JSON object, got array" in capsys.readouterr().err
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


def test_enqueue_checks_the_type_and_a_built_in_payload_first(database_url, monkeypatch, capsys):
    import psycopg

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("JOB_ROUTES", raising=False)
    assert main(["enqueue", "thumbnail", "{}"]) == 2
    err = capsys.readouterr().err
    assert "unknown job type 'thumbnail'" in err and "generate-complete-pack" in err
    assert "JOB_ROUTES" in err and "--force" in err
    assert main(["enqueue", "generate-image", '{"product": {}, "kind": "hero"}']) == 2
    err = capsys.readouterr().err
    assert "project_id is required" in err and "kind must be one of" in err
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select count(*) from job_queue").fetchone()[0] == 0
    assert main(["enqueue", "thumbnail", "{}", "--force"]) == 0
    monkeypatch.setenv("JOB_ROUTES", '{"thumbnail": "http://127.0.0.1:9/t"}')
    assert main(["enqueue", "thumbnail", "{}"]) == 0


def test_jobs_lists_newest_first_with_filters(database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)
    ids = []
    for _ in range(3):
        assert main(["enqueue", "generate-image", PAYLOAD]) == 0
        ids.append(capsys.readouterr().out.strip())
    assert main(["cancel", ids[0]]) == 0
    capsys.readouterr()
    assert main(["jobs", "--limit", "2"]) == 0
    listed = capsys.readouterr().out
    assert ids[2] in listed and ids[1] in listed and ids[0] not in listed
    assert listed.index(ids[2]) < listed.index(ids[1])
    assert main(["jobs", "--status", "cancelled"]) == 0
    cancelled = capsys.readouterr().out
    assert ids[0] in cancelled and ids[1] not in cancelled
    assert main(["jobs", "--type", "nothing-like-it"]) == 0
    assert "no jobs matching" in capsys.readouterr().out


def test_enqueue_wait_follows_the_job_and_exits_by_its_outcome(
    make_service, database_url, monkeypatch, capsys
):
    """A running processor (LISTEN on) picks the job up; --wait shows it to the end."""
    make_service({"LISTEN_FOR_JOBS": "on"})
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["enqueue", "generate-complete-pack", PAYLOAD, "--wait", "--timeout", "60"]) == 0
    err = capsys.readouterr().err
    assert "completed" in err and "6/6" in err and "/files/p1/" in err
    bad = '{"project_id": "p1", "product": {"name": "Mug"}, "aspect_ratio": "7:3"}'
    assert (
        main(["enqueue", "generate-complete-pack", bad, "--force", "--wait", "--timeout", "60"])
        == 1
    )
    assert "failed" in capsys.readouterr().err


def test_help_lists_defaults_and_environment_and_there_is_a_version(capsys):
    import pytest

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("processor 0.")
    with pytest.raises(SystemExit):
        main(["enqueue", "--help"])
    text = capsys.readouterr().out
    assert "(default: 3)" in text and "DATABASE_URL" in text and "JOB_ROUTES" in text
    with pytest.raises(SystemExit):
        main(["dev", "--help"])
    assert "PROCESSOR_PG_PORT" in capsys.readouterr().out
