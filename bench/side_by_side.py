"""Throughput side by side, in one run on one private cluster (fsync on), each figure with its
ratio to the peers measured in the same run:

    make install
    .venv/bin/python bench/side_by_side.py [--jobs 20000] [--repeat 3] [--only NAME,...]
                                           [--batch 500] [--batch-callers 8]
                                           [--overload-jobs 10000] [--profile]
                                           [--groups 1,1000]

SQL path (no HTTP): PgQueuer (asyncpg, batch 100, an in-process no-op), procrastinate (a no-op
task), a plain `FOR UPDATE SKIP LOCKED` claim + complete with 16 callers, and the processor's own
functions (`claim_jobs` one at a time and batched with `complete_jobs`, and the single-job
contract `get_next_job` + `mark_job_processing`). Each SQL caller is its own process with its
own connection. The one-job claim + complete also runs under pgbench (16 C clients).

Whole service: `processor serve` in its own process, a no-op HTTP handler (bench/noop_handler.py)
in another, jobs claimed through POST /process-jobs by 16 callers sending
{"limit": 50, "wait": true}, or by one {"drain": true} caller. Then the overload run: 32
callers sending {"limit": 50, "drain": true} as fast as they are answered, with a 10 s lease and
no retries, so a lease that runs out shows up as a failed job.

--groups runs every chosen configuration once per group count in each round: the jobs spread
over that many sellers (user_id), so fair share has that many groups to share out. Each figure
is then also given as a ratio to the same configuration's one-group figure.

The peers come from the project's optional `bench` extra, installed on first run. Every run
checks that each job was completed exactly once. Figures are jobs per second, the median of
--repeat rounds; each round runs every configuration once (every other round in reverse
order), so all of them meet the machine's slow and fast moments alike. With the plain claim
among them, each configuration's ratio to it is also printed round by round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
from common import TOKEN, private_database

from processor.ops.pgcluster import free_port

BENCH = Path(__file__).resolve().parent
PLAIN_CLAIM = """
update job_queue set status = 'processing', locked_until = now() + interval '60 seconds',
                     lease_token = gen_random_uuid(), processed_at = now()
where id = (select id from job_queue
            where status = 'pending' and run_at <= now()
            order by priority desc, run_at, created_at
            limit 1 for update skip locked)
