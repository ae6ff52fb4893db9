"""`processor dev`: the whole stack on one machine — a private PostgreSQL with pg_cron, the
migrations, the cron job and the pg_net stand-in, and the server — owned by one process.

One checkout runs one dev stack: a second `processor dev` finds the first one's lock, says
where it runs, and leaves it alone. A port that is taken is refused before anything starts.
Ctrl-C (or SIGTERM) stops the server, then the database, and exits 0.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from processor.errors import ProcessorError
from processor.ops import migrate, schedule
from processor.ops.pgcluster import LocalCluster
from processor.settings import Settings, new_token

LOCK_NAME = "dev.lock"


class AlreadyRunning(ProcessorError):
    pass


@contextlib.contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """Holds the checkout's dev lock for as long as the stack runs (released by the kernel if
    the process dies, so a crash never leaves a stale lock)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise AlreadyRunning(
            f"processor dev is already running for this checkout ({owner}); it is left as it "
            "is. Use that one, or stop it (Ctrl-C in its terminal) first."
        ) from None
    try:
        yield
    finally:
        handle.close()


def _claim_lock_note(folder: Path, text: str) -> None:
    (folder / LOCK_NAME).write_text(text)


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def dev_token(folder: Path) -> tuple[str, str]:
    """PROCESSOR_TOKEN from the environment, else one generated once and kept in a 0600 file.
    Returns (token, how to get it in a shell) so the token itself is never printed."""
    if os.environ.get("PROCESSOR_TOKEN"):
        return os.environ["PROCESSOR_TOKEN"], "$PROCESSOR_TOKEN"
    path = folder / "token"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(new_token())
    return path.read_text().strip(), f"$(cat {path})"


def banner(database_url: str, base: str, token_ref: str) -> str:
    """What `processor dev` prints once it is up. Every command pastes into a shell as printed
    (SQL strings are dollar-quoted inside single quotes, so no quote needs escaping)."""
    insert = (
        "insert into job_queue (job_type, payload) values ($$generate-complete-pack$$, "
        '$${"project_id": "p1", "product": {"name": "Ceramic Mug"}}$$) returning id'
    )
    select = (
        "select id, status, progress->>'done' as done, result->'images'->0->>'url' as main "
        "from job_queue order by created_at desc limit 5"
    )
    return "\n".join(
        [
            "",
            "processor dev",
            f"  DATABASE_URL={database_url}",
            f"  serving on   {base}",
            f"  token        {token_ref}",
            "",
            "Try it (another terminal): a new job starts at once, nobody calls anything",
            f"  export DATABASE_URL={database_url}",
            f"  psql \"$DATABASE_URL\" -c '{insert}'",
            f'  psql "$DATABASE_URL" -c "{select}"',
            f'  curl -s {base}/jobs/<id> -H "Authorization: Bearer {token_ref}"',
            "  .venv/bin/processor verify",
            "Ctrl-C stops the server and the database.",
            "",
        ]
    )


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # handled like Ctrl-C: stop the server, then the database


@contextlib.contextmanager
def owning_the_terminal() -> Iterator[None]:
    """Makes this process the terminal's foreground process group while it runs, so Ctrl-C
    reaches it (and the database it starts) but not a `make` above it: `make dev` then ends
    with this process's exit status (0) instead of make's own "Interrupt" (130). The terminal
    is handed back on the way out. Without a terminal this does nothing."""
    try:
        fd = sys.stdin.fileno()
        before = os.tcgetpgrp(fd) if os.isatty(fd) else None
    except (OSError, ValueError):
        before = None
    if before is None or before != os.getpgrp() or os.getpid() == os.getpgrp():
        yield  # not a foreground child of another program (e.g. run from a shell directly)
        return
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # tcsetpgrp from the background
    try:
        os.setpgid(0, 0)
        os.tcsetpgrp(fd, os.getpgrp())
    except OSError:
        signal.signal(signal.SIGTTOU, previous)
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(fd, before)
        signal.signal(signal.SIGTTOU, previous)


def run(host: str, port: int, pg_port: int, serve: Callable[[Settings, str, int], None]) -> int:
    root = Path.cwd()
    cluster = LocalCluster.for_project(root, pg_port)
    folder = cluster.data_dir.parent
    base = f"http://{host}:{port}"
    with exclusive(folder), owning_the_terminal():
        if not port_free(host, port):
            raise ProcessorError(
                f"port {port} on {host} is taken by another program: pick another with "
                f"`make dev PORT=…` (or `processor dev --port …`)"
            )
        _claim_lock_note(folder, f"pid {os.getpid()}, serving on {base}")
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        print(f"Starting private PostgreSQL (pg_cron) in {cluster.data_dir} on port {pg_port} ...")
        cluster.start()
        try:
            applied = migrate.migrate(cluster.url)
            print(f"Migrations: {len(applied)} applied" if applied else "Migrations: up to date")
            token, token_ref = dev_token(folder)
            env = {
                **os.environ,
                "DATABASE_URL": cluster.url,
                "PROCESSOR_TOKEN": token,
                "PROCESSOR_URL": os.environ.get("PROCESSOR_URL", base),
            }
            settings = Settings.from_env(env, run_relay=True)
            result = schedule.schedule(cluster.url, env["PROCESSOR_URL"], token, local=True)
            print(
                f"Cron job '{schedule.JOB_NAME}': every '{result.schedule}' "
                f"(pg_cron {result.cron_version}), instant pickup on insert, "
                f"pg_net: {result.net} (the relay runs inside this server)"
            )
            if result.warning:
                print(f"Note: {result.warning}")
            print(banner(cluster.url, base, token_ref), flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                serve(settings, host, port)
        finally:
            print("Stopping private PostgreSQL ...", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                cluster.stop()
            sys.stdout.flush()
    return 0
