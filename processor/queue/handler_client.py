"""The client that carries job calls to handlers: HTTP/1.1 POSTs over a pool of keep-alive
connections, at most one request per connection at a time, responses parsed by httptools (the
C parser uvicorn uses).

Why not httpx or aiohttp: this is the processor's hottest path (one call per job, thousands a
second), and measured on a 2-core machine against a no-op handler on loopback httpx spent
about 3 ms of CPU per call (its pool rescans every connection on each request) and aiohttp
about 0.3 ms; at that cost the client, not the database, bounded the whole service. A handler
call needs a small slice of HTTP: one POST with a JSON body, a status, headers and a body
back, no redirects, cookies, proxies or compression. That slice, with TLS, chunked answers,
time-outs and keep-alive, is what this module does, in ~0.05 ms a call. httpx stays the
client for the AI providers.
"""

from __future__ import annotations

import asyncio
import select
import ssl
from collections import defaultdict
from typing import cast
from urllib.parse import urlsplit

import httptools

from processor.queue.verdict import Answer

MAX_ANSWER_BYTES = 16 * 1024 * 1024


class HandlerCallError(Exception):
    """The handler could not be reached, or its answer was not HTTP."""


class AnswerTooLarge(HandlerCallError):
    """The handler answered more bytes than the processor keeps."""


class ConnectionLost(HandlerCallError):
    """The connection ended after the request was written: the handler may have read and acted
    on it, so it is never sent again within the attempt."""


class _Connection(asyncio.Protocol):
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[Answer] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._headers_done = False
        self._keep_alive = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        delimited = "content-length" in self._headers or "transfer-encoding" in self._headers
        if self._headers_done and not delimited and exc is None:
            self.on_message_complete()  # an answer that ends where the connection ends
        if self._answer is not None and not self._answer.done():
            reason = "connection closed after the request was sent" + (f" ({exc})" if exc else "")
            self._answer.set_exception(ConnectionLost(reason))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HandlerCallError(f"not an HTTP answer: {exc}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True
        declared = self._headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            self._fail(
                AnswerTooLarge(f"the answer is {declared} bytes; the limit is {self.max_bytes}")
            )

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.max_bytes:
            self._fail(AnswerTooLarge(f"the answer is over {self.max_bytes} bytes, the limit"))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        # Asked here: httptools forgets it once the message is done.
        self._keep_alive = self.parser.should_keep_alive()
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(
                Answer(self.parser.get_status_code(), b"".join(self._body), self._headers)
            )

    def _fail(self, exc: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def still_open(self) -> bool:
        """Whether this idle connection can carry a request: not closed, and nothing waiting
        to be read on it (an idle HTTP/1.1 connection that turns readable is at its end, or
        the handler sent something unasked: either way it is not reused)."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return False
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return True
        try:
            readable, _, _ = select.select([sock.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    async def exchange(self, request: bytes) -> Answer:
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._headers, self._body, self._size = {}, [], 0
        self._headers_done = False
        self.transport.write(request)
        answer = await self._answer
        self._answer = None
        if not self._keep_alive:
            self.close()
        return answer


class HandlerClient:
    """POSTs to handlers; at most `max_connections` calls (and connections) at once."""

    def __init__(self, max_connections: int, *, max_answer_bytes: int = MAX_ANSWER_BYTES) -> None:
        self.max_answer_bytes = max_answer_bytes
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: defaultdict[tuple[str, str, int], list[_Connection]] = defaultdict(list)
        self._targets: dict[str, tuple[tuple[str, str, int], bytes]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def post(self, url: str, body: bytes, headers: dict[str, str], within: float) -> Answer:
        """The handler's answer. Raises TimeoutError after `within` seconds, HandlerCallError
        when the handler cannot be reached or does not answer in HTTP."""
        origin, head = self._target(url)
        request = b"".join(
            (
                head,
                b"Content-Length: %d\r\n" % len(body),
                "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1"),
                b"\r\n",
                body,
            )
        )
        async with self._slots, asyncio.timeout(within):
            # One request, written once: an idle connection is checked before anything is
            # written on it, and once written the request is never sent again, whatever
            # becomes of the connection (the handler may have read it and acted).
            conn = self._reusable(origin) or await self._connect(origin)
            try:
                answer = await conn.exchange(request)
            except BaseException:
                conn.close()
                raise
            self._keep(origin, conn)
            return answer

    async def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        # A transport finishes closing on the loop's next turns: let it, before the loop ends.
        for _ in range(3):
            await asyncio.sleep(0)

    def _reusable(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle[origin]
        while idle:
            conn = idle.pop()
            if conn.still_open():
                return conn
            conn.close()
        return None

    def _keep(self, origin: tuple[str, str, int], conn: _Connection) -> None:
        if not conn.closed:
            self._idle[origin].append(conn)

    def _target(self, url: str) -> tuple[tuple[str, str, int], bytes]:
        known = self._targets.get(url)
        if known is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise HandlerCallError(f"not an http(s) URL: {url!r}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            default_port = (parts.scheme, port) in (("http", 80), ("https", 443))
            host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
            host_header = host if default_port else f"{host}:{port}"
            head = f"POST {target} HTTP/1.1\r\nHost: {host_header}\r\n".encode("latin-1")
            known = self._targets[url] = ((parts.scheme, parts.hostname, port), head)
        return known

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        context = None
        if scheme == "https":
            context = self._ssl = self._ssl or ssl.create_default_context()
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                lambda: _Connection(self.max_answer_bytes),
                host,
                port,
                ssl=context,
                server_hostname=host if context else None,
            )
        except (OSError, ssl.SSLError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise HandlerCallError(f"cannot connect to {host}:{port}: {reason}") from exc
        return conn
