"""What the command line shows a person: tables of jobs, one job's summary, and live progress.
Rendering only (rich); the commands in processor.cli.jobs fetch the rows."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from processor.humanize import ago
from processor.status import FINISHED

STYLE = {
    "pending": "yellow",
    "processing": "cyan",
    "completed": "green",
    "failed": "red",
    "cancelled": "dim",
    "waiting": "blue",
    "paused": "magenta",  # pending, of a paused job type
}

Row = dict[str, Any]

# Characters a terminal acts on rather than shows: C0 and C1 controls, DEL, and the bidirectional
# overrides that reorder what a reader sees. Anything that came from a job, a handler or a
# provider goes through inert() before it is printed.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}.get(char)
    if named:
        return named
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def inert(value: object, style: str = "", *, no_wrap: bool = False) -> Text:
    """Text that prints as exactly what it is: never read as rich markup (a `[link=…]` stays
    those characters), and every control character shown escaped (ESC as `\\e`)."""
    text = _UNSAFE.sub(_escaped, "" if value is None else str(value))
    if no_wrap:
        return Text(text, style=style, no_wrap=True, overflow="ignore")
    return Text(text, style=style)


def status_text(status: str) -> Text:
    return Text(status, style=STYLE.get(status, ""))


def progress_text(progress: Any) -> str:
    if isinstance(progress, dict) and isinstance(progress.get("total"), int):
        return f"{progress.get('done', 0)}/{progress['total']}"
    return ""


# What `processor jobs` shows, most useful first: a narrower terminal drops columns from the end
# of this list, never the first five.
JOB_COLUMNS = ("id", "type", "status", "attempt", "progress", "created", "error")
WIDTH = {"status": 10, "attempt": 7, "progress": 8, "created": 8}
SHORT_ID = 8  # characters of an id below FULL_IDS_FROM columns: as the page shows, and every
FULL_IDS_FROM = 140  # command takes them
MIN_ERROR = 20


def jobs_table(rows: list[Row], width: int = 120) -> Table:
    """Ids whole from FULL_IDS_FROM columns and their first 8 characters below; job types whole
    (the column as wide as the longest) unless a type is longer than what id, status, attempt
    and progress leave (39 characters at 80 columns); then as many other columns as fit."""
    id_width = 36 if width >= FULL_IDS_FROM else SHORT_ID
    left = width - id_width - sum(WIDTH[c] + 2 for c in ("status", "attempt", "progress")) - 2
    longest = max([4] + [len(inert(r["job_type"]).plain) for r in rows])
    type_width = min(longest, max(left, 12))
    shown = ["id", "type"]
    used = id_width + 2 + type_width
    for name in JOB_COLUMNS[2:]:
        need = MIN_ERROR if name == "error" else WIDTH[name]
        if used + 2 + need > width:
            break
        shown.append(name)
        used += 2 + need
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in shown:
        table.add_column(
            name,
            justify="right" if name in ("attempt", "progress", "created") else "left",
            overflow="ellipsis",
            no_wrap=True,
            min_width={"id": id_width, "type": type_width}.get(name, WIDTH.get(name)),
            max_width={
                "id": id_width,
                "type": type_width,
                "error": max(MIN_ERROR, width - used + MIN_ERROR),
            }.get(name),
        )
    for r in rows:
        cells: dict[str, str | Text] = {
            "id": str(r["id"])[:id_width],
            "type": inert(r["job_type"]),
            "status": Text("paused", style=STYLE["paused"])
            if r.get("paused")
            else status_text(r["status"]),
            "attempt": f"{r['attempt']}/{r['max_attempts']}",
            "progress": progress_text(r["progress"]),
            "created": ago(r["created_at"]),
            "error": inert((r["error_message"] or "")[:120]),
        }
        table.add_row(*(cells[name] for name in shown))
    return table


PIPE_WIDTH = 400  # into a pipe or a file nothing is cut: whole ids, types, URLs


def output(*, stderr: bool = False) -> Console:
    """The console a command prints to: the terminal's width; into a pipe or a file,
    PIPE_WIDTH unless COLUMNS says otherwise (`COLUMNS=80 processor jobs | less`)."""
    out = Console(stderr=stderr)
    if out.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return out
    return Console(stderr=stderr, width=PIPE_WIDTH)


def emit(out: Console, renderable: Any) -> None:
    """Prints to a terminal as laid out, lines never cropped (a URL longer than the terminal
    stays one line); into a pipe or a file, the same lines without the spaces that pad them to
    the table's width."""
    if out.is_terminal:
        out.print(renderable, crop=False)
        return
    with out.capture() as captured:
        out.print(renderable, crop=False)
    out.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def stats_table(rows: list[Row]) -> Table:
    def seconds(value: object) -> str:
        return "" if value is None else f"{float(value):.1f}s"  # type: ignore[arg-type]

    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("job_type", "status", "jobs", "oldest due", "p50", "p95"):
        table.add_column(name, justify="left" if name in ("job_type", "status") else "right")
    for r in rows:
        kind = inert(r["job_type"])
        if r.get("paused"):
            kind.append(" (paused)", style=STYLE["paused"])
        table.add_row(
            kind,
            status_text(r["status"]),
            str(r["jobs"]),
            seconds(r["oldest_due_seconds"]),
            seconds(r["p50_seconds"]),
            seconds(r["p95_seconds"]),
        )
    return table


