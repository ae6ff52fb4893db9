"""Fixtures: one real PostgreSQL cluster with pg_cron per test session, a migrated template
database, and a fresh copy of it for every test that asks for one."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from processor.ops.migrate import migrate
from processor.ops.pgcluster import LocalCluster, free_port
from tests.support import (
    CLIENTS,
    TOKEN,
    PgBouncer,
    ScriptedHandler,
    ThreadedServer,
    throwaway_cluster,
)

TEMPLATE = "processor_template"


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    with throwaway_cluster() as pg:
        yield pg


@pytest.fixture(scope="session")
def template_db(cluster: LocalCluster) -> str:
    cluster.create_database(TEMPLATE)
    migrate(cluster.url_for(TEMPLATE))
    return TEMPLATE


@pytest.fixture
def database_url(cluster: LocalCluster, template_db: str) -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    cluster.create_database(name, template=template_db)
    try:
        yield cluster.url_for(name)
    finally:
        cluster.drop_database(name)


@pytest.fixture(scope="session")
def poolers(cluster: LocalCluster) -> Iterator[dict[str, PgBouncer]]:
    """PgBouncer in front of the test cluster, once in each pool mode."""
    if not PgBouncer.available():
        if os.environ.get("CI"):
            pytest.fail("pgbouncer is not installed: `make system-deps` installs it")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    with PgBouncer(cluster, "transaction") as tx, PgBouncer(cluster, "session") as session:
        yield {"transaction": tx, "session": session}


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as c:
        yield c


@pytest.fixture(scope="session")
def handler_server() -> Iterator[tuple[ThreadedServer, ScriptedHandler]]:
    handler = ScriptedHandler()
    with ThreadedServer(handler.app()) as server:
        yield server, handler


@pytest.fixture
def handler(handler_server: tuple[ThreadedServer, ScriptedHandler]) -> ScriptedHandler:
    handler_server[1].reset()
    return handler_server[1]


@pytest.fixture
def handler_url(handler_server: tuple[ThreadedServer, ScriptedHandler]) -> str:
    return handler_server[0].url


@pytest.fixture
def make_service(database_url: str, handler_url: str, tmp_path: Path) -> Iterator:
    """Starts the processor on a real port against this test's database. Job types
    'ok', 'slow' … all route to the scripted handler; extra settings override the defaults.
    It does not LISTEN for inserts unless asked (LISTEN_FOR_JOBS=on): most tests drive
    /process-jobs themselves and must not race the listener."""
    from processor.settings import Settings
    from processor.web.app import create_app

    servers: list[ThreadedServer] = []

    def start(env: dict[str, str] | None = None, **overrides: object) -> ThreadedServer:
        routes = {t: f"{handler_url}/{t}" for t in ("ok", "echo", "flaky", "slow", "bad")}
        port = free_port()
        base = {
            "DATABASE_URL": database_url,
            "PROCESSOR_TOKEN": TOKEN,
            "PROCESSOR_URL": f"http://127.0.0.1:{port}",
            "JOB_ROUTES": json.dumps(routes),
            "LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
            "LOG_FORMAT": "json",
            "LISTEN_FOR_JOBS": "off",
            **(env or {}),
        }
        settings = Settings.from_env(base, **overrides)
        server = ThreadedServer(create_app(settings), port).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


@pytest.fixture
def fake_gemini():
    """A fake Gemini server (tests.fakes), and the settings that point the processor at it."""
    from tests.fakes import FakeGemini

    fake = FakeGemini()
    with ThreadedServer(fake.app()) as server:
        yield (
            fake,
            {
                "GEMINI_API_KEY": fake.api_key,
                "GEMINI_BASE_URL": f"{server.url}/v1beta",
                "IMAGE_PROVIDER": "gemini",
            },
        )


@pytest.fixture(autouse=True)
def _close_clients():
    """Closes the signed-in status-page clients a test made (tests.support.signed_in)."""
    yield
    while CLIENTS:
        CLIENTS.pop().close()
