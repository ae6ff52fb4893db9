"""`processor verify`: every link of the chain, one line each, with the fix when a link is broken.

database → migrations → functions → pg_cron job → cron runs → pg_net → endpoint → queue.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import psycopg

from processor.db import Row, connect, run
from processor.errors import DatabaseError, ProcessorError
from processor.ops import migrate
from processor.ops.schedule import JOB_NAME

# How to (re)install the trigger path, for a real deployment and for the local stack.
SCHEDULE_HINT = (
    "run `processor schedule --url URL` with PROCESSOR_TOKEN set (locally: restart `make dev`, "
    "which does it, or `PROCESSOR_TOKEN=$(cat .data/token) processor schedule --local --url "
    "http://127.0.0.1:8000`)"
)

FUNCTIONS = [
    "enqueue_job",
    "get_next_job",
    "mark_job_processing",
    "mark_job_completed",
    "mark_job_failed",
    "extend_job_lease",
    "requeue_expired_jobs",
    "invoke_job_processor",
]
MAX_DUE_SECONDS = 180  # a due job older than this means nothing is calling the processor
# Storage: dead rows past this share of the live ones (and at least MIN_DEAD) mean vacuum is
# behind; a transaction open this long keeps every dead row since it began.
MAX_DEAD_SHARE = 0.2
MIN_DEAD = 10_000
MAX_XACT_SECONDS = 300
# What one processor opens: its pool (DB_POOL_MAX), the outcome writer's 3 and one LISTEN.
OUTCOME_CONNECTIONS = 3


@dataclass(frozen=True)
class ConnectionPath:
    """How the processor's connections reach PostgreSQL, as far as a client can tell."""

    mode: str  # "direct", "session" (a pooler or proxy keeping sessions) or "transaction"
    evidence: str

    @property
    def transaction_pooler(self) -> bool:
        return self.mode == "transaction"


def connection_path(database_url: str, rounds: int = 3) -> ConnectionPath:
    """Tells a transaction-mode pooler from a session by what it does, not by its port: two
    client connections that share a backend, or one whose backend changes between its
    transactions, can only be behind a pooler that hands out server connections per
    transaction. A server port other than the URL's means a pooler or proxy in between."""
    try:
        url_port = urlsplit(database_url).port or 5432
    except ValueError:
        url_port = None
    with connect(database_url) as a, connect(database_url) as b:
        server_port = None
        for _ in range(rounds):
            first = run(a, "backend")[0]
            server_port = first["port"]
            with b.transaction():  # b holds a server connection while a asks again
                other = run(b, "backend")[0]["pid"]
                again = run(a, "backend")[0]["pid"]
            if other == first["pid"] or again != first["pid"]:
                return ConnectionPath(
                    "transaction",
                    "backend pid changed between transactions"
                    + (f"; server port {server_port}, URL port {url_port}" if server_port else ""),
                )
    if server_port is not None and url_port is not None and server_port != url_port:
        return ConnectionPath(
            "session",
            f"server port {server_port}, URL port {url_port}; the backend stayed with the session",
        )
    return ConnectionPath("direct", "the backend stayed with the session")


@dataclass(frozen=True)
class Check:
    ok: bool
    label: str
    fix: str | None = None
    warning: bool = False  # holds, but needs a look (does not fail verify)

    def line(self) -> str:
        mark = "!" if self.warning else "✓" if self.ok else "✗"
        return f"{mark} {self.label}" + (f"\n    fix: {self.fix}" if self.fix else "")


