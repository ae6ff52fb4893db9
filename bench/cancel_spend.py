"""Provider calls a pack makes after it is cancelled, through the whole stack, against the
local fake Gemini server (a fixed delay per call, so calls are in flight when the cancel
lands).

    .venv/bin/python bench/cancel_spend.py [--delay 1.0] [--slots 1,3,6] [--after 2]

A pack's images are jobs of their own (its children), so how many run at once is the
processor's MAX_RUNNING_JOBS (--slots). For each, a pack is started, `cancel_job` runs on the
pack once `--after` of its images are stored, and the provider calls that arrive after the
cancel are counted. Cancelling the pack cancels its children; a running image job loses its
lease and its handler checks the lease before every provider call, so at most the calls already
in flight finish: the bound is the number of slots (without the checks it is 6 - after).
"""

from __future__ import annotations

import argparse
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


def one_run(
    cluster_url: str, storage: str, gemini_url: str, fake: FakeGemini, concurrency: int, after: int
) -> tuple[int, int, float]:
    port = free_port()
    env = {
        "DATABASE_URL": cluster_url,
        "PROCESSOR_TOKEN": TOKEN,
        "PROCESSOR_URL": f"http://127.0.0.1:{port}",
        "GEMINI_API_KEY": fake.api_key,
        "GEMINI_BASE_URL": gemini_url,
        "LOCAL_STORAGE_DIR": storage,
        "MAX_RUNNING_JOBS": str(concurrency),
        "LOG_LEVEL": "warning",
        "LISTEN_FOR_JOBS": "on",
    }
    with (
        ThreadedServer(create_app(Settings.from_env(env)), port) as server,
        psycopg.connect(cluster_url, autocommit=True) as conn,
    ):
        job_id = conn.execute(
            "select enqueue_job('generate-complete-pack', %s)",
            (Jsonb({"project_id": "bench", "product": PRODUCT}),),
        ).fetchone()[0]
        count = (
            "select count(*) from generated_images g join job_queue c on c.id = g.job_id "
            "where c.parent_id = %s"
        )
        while conn.execute(count, (job_id,)).fetchone()[0] < after:
            time.sleep(0.01)
        conn.execute("select cancel_job(%s)", (job_id,))
        at_cancel = fake.image_calls
        cancelled = time.perf_counter()
        while httpx.get(f"{server.url}/healthz").json()["running_jobs"]:
            time.sleep(0.01)
        stopped_in = time.perf_counter() - cancelled
        return (
            fake.image_calls - at_cancel,
            conn.execute(count, (job_id,)).fetchone()[0],
            stopped_in,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--slots", default="1,3,6")
    parser.add_argument("--after", type=int, default=2)
    args = parser.parse_args()
    configure("console", "error")
    print(f"fake Gemini delay per call: {args.delay:.1f} s; cancel after {args.after} images")
    print(
        f"{'slots':>16} {'calls after cancel':>19} {'bound':>6} {'images kept':>12}"
        f" {'stopped in s':>13}"
    )
    with private_database() as (cluster, folder):
        for concurrency in [int(c) for c in args.slots.split(",")]:
            fake = FakeGemini(delay=args.delay)
            with ThreadedServer(fake.app()) as gemini:
                calls, kept, stopped = one_run(
                    cluster.url,
                    str(folder / "storage"),
                    f"{gemini.url}/v1beta",
                    fake,
                    concurrency,
                    args.after,
                )
            print(f"{concurrency:>16} {calls:>19} {concurrency:>6} {kept:>12} {stopped:>13.2f}")


if __name__ == "__main__":
    main()
