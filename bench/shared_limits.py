"""Provider limits shared by two processors, against a fake Gemini with a quota per window.

    .venv/bin/python bench/shared_limits.py [--packs 50] [--quota 20] [--window 2]

Two `processor` services (in-process, on one private database) share 50 packs (300 image
calls). The fake answers 429 RESOURCE_EXHAUSTED with RetryInfo beyond `quota` calls per
`window` seconds. Run twice: without PROVIDER_LIMITS (each 429 pauses both processors until its
RetryInfo, nothing else), and with PROVIDER_LIMITS at 90% of the quota. Reports 429s, attempts
spent, postponements and wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time

import httpx
import psycopg
from common import TOKEN, private_database
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from processor.logging import configure
from processor.ops.pgcluster import free_port
from processor.settings import Settings
from processor.web.app import create_app
from tests.fakes import FakeGemini
from tests.support import ThreadedServer

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def service(url: str, storage: str, env: dict[str, str]) -> ThreadedServer:
    port = free_port()
    settings = Settings.from_env(
        {
            "DATABASE_URL": url,
            "PROCESSOR_TOKEN": TOKEN,
            "PROCESSOR_URL": f"http://127.0.0.1:{port}",
            "LOCAL_STORAGE_DIR": storage,
            "LOG_LEVEL": "error",
            "LISTEN_FOR_JOBS": "off",
            **env,
        }
    )
    return ThreadedServer(create_app(settings), port).__enter__()


def run(url: str, storage: str, packs: int, quota: int, window: float, limits: bool) -> dict:
    fake = FakeGemini(limit=(quota, window))
    with (
        ThreadedServer(fake.app()) as gemini,
        psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn,
    ):
        conn.execute("truncate job_queue, provider_calls, provider_limits, provider_slots cascade")
        env = {
            "GEMINI_API_KEY": fake.api_key,
            "GEMINI_BASE_URL": f"{gemini.url}/v1beta",
            "IMAGE_PROVIDER": "gemini",
        }
        if limits:
            per_minute = quota * 60 / window * 0.9
            env["PROVIDER_LIMITS"] = json.dumps({"gemini": {"per_minute": per_minute}})
        servers = [service(url, storage, env) for _ in range(2)]
        conn.execute(
            "insert into job_queue (job_type, payload) select 'generate-complete-pack', %s"
            " from generate_series(1, %s)",
            (Jsonb({"project_id": "bench", "product": {"name": "Mug"}}), packs),
        )
        stop = threading.Event()

        def caller(server: ThreadedServer) -> None:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    httpx.post(f"{server.url}/process-jobs", json={"limit": 10, "wait": True},
                               headers=AUTH, timeout=120)  # fmt: skip
                time.sleep(0.2)

        threads = [threading.Thread(target=caller, args=(s,)) for s in servers]
        started = time.perf_counter()
        for t in threads:
            t.start()
        while conn.execute(
            "select count(*) as n from job_queue where status in ('pending', 'processing')"
        ).fetchone()["n"]:
            time.sleep(0.2)
        took = time.perf_counter() - started
        stop.set()
        for t in threads:
            t.join()
        for s in servers:
            s.__exit__(None, None, None)
        row = conn.execute(
            "select count(*) filter (where status = 'completed') as completed,"
            " sum(retry_count) as attempts_spent, sum(postponements) as postponed"
            " from job_queue"
        ).fetchone()
    first = min((c for c in fake.windows), default=0)
    return {**row, "429s": fake.limited, "calls": len(fake.calls), "seconds": took,
            "first_window": first}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--packs", type=int, default=50)
    parser.add_argument("--quota", type=int, default=20)
    parser.add_argument("--window", type=float, default=2.0)
    args = parser.parse_args()
    configure("console", "error")
    ideal = args.packs * 6 / args.quota * args.window
    print(
        f"{args.packs} packs ({args.packs * 6} image calls), two processors; fake Gemini "
        f"quota {args.quota} calls per {args.window:g} s; ideal {ideal:.0f} s"
    )
    print("| PROVIDER_LIMITS | completed | 429s | attempts spent | postponed | wall time |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    with private_database() as (cluster, folder):
        for limits in (False, True):
            r = run(cluster.url, str(folder / "storage"), args.packs, args.quota, args.window,
                    limits)  # fmt: skip
            label = "per_minute at 90% of the quota" if limits else "none (pauses only)"
            print(
                f"| {label} | {r['completed']} | {r['429s']} | {r['attempts_spent']} | "
                f"{r['postponed']} | {r['seconds']:.1f} s |"
            )


if __name__ == "__main__":
    main()