returning id"""
PLAIN_COMPLETE = "update job_queue set status = 'completed', completed_at = now() where id = %s"


FILL_GROUPS = [1]  # the sellers the next fill spreads its jobs over (--groups)


def fill(url: str, jobs: int, job_type: str = "bench", max_retries: int = 3) -> None:
    groups = FILL_GROUPS[0]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("truncate job_queue cascade")
        conn.execute(
            "insert into job_queue (job_type, max_retries, user_id) "
            "select %s, %s, case when %s > 1 then 'seller-' || g %% %s end "
            "from generate_series(1, %s) g",
            (job_type, max_retries, groups, groups, jobs),
        )
        conn.execute("vacuum analyze job_queue")


def completed(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("select count(*) from job_queue where status = 'completed'").fetchone()[
            0
        ]


def threaded(url: str, workers: int, loop: Callable[[psycopg.Connection], bool]) -> float:
    """Runs `loop` in each of `workers` callers, each in its own process with its own
    connection, until it returns False; returns the elapsed seconds. Processes, not threads:
    Python threads would share one interpreter lock, and measure the client, not the SQL."""
    ctx = multiprocessing.get_context("fork")  # the loop closures are inherited, not pickled
    barrier = ctx.Barrier(workers + 1)

    def worker() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            barrier.wait()
            while loop(conn):
                pass

    procs = [ctx.Process(target=worker) for _ in range(workers)]
    for p in procs:
        p.start()
    barrier.wait()
    started = time.perf_counter()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - started
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} caller process(es) failed: exit codes {failed}")
    return elapsed


# --- SQL path -----------------------------------------------------------------------------


def sql_plain_skip_locked(url: str, jobs: int) -> float:
    fill(url, jobs)

    def loop(conn: psycopg.Connection) -> bool:
        row = conn.execute(PLAIN_CLAIM).fetchone()
        if row is None:
            return False
        conn.execute(PLAIN_COMPLETE, row)
        return True

    return _checked(url, jobs, threaded(url, 16, loop))


def sql_claim_one(url: str, jobs: int) -> float:
    fill(url, jobs)

    def loop(conn: psycopg.Connection) -> bool:
        row = conn.execute("select id, lease_token from claim_jobs('w', 1)").fetchone()
        if row is None:
            return False
        conn.execute("select mark_job_completed(%s, %s, '{}')", row)
        return True

    return _checked(url, jobs, threaded(url, 16, loop))


def sql_single_job_contract(url: str, jobs: int) -> float:
    fill(url, jobs)

    def loop(conn: psycopg.Connection) -> bool:
        with conn.transaction():
            row = conn.execute(
                "select p.id, p.lease_token from get_next_job() n "
                "cross join lateral mark_job_processing(n.id, 'w') p where n.id is not null"
            ).fetchone()
        if row is None:
            return False
        conn.execute("select mark_job_completed(%s, %s, '{}')", row)
        return True

    return _checked(url, jobs, threaded(url, 16, loop))


def sql_batched(url: str, jobs: int, batch: int = 100, workers: int = 4) -> float:
    fill(url, jobs)

    def loop(conn: psycopg.Connection) -> bool:
        rows = conn.execute("select id, lease_token from claim_jobs('w', %s)", (batch,)).fetchall()
        if not rows:
            return False
        ids, tokens = zip(*rows, strict=True)
        conn.execute(
            "select count(*) from complete_jobs(%s::uuid[], %s::uuid[], %s::jsonb[])",
            (list(ids), list(tokens), [None] * len(ids)),
        )
        return True

    return _checked(url, jobs, threaded(url, workers, loop))


PGBENCH_SCRIPTS = {
    "plain": PLAIN_CLAIM.strip().replace("\n", " ")
    + " \\gset\n"
    + PLAIN_COMPLETE.replace("%s", ":id::uuid")
    + ";\n",
    "claim1": "select id, lease_token from claim_jobs('w', 1) \\gset\n"
    "select mark_job_completed(:id::uuid, :lease_token::uuid, '{}');\n",
}


def sql_pgbench(url: str, jobs: int, script: str, seconds: int = 6) -> float:
    """The same claim + complete as one pgbench client each (16 clients, C, no Python): what the
    statements cost the database, without client threads sharing one interpreter."""
    fill(url, max(jobs, 8000 * seconds))  # never runs dry: \gset fails on no row
    path = BENCH / f".pgbench-{script}.sql"
    path.write_text(PGBENCH_SCRIPTS[script])
    pgbench = Path(os.environ.get("PG_BINDIR") or "/usr/lib/postgresql/15/bin") / "pgbench"
    try:
        out = subprocess.run(
            [
                str(pgbench),
                "-n",
                # Prepared, as psycopg prepares a statement it runs more than five times: in
                # extended mode the plain claim was planned again on every call, which made
                # the functions (whose plans are kept) look as cheap as it (1.00x, against
                # about 0.7x prepared).
                "-M",
                "prepared",
                "-c",
                "16",
                "-j",
                "2",
                "-T",
                str(seconds),
                "-f",
                str(path),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        path.unlink()
    return float(next(line for line in out.splitlines() if line.startswith("tps")).split()[2])


def _checked(url: str, jobs: int, elapsed: float) -> float:
    done = completed(url)
    assert done == jobs, f"{done} of {jobs} jobs completed"
    return jobs / elapsed


def sql_pgqueuer(url: str, jobs: int, batch: int = 100) -> float:
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    async def run() -> float:
        conn = await asyncpg.connect(url)
        queries = Queries(AsyncpgDriver(conn))
        if not await queries.has_table("pgqueuer"):
            await queries.install()
        await queries.clear_queue()
        await queries.clear_queue_log()
        for start in range(0, jobs, 5000):
            n = min(5000, jobs - start)
            await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
        await conn.close()

        conn = await asyncpg.connect(url)
        qm = QueueManager(Queries(AsyncpgDriver(conn)))
        done = Counter[str]()

        @qm.entrypoint("noop")
        async def noop(job: Any) -> None:
            done["jobs"] += 1

        started = time.perf_counter()
        await qm.run(batch_size=batch, mode=QueueExecutionMode.drain)
        elapsed = time.perf_counter() - started
        await conn.close()
        assert done["jobs"] == jobs, f"pgqueuer ran {done['jobs']} of {jobs}"
        return jobs / elapsed

    return asyncio.run(run())


def sql_procrastinate(url: str, jobs: int) -> float:
    import logging

    import procrastinate

    logging.getLogger("procrastinate").setLevel(logging.ERROR)  # its "app in __main__" notice

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
    done = Counter[str]()

    @app.task(name="noop")
    async def noop() -> None:
        done["jobs"] += 1

    async def run() -> float:
        async with app.open_async():
            with contextlib.suppress(Exception):  # applied in an earlier repetition
                await app.schema_manager.apply_schema_async()
            await app.connector.execute_query_async("delete from procrastinate_jobs")
            for start in range(0, jobs, 5000):
                await noop.batch_defer_async(*([{}] * min(5000, jobs - start)))
            started = time.perf_counter()
            await app.run_worker_async(concurrency=16, wait=False, install_signal_handlers=False)
            elapsed = time.perf_counter() - started
        assert done["jobs"] == jobs, f"procrastinate ran {done['jobs']} of {jobs}"
        return jobs / elapsed

    return asyncio.run(run())


# --- the whole service --------------------------------------------------------------------


@contextmanager
def process(args: list[str], env: dict[str, str], ready_url: str):
    proc = subprocess.Popen(args, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(ready_url, timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args} did not start")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@contextmanager
def handler_process():
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        "noop_handler:app",
        "--app-dir",
        str(BENCH),
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    with process(args, {}, f"http://127.0.0.1:{port}/stats"):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def service(url: str, handler: str, **env: str):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = {
        "DATABASE_URL": url,
        "PROCESSOR_TOKEN": TOKEN,
        "PROCESSOR_URL": base,
        "JOB_ROUTES": f'{{"bench": "{handler}/bench"}}',
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "json",
        "LISTEN_FOR_JOBS": "off",
        **env,
    }
    args = [sys.executable, "-m", "processor", "serve", "--port", str(port)]
    with process(args, settings, f"{base}/healthz") as proc:
        yield base, proc


def cpu_by_role() -> Counter[str]:
    """CPU seconds used so far by the processes of each role on this machine: the service, the
    handler, PostgreSQL (all its processes) and this benchmark (its callers)."""
    used: Counter[str] = Counter()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2 :].split()
        seconds = (int(fields[11]) + int(fields[12])) / tick
        if "processor serve" in cmd:
            used["service"] += seconds
        elif "noop_handler" in cmd:
            used["handler"] += seconds
        elif comm.startswith("postgres") or cmd.startswith("postgres"):
            used["postgres"] += seconds
        elif int(pid) == os.getpid():
            used["callers"] += seconds
    return used


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def caller(base: str, body: dict[str, Any], stop: threading.Event, busy_pause: float) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(timeout=120) as client:
        while not stop.is_set():
            answer = client.post(f"{base}/process-jobs", json=body, headers=auth).json()
            if answer.get("busy"):
                time.sleep(busy_pause)
            elif not answer["claimed"] and "drain" not in body:
                return
            elif "drain" in body:
                time.sleep(busy_pause)


def run_service(
    url: str,
    handler: str,
    jobs: int,
    callers: int,
    body: dict[str, Any],
    *,
    env: dict[str, str],
    max_retries: int = 3,
    busy_pause: float = 0.05,
    time_limit: float = 300,
    profile: Path | None = None,
) -> dict[str, Any]:
    fill(url, jobs, max_retries=max_retries)
    httpx.post(f"{handler}/reset")
    with service(url, handler, **env) as (base, proc):
        spy = _profile(proc.pid, profile) if profile else None
        cpu_before = cpu_by_role()
        stop = threading.Event()
        threads = [
            threading.Thread(target=caller, args=(base, body, stop, busy_pause), daemon=True)
            for _ in range(callers)
        ]
        started = time.perf_counter()
        for t in threads:
            t.start()
        with psycopg.connect(url, autocommit=True) as conn:
            while time.perf_counter() - started < time_limit:
                left = conn.execute(
                    "select count(*) from job_queue where status in ('pending', 'processing')"
                ).fetchone()[0]
                if not left:
                    break
                time.sleep(0.1)
        elapsed = time.perf_counter() - started
        stop.set()
        for t in threads:
            t.join(timeout=120)
        rss = rss_mb(proc.pid)
        cpu = cpu_by_role()
        cpu.subtract(cpu_before)
        if spy:
            spy.wait(timeout=120)
    stats = httpx.get(f"{handler}/stats").json()
    with psycopg.connect(url) as conn:
        by_status = dict(conn.execute("select status, count(*) from job_queue group by 1"))
        lease_expiries = conn.execute(
            "select count(*) from job_queue, jsonb_array_elements(errors) e "
            "where e->>'error' like 'lease expired%'"
        ).fetchone()[0]
    return {
        "jobs_per_s": by_status.get("completed", 0) / elapsed,
        "completed": by_status.get("completed", 0),
        "failed": by_status.get("failed", 0),
        "unfinished": jobs - by_status.get("completed", 0) - by_status.get("failed", 0),
        "lease_expiries": lease_expiries,
        "delivered": stats["jobs"],
        "delivered_twice": stats["duplicates"],
        "rss_mb": rss,
        "cpu_us_per_job": {
            role: round(seconds / max(1, by_status.get("completed", 0)) * 1e6)
            for role, seconds in cpu.items()
        },
        "seconds": elapsed,
    }


def _profile(pid: int, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            "8",
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarize_profile(path: Path, top: int = 25) -> list[tuple[float, str]]:
    """Share of py-spy's samples under each function (inclusive), busiest first."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        seen = set()
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            where = where.split(":")[0].split("site-packages/")[-1].split("lib/python3")[-1]
            key = f"{name} ({where})"
            if key not in seen:
                seen.add(key)
                inclusive[key] += n
    return [(100 * n / total, f) for f, n in inclusive.most_common(top)]


