"""Wall time of one image and of a complete pack, through the whole stack, against the local
fake Gemini server adding a fixed delay to every call.

    .venv/bin/python bench/pack_wall_time.py [--delay 2.0] [--concurrency 1,3,6]

A job is enqueued, /process-jobs is called with {"wait": true}, and the time until the answer
(the job completed) is measured. With a delay d per provider call, a pack of six images ideally
takes ceil(6 / concurrency) * d; the report shows how close the stack comes.
"""

from __future__ import annotations

import argparse
import math
import time

import httpx
import psycopg
from common import TOKEN, private_database
from psycopg.types.json import Jsonb

from processor.logging import configure
from processor.ops.pgcluster import free_port
from processor.settings import Settings
from processor.web.app import create_app
from tests.fakes import FakeGemini
from tests.support import ThreadedServer

PRODUCT = {"name": "Ceramic Mug", "features": ["Holds 350 ml", "Dishwasher safe"]}


def timed_job(url: str, server: ThreadedServer, job_type: str, payload: dict) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select enqueue_job(%s, %s)", (job_type, Jsonb(payload)))
    started = time.perf_counter()
    body = httpx.post(
        f"{server.url}/process-jobs",
        json={"wait": True},
        timeout=600,
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).json()
    elapsed = time.perf_counter() - started
    status = body["outcomes"][0]["status"]
    assert status == "completed", body
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=2.0)
    parser.add_argument("--concurrency", default="1,3,6")
    args = parser.parse_args()
    configure("console", "warning")
    levels = [int(c) for c in args.concurrency.split(",")]

    fake = FakeGemini(delay=args.delay)
    with private_database() as (cluster, folder), ThreadedServer(fake.app()) as gemini:
        print(f"fake Gemini delay per call: {args.delay:.1f} s")
        print(f"{'job':<34} {'calls':>5} {'wall s':>8} {'ideal s':>8} {'ratio':>6}")
        for concurrency in levels:
            port = free_port()
            env = {
                "DATABASE_URL": cluster.url,
                "PROCESSOR_TOKEN": TOKEN,
                "PROCESSOR_URL": f"http://127.0.0.1:{port}",
                "GEMINI_API_KEY": fake.api_key,
                "GEMINI_BASE_URL": f"{gemini.url}/v1beta",
                "LOCAL_STORAGE_DIR": str(folder / "storage"),
                "PACK_CONCURRENCY": str(concurrency),
                "LOG_LEVEL": "warning",
                "LISTEN_FOR_JOBS": "off",  # the benchmark POSTs each job itself, with wait
            }
            runs = [
                (
                    f"complete pack, concurrency {concurrency}",
                    "generate-complete-pack",
                    {},
                    math.ceil(6 / concurrency),
                )
            ]
            if concurrency == levels[0]:  # single images do not depend on the concurrency
                runs[:0] = [
                    ("generate-image (lifestyle)", "generate-image", {"kind": "lifestyle"}, 1),
                    ("generate-image (main)", "generate-image", {"kind": "main"}, 1),
                ]
            with ThreadedServer(create_app(Settings.from_env(env)), port) as server:
                for label, job_type, extra, rounds in runs:
                    before = len(fake.calls)
                    wall = timed_job(
                        cluster.url,
                        server,
                        job_type,
                        {"project_id": "bench", "product": PRODUCT, **extra},
                    )
                    ideal = rounds * args.delay
                    print(
                        f"{label:<34} {len(fake.calls) - before:>5} {wall:>8.2f} "
                        f"{ideal:>8.2f} {wall / ideal:>6.2f}"
                    )


if __name__ == "__main__":
    main()
