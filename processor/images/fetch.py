"""Fetching URLs that come from job payloads (`source_image_url`) without becoming a way into the
network the processor sits in.

Only http and https; at most a few redirects, followed here so each hop is checked; every
connection's address is resolved and checked *before* connecting, and the connection goes to
the address that was checked (a DNS answer cannot change between check and use). Loopback,
private, link-local (cloud metadata included), CGNAT, multicast, reserved and unspecified
addresses are refused, for IPv4 and IPv6 (IPv4-mapped, 6to4 and Teredo forms included).
`ALLOW_PRIVATE_URLS=on` lifts the address rule for local development.

A refused URL says only that it was refused, and a failed fetch only that it failed: nothing
about what answered, or didn't, at an address the job's author should not learn about.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import httpcore
import idna

MAX_REDIRECTS = 5
URL_SAFE = "/%:@!$&'()*+,;=?~-._"  # what stays as it is when a URL is made ASCII
CGNAT = ipaddress.ip_network("100.64.0.0/10")
# Special-purpose ranges Python's ipaddress counts as global: the 6to4 relay anycast (RFC 7526),
# IPv6 site-local (deprecated, RFC 3879, still routed inside some networks) and the IPv6
# documentation range of RFC 9637.
SPECIAL = tuple(ipaddress.ip_network(n) for n in ("192.88.99.0/24", "fec0::/10", "3fff::/20"))
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchRefused(Exception):
    """The URL may not be fetched (scheme, address, too many redirects). The message is safe
    to store: it does not describe the target."""


class FetchFailed(Exception):
    """The URL was allowed but could not be fetched (connection, timeout, garbled answer)."""


class FetchTooLarge(Exception):
    pass


@dataclass(frozen=True)
class Fetched:
    status: int
    body: bytes


def refused_address(address: IPAddress) -> bool:
    """True for every address a payload URL may not reach."""
    if isinstance(address, ipaddress.IPv6Address):
        for embedded in (address.ipv4_mapped, address.sixtofour):
            if embedded is not None:
                return refused_address(embedded)
        if address.teredo is not None:
            return any(refused_address(a) for a in address.teredo)
    return (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv4Address) and address in CGNAT)
        or any(address.version == n.version and address in n for n in SPECIAL)
    )


def ascii_url(url: str) -> str:
    """The URL in the ASCII form DNS, the address check and HTTP see: a host in fullwidth
    digits and dots (U+FF11, U+FF0E, ...) becomes `127.0.0.1`, other names their IDNA form
    (`xn--...`), and non-ASCII characters in the path and query are percent-encoded. A host
    that has no such form, or a bad port, is refused."""
    if url.isascii():
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        raise FetchRefused("the URL's port is not a number from 0 to 65535") from None
    try:
        ascii_host = idna.encode(unicodedata.normalize("NFKC", host), uts46=True).decode()
    except (idna.IDNAError, UnicodeError):
        raise FetchRefused("the host name is not a valid internationalised name") from None
    netloc = ascii_host if ":" not in ascii_host else f"[{ascii_host}]"
    if port is not None:
        netloc += f":{port}"
    if parts.username is not None:
        raise FetchRefused("the URL's authority holds characters a host name cannot")
    return urlunsplit(
        parts._replace(
            netloc=netloc,
            path=quote(parts.path, safe=URL_SAFE),
            query=quote(parts.query, safe=URL_SAFE),
            fragment="",
        )
    )


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks, then connects to the checked address (TLS still verifies the name)."""

    def __init__(self, allow_private: bool, refuse: Callable[[IPAddress], bool]) -> None:
        self.allow_private = allow_private
        self.refuse = refuse
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM),
                timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError("name resolution failed") from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        if not addresses:
            raise httpcore.ConnectError("name resolution failed")
        if not self.allow_private and any(self.refuse(a) for a in addresses):
            raise FetchRefused("refused address")
        return await self._inner.connect_tcp(
            str(addresses[0]), port, timeout, local_address, socket_options
        )

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise FetchRefused("refused address")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class Fetcher:
    """GETs payload URLs under the rules above."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        timeout: float = 30.0,
        user_agent: str = "processor",
        refuse: Callable[[IPAddress], bool] = refused_address,
    ) -> None:
        self.timeout = timeout
        self.user_agent = user_agent
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(),
            max_connections=20,
            network_backend=_GuardedBackend(allow_private, refuse),
        )

    async def close(self) -> None:
        await self._pool.aclose()

    async def get(self, url: str, max_bytes: int) -> Fetched:
        """The final answer's status and body. Raises FetchRefused, FetchFailed, or
        FetchTooLarge when the body is over `max_bytes`."""
        try:
            async with asyncio.timeout(self.timeout * 2):
                return await self._follow(url, max_bytes)
        except TimeoutError:
            raise FetchFailed("timed out") from None

    async def _follow(self, url: str, max_bytes: int) -> Fetched:
        for _ in range(MAX_REDIRECTS + 1):
            url = ascii_url(url)
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise FetchRefused("not an http(s) URL")
            t = self.timeout
            try:
                async with self._pool.stream(
                    "GET",
                    url,
                    headers={"User-Agent": self.user_agent, "Accept": "image/*"},
                    extensions={"timeout": {"connect": t, "read": t, "write": t, "pool": t}},
                ) as response:
                    if response.status in (301, 302, 303, 307, 308):
                        location = _header(response.headers, b"location")
                        if not location:
                            raise FetchFailed("a redirect without a Location")
                        url = urljoin(url, location)
                        continue
                    chunks, size = [], 0
                    async for chunk in response.aiter_stream():
                        size += len(chunk)
                        if size > max_bytes:
                            raise FetchTooLarge(f"larger than {max_bytes // (1024 * 1024)} MB")
                        chunks.append(chunk)
                    return Fetched(response.status, b"".join(chunks))
            except httpcore.TimeoutException:
                raise FetchFailed("timed out") from None
            except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol):
                raise FetchFailed("the connection failed") from None
        raise FetchRefused("too many redirects")


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None
