"""What the tests share: the token, a throwaway cluster, real HTTP servers in threads, a
scriptable job handler, and small helpers to enqueue, claim, read and wait for jobs. Test
modules import from here, never from each other."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn
from psycopg.types.json import Jsonb
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from processor.ops.pgcluster import LocalCluster, free_port


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    """Polls `predicate` until it holds; fails the test naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class ThreadedServer:
    """A real uvicorn server on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            loop="asyncio",  # uvloop cannot close a loop in a thread while handles are open
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@dataclass
class HandlerCall:
    job_id: str
    attempt: int
    authorization: str
    body: dict[str, Any]
    started: float
    signature: str = ""  # the Processor-Signature header
    raw: bytes = b""  # the exact body, as signed
    path: str = ""
    delivery: str = ""  # the Processor-Delivery header

    def verify(self, secret: str, *, path: str | None = None, raw: bytes | None = None) -> int:
        """Checks the call's signature as a handler would (on its own path by default)."""
        from processor.signing import verify

        return verify(
            self.signature,
            self.raw if raw is None else raw,
            secret,
            path=self.path if path is None else path,
            delivery=self.delivery,
        )


@dataclass
class ScriptedHandler:
    """A job handler whose answer is chosen by the job's payload:

    {"respond": {"status": 200, "body": {...}, "text": "...", "delay": 0.5, "fail_times": 2,
                 "echo_headers": true, "bytes": 5000000}}

    children answers 202 {"children": [...]} (wait for them, call again) until a call carries
    dependencies; a call that carries them is answered with the statuses it saw (`saw`).
    fail_times answers 500 for the first N attempts, then the scripted answer; echo_headers
    answers with every request header (in `result`, or in `error` with a 4xx status); bytes
    answers 200 with a JSON string of that many bytes.
    """

    calls: list[HandlerCall] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    most_in_flight: int = 0  # the most calls it was handling at once

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.in_flight = self.most_in_flight = 0

    def calls_for(self, job_id: str) -> list[HandlerCall]:
        with self.lock:
            return [c for c in self.calls if c.job_id == str(job_id)]

    async def handle(self, request: Request) -> Response:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            with self.lock:
                self.in_flight -= 1

    async def _answer(self, request: Request) -> Response:
        raw = await request.body()
        body = json.loads(raw)
        call = HandlerCall(
            body["job_id"],
            body["attempt"],
            request.headers.get("authorization", ""),
            body,
            time.monotonic(),
            request.headers.get("processor-signature", ""),
            raw,
            request.url.path,
            request.headers.get("processor-delivery", ""),
        )
        with self.lock:
            self.calls.append(call)
        spec = body["payload"].get("respond", {})
        if spec.get("delay"):
            await asyncio.sleep(spec["delay"])
        if body["attempt"] <= spec.get("fail_times", 0):
            return JSONResponse({"error": f"transient failure on attempt {body['attempt']}"}, 500)
        if spec.get("children") and not body.get("dependencies"):
            return JSONResponse({"children": spec["children"]}, 202)
        status = spec.get("status", 200)
        if spec.get("echo_headers"):
            headers = dict(request.headers)
            key = "result" if status < 300 else "error"
            return JSONResponse({key: json.dumps(headers) if key == "error" else headers}, status)
        if spec.get("bytes"):
            return JSONResponse({"result": "x" * spec["bytes"]})
        if "text" in spec:
            return PlainTextResponse(spec["text"], status_code=status)
        default = {"result": {"handled": body["job_id"], "attempt": body["attempt"]}}
        if body.get("dependencies"):
            default["result"]["saw"] = [d["status"] for d in body["dependencies"]]
        return JSONResponse(spec.get("body", default), status_code=status)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.handle, methods=["POST"])])


class RawHandler:
    """A bare HTTP/1.1 server in a thread, for handler faults uvicorn will not make: it reads
    each request whole, answers 200 on keep-alive to any path but `/hangup`, and on `/hangup`
    closes the connection without a byte of answer (after acting on the request)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[tuple[str, dict[str, str], bytes]] = []  # path, headers, body
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RawHandler:
        self.thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port), self.loop
        )
        self.server = started.result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def paths(self) -> list[str]:
        return [path for path, _, _ in self.requests]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((path, headers, body))
                if path == "/hangup":
                    return
                answer = b'{"result": {"ok": true}}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
                )
                await writer.drain()
        finally:
            writer.close()


TOKEN = "test-token-Qm7vXc2Rk9Wz4Lp8Hd3Nf6Tb"


@contextmanager
def throwaway_cluster(
    prefix: str = "processor-test-", superuser: str = "postgres"
) -> Iterator[LocalCluster]:
    """A started PostgreSQL cluster with pg_cron in a temporary folder, deleted afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    pg = LocalCluster(folder / "pg", free_port(), fast=True, superuser=superuser)
    pg.start()
    try:
        yield pg
    finally:
        pg.destroy()


