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

from processor.pgcluster import free_port


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