def _cap(value: object) -> str:
    return "-" if value is None else str(value)


def limits_view(types: list[Row], groups: list[Row], limits: list[Row]) -> Group:
    """Job types (running, waiting, cap, paused), the busiest fairness groups, and the limits
    set with set_concurrency_limit."""
    kinds = Table(box=None, header_style="bold", pad_edge=False, title_justify="left")
    for name in ("job_type", "running", "waiting", "later", "cap", "state"):
        kinds.add_column(name, justify="left" if name in ("job_type", "state") else "right")
    for r in types:
        kinds.add_row(
            inert(r["job_type"]), str(r["running"] or 0), str(r["waiting"] or 0),
            str(r["scheduled"] or 0), _cap(r["max_running"]),
            Text("paused", style=STYLE["paused"]) if r["paused"] else Text("running"),
        )  # fmt: skip
    busy = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("group", "running", "waiting", "later", "cap", "weight"):
        busy.add_column(name, justify="left" if name == "group" else "right")
    for r in groups:
        busy.add_row(
            inert(r["group_key"]) if r["group_key"] else Text("(none)", style="dim"),
            str(r["running"]), str(r["waiting"]), str(r["scheduled"]), _cap(r["max_running"]),
            str(r["weight"]),
        )  # fmt: skip
    set_ = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("limit for", "cap", "weight"):
        set_.add_column(name, justify="left" if name == "limit for" else "right")
    for r in limits:
        label = "every other group" if r["key"] == "*" else r["key"]
        set_.add_row(inert(label), _cap(r["max_running"]), str(r["weight"]))
    parts: list[Any] = [Text("job types", style="bold"), kinds if types else Text("  none")]
    parts += [Text("busiest groups", style="bold"), busy if groups else Text("  none waiting")]
    parts += [Text("group limits", style="bold"), set_ if limits else Text("  none set")]
    return Group(*parts)


def spend_table(rows: list[Row], total: Row) -> Group:
    """Calls, units and estimated cost per provider, and the total."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("provider", "calls", "images", "input tokens", "output tokens", "credits",
                 "est. cost"):  # fmt: skip
        table.add_column(name, justify="left" if name == "provider" else "right")
    for r in rows:
        table.add_row(
            inert(r["provider"]), str(r["calls"]), str(r["images"]), f"{r['input_tokens']:,}",
            f"{r['output_tokens']:,}", f"{r['credits']:g}", f"${r['cost_usd']:.4f}",
        )  # fmt: skip
    line = Text(f"total: {total['calls']} calls, ${total['cost_usd']:.4f} estimated", style="bold")
    return Group(table, line)


def summary(job: Row, width: int = 120) -> Group:
    """One job for a person: state, attempts and their errors, progress, and image URLs. A URL
    is never cut: one that does not fit beside its slot goes whole on a line of its own (print
    the summary with crop=False, and the terminal wraps it as one line)."""
    head = Text.assemble(
        inert(job["job_type"], "bold"),
        " ",
        (str(job["id"]), "dim"),
        "  ",
        status_text(job["status"]),
    )
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    attempts = f"{job['attempt']} of {job['max_retries'] + 1}"
    if job["status"] == "pending" and job["retry_count"]:
        attempts += f" (next try {_when(job['run_at'])})"
    facts.add_row("attempt", attempts)
    facts.add_row(
        "created", f"{job['created_at']:%Y-%m-%d %H:%M:%S} UTC ({ago(job['created_at'])})"
    )
    if job.get("user_id"):
        facts.add_row("user", inert(job["user_id"]))
    if job.get("concurrency_key"):
        facts.add_row("group", inert(job["concurrency_key"]))
    if job.get("waiting_because"):
        facts.add_row("waiting", inert(job["waiting_because"], "yellow"))
    if prog := progress_text(job["progress"]):
        facts.add_row("progress", prog)
    if job["error_message"]:
        facts.add_row("error", inert(job["error_message"], "red"))
    parts: list[Any] = [head, facts]
    errors = job.get("errors") or []
    if errors:
        attempts_table = Table(box=None, header_style="bold", pad_edge=False, title_justify="left")
        attempts_table.add_column("#", justify="right")
        attempts_table.add_column("at")
        attempts_table.add_column("error", overflow="fold")
        for e in errors:
            attempts_table.add_row(
                inert(e.get("attempt", "")),
                inert(str(e.get("at", ""))[:19]),
                inert(e.get("error", "")),
            )
        parts += [Text("failed attempts", style="bold"), attempts_table]
    spend = job.get("spend") or []
    if spend:
        calls = Table(box=None, header_style="bold", pad_edge=False)
        for name in ("attempt", "provider calls", "ok", "images", "est. cost"):
            calls.add_column(name, justify="right")
        for a in spend:
            calls.add_row(
                str(a["attempt"]), str(a["calls"]), str(a["ok"]), str(a["images"]),
                f"${a['cost_usd']:.4f}",
            )  # fmt: skip
        parts += [Text("spend", style="bold"), calls]
    if job.get("workflow"):
        parts += workflow_view(job, job["workflow"])
    urls = image_urls(job)
    if urls:
        parts.append(Text("images", style="bold"))
        # One line each, never folded: they are copied into a browser.
        for slot, url in urls:
            if 2 + 17 + len(url) <= width:
                parts.append(
                    Text.assemble("  ", inert(f"{slot:<16} {url}"), no_wrap=True, overflow="ignore")
                )
            else:
                parts += [Text.assemble("  ", inert(slot)), inert(url, no_wrap=True)]
    return Group(*parts)


def node_label(node: Row) -> str:
    """A workflow job's name, else its type."""
    return str(node.get("node_name") or node["job_type"])