class Verifier:
    def __init__(
        self,
        conn: psycopg.Connection[Row],
        client: httpx.Client,
        replicas: int = 1,
        database_url: str | None = None,
    ) -> None:
        self.conn = conn
        self.client = client
        self.replicas = replicas
        self.database_url = database_url
        self._path: ConnectionPath | None = None

    @property
    def path(self) -> ConnectionPath | None:
        if self._path is None and self.database_url:
            self._path = connection_path(self.database_url)
        return self._path

    def pooler(self) -> Check:
        """Which pooler mode the URL goes through, and what that means for the processor."""
        path = self.path
        if path is None:
            return Check(True, "connection path: not checked")
        listen = os.environ.get("LISTEN_FOR_JOBS", "on") != "off"
        listen_url = os.environ.get("LISTEN_DATABASE_URL")
        if not path.transaction_pooler:
            kind = "direct connection" if path.mode == "direct" else "session-mode pooler or proxy"
            return Check(
                True,
                f"connection: {kind} ({path.evidence}): LISTEN works, migrations and prepared "
                "statements are safe",
            )
        label = (
            f"connection: transaction-mode pooler ({path.evidence}): no prepared statements "
            "(the processor uses none unless PREPARED_STATEMENTS=on), migrations safe "
            "(transaction-scoped lock), connection budget is the pooler's pool size"
        )
        if os.environ.get("PREPARED_STATEMENTS", "off") == "on":
            return Check(
                False,
                label + "; PREPARED_STATEMENTS=on breaks here",
                "unset PREPARED_STATEMENTS (it is for direct connections only)",
            )
        if listen and not listen_url:
            return Check(
                True,
                label + "; LISTEN cannot work here: pickup waits for pg_net or cron",
                "set LISTEN_DATABASE_URL to the direct or session-mode URL (Supabase: port "
                "5432) for millisecond pickup",
                warning=True,
            )
        return Check(True, label + ("; LISTEN through LISTEN_DATABASE_URL" if listen else ""))

    def migrations(self) -> Check:
        todo = migrate.pending(self.conn)
        if todo:
            return Check(
                False,
                f"migrations: {len(todo)} not applied ({', '.join(m.path.name for m in todo)})",
                "run `processor migrate`",
            )
        return Check(True, f"migrations current ({len(migrate.available())} applied)")

    def functions(self) -> Check:
        missing = run(self.conn, "functions_present", {"names": FUNCTIONS})[0]["missing"]
        if missing:
            return Check(
                False, f"functions missing: {', '.join(missing)}", "run `processor migrate`"
            )
        return Check(True, f"queue functions present ({len(FUNCTIONS)})")

    def cron_job(self) -> Check:
        version = run(self.conn, "cron_version")
        if not version:
            return Check(
                False,
                "pg_cron is not installed in this database",
                "enable pg_cron, then " + SCHEDULE_HINT,
            )
        job = run(self.conn, "cron_job", {"name": JOB_NAME})
        if not job:
            return Check(
                False,
                f"no cron job {JOB_NAME!r} (pg_cron {version[0]['extversion']})",
                SCHEDULE_HINT,
            )
        if not job[0]["active"]:
            return Check(
                False,
                f"cron job {JOB_NAME!r} is inactive",
                SCHEDULE_HINT + " to re-enable it",
            )
        endpoint = run(self.conn, "endpoint")[0]
        if endpoint["token"] and endpoint["token"] in job[0]["command"]:
            return Check(
                False,
                "the cron command contains the processor token",
                "run `processor schedule` again: it stores the token in Vault or "
                "processor_settings and schedules a command without it",
            )
        return Check(
            True,
            f"cron job {JOB_NAME!r} active, every '{job[0]['schedule']}' "
            f"(pg_cron {version[0]['extversion']}); no secret in its command",
        )

    def cron_runs(self) -> Check:
        if not run(self.conn, "cron_version"):
            return Check(False, "cron runs: none can be recorded without pg_cron", "enable pg_cron")
        runs = run(self.conn, "cron_recent_runs", {"name": JOB_NAME})
        if not runs:
            return Check(True, "cron runs: none recorded yet (the first tick is due)")
        last = runs[0]
        if last["status"] not in ("succeeded", "running", "starting"):
            return Check(
                False,
                f"last cron run {last['status']}: {last['return_message']}",
                "see cron.job_run_details; run `processor migrate` if a function is missing",
            )
        return Check(True, f"last cron run {last['status']} at {last['start_time']:%H:%M:%S}")

    def net(self) -> Check:
        state = run(self.conn, "net_state")[0]
        if not state["has_http_post"]:
            return Check(
                False,
                "pg_net is not installed",
                "enable pg_net (`create extension pg_net;`), or `processor schedule "
                "--local` for the local stand-in",
            )
        kind = (
            "pg_net " + state["pg_net_version"]
            if state["pg_net_version"]
            else "local pg_net stand-in"
        )
        first = run(self.conn, "net_queue_waiting")[0]
        if first["queued"]:
            time.sleep(2)  # the queue has no timestamps: see whether it moves
            later = run(self.conn, "net_queue_waiting")[0]
            if later["oldest_id"] == first["oldest_id"]:
                fix = (
                    "start the relay (`processor relay`, or use `processor dev`)"
                    if not state["pg_net_version"]
                    else "check pg_net's background worker"
                )
                return Check(False, f"{kind}: {first['queued']} request(s) are not being sent", fix)
        responses = run(self.conn, "net_recent_responses")
        if not responses:
            return Check(True, f"{kind} present; no calls in the last hour")
        last = responses[0]
        if last["timed_out"] or last["error_msg"] or not 200 <= (last["status_code"] or 0) < 300:
            what = (
                "timed out"
                if last["timed_out"]
                else last["error_msg"] or f"HTTP {last['status_code']}"
            )
            return Check(
                False,
                f"{kind}: last call to the processor failed: {what}",
                "is the processor running at the URL given to `processor schedule`? "
                "(see the endpoint line)",
            )
        ok = sum(1 for r in responses if r["status_code"] and 200 <= r["status_code"] < 300)
        failed = len(responses) - ok
        if failed and failed * 4 >= len(responses):  # a quarter or more of the recent calls
            return Check(
                False,
                f"{kind}: {failed} of the last {len(responses)} calls to the processor failed "
                "(the latest answered 2xx)",
                "see net._http_response for the answers and the processor's log for why; "
                "`curl $URL/healthz` says whether its claims work",
            )
        return Check(True, f"{kind}: last {len(responses)} call(s), {ok} answered 2xx")

    def endpoint(self) -> Check:
        endpoint = run(self.conn, "endpoint")[0]
        if not endpoint["url"] or not endpoint["token"]:
            return Check(
                False,
                "no processor URL/token stored",
                SCHEDULE_HINT,
            )
        url = endpoint["url"]
        try:
            health = self.client.get(f"{url}/healthz", timeout=5)
            # An authenticated request with no side effects: the token is right when a
            # made-up job is 404, wrong when it is 401.
            probe = self.client.get(
                f"{url}/jobs/{uuid.UUID(int=0)}",
                timeout=5,
                headers={"Authorization": f"Bearer {endpoint['token']}"},
            )
        except httpx.HTTPError as exc:
            return Check(
                False,
                f"processor unreachable at {url}: {type(exc).__name__}",
                "start it (`processor serve` / `make dev`), or fix the URL with "
                "`processor schedule --url URL`",
            )
        if probe.status_code == 401:
            return Check(
                False,
                f"processor at {url} rejects the stored token (401)",
                "run `processor schedule` with the PROCESSOR_TOKEN the server uses",
            )
        if health.status_code != 200 or probe.status_code != 404:
            return Check(
                False,
                f"processor at {url} answered healthz {health.status_code}, "
                f"jobs {probe.status_code}",
                "check the processor's log",
            )
        return Check(True, f"processor reachable at {url}, token accepted")

    def queue(self) -> Check:
        row = run(self.conn, "pending_health")[0]
        age = float(row["oldest_due_seconds"] or 0)
        expired = row["expired_leases"]
        problems = []
        if age > MAX_DUE_SECONDS:
            problems.append(f"the oldest due job has waited {age:.0f}s")
        if expired:
            problems.append(f"{expired} job(s) with an expired lease")
        if problems:
            return Check(
                False,
                "queue: " + "; ".join(problems),
                "nothing is calling /process-jobs often enough: check the lines above",
            )
        return Check(True, f"queue: oldest due job {age:.0f}s, no expired leases")

    def storage(self) -> Check:
        """Dead rows vacuum has not removed, and a transaction that stops it from removing them."""
        rows = run(self.conn, "table_health")
        problems, fixes = [], []
        for r in rows:
            dead, live = r["dead_tuples"], r["live_tuples"]
            if dead >= MIN_DEAD and dead > MAX_DEAD_SHARE * live:
                since = r["since_vacuum_seconds"]
                when = f"last vacuum {since / 60:.0f} min ago" if since is not None else "never"
                problems.append(
                    f"{r['table_name']} has {dead:,} dead rows to {live:,} live ({when})"
                )
                fixes.append(
                    f"VACUUM (ANALYZE) {r['table_name']}; if it recurs, lower "
                    f"autovacuum_vacuum_scale_factor for it (ALTER TABLE {r['table_name']} SET "
                    "(autovacuum_vacuum_scale_factor = 0.02))"
                )
        horizon = rows[0]["oldest_xact_seconds"] if rows else None
        if horizon is not None and horizon > MAX_XACT_SECONDS:
            pid = rows[0]["oldest_xact_pid"]
            problems.append(f"transaction of pid {pid} open {horizon / 60:.0f} min: vacuum waits")
            fixes.insert(
                0,
                f"end it (SELECT pg_terminate_backend({pid})) and fix the client that leaves "
                "transactions open",
            )
        if problems:
            return Check(True, "storage: " + "; ".join(problems), "; ".join(fixes), warning=True)
        q = next((r for r in rows if r["table_name"] == "job_queue"), None)
        size = (q["table_bytes"] + q["index_bytes"]) / 2**20 if q else 0
        return Check(True, f"storage: job_queue {size:.1f} MB, dead rows within bounds")

    def connections(self) -> Check:
        """Whether `replicas` processors fit the server's connection limit."""
        pool = int(os.environ.get("DB_POOL_MAX", "10"))
        listen = os.environ.get("LISTEN_FOR_JOBS", "on") != "off"
        if self.path is not None and self.path.transaction_pooler:
            # The listener gives up behind a transaction pooler unless it has a URL of its own;
            # and the server's limit is the pooler's business, not the processors'.
            listen = listen and bool(os.environ.get("LISTEN_DATABASE_URL"))
        each = pool + OUTCOME_CONNECTIONS + int(listen)
        row = run(self.conn, "connection_budget")[0]
        room = row["max_connections"] - row["reserved"] - row["others"]
        need = self.replicas * each
        label = (
            f"connections: {self.replicas} processor(s) x {each} (DB_POOL_MAX {pool} + "
            f"{OUTCOME_CONNECTIONS} outcome + {int(listen)} LISTEN) = {need} of {room} free "
            f"(max_connections {row['max_connections']}, {row['others']} held by other clients)"
        )
        if need > room:
            fit = max(room // each, 0)
            return Check(
                True,
                label,
                f"run at most {fit} processors, lower DB_POOL_MAX, or connect through a pooler "
                "(docs/scale.md: connection budgets)",
                warning=True,
            )
        return Check(True, label)


def verify(database_url: str, out: Callable[[str], None] = print, replicas: int = 1) -> bool:
    """Prints one line per link; returns whether every link holds."""
    try:
        with connect(database_url) as conn:
            version = run(conn, "server_version")[0]["version"]
            out(Check(True, f"database reachable (PostgreSQL {version})").line())
            return _links(conn, out, replicas, database_url)
    except DatabaseError as exc:
        out(
            Check(
                False,
                f"database unreachable: {exc}",
                "check DATABASE_URL and that PostgreSQL is running",
            ).line()
        )
        return False


def _links(
    conn: psycopg.Connection[Row],
    out: Callable[[str], None],
    replicas: int,
    database_url: str | None = None,
) -> bool:
    ok = True
    with httpx.Client() as client:
        verifier = Verifier(conn, client, replicas, database_url)
        for check in (
            verifier.pooler,
            verifier.migrations,
            verifier.functions,
            verifier.cron_job,
            verifier.cron_runs,
            verifier.net,
            verifier.endpoint,
            verifier.queue,
            verifier.storage,
            verifier.connections,
        ):
            try:
                result = check()
            except (psycopg.Error, ProcessorError) as exc:
                result = Check(
                    False,
                    f"{check.__name__}: {exc}",
                    "if it names a missing function, run `processor migrate`; a missing "
                    "extension: enable it",
                )
            ok &= result.ok
            out(result.line())
    return ok
