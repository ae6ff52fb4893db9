"""Wall time of one image and of a complete pack, through the whole stack, against the local
fake Gemini server adding a fixed delay to every call.

    .venv/bin/python bench/pack_wall_time.py [--delay 2.0] [--slots 1,3,6]

The processor runs with LISTEN_FOR_JOBS on, as deployed: a job is enqueued and the time until
its row says completed is measured (polled every 5 ms). A pack hands its six images out as jobs
of their own and waits for them (docs/workflows.md), so how many run at once is the
processor's MAX_RUNNING_JOBS (--slots). With a delay d per provider call, a pack ideally takes
ceil(6 / slots) * d; the report shows how close the stack comes.

Then --sellers sellers enqueue one pack each at once onto --shared-slots slots (a delay of
--shared-delay per call), once with fair share on and once with it off (one global order), and
the report gives each seller's wait for its first image to start: under fair share every seller
is served in turn, so none waits behind another's whole pack. Last, the fair-share bench's
noisy neighbour with packs: one seller enqueues --noisy packs, and a second later the others
one each.
"""

from __future__ import annotations

import argparse
import math
import time

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


def timed_job(url: str, job_type: str, payload: dict) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        job_id = conn.execute("select enqueue_job(%s, %s)", (job_type, Jsonb(payload))).fetchone()[
            0
        ]
        while True:
            status = conn.execute(
                "select status from job_queue where id = %s", (job_id,)
            ).fetchone()[0]
            if status in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
    assert status == "completed", status
    return elapsed


def shared(
    cluster_url: str, env: dict[str, str], sellers: int, fair: bool, noisy: int = 0
) -> list[float]:
    """Seconds from each seller's pack insert to the start of its first image. With `noisy`,
    one more seller first enqueues that many packs, and the others come a second later (the
    noisy neighbour's own wait is left out)."""
    with psycopg.connect(cluster_url, autocommit=True) as conn:
        conn.execute("update job_queue_settings set fair_share = %s", (fair,))
        conn.execute("delete from job_queue")
    port = free_port()
    env = {**env, "PROCESSOR_URL": f"http://127.0.0.1:{port}"}
    with ThreadedServer(create_app(Settings.from_env(env)), port):
        time.sleep(0.5)  # listening
        with psycopg.connect(cluster_url) as conn:
            for _ in range(noisy):
                conn.execute(
                    "select enqueue_job('generate-complete-pack', %s, 'noisy')",
                    (Jsonb({"project_id": "bench", "product": PRODUCT}),),
                )
            if noisy:
                conn.commit()
                time.sleep(1.0)  # its images are running
            for n in range(sellers):
                conn.execute(
                    "select enqueue_job('generate-complete-pack', %s, %s)",
                    (Jsonb({"project_id": "bench", "product": PRODUCT}), f"seller-{n}"),
                )
            conn.commit()
            while conn.execute(
                "select count(*) from job_queue where job_type = 'generate-complete-pack' "
                "and status not in ('completed', 'failed', 'cancelled')"
            ).fetchone()[0]:
                conn.commit()
                time.sleep(0.05)
            rows = conn.execute(
                "select extract(epoch from min(c.processed_at) - p.created_at) "
                "from job_queue p join job_queue c on c.parent_id = p.id "
                "where p.job_type = 'generate-complete-pack' and p.user_id <> 'noisy' "
                "group by p.id, p.created_at"
            ).fetchall()
    return sorted(float(r[0]) for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=2.0)
    parser.add_argument("--slots", default="1,3,6")
    parser.add_argument("--sellers", type=int, default=10)
    parser.add_argument("--shared-slots", type=int, default=4)
    parser.add_argument("--shared-delay", type=float, default=0.5)
    parser.add_argument("--noisy", type=int, default=5)
    args = parser.parse_args()
    configure("console", "warning")
    levels = [int(c) for c in args.slots.split(",")]

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
                "MAX_RUNNING_JOBS": str(concurrency),
                "LOG_LEVEL": "warning",
                "LISTEN_FOR_JOBS": "on",
            }
            runs = [
                (
                    f"complete pack, {concurrency} slots",
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
            with ThreadedServer(create_app(Settings.from_env(env)), port):
                time.sleep(0.5)  # listening
                for label, job_type, extra, rounds in runs:
                    before = len(fake.calls)
                    wall = timed_job(
                        cluster.url,
                        job_type,
                        {"project_id": "bench", "product": PRODUCT, **extra},
                    )
                    ideal = rounds * args.delay
                    print(
                        f"{label:<34} {len(fake.calls) - before:>5} {wall:>8.2f} "
                        f"{ideal:>8.2f} {wall / ideal:>6.2f}"
                    )

        fake.delay = args.shared_delay
        env = {
            "DATABASE_URL": cluster.url,
            "PROCESSOR_TOKEN": TOKEN,
            "GEMINI_API_KEY": fake.api_key,
            "GEMINI_BASE_URL": f"{gemini.url}/v1beta",
            "LOCAL_STORAGE_DIR": str(folder / "storage"),
            "MAX_RUNNING_JOBS": str(args.shared_slots),
            "LOG_LEVEL": "warning",
            "LISTEN_FOR_JOBS": "on",
        }
        print(
            f"\n{args.sellers} sellers, one pack each at once, {args.shared_slots} slots, "
            f"{args.shared_delay:.1f} s per call: each seller's wait for its first image"
        )
        for fair in (True, False):
            waits = shared(cluster.url, env, args.sellers, fair)
            print(
                f"  fair share {'on ' if fair else 'off'}: first images started "
                f"{waits[0]:.2f} to {waits[-1]:.2f} s after the insert "
                f"(median {waits[len(waits) // 2]:.2f} s)"
            )
        print(
            f"noisy neighbour: one seller enqueues {args.noisy} packs, then {args.sellers - 1} "
            "others one each, a second later"
        )
        for fair in (True, False):
            waits = shared(cluster.url, env, args.sellers - 1, fair, noisy=args.noisy)
            print(
                f"  fair share {'on ' if fair else 'off'}: the others' first images started "
                f"{waits[0]:.2f} to {waits[-1]:.2f} s after their insert "
                f"(median {waits[len(waits) // 2]:.2f} s)"
            )


if __name__ == "__main__":
    main()
