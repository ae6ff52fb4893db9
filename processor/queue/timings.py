"""How long this process's jobs waited once due and how long their attempts ran, as
Prometheus histograms (GET /metrics). One registry per dispatcher, so several services in one
process (the tests) keep their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

# From a due job's run_at to its claim: sub-second when slots are free, minutes in a backlog.
PICKUP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
# One attempt, claim to recorded outcome: AI work takes 5 to 60 s.
RUN_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800)


class JobTimings:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.pickup = Histogram(
            "processor_pickup_latency_seconds",
            "From a job's due time (run_at) to its claim by this process, by type.",
            ["job_type"],
            buckets=PICKUP_BUCKETS,
            registry=self.registry,
        )
        self.run = Histogram(
            "processor_run_seconds",
            "Attempts this process ran, from claim to recorded outcome, by type and outcome.",
            ["job_type", "outcome"],
            buckets=RUN_BUCKETS,
            registry=self.registry,
        )

    def picked_up(self, job_type: str, waited_seconds: float) -> None:
        self.pickup.labels(job_type).observe(max(waited_seconds, 0.0))

    def ran(self, job_type: str, outcome: str, seconds: float) -> None:
        self.run.labels(job_type, outcome).observe(seconds)
