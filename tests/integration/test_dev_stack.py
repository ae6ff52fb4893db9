"""`processor dev` as a newcomer runs it: one stack per checkout, a banner whose commands paste
into a shell as printed, and a clean exit on Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import httpx
import psycopg
import pytest

from processor.ops.pgcluster import LocalCluster, free_port


@pytest.fixture
def checkout(tmp_path):
    """An empty folder to run `processor dev` in; its cluster is deleted afterwards."""
    tmp_path.chmod(0o755)
    yield tmp_path
    shutil.rmtree(LocalCluster.for_project(tmp_path, 0).data_dir.parent, ignore_errors=True)


def start_dev(cwd, port: int, pg_port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PROCESSOR_TOKEN", "DATABASE_URL")}
    env["LOG_FORMAT"] = "json"
    return subprocess.Popen(
        [sys.executable, "-m", "processor", "dev", "--port", str(port), "--pg-port", str(pg_port)],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 90) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError(f"never printed {marker!r}:\n" + "\n".join(lines))


@pytest.mark.slow
def test_one_stack_per_checkout_a_banner_that_pastes_and_ctrl_c_exits_0(checkout):
    tmp_path = checkout
    port, pg_port = free_port(), free_port()
    first = start_dev(tmp_path, port, pg_port)
    try:
        lines = read_until(first, "Uvicorn running")
        base = f"http://127.0.0.1:{port}"
        assert f"  serving on   {base}" in lines
        assert httpx.get(f"{base}/healthz").status_code == 200

        # A second one in the same checkout refuses, and leaves the first alone.
        second = start_dev(tmp_path, free_port(), pg_port)
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 2
        assert "already running for this checkout" in out and f"serving on {base}" in out
        assert httpx.get(f"{base}/healthz").status_code == 200

        # The banner's commands, pasted into a shell as printed.
        url = next(line.split("=", 1)[1] for line in lines if "export DATABASE_URL=" in line)
        commands = [line.strip() for line in lines if line.strip().startswith("psql ")]
        assert len(commands) == 2
        shell = subprocess.run(
            ["bash", "-c", "\n".join(commands)],
            env={**os.environ, "DATABASE_URL": url},
            capture_output=True,
            text=True,
        )
        assert shell.returncode == 0, shell.stderr
        assert "(1 row)" in shell.stdout and "INSERT 0 1" in shell.stdout
        with psycopg.connect(url) as conn:
            assert conn.execute("select count(*) from job_queue").fetchone()[0] == 1
    finally:
        first.send_signal(signal.SIGINT)
        rest, _ = first.communicate(timeout=60)
    assert first.returncode == 0, rest
    assert "Stopping private PostgreSQL" in rest
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/postgres", connect_timeout=2)


@pytest.mark.slow
def test_a_taken_port_is_refused_before_anything_starts(checkout):
    tmp_path = checkout
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start_dev(tmp_path, port, free_port())
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"port {port} on 127.0.0.1 is taken" in out and "make dev PORT=" in out
    assert "Starting private PostgreSQL" not in out
