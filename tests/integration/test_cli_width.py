"""The command line in an 80-column terminal and in a pipe: `processor jobs` keeps types,
status, attempt and progress whole (it drops less useful columns first), `processor status`
never cuts a URL, piped output is not padded, ids are taken by their first characters, and
--help shows only defaults that mean something."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from processor.cli import main
from tests.support import TOKEN

ROOT = Path(__file__).resolve().parents[2]

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


def test_jobs_at_80_columns_shows_every_type_whole_and_ids_the_commands_take(
    conn, database_url, monkeypatch, capsys
):
    ids = [
        conn.execute(
            "insert into job_queue (job_type) values (%s) returning id", (job_type,)
        ).fetchone()["id"]
        for job_type in ("generate-image", "generate-images", "generate-complete-pack")
    ]
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["jobs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80
    cells = [line.split()[:2] for line in lines[1:]]
    assert sorted(t for _, t in cells) == [
        "generate-complete-pack", "generate-image", "generate-images"
    ]  # fmt: skip
    # The ids shown are their first 8 characters, and `status` takes them.
    assert sorted(i for i, _ in cells) == sorted(str(i)[:8] for i in ids)
    assert main(["status", str(ids[2])[:8]]) == 0
    assert str(ids[2]) in capsys.readouterr().out
    # A type longer than the row has room for is cut, not the id, status, attempt or progress.
    conn.execute("insert into job_queue (job_type) values (%s)", ("t" * 200,))
    assert main(["jobs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[0].split()[:5] == ["id", "type", "status", "attempt", "progress"]
    long_row = next(line for line in lines if "ttttt" in line)
    assert (
        long_row.split()[0]
        in {str(i)[:8] for i in ids}
        | {str(r["id"])[:8] for r in conn.execute("select id from job_queue")}
        and "pending" in long_row
        and "1/4" in long_row
    )


def test_piped_output_is_not_padded_and_cuts_nothing(conn, database_url, monkeypatch, capsys):
    job_id = conn.execute(
        "insert into job_queue (job_type, status, result, error_message, completed_at) values"
        " ('generate-complete-pack', 'completed', %s, %s, now()) returning id",
        (Jsonb({"images": [{"slot": "main_white", "url": LONG_URL}]}), "e" * 90),
    ).fetchone()["id"]
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("COLUMNS", raising=False)  # a pipe, as from a shell: no COLUMNS
    for args in (["jobs"], ["status", str(job_id)], ["stats"], ["limits"]):
        assert main(args) == 0, args
        out = capsys.readouterr().out
        assert out.strip(), args
        assert all(line == line.rstrip() for line in out.splitlines()), args
        if args[0] == "jobs":
            assert str(job_id) in out and "generate-complete-pack" in out and "e" * 90 in out
        if args[0] == "status":
            lines = out.splitlines()
            assert any(line.endswith(LONG_URL) and "main_white" in line for line in lines)


def test_every_command_that_takes_an_id_takes_its_first_characters(
    conn, database_url, monkeypatch, capsys
):
    twins = ["9af8b747-0000-4000-8000-000000000001", "9af8b747-1111-4000-8000-000000000002"]
    for job_id in twins:
        conn.execute(
            "insert into job_queue (id, job_type, status, error_message, completed_at)"
            " values (%s, 'generate-image', 'failed', 'boom', now())",
            (job_id,),
        )
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "120")
    # Ambiguous: said, with the matches, and nothing changed.
    assert main(["retry", "9af8b747"]) == 2
    err = capsys.readouterr().err
    assert "9af8b747 matches more than one job" in err and twins[0] in err and twins[1] in err
    assert conn.execute(
        "select count(*) as n from job_queue where status = 'failed'"
    ).fetchone()["n"] == 2  # fmt: skip
    # Enough characters (hyphens or not, any case) name one.
    assert main(["retry", "9AF8B747-0"]) == 0
    assert "retried " + twins[0] in capsys.readouterr().out
    assert main(["cancel", twins[0][:-1]]) == 0
    assert "cancelled " + twins[0] in capsys.readouterr().out
    assert main(["status", twins[1][:13]]) == 0
    assert twins[1] in capsys.readouterr().out
    # None, and too short or not an id: clear refusals.
    assert main(["status", "0123abcd"]) == 1
    assert "no job 0123abcd" in capsys.readouterr().err
    for bad in ("9af8b74", "not-an-id"):
        with pytest.raises(SystemExit) as exit_:
            main(["status", bad])
        assert exit_.value.code == 2
        assert "must be a job id or its first 8 or more characters" in capsys.readouterr().err


def test_help_at_80_columns_says_only_defaults_that_mean_something(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "docs/configuration.md" in top and "Configuration table" not in top
    assert (ROOT / "docs" / "configuration.md").is_file()
    commands = re.findall(r"^    ([a-z][a-z-]+)  ", top, re.M)
    assert {"jobs", "status", "schedule", "verify"} <= set(commands)
    for command in commands:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "(default: None)" not in text and "(default: False)" not in text, command
        assert max(len(line) for line in text.splitlines()) <= 80, command
        # No word broken at its hyphen or a path at its slash: /process-jobs stays whole.
        assert not re.search(r"[a-z]-$", text, re.M), command
    assert "(calls /process-jobs)" in " ".join(top.split())


def test_a_number_out_of_range_is_refused_in_one_wording_by_http_cli_and_sql(
    conn, make_service, monkeypatch, capsys
):
    with pytest.raises(SystemExit):
        main(["jobs", "--limit", "-1"])
    assert "argument --limit: must be an integer from 1 to 1000, got -1" in (
        capsys.readouterr().err
    )
    # The same refusal, the same words, whoever says it.
    with pytest.raises(SystemExit):
        main(["retry", "--status", "failed", "--limit", "0"])
    assert "argument --limit: must be an integer from 1 to 10000, got 0" in capsys.readouterr().err
    with pytest.raises(psycopg.errors.InvalidParameterValue) as sql:
        conn.execute("select * from retry_jobs(p_limit => 0)")
    assert "limit must be an integer from 1 to 10000, got 0" in str(sql.value)
    server = make_service()
    answer = httpx.post(
        f"{server.url}/process-jobs",
        json={"limit": 0},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.status_code == 400
    assert "limit must be an integer from 1 to 50, got 0" in answer.text
    for args, words in (
        (["enqueue", "ok", "--max-retries", "26"], "must be an integer from 0 to 25, got 26"),
        (["set-limit", "a", "--weight", "0"], "must be an integer from 1 to 1000, got 0"),
        (
            ["set-type-limit", "t", "--max-running", "-1"],
            "must be an integer from 0 to 1000000, or none for no cap, got -1",
        ),
    ):
        with pytest.raises(SystemExit):
            main(args)
        assert words in capsys.readouterr().err, args
    for call, words in (
        ("enqueue_job('ok', p_max_retries => 26)", "max_retries must be an integer from 0 to 25"),
        ("set_concurrency_limit('a', 1, 0)", "weight must be an integer from 1 to 1000, got 0"),
        (
            "set_job_type_limit('t', -1)",
            "max_running must be an integer from 0 to 1000000, or null for no cap, got -1",
        ),
    ):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=words):
            conn.execute(f"select {call}")


def test_a_reader_that_stops_early_ends_the_command_quietly(conn, database_url):
    """`processor jobs | head -1` when head has gone before the rows are written: the write
    fails (EPIPE). No traceback; SIGPIPE's status, as other tools end."""
    conn.execute("insert into job_queue (job_type) select 'ok' from generate_series(1, 50)")
    command = subprocess.Popen(
        [sys.executable, "-m", "processor", "jobs"],
        # Buffered, as a shell runs it (the test machine may set PYTHONUNBUFFERED).
        env={
            **{k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
            "DATABASE_URL": database_url,
            "COLUMNS": "",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert command.stdout is not None and command.stderr is not None
    command.stdout.close()  # the reader goes away before the command has written anything
    assert command.wait(timeout=60) == 141
    errors = command.stderr.read()
    command.stderr.close()
    assert "Traceback" not in errors and "BrokenPipe" not in errors, errors
