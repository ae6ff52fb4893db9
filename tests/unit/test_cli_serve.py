"""The address `processor serve` calls its own built-in handlers at when PROCESSOR_URL is unset:
where it listens, and loopback when it listens on every address (a container's 0.0.0.0), never
the unroutable 0.0.0.0 itself."""

from __future__ import annotations

import pytest

from processor.cli.operate import own_url


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 8000, "http://127.0.0.1:8000"),
        ("0.0.0.0", 8080, "http://127.0.0.1:8080"),  # noqa: S104
        ("::", 8000, "http://127.0.0.1:8000"),
        ("::1", 9000, "http://[::1]:9000"),
        ("10.0.0.5", 8000, "http://10.0.0.5:8000"),
    ],
)
def test_own_url(host, port, url):
    assert own_url(host, port) == url
