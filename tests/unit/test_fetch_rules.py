from __future__ import annotations

import asyncio
import ipaddress
from urllib.parse import quote

import pytest
from starlette.applications import Starlette
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from processor.images import fetch
from processor.queue.dispatch import json_depth
from tests.support import ThreadedServer


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
        "0.0.0.0", "224.0.0.1",  # noqa: S104 "255.255.255.255", "240.0.0.1",
        "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:1::",
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",
        "192.88.99.1", "fec0::1", "3fff::1",  # 6to4 relay anycast, site-local, RFC 9637 docs
    ],
)  # fmt: skip
def test_private_and_special_addresses_are_refused(address):
    assert fetch.refused_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address):
    assert not fetch.refused_address(ipaddress.ip_address(address))


def test_every_redirect_hop_is_checked():
    """A server the fetcher may reach redirects to an address it may not (here, with a rule
    that refuses only 127.0.0.2): the hop is refused before connecting."""

    async def hop(request):
        return RedirectResponse(request.query_params["to"], 302)

    async def photo(request):
        return Response(b"png", media_type="image/png")

    async def loop(request):
        return RedirectResponse("/loop", 302)

    app = Starlette(routes=[Route("/hop", hop), Route("/photo", photo), Route("/loop", loop)])
    with ThreadedServer(app) as server:

        async def run(to: str) -> bytes:
            fetcher = fetch.Fetcher(allow_private=True)
            try:
                return (await fetcher.get(f"{server.url}/hop?to={quote(to)}", 1000)).body
            finally:
                await fetcher.close()

        assert asyncio.run(run(f"{server.url}/photo")) == b"png"
        with pytest.raises(fetch.FetchRefused):
            asyncio.run(run("file:///etc/passwd"))
        with pytest.raises(fetch.FetchRefused, match="too many redirects"):
            asyncio.run(run(f"{server.url}/loop"))

        async def only_first_hop_allowed() -> None:
            fetcher = fetch.Fetcher(refuse=lambda a: str(a) == "127.0.0.2")
            try:
                first = await fetcher.get(f"{server.url}/photo", 1000)
                assert first.body == b"png"
                second = f"http://127.0.0.2:{server.port}/photo"
                await fetcher.get(f"{server.url}/hop?to={quote(second)}", 1000)
            finally:
                await fetcher.close()

        with pytest.raises(fetch.FetchRefused):
            asyncio.run(only_first_hop_allowed())

        async def strict() -> None:
            fetcher = fetch.Fetcher(allow_private=False)
            try:
                await fetcher.get(f"{server.url}/photo", 1000)
            finally:
                await fetcher.close()

        with pytest.raises(fetch.FetchRefused):
            asyncio.run(strict())


@pytest.mark.parametrize(
    "url, expected",
    [
        ("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11:9101/a.png", "http://127.0.0.1:9101/a.png"),
        ("http://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/", "http://127.0.0.1/"),
        ("https://b\u00fccher.example/f\u00fc\u00df.png?q=\u00e9", "https://xn--bcher-kva.example/f%C3%BC%C3%9F.png?q=%C3%A9"),
        ("https://example.com/plain.png", "https://example.com/plain.png"),
    ],
)  # fmt: skip
def test_a_non_ascii_url_is_made_ascii_before_the_address_check(url, expected):
    assert fetch.ascii_url(url) == expected


def test_a_fullwidth_loopback_host_is_refused_not_a_crash():
    async def run() -> None:
        fetcher = fetch.Fetcher(allow_private=False)
        try:
            await fetcher.get("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11:9/a.png", 1000)
        finally:
            await fetcher.close()

    with pytest.raises(fetch.FetchRefused):
        asyncio.run(run())
    with pytest.raises(fetch.FetchRefused, match="not a valid internationalised name"):
        fetch.ascii_url("http://a\u0000\u00e9b.example/")


def test_json_depth_counts_without_decoding_and_ignores_brackets_in_strings():
    assert json_depth('{"a": [1, {"b": "[[[[{{{{"}]}', 100) == 3
    assert json_depth("[" * 5000 + "]" * 5000, 600) == 600
