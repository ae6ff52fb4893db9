"""Retention: finished jobs, their image and A+ rows, and pg_cron's run history do not pile up.

`processor prune` runs it by hand (and can delete the jobs' stored files too); `processor
schedule` installs the hourly cron job `processor-prune`, which runs `select prune_jobs()` with
the ages kept in `job_queue_settings`. Rows go in small batches, each its own short
transaction; only finished rows are touched, so the claim path never waits on it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from processor.db import connect, run
from processor.providers.storage import Storage

JOB_NAME = "processor-prune"  # contract: the retention cron job's name
SCHEDULE = "17 * * * *"  # hourly, away from the top of the hour
COMMAND = "select prune_jobs()"
FOREVER = timedelta(days=365_000)


@dataclass
class Pruned:
    completed: int = 0
    failed_or_cancelled: int = 0
    cron_history: int = 0
    files: int = 0
    files_failed: list[str] = field(default_factory=list)


def prune(
    database_url: str,
    *,
    keep_completed: timedelta | None = None,
    keep_failed: timedelta | None = None,
    keep_cron_history: timedelta | None = None,
    batch: int = 1000,
    storage: Storage | None = None,
) -> Pruned:
    """Deletes what is past its age, a batch per transaction, until nothing is left. With
    `storage`, the files of every deleted job's images are deleted too."""
    done = Pruned()
    paths: list[str] = []
    with connect(database_url) as conn:
        if storage is not None:
            while True:
                row = run(
                    conn,
                    "prune_jobs_with_files",
                    {
                        "keep_completed": keep_completed,
                        "keep_failed": keep_failed,
                        "batch": batch,
                    },
                )[0]
                if not row["jobs"]:
                    break
                done.completed += row["completed"]
                done.failed_or_cancelled += row["jobs"] - row["completed"]
                paths += row["paths"] or []
            keep_completed = keep_failed = FOREVER  # the jobs are done: only the history left
        while True:
            counts = {
                r["kind"]: r["deleted"]
                for r in run(
                    conn,
                    "prune_jobs",
                    {
                        "keep_completed": keep_completed,
                        "keep_failed": keep_failed,
                        "keep_cron_history": keep_cron_history,
                        "batch": batch,
                    },
                )
            }
            done.completed += counts.get("completed", 0)
            done.failed_or_cancelled += counts.get("failed_or_cancelled", 0)
            done.cron_history += counts.get("cron_history", 0)
            if not any(counts.values()):
                break
    if storage is not None and paths:  # after the rows are gone: a failure leaves files only
        done.files_failed = asyncio.run(storage.delete(paths))
        done.files = len(paths) - len(done.files_failed)
    return done