def workflow_view(job: Row, nodes: list[Row]) -> list[Any]:
    """The graph a job belongs to: each job with its status and what it waits for, the job
    being shown marked with ▸; a title with how many are finished."""
    labels = {n["id"]: node_label(n) for n in nodes}
    total = int(nodes[0]["total"]) if nodes else 0
    counts: dict[str, int] = {}
    for n in nodes:
        counts[n["status"]] = counts.get(n["status"], 0) + 1
    finished = sum(counts.get(s, 0) for s in FINISHED)
    trouble = ", ".join(f"{counts[s]} {s}" for s in ("failed", "cancelled") if counts.get(s))
    title = Text.assemble(
        ("workflow ", "bold"),
        (str(job["workflow_id"])[:8], "dim"),
        f"  {finished} of {total} finished" + (f" ({trouble})" if trouble else ""),
    )
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("", no_wrap=True)
    table.add_column("job", no_wrap=True)
    table.add_column("id", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("waits for", overflow="fold")
    for n in nodes:
        deps = n.get("depends_on") or []
        after = ", ".join(labels.get(d, str(d)[:8]) for d in deps)
        table.add_row(
            "▸" if n["id"] == job["id"] else "",
            inert(node_label(n)),
            inert(str(n["id"])[:8], "dim"),
            status_text(n["status"]),
            inert(after),
        )
    parts: list[Any] = [title, table]
    if total > len(nodes):
        parts.append(
            Text(
                f"  … and {total - len(nodes)} more: processor jobs --workflow {job['workflow_id']}"
            )
        )
    return parts


def _when(at: datetime | None) -> str:
    if at is None:
        return "now"
    seconds = (at - datetime.now(UTC)).total_seconds()
    return "now" if seconds <= 0 else f"in {seconds:.0f}s"


def image_urls(job: Row) -> list[tuple[str, str]]:
    """(slot, url) of every image in the job's result, else in its progress so far."""
    for source in (job.get("result"), job.get("progress")):
        if not isinstance(source, dict):
            continue
        items = source.get("images") or source.get("items") or []
        found = [
            (str(i.get("slot") or i.get("kind") or ""), i["url"])
            for i in items
            if isinstance(i, dict) and isinstance(i.get("url"), str)
        ]
        aplus = source.get("aplus")
        if isinstance(aplus, dict):
            found += [
                (str(i.get("slot", "")), i["url"])
                for i in aplus.get("images", [])
                if isinstance(i, dict) and isinstance(i.get("url"), str)
            ]
        if found:
            return found
    return []


def follow(fetch: Callable[[], Row | None], console: Console, every: float = 0.5) -> Row | None:
    """Shows one job's progress (a bar for a pack) until it ends; returns the final row."""
    bar = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    job = fetch()
    if job is None:
        return None
    task = bar.add_task(inert(job["job_type"]).plain, total=None, state="")
    with bar:
        while True:
            prog = job["progress"] if isinstance(job["progress"], dict) else {}
            total = prog.get("total") if isinstance(prog.get("total"), int) else None
            bar.update(
                task,
                total=total,
                completed=prog.get("done", 0) if total else 0,
                state=Text.from_markup(f"[{STYLE.get(job['status'], '')}]{job['status']}[/]"),
            )
            if job["status"] in FINISHED:
                if job["status"] == "completed" and total:
                    bar.update(task, completed=total)
                return job
            time.sleep(every)
            job = fetch() or job


def watch_queue(fetch: Callable[[], list[Row]], console: Console, every: float = 1.0) -> None:
    """The whole queue, live, until Ctrl-C."""
    with Live(console=console, refresh_per_second=4) as live:
        while True:
            live.update(
                Group(
                    Text(f"job_queue at {datetime.now():%H:%M:%S}  (Ctrl-C to stop)", style="dim"),
                    stats_table(fetch()),
                )
            )
            time.sleep(every)
