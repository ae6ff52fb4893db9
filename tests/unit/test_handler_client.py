"""The handler client against real sockets: a scripted HTTP/1.1 server on 127.0.0.1, on the
standard event loop and on uvloop (what `processor serve` runs on)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from processor.queue.handler_client import (
    AnswerTooLarge,
    ConnectionLost,
    HandlerCallError,
    HandlerClient,
)

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[bool]]


def run(loop_kind: str, test: Callable[[], Awaitable[None]]) -> None:
    factory = uvloop.new_event_loop if loop_kind == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(test())


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


class Server:
    """Counts connections and requests; `script` answers each request (False: close after)."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/jobs/run?x=1"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    self.requests.append(await read_request(reader))
                except asyncio.IncompleteReadError:
                    return
                if not await self.script(reader, writer, len(self.requests)):
                    return
        finally:
            writer.close()


def json_answer(status: int, body: bytes) -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        status,
        len(body),
        body,
    )


LOOPS = ["asyncio", "uvloop"]


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_calls_reuse_one_keep_alive_connection_and_send_the_exact_request(loop_kind):
    async def script(reader, writer, n) -> bool:
        writer.write(json_answer(200, b'{"result": %d}' % n))
        return True

    async def test() -> None:
        server = Server(script)
        async with server as url:
            client = HandlerClient(4)
            answers = [
                await client.post(url, b'{"job": %d}' % i, {"X-Test": "yes"}, 5) for i in range(3)
            ]
            await client.close()
        assert [(a.status, a.json()) for a in answers] == [(200, {"result": n}) for n in (1, 2, 3)]
        assert answers[0].headers["content-type"] == "application/json"
        assert server.connections == 1
        first = server.requests[0]
        assert first.startswith(b"POST /jobs/run?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")
        assert b"\r\nX-Test: yes\r\n" in first and first.endswith(b'\r\n\r\n{"job": 0}')

    run(loop_kind, test)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_chunked_and_close_delimited_answers_are_read_whole(loop_kind):
    async def script(reader, writer, n) -> bool:
        if n == 1:
            writer.write(
                b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )
            return True
        writer.write(b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\nlast words")
        await writer.drain()
        return False

    async def test() -> None:
        async with Server(script) as url:
            client = HandlerClient(2)
            chunked = await client.post(url, b"{}", {}, 5)
            closing = await client.post(url, b"{}", {}, 5)
            await client.close()
        assert (chunked.status, chunked.body) == (201, b"hello world")
        assert (closing.status, closing.body) == (500, b"last words")

    run(loop_kind, test)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_an_idle_connection_the_handler_closed_is_discarded_before_anything_is_written(loop_kind):
    async def script(reader, writer, n) -> bool:
        writer.write(json_answer(200, b"{}"))
        await writer.drain()
        return False  # answers without "Connection: close", then hangs up while idle

    async def test() -> None:
        server = Server(script)
        async with server as url:
            client = HandlerClient(2)
            await client.post(url, b"{}", {}, 5)
            await asyncio.sleep(0.1)
            second = await client.post(url, b"{}", {}, 5)
            await client.close()
        assert second.status == 200
        assert (server.connections, len(server.requests)) == (2, 2)

    run(loop_kind, test)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_a_request_is_written_once_even_when_the_handler_hangs_up_after_reading_it(loop_kind):
    """A handler that reads each request and closes without answering: the request reached it
    (it may have acted), so the client reports a lost connection and never sends it again,
    on a reused connection and on a fresh one alike."""

    async def script(reader, writer, n) -> bool:
        if n == 1:
            writer.write(json_answer(200, b"{}"))  # the first call leaves a kept connection
            await writer.drain()
            return True
        return False  # read, then hang up

    async def test() -> None:
        server = Server(script)
        async with server as url:
            client = HandlerClient(2)
            await client.post(url, b"{}", {}, 5)
            with pytest.raises(ConnectionLost, match="after the request was sent"):
                await client.post(url, b'{"n":2}', {}, 5)  # on the kept connection
            with pytest.raises(ConnectionLost, match="after the request was sent"):
                await client.post(url, b'{"n":3}', {}, 5)  # on a new one
            await client.close()
        assert len(server.requests) == 3  # each request exactly once
        assert server.requests[1].endswith(b'{"n":2}')
        assert server.requests[2].endswith(b'{"n":3}')

    run(loop_kind, test)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_a_slow_handler_times_out_and_its_connection_is_not_reused(loop_kind):
    async def script(reader, writer, n) -> bool:
        if n == 1:
            await asyncio.sleep(1)
        writer.write(json_answer(200, b"{}"))
        return True

    async def test() -> None:
        server = Server(script)
        async with server as url:
            client = HandlerClient(2)
            with pytest.raises(TimeoutError):
                await client.post(url, b"{}", {}, 0.2)
            assert (await client.post(url, b"{}", {}, 5)).status == 200
            await client.close()
        assert server.connections == 2

    run(loop_kind, test)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_unreachable_and_non_http_handlers_raise_a_clear_error(loop_kind):
    async def garbage(reader, writer, n) -> bool:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        return True

    async def test() -> None:
        client = HandlerClient(2)
        with pytest.raises(HandlerCallError, match=r"cannot connect to 127\.0\.0\.1:1"):
            await client.post("http://127.0.0.1:1/x", b"{}", {}, 5)
        async with Server(garbage) as url:
            with pytest.raises(HandlerCallError, match="not an HTTP answer"):
                await client.post(url, b"{}", {}, 5)
        await client.close()

    run(loop_kind, test)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_an_answer_over_the_size_limit_is_refused(loop_kind):
    async def script(reader, writer, n) -> bool:
        writer.write(json_answer(200, b"x" * 5000))
        return True

    async def test() -> None:
        async with Server(script) as url:
            client = HandlerClient(2, max_answer_bytes=1000)
            with pytest.raises(AnswerTooLarge, match="5000 bytes; the limit is 1000"):
                await client.post(url, b"{}", {}, 5)
            await client.close()

    run(loop_kind, test)


def test_calls_beyond_the_connection_limit_wait_for_a_free_connection():
    in_flight = 0
    most = 0

    async def script(reader, writer, n) -> bool:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        writer.write(json_answer(200, b"{}"))
        return True

    async def test() -> None:
        server = Server(script)
        async with server as url:
            client = HandlerClient(3)
            answers = await asyncio.gather(*(client.post(url, b"{}", {}, 5) for _ in range(12)))
            await client.close()
        assert [a.status for a in answers] == [200] * 12
        assert server.connections == 3

    run("asyncio", test)
    assert most == 3
