"""GET /metrics: Prometheus text for the queue by type and status, running and waiting jobs,
caps and pause per type, the fairness groups waiting, and this process's attempts and provider
calls."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from processor.auth import require_token
from processor.providers import metering as spend
from processor.queue.dispatch import Dispatcher


async def metrics(request: Request) -> Response:
    """Prometheus text: the queue by type and status, and this process's attempts."""
    require_token(request)
    db = request.app.state.queue.db
    rows = await db.fetch_all("queue_stats")
    types = await db.fetch_all("job_type_states")
    groups = await db.fetch_one("groups_waiting")
    dispatcher: Dispatcher = request.app.state.dispatcher
    lines = [
        "# HELP processor_jobs Jobs in job_queue by type and status.",
        "# TYPE processor_jobs gauge",
    ]
    lines += [
        f'processor_jobs{{job_type="{_label(r["job_type"])}",status="{r["status"]}"}} {r["jobs"]}'
        for r in rows
    ]
    lines += [
        "# HELP processor_oldest_pending_seconds Age of the oldest pending job by type.",
        "# TYPE processor_oldest_pending_seconds gauge",
    ]
    lines += [
        f'processor_oldest_pending_seconds{{job_type="{_label(r["job_type"])}"}} '
        f"{float(r['oldest_pending_seconds']):.3f}"
        for r in rows
        if r["oldest_pending_seconds"] is not None
    ]
    for name, help_text in (
        ("running", "Jobs running now, by type, across every processor."),
        ("waiting", "Pending jobs that are due, by type."),
        ("max_running", "A job type's running cap (set_job_type_limit); absent: none."),
        ("paused", "1 when the job type is paused (pause_job_type)."),
    ):
        metric = f"processor_type_{name}"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        for t in types:
            value = t[name] if name != "paused" else int(bool(t["paused"]))
            if value is not None:
                lines.append(f'{metric}{{job_type="{_label(t["job_type"])}"}} {value}')
    lines += [
        "# HELP processor_groups_waiting Fairness groups with a due pending job.",
        "# TYPE processor_groups_waiting gauge",
        f"processor_groups_waiting {groups['groups'] if groups else 0}",
    ]
    lines += [
        "# HELP processor_running_jobs Jobs this process is running now.",
        "# TYPE processor_running_jobs gauge",
        f"processor_running_jobs {dispatcher.running}",
        "# HELP processor_attempts_total Attempts this process finished, by outcome.",
        "# TYPE processor_attempts_total counter",
    ]
    lines += [
        f'processor_attempts_total{{outcome="{k}"}} {v}'
        for k, v in sorted(dispatcher.finished.items())
    ]
    lines += [
        "# HELP processor_provider_calls_total Provider calls this process made, by outcome.",
        "# TYPE processor_provider_calls_total counter",
    ]
    lines += [
        f'processor_provider_calls_total{{provider="{_label(p)}",outcome="{o}"}} {n}'
        for (p, o), n in sorted(spend.TOTALS.items())
    ]
    lines += [
        "# HELP processor_provider_cost_usd_total Estimated cost of those calls (PROVIDER_PRICES).",
        "# TYPE processor_provider_cost_usd_total counter",
    ]
    lines += [
        f'processor_provider_cost_usd_total{{provider="{_label(p)}",outcome="{o}"}} {c:.6f}'
        for (p, o), c in sorted(spend.COSTS.items())
    ]
    return PlainTextResponse(
        "\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8"
    )


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