class PgBouncer:
    """Debian's PgBouncer in front of a private cluster, as Supabase's pooler (Supavisor) stands
    in front of its database: `mode` is "transaction" (Supabase's port 6543) or "session".
    Every database of the cluster is reachable through it by name, with trust auth; it runs as
    the postgres OS user (PgBouncer refuses root) from a temporary folder, and stops with it."""

    BINARY = "pgbouncer"

    def __init__(self, cluster: LocalCluster, mode: str, pool_size: int = 20) -> None:
        self.cluster = cluster
        self.mode = mode
        self.pool_size = pool_size
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix=f"processor-pgbouncer-{mode}-"))
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def available(cls) -> bool:
        return shutil.which(cls.BINARY) is not None or Path("/usr/sbin/pgbouncer").exists()

    def url_for(self, database_url: str) -> str:
        """The same database as `database_url` (a cluster URL), through this pooler."""
        return database_url.replace(f":{self.cluster.port}/", f":{self.port}/")

    @property
    def log(self) -> str:
        path = self.folder / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> PgBouncer:
        user = self.cluster.superuser
        (self.folder / "users.txt").write_text(f'"{user}" ""\n')
        (self.folder / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={self.cluster.port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.folder / 'users.txt'}\n"
            f"pool_mode = {self.mode}\n"
            "max_client_conn = 1000\n"
            f"default_pool_size = {self.pool_size}\n"
            f"logfile = {self.folder / 'pgbouncer.log'}\n"
            f"admin_users = {user}\n"
        )
        binary = shutil.which(self.BINARY) or "/usr/sbin/pgbouncer"
        command = [binary, str(self.folder / "pgbouncer.ini")]
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
            for child in self.folder.iterdir():
                shutil.chown(child, "postgres")
            command = ["runuser", "-u", "postgres", "--", *command]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/"
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                with psycopg.connect(
                    self.url_for(self.cluster.url), connect_timeout=2, prepare_threshold=None
                ) as conn:
                    conn.execute("select 1")
                return self
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"pgbouncer did not start: {self.log[-2000:]}") from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def add_jobs(conn, n: int, group: str | None, job_type: str = "ok", **cols: Any) -> None:
    """n due jobs of one group (user_id), a millisecond apart in run_at, a minute ago."""
    conn.execute(
        "insert into job_queue (job_type, user_id, priority, run_at) "
        "select %s, %s, %s, now() - interval '1 minute' + g * interval '1 ms' "
        "from generate_series(1, %s) g",
        (job_type, group, cols.get("priority", 0), n),
    )


def enqueue(conn, job_type: str = "ok", respond: dict | None = None, **cols: Any) -> uuid.UUID:
    payload = {"respond": respond} if respond else {}
    return conn.execute(
        "select enqueue_job(%s, %s, p_max_retries => %s) as id",
        (job_type, Jsonb(payload), cols.get("max_retries", 3)),
    ).fetchone()["id"]


def post(server, body: Any = None, token: str | None = TOKEN, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    content = body if isinstance(body, str | bytes) else (json.dumps(body) if body else None)
    return httpx.post(
        f"{server.url}/process-jobs", content=content, headers=headers, timeout=60, **kw
    )


def row(conn, job_id) -> dict:
    return conn.execute("select * from job_queue where id = %s", (job_id,)).fetchone()


FINISHED = {"completed", "failed", "cancelled"}


def run_until(server, conn, job_id, statuses: set[str] = FINISHED, rounds: int = 30) -> dict:
    """Calls /process-jobs (waiting for outcomes) until the job's status is one of `statuses`:
    a job that waits for others (a pack for its images) needs several calls."""
    for _ in range(rounds):
        current = row(conn, job_id)
        if current["status"] in statuses:
            return current
        post(server, {"wait": True})
    raise AssertionError(f"job stayed {row(conn, job_id)['status']}, wanted {statuses}")


def wait_for(conn, job_id, statuses: set[str], timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        current = row(conn, job_id)
        if current["status"] in statuses:
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"job stayed {current['status']}, wanted {statuses}")
        time.sleep(0.05)


PRODUCT = {
    "name": "Ceramic Mug",
    "description": "A 350 ml stoneware mug.",
    "features": ["Holds 350 ml", "Dishwasher safe"],
}


def scrape(url: str) -> dict[str, float]:
    """GET /metrics parsed as Prometheus text: 'name{label="v",...}' (labels sorted) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    response.raise_for_status()
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


CLIENTS: list[httpx.Client] = []


def signed_in(server) -> httpx.Client:
    client = httpx.Client(base_url=server.url, follow_redirects=False)
    CLIENTS.append(client)
    answer = client.post("/ui/login?next=/ui/jobs", data={"token": TOKEN})
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/jobs"
    return client


def csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def add_job(conn: psycopg.Connection, job_type: str = "t", **cols: object) -> uuid.UUID:
    cols = {"job_type": job_type, "payload": Jsonb(cols.pop("payload", {})), **cols}
    names = ", ".join(cols)
    marks = ", ".join(f"%({k})s" for k in cols)
    return conn.execute(
        f"insert into job_queue ({names}) values ({marks}) returning id", cols
    ).fetchone()["id"]


def claim(
    conn: psycopg.Connection,
    limit: int = 1,
    types: list[str] | None = None,
    lease: str = "60 seconds",
) -> list[dict]:
    return conn.execute(
        "select * from claim_jobs('w1', %s, %s, %s::interval)", (limit, types, lease)
    ).fetchall()


def fail_attempt(conn, job_id, message="boom", retryable=True):
    token = job(conn, job_id)["lease_token"]
    return conn.execute(
        "select mark_job_failed(%s, %s, %s, %s) as s", (job_id, token, message, retryable)
    ).fetchone()["s"]


def make_due(conn, job_id):
    conn.execute("update job_queue set run_at = now() where id = %s", (job_id,))


def job(conn: psycopg.Connection, job_id: uuid.UUID) -> dict:
    return conn.execute("select * from job_queue where id = %s", (job_id,)).fetchone()


def store_images(conn: psycopg.Connection, job_id: uuid.UUID, slots: list[str]) -> None:
    """Images a job stored in an earlier run (its checkpoints), as the image handler writes
    them."""
    for slot in slots:
        conn.execute(
            "insert into generated_images (job_id, project_id, slot, kind, storage_path, url,"
            " width, height, mime_type, provider, model) values (%s, 'p1', %s, %s, %s, 'u', 1,"
            " 1, 'image/png', 'demo', 'm')",
            (job_id, slot, slot, f"p1/{job_id}/{slot}.png"),
        )
