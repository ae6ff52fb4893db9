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
