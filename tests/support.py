"""Test support: real HTTP servers in threads, and a scriptable job handler."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from processor.ops.pgcluster import free_port


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
