"""The command line in an 80-column terminal: `processor jobs` keeps status, attempt and
progress whole (it drops less useful columns first), and `processor status` never cuts a URL."""

from __future__ import annotations

from psycopg.types.json import Jsonb

from processor.cli import main

LONG_URL = "http://127.0.0.1:8000/files/p1/97cd07e1-2ecf-4d32-bc00-a3e37c0c5d11/main-white.png"


def test_jobs_at_80_columns_keeps_status_attempt_and_progress_whole(
    conn, database_url, monkeypatch, capsys
):
    conn.execute(
        "insert into job_queue (job_type, status, progress, error_message, completed_at) values"
        " ('generate-complete-pack', 'completed', %s, null, now()),"
        " ('generate-complete-pack', 'processing', %s, null, null),"
        " ('generate-image', 'failed', null, %s, now())",
        (Jsonb({"done": 6, "total": 6}), Jsonb({"done": 3, "total": 6}), "x" * 300),
    )
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["jobs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80
    header = lines[0].split()
    assert {"id", "status", "attempt", "progress"} <= set(header)
    body = "\n".join(lines[1:])
    assert "completed" in body and "processing" in body and "failed" in body
    assert "6/6" in body and "3/6" in body and "1/4" in body
    # At 120 columns the error and created columns come back.
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["jobs"]) == 0
    assert {"error", "created"} <= set(capsys.readouterr().out.splitlines()[0].split())


def test_status_at_80_columns_prints_every_url_whole(conn, database_url, monkeypatch, capsys):
    job_id = conn.execute(
        "insert into job_queue (job_type, status, result, completed_at) values"
        " ('generate-image', 'completed', %s, now()) returning id",
        (Jsonb({"images": [{"slot": "main_white", "url": LONG_URL},
                           {"slot": "x", "url": "http://h/short.png"}]}),),
    ).fetchone()["id"]  # fmt: skip
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["status", str(job_id)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert LONG_URL in lines  # whole, on a line of its own
    assert any("http://h/short.png" in line and "x" in line for line in lines)