# --- the run ------------------------------------------------------------------------------


def install_peers() -> None:
    """PgQueuer, procrastinate and asyncpg come from the project's optional `bench` extra."""
    try:
        import asyncpg  # noqa: F401
        import pgqueuer  # noqa: F401
        import procrastinate  # noqa: F401
    except ImportError:
        print("installing the bench extra (PgQueuer, procrastinate, asyncpg, py-spy) ...")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "-e", f"{BENCH.parent}[bench]"],
            check=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500, help="jobs per claim, batched row")
    parser.add_argument("--batch-callers", type=int, default=8, help="callers, batched row")
    parser.add_argument("--only", default="")
    parser.add_argument("--overload-jobs", type=int, default=10000)
    parser.add_argument("--max-running", default="200")
    parser.add_argument(
        "--groups", default="1", help="comma-separated group counts, each configuration per count"
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="service-profile.txt",
        help="py-spy the service during a drain run; raw stacks are kept in this file",
    )
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    install_peers()

    with private_database() as (cluster, _), handler_process() as handler:
        for name in ("pgqueuer_db", "procrastinate_db"):
            cluster.create_database(name)
        url = cluster.url
        wait_env = {"MAX_RUNNING_JOBS": args.max_running}
        drain_env = {"MAX_RUNNING_JOBS": args.max_running, "DRAIN_SECONDS": "300"}
        configs: dict[str, tuple[str, Callable[[], float]]] = {
            "pgqueuer": (
                "PgQueuer 1.6, asyncpg, batch 100 (in-process no-op)",
                lambda: sql_pgqueuer(cluster.url_for("pgqueuer_db"), args.jobs),
            ),
            "procrastinate": (
                "procrastinate 3, psycopg, concurrency 16 (no-op task)",
                lambda: sql_procrastinate(cluster.url_for("procrastinate_db"), args.jobs),
            ),
            "plain": (
                "plain FOR UPDATE SKIP LOCKED, 16 workers, claim + complete",
                lambda: sql_plain_skip_locked(url, args.jobs),
            ),
            "claim1": (
                "claim_jobs(…, 1) + mark_job_completed, 16 workers",
                lambda: sql_claim_one(url, args.jobs),
            ),
            "plain_pgbench": (
                "plain FOR UPDATE SKIP LOCKED + complete, pgbench, 16 clients",
                lambda: sql_pgbench(url, args.jobs, "plain"),
            ),
            "claim1_pgbench": (
                "claim_jobs(…, 1) + mark_job_completed, pgbench, 16 clients",
                lambda: sql_pgbench(url, args.jobs, "claim1"),
            ),
            "contract": (
                "get_next_job + mark_job_processing, 16 workers",
                lambda: sql_single_job_contract(url, args.jobs),
            ),
            "batched": (
                f"claim_jobs(…, {args.batch}) + complete_jobs, {args.batch_callers} callers",
                lambda: sql_batched(url, args.jobs, args.batch, args.batch_callers),
            ),
            "service_wait": (
                f'service, 16 callers {{"limit": 50, "wait": true}}, '
                f"MAX_RUNNING_JOBS={args.max_running}",
                lambda: run_service(
                    url, handler, args.jobs, 16, {"limit": 50, "wait": True}, env=wait_env
                )["jobs_per_s"],
            ),
            "service_wait_200": (
                'service, 16 callers {"limit": 50, "wait": true}, MAX_RUNNING_JOBS=200',
                lambda: run_service(
                    url,
                    handler,
                    args.jobs,
                    16,
                    {"limit": 50, "wait": True},
                    env={"MAX_RUNNING_JOBS": "200"},
                )["jobs_per_s"],
            ),
            "service_drain": (
                f'service, one {{"drain": true}} caller, MAX_RUNNING_JOBS={args.max_running}',
                lambda: run_service(
                    url, handler, args.jobs, 1, {"drain": True}, env=drain_env, busy_pause=1.0
                )["jobs_per_s"],
            ),
        }
        results: dict[str, float] = {}
        group_counts = [int(g) for g in args.groups.split(",")]
        print(
            f"{args.jobs} no-op jobs per run, median of {args.repeat}; fsync on; "
            f"{os.cpu_count()} cores",
            flush=True,
        )
        chosen = {k: v for k, v in configs.items() if not only or k in only}

        def named(key: str, groups: int) -> str:
            return key if groups == 1 else f"{key}@{groups}"

        def labelled(key: str, groups: int) -> str:
            return configs[key][0] + ("" if groups == 1 else f", over {groups} groups")

        runs = [(key, groups) for groups in group_counts for key in chosen]
        rates: dict[str, list[float]] = {named(k, g): [] for k, g in runs}
        # Rounds, not runs in a row: every configuration meets the machine's slow and fast
        # moments alike, so the ratios compare like with like. Every other round runs them in
        # reverse order, so no configuration always follows the same neighbour.
        for round_no in range(1, args.repeat + 1):
            for key, groups in runs if round_no % 2 else runs[::-1]:
                FILL_GROUPS[0] = groups
                rate = chosen[key][1]()
                rates[named(key, groups)].append(rate)
                label = labelled(key, groups)
                print(f"  round {round_no}: {label}: {rate:,.0f} jobs/s", flush=True)
        FILL_GROUPS[0] = 1
        for key, groups in runs:
            name = named(key, groups)
            results[name] = statistics.median(rates[name])
            listed = ", ".join(f"{r:,.0f}" for r in rates[name])
            print(f"  {labelled(key, groups)}: {results[name]:,.0f} jobs/s ({listed})", flush=True)

        for groups in group_counts:
            plain = named("plain", groups)
            if plain not in rates:
                continue
            # The same ratio round by round: how far the machine's noise moves it.
            for key in chosen:
                name = named(key, groups)
                if key != "plain" and not key.endswith("_pgbench"):
                    per_round = [r / p for r, p in zip(rates[name], rates[plain], strict=True)]
                    print(
                        f"  {labelled(key, groups)} / plain, round by round: "
                        + ", ".join(f"{x:.2f}" for x in per_round)
                        + f" (median {statistics.median(per_round):.3f})",
                        flush=True,
                    )

        print("\n| config | groups | jobs/s | vs PgQueuer | vs plain SKIP LOCKED | vs 1 group |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for key, groups in runs:
            rate = results[named(key, groups)]
            vs_pgq = f"{rate / results['pgqueuer']:.2f}" if "pgqueuer" in results else "-"
            plain = named("plain_pgbench" if key.endswith("_pgbench") else "plain", groups)
            vs_plain = f"{rate / results[plain]:.2f}" if plain in results else "-"
            vs_one = f"{rate / results[key]:.2f}" if groups != 1 and key in results else "-"
            print(
                f"| {configs[key][0]} | {groups} | {rate:,.0f} | {vs_pgq} | {vs_plain} | {vs_one} |"
            )

        if not only or "rss" in only:
            for label, r in (
                (
                    "16 callers, wait",
                    run_service(
                        url, handler, args.jobs, 16, {"limit": 50, "wait": True}, env=wait_env
                    ),
                ),
                (
                    "one drain caller",
                    run_service(
                        url, handler, args.jobs, 1, {"drain": True}, env=drain_env, busy_pause=1.0
                    ),
                ),
            ):
                print(
                    f"\n{label}: {r['jobs_per_s']:,.0f} jobs/s; service RSS at the end "
                    f"{r['rss_mb']:.0f} MB; CPU per job (us) by process: {r['cpu_us_per_job']}"
                )

        if args.profile:
            out = Path(args.profile).resolve()
            run_service(
                url,
                handler,
                args.jobs,
                1,
                {"drain": True},
                env=drain_env,
                busy_pause=1.0,
                profile=out,
            )
            print("\nwhere the service's time goes (py-spy, share of samples under each function):")
            for share, where in summarize_profile(out):
                print(f"  {share:5.1f} %  {where}")

        if not only or "overload" in only:
            r = run_service(
                url,
                handler,
                args.overload_jobs,
                32,
                {"limit": 50, "drain": True},
                env={"LEASE_SECONDS": "10"},
                max_retries=0,
                busy_pause=0.0,
            )
            print(
                f"\noverload: {args.overload_jobs} jobs, 32 callers "
                '{"limit": 50, "drain": true} back to back, MAX_RUNNING_JOBS=20, 10 s lease, '
                f"no retries: {r['completed']} completed in {r['seconds']:.1f} s "
                f"({r['jobs_per_s']:,.0f} jobs/s); unfinished {r['unfinished']}, "
                f"failed {r['failed']}, attempts lost to lease expiry {r['lease_expiries']}, "
                f"delivered twice {r['delivered_twice']}"
            )


if __name__ == "__main__":
    main()
