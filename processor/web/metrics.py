"""GET /metrics: Prometheus text, written by prometheus-client.

Read from the database at each scrape (so every processor reports the same queue): jobs by type
and status, the oldest pending and oldest due job per type, running and waiting per type, caps
and pause, the fairness groups waiting, spend budgets (groups held by one, the service's spend
against its budget, and the few groups nearest theirs: never a label per group), the
autoscaling number (processor_scaling_metric) and the storage of the queue's tables. Kept by
this process: its running jobs, attempts and provider calls, and histograms of pickup latency
and run time (processor.queue.timings)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from processor.auth import require_token
from processor.providers import metering as spend
from processor.queue.dispatch import Dispatcher

TOP_GROUPS = 5  # groups nearest their budget given a label each in /metrics


async def metrics(request: Request) -> Response:
    require_token(request)
    db = request.app.state.queue.db
    dispatcher: Dispatcher = request.app.state.dispatcher
    slots = request.app.state.settings.max_running_jobs
    snapshot = _Snapshot(
        stats=await db.fetch_all("queue_stats"),
        types=await db.fetch_all("job_type_states"),
        groups=await db.fetch_one("groups_waiting"),
        scaling=await db.fetch_one("scaling_metric", {"job_types": None, "slots": slots}),
        tables=await db.fetch_all("table_health"),
        budgets=await db.fetch_one("budget_metrics"),
        top_groups=await db.fetch_all("budget_top_groups", {"limit": TOP_GROUPS}),
        dispatcher=dispatcher,
    )
    body = generate_latest(_Scrape([snapshot, dispatcher.timings.registry]))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


class _Scrape:
    """What generate_latest reads: the collectors of one scrape, in order."""

    def __init__(self, collectors: Iterable[Any]) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


class _Snapshot(Collector):
    def __init__(
        self,
        *,
        stats: list[dict[str, Any]],
        types: list[dict[str, Any]],
        groups: dict[str, Any] | None,
        scaling: dict[str, Any] | None,
        tables: list[dict[str, Any]],
        budgets: dict[str, Any] | None,
        top_groups: list[dict[str, Any]],
        dispatcher: Dispatcher,
    ) -> None:
        self.stats, self.types, self.groups = stats, types, groups
        self.scaling, self.tables, self.dispatcher = scaling, tables, dispatcher
        self.budgets, self.top_groups = budgets or {}, top_groups

    def collect(self) -> Iterator[Metric]:
        yield from self._queue()
        yield from self._budgets()
        yield from self._tables()
        yield from self._process()

    def _queue(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "processor_jobs", "Jobs in job_queue by type and status.", labels=["job_type", "status"]
        )
        oldest = GaugeMetricFamily(
            "processor_oldest_pending_seconds",
            "Age of the oldest pending job by type (since it was created).",
            labels=["job_type"],
        )
        oldest_due = GaugeMetricFamily(
            "processor_oldest_due_seconds",
            "How long the oldest due pending job of each type has been due (0: none waiting).",
            labels=["job_type"],
        )
        due_types: dict[str, float] = {}
        for r in self.stats:
            jobs.add_metric([r["job_type"], r["status"]], r["jobs"])
            if r["oldest_pending_seconds"] is not None:
                oldest.add_metric([r["job_type"]], float(r["oldest_pending_seconds"]))
            if r["status"] == "pending":
                due_types[r["job_type"]] = float(r["oldest_due_seconds"] or 0.0)
        for job_type, seconds in sorted(due_types.items()):
            oldest_due.add_metric([job_type], seconds)
        yield from (jobs, oldest, oldest_due)

        for name, help_text in (
            ("running", "Jobs running now, by type, across every processor."),
            ("waiting", "Pending jobs that are due, by type."),
            ("max_running", "A job type's running cap (set_job_type_limit); absent: none."),
            ("paused", "1 when the job type is paused (pause_job_type)."),
        ):
            family = GaugeMetricFamily(f"processor_type_{name}", help_text, labels=["job_type"])
            for t in self.types:
                value = t[name] if name != "paused" else int(bool(t["paused"]))
                if value is not None:
                    family.add_metric([t["job_type"]], value)
            yield family
        yield GaugeMetricFamily(
            "processor_groups_waiting",
            "Fairness groups with a job in line (due, not held at a cap, type not paused).",
            value=self.groups["groups"] if self.groups else 0,
        )
        yield GaugeMetricFamily(
            "processor_scaling_metric",
            "(running + due jobs that may start) per slot of one processor "
            "(MAX_RUNNING_JOBS): an autoscaler targets 1.",
            value=float(self.scaling["value"]) if self.scaling else 0.0,
        )

    def _budgets(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "processor_budget_groups_held",
            "Groups whose jobs sit out claims because their spend budget has no room left.",
            value=self.budgets.get("groups_held") or 0,
        )
        if self.budgets.get("service_budget_usd") is not None:
            for name, key, help_text in (
                ("budget_usd", "service_budget_usd", "The service's spend budget per period."),
                ("spent_usd", "service_spent_usd", "Spent against it in its current period."),
                ("reserved_usd", "service_reserved_usd", "Reserved by running jobs' estimates."),
            ):
                yield GaugeMetricFamily(
                    f"processor_service_{name}", help_text, value=self.budgets[key]
                )
        groups = {
            name: GaugeMetricFamily(
                f"processor_budget_top_group_{name}",
                f"{help_text} (the {TOP_GROUPS} groups nearest their budget).",
                labels=["group"],
            )
            for name, help_text in (
                ("budget_usd", "A group's spend budget per period"),
                ("spent_usd", "What the group spent in the period"),
                ("reserved_usd", "What its running jobs reserved"),
            )
        }
        for g in self.top_groups:
            for name, family in groups.items():
                family.add_metric([g["key"]], g[name])
        yield from groups.values()

    def _tables(self) -> Iterator[Metric]:
        columns = (
            ("live_tuples", "live_tuples", "Live rows (pg_stat_user_tables estimate)."),
            ("dead_tuples", "dead_tuples", "Dead rows waiting for vacuum."),
            ("table_bytes", "table_bytes", "Size of the table (heap and TOAST)."),
            ("index_bytes", "index_bytes", "Size of the table's indexes."),
            ("seconds_since_vacuum", "since_vacuum_seconds", "Since the last (auto)vacuum."),
            ("seconds_since_analyze", "since_analyze_seconds", "Since the last (auto)analyze."),
        )
        for metric, column, help_text in columns:
            family = GaugeMetricFamily(f"processor_table_{metric}", help_text, labels=["table"])
            for t in self.tables:
                if t[column] is not None:
                    family.add_metric([t["table_name"]], float(t[column]))
            yield family
        updates = CounterMetricFamily(
            "processor_table_updates", "Row updates since statistics were reset.", labels=["table"]
        )
        hot = CounterMetricFamily(
            "processor_table_hot_updates",
            "Of those, HOT updates (no index entry written).",
            labels=["table"],
        )
        for t in self.tables:
            updates.add_metric([t["table_name"]], t["updates"])
            hot.add_metric([t["table_name"]], t["hot_updates"])
        yield from (updates, hot)
        horizon = self.tables[0]["oldest_xact_seconds"] if self.tables else None
        yield GaugeMetricFamily(
            "processor_oldest_transaction_seconds",
            "Age of the oldest transaction holding back vacuum (0: none).",
            value=float(horizon or 0.0),
        )

    def _process(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "processor_running_jobs",
            "Jobs this process is running now.",
            value=self.dispatcher.running,
        )
        attempts = CounterMetricFamily(
            "processor_attempts", "Attempts this process finished, by outcome.", labels=["outcome"]
        )
        for outcome, n in sorted(self.dispatcher.finished.items()):
            attempts.add_metric([outcome], n)
        yield attempts
        calls = CounterMetricFamily(
            "processor_provider_calls",
            "Provider calls this process made, by outcome.",
            labels=["provider", "outcome"],
        )
        for (provider, outcome), n in sorted(spend.TOTALS.items()):
            calls.add_metric([provider, outcome], n)
        yield calls
        cost = CounterMetricFamily(
            "processor_provider_cost_usd",
            "Estimated cost of those calls (PROVIDER_PRICES).",
            labels=["provider", "outcome"],
        )
        for (provider, outcome), usd in sorted(spend.COSTS.items()):
            cost.add_metric([provider, outcome], usd)
        yield cost
