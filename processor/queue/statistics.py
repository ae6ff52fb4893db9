"""Keeps the planner's statistics of job_queue fresh. The table swings from every job finished to
a backlog of 100,000 within seconds, and autovacuum looks at it once a minute at best; planned
on statistics from an empty line, reads of pending jobs (placing a new seller's job, the status
page) read every pending job instead of a few. Every EVERY_SECONDS each processor asks the
database to analyze the table if enough of it changed (job_queue_refresh_statistics decides, and
lets one processor at a time do it). The claim itself does not depend on it: its plans hold
whatever the statistics say."""

from __future__ import annotations

import asyncio
import random

import structlog

from processor.errors import DatabaseError
from processor.queue.jobs import JobQueue

log = structlog.get_logger("processor.queue.statistics")

EVERY_SECONDS = 10.0


class StatisticsKeeper:
    def __init__(self, queue: JobQueue, every: float = EVERY_SECONDS) -> None:
        self.queue = queue
        self.every = every
        self.analyzed = 0  # times this processor analyzed the table

    async def run(self) -> None:
        """Until cancelled. A failed check (the database away) is logged and tried again at the
        next interval."""
        while True:
            # (jittered, so that processors started together do not ask together)
            await asyncio.sleep(self.every * random.uniform(0.8, 1.2))
            try:
                if await self.queue.refresh_statistics():
                    self.analyzed += 1
                    log.info("job_queue_analyzed")
            except DatabaseError as exc:
                log.warning("job_queue_statistics_not_refreshed", error=str(exc))
