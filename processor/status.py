"""A job's status, as job_queue stores it (its CHECK constraint holds the same six). The
command line's choices, the status page's filters, the API document and the dispatcher's
outcomes all read it from here."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    WAITING = "waiting"  # for the jobs it depends on (job_queue.depends_on) to finish


STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
FINISHED: tuple[str, ...] = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)
