"""The status page at /ui, server-rendered (Jinja2; one small script of our own refreshes the
live part of each page): the queue at a glance, jobs filtered and paged, one job with its
attempts, result, progress and images, and retry / cancel buttons.

Sign-in is a pasted PROCESSOR_TOKEN exchanged for a session cookie (processor.web.ui.session); every
form carries the session's CSRF token and must come from this origin."""

from __future__ import annotations

import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from processor import redact
from processor.auth import FailureGuard, client_address, retry_after, token_matches
from processor.db import Database
from processor.errors import DatabaseError
from processor.humanize import ago
from processor.ids import RULE as ID_RULE
from processor.ids import ambiguous, id_digits, matching_ids
from processor.ops.schedule import JOB_NAME
from processor.providers.storage import fresh_urls
from processor.status import STATUSES
from processor.web.ui.session import Session, Sessions

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
PAGE_SIZE = 50
CSP = (
    "default-src 'self'; img-src 'self' https: data:; script-src 'self'; style-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _duration(start: Any, end: Any) -> str:
    try:
        a = start if isinstance(start, datetime) else datetime.fromisoformat(str(start))
        b = end if isinstance(end, datetime) else datetime.fromisoformat(str(end))
    except (TypeError, ValueError):
        return ""
    seconds = (b - a).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


templates.env.filters["pretty"] = _pretty
templates.env.filters["ago"] = ago
templates.env.filters["redact"] = redact.redact
templates.env.globals["duration"] = _duration


def _db(request: Request) -> Database:
    db: Database = request.app.state.queue.db
    return db


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.ui_sessions
    return sessions


def _render(request: Request, name: str, session: Session | None, **context: Any) -> Response:
    response = templates.TemplateResponse(
        request, name, {"session": session, "statuses": STATUSES, **context}
    )
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def _to_login(request: Request) -> Response:
    return RedirectResponse(f"/ui/login?{urlencode({'next': request.url.path})}", 303)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True  # some clients send neither; the CSRF token still has to match
    return urlsplit(origin).netloc == request.headers.get("host")


async def _checked_form(request: Request, session: Session) -> dict[str, Any] | None:
    form = await request.form()
    token = form.get("csrf")
    if not _same_origin(request) or not isinstance(token, str):
        return None
    if not hmac.compare_digest(token, session.csrf):
        return None
    return dict(form)


async def login(request: Request) -> Response:
    sessions = _sessions(request)
    next_path = request.query_params.get("next", "/ui")
    if not next_path.startswith("/ui") or next_path.startswith("//"):
        next_path = "/ui"
    if request.method == "GET":
        if await sessions.load(request):
            return RedirectResponse(next_path, 303)
        return _render(request, "login.html", None, next=next_path, error=None)
    guard: FailureGuard = request.app.state.auth_guard
    address = client_address(request)
    wait = guard.held_off(address)
    if wait is not None:
        seconds = retry_after(wait)
        response = _render(
            request, "login.html", None, next=next_path,
            error=f"Too many wrong tokens from this address. Try again in {seconds} s.",
        )  # fmt: skip
        response.status_code = 429
        response.headers["Retry-After"] = seconds
        return response
    form = await request.form()
    token = form.get("token")
    if not _same_origin(request) or not isinstance(token, str) or not token.strip():
        return _render(request, "login.html", None, next=next_path, error="Paste the token.")
    if not token_matches(token.strip(), request.app.state.accepted_tokens):
        guard.failed(address, "ui_login", "not the token")
        response = _render(
            request, "login.html", None, next=next_path, error="That is not the token."
        )
        response.status_code = 401
        return response
    guard.succeeded(address)
    response = RedirectResponse(next_path, 303)
    sessions.start(response)
    return response


async def logout(request: Request) -> Response:
    sessions = _sessions(request)
    session = await sessions.load(request)
    if session is not None and await _checked_form(request, session) is None:
        return Response("bad or missing CSRF token", 403)
    response = RedirectResponse("/ui/login", 303)
    await sessions.end(session, response)
    return response


async def _optional(db: Database, name: str, params: dict[str, Any] | None = None) -> Any:
    """Rows of a query that needs pg_cron or pg_net, or None where they are not installed."""
    try:
        return await db.fetch_all(name, params)
    except DatabaseError:
        return None


async def overview(request: Request) -> Response:
    session = await _sessions(request).load(request)
    if session is None:
        return _to_login(request)
    db = _db(request)
    counts = await db.fetch_all("ui_counts")
    types = sorted({r["job_type"] for r in counts})
    table = {t: {s: 0 for s in STATUSES} for t in types}
    for r in counts:
        table[r["job_type"]][r["status"]] = r["jobs"]
    minutes = {r["minute"]: r for r in await db.fetch_all("ui_per_minute")}
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    per_minute = []
    for i in range(59, -1, -1):
        minute = now - timedelta(minutes=i)
        row = minutes.get(minute, {})
        per_minute.append(
            {"minute": minute, "completed": row.get("completed", 0), "failed": row.get("failed", 0)}
        )
    peak = max([1] + [m["completed"] + m["failed"] for m in per_minute])
    return _render(
        request,
        "overview.html",
        session,
        table=table,
        oldest=await db.fetch_one("ui_oldest_due"),
        durations=await db.fetch_all("ui_durations"),
        per_minute=per_minute,
        peak=peak,
        cron_runs=await _optional(db, "cron_recent_runs", {"name": JOB_NAME}),
        net_answers=await _optional(db, "net_recent_responses"),
        running=request.app.state.dispatcher.running,
        cron_job=JOB_NAME,
        job_types=await db.fetch_all("job_type_states"),
        groups=await db.fetch_all("busiest_groups", {"limit": 10}),
        budgets=await db.fetch_all("spend_budgets_now", {"default_groups": 5}),
        periods=BUDGET_PERIODS,
    )


async def jobs(request: Request) -> Response:
    session = await _sessions(request).load(request)
    if session is None:
        return _to_login(request)
    q = request.query_params
    search = (q.get("q") or "").strip()
    digits = id_digits(search) if search else None
    matches = 0
    found: list[uuid.UUID] = []
    if digits:  # a whole id, or its first 8 or more characters as the list shows them
        found = await matching_ids(_db(request), digits)
        matches = len(found)
        if matches == 1:
            return RedirectResponse(f"/ui/jobs/{found[0]}", 303)
    filters = {
        "status": q.get("status") if q.get("status") in STATUSES else None,
        "job_type": q.get("type") or None,
        "user_id": q.get("user") or None,
        "project_id": q.get("project") or None,
    }
    bad = [k for k, v in filters.items() if v and not _storable(v)]
    if bad:
        return _plain(f"the {', '.join(bad)} filter holds a control character; no job has one", 400)
    workflow_id: uuid.UUID | None = None
    if q.get("workflow"):
        try:
            workflow_id = uuid.UUID(q["workflow"])
        except ValueError:
            return _plain("the workflow filter must be a workflow's id (a job id)", 400)
    before_at: datetime | None = None
    before_id: uuid.UUID | None = None
    if q.get("before"):
        at, _, ident = q["before"].partition("_")
        try:
            before_at, before_id = datetime.fromisoformat(at), uuid.UUID(ident)
        except ValueError:
            before_at = before_id = None
    rows = await _db(request).fetch_all(
        "list_jobs",
        {
            **filters,
            "workflow_id": workflow_id,
            "before_at": before_at,
            "before_id": before_id,
            "limit": PAGE_SIZE + 1,
        },
        prepare=False,
    )
    paused = {r["job_type"] for r in await _db(request).fetch_all("paused_job_types")}
    for r in rows:
        r["paused"] = r["status"] == "pending" and r["job_type"] in paused
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    shown = {"status": filters["status"], "type": filters["job_type"],
             "user": filters["user_id"], "project": filters["project_id"],
             "workflow": str(workflow_id) if workflow_id else None}  # fmt: skip
    kept = {k: v for k, v in shown.items() if v}
    next_page = None
    if more:
        last = rows[-1]
        cursor = f"{last['created_at'].isoformat()}_{last['id']}"
        next_page = "/ui/jobs?" + urlencode({**kept, "before": cursor})
    return _render(
        request,
        "jobs.html",
        session,
        rows=rows,
        filters=shown,
        search=search,
        not_an_id=bool(search) and digits is None,
        not_found=digits is not None and matches == 0,
        ambiguous=ambiguous(search, found) if matches > 1 else None,
        id_rule=ID_RULE,
        next_page=next_page,
        first_page="/ui/jobs?" + urlencode(kept) if q.get("before") else None,
    )


async def job(request: Request) -> Response:
    session = await _sessions(request).load(request)
    if session is None:
        return _to_login(request)
    try:
        job_id = uuid.UUID(request.path_params["job_id"])
    except ValueError:
        return _render(request, "missing.html", session, what=request.path_params["job_id"])
    db = _db(request)
    row = await db.fetch_one("get_job", {"id": job_id})
    if row is None:
        response = _render(request, "missing.html", session, what=str(job_id))
        response.status_code = 404
        return response
    storage = request.app.state.handler_context.providers.storage
    images = await fresh_urls(
        await db.fetch_all("images_shown_for_job", {"job_id": job_id}), storage
    )
    row["result"] = await fresh_urls(row["result"], storage)
    result = row["result"] if isinstance(row["result"], dict) else {}
    aplus = result.get("aplus") if isinstance(result.get("aplus"), dict) else None
    progress = row["progress"] if isinstance(row["progress"], dict) else None
    workflow: list[dict[str, Any]] = []
    if row["workflow_id"] is not None:
        workflow = await db.fetch_all("workflow_jobs", {"workflow_id": row["workflow_id"]})
    return _render(
        request,
        "job.html",
        session,
        job=row,
        images=[i for i in images if not i["slot"].startswith("aplus_")],
        aplus=_stored_only(aplus.get("document"), images) if aplus else None,
        progress=progress,
        workflow=workflow,
        names={n["id"]: n["node_name"] or n["job_type"] for n in workflow},
    )


def _stored_only(document: Any, images: list[dict[str, Any]]) -> Any:
    """The A+ document with each module image replaced by the image the processor stored under
    the same path, and dropped when there is none: a handler's result names what it likes, but
    the page loads no image from anywhere else (no tracking pixels, no third-party hosts)."""
    stored = {i["storage_path"]: i for i in images if i.get("storage_path")}
    if isinstance(document, list):
        return [_stored_only(v, images) for v in document]
    if not isinstance(document, dict):
        return document
    out = {k: _stored_only(v, images) for k, v in document.items() if k != "image"}
    if "image" in document:
        image = document["image"]
        path = image.get("storage_path") if isinstance(image, dict) else None
        out["image"] = stored.get(path) if isinstance(path, str) else None
    return out


async def act(request: Request) -> Response:
    session = await _sessions(request).load(request)
    if session is None:
        return _to_login(request)
    if await _checked_form(request, session) is None:
        return Response("bad or missing CSRF token", 403)
    action = request.path_params["action"]
    try:
        job_id = uuid.UUID(request.path_params["job_id"])
    except ValueError:
        return Response("not a job id", 400)
    if action not in ("retry", "cancel"):
        return Response("unknown action", 404)
    try:
        await _db(request).fetch_one(f"{action}_job", {"id": job_id})
    except DatabaseError as exc:
        if exc.outage:
            raise
        # Refused by the database for a reason the operator can act on (insufficient credits).
        return _plain(f"{action} refused: {exc.reason}", exc.status)
    return RedirectResponse(f"/ui/jobs/{job_id}", 303)


async def pause(request: Request) -> Response:
    """Pauses or resumes a job type (the overview's buttons), with the page's CSRF rules."""
    session = await _sessions(request).load(request)
    if session is None:
        return _to_login(request)
    if await _checked_form(request, session) is None:
        return Response("bad or missing CSRF token", 403)
    action = request.path_params["action"]
    job_type = request.path_params["job_type"]
    if action not in ("pause", "resume"):
        return Response("unknown action", 404)
    if not _storable(job_type) or not 0 < len(job_type) <= 200:
        return _plain("a job type is 1 to 200 characters with no control character", 400)
    await _db(request).fetch_one(f"{action}_job_type", {"job_type": job_type})
    return RedirectResponse("/ui", 303)


BUDGET_PERIODS = {"hour": "1 hour", "day": "1 day", "week": "7 days", "month": "1 month"}


async def set_budget(request: Request) -> Response:
    """Sets, changes or removes a spend budget (the overview's form): a group's, a job type's
    or the service's; an empty amount removes it. With the page's CSRF rules."""
    session = await _sessions(request).load(request)
    if session is None:
        return _to_login(request)
    form = await _checked_form(request, session)
    if form is None:
        return Response("bad or missing CSRF token", 403)
    scope = str(form.get("scope", ""))
    key = str(form.get("key", "")).strip()
    amount = str(form.get("usd", "")).strip().removeprefix("$")
    period = BUDGET_PERIODS.get(str(form.get("period", "day")))
    if scope not in ("group", "type", "service"):
        return _plain("scope must be group, type or service", 400)
    if period is None:
        return _plain(f"period must be one of {', '.join(BUDGET_PERIODS)}", 400)
    if scope != "service" and (not _storable(key) or not 0 < len(key) <= 200):
        return _plain(f"a {scope} is 1 to 200 characters with no control character", 400)
    try:
        usd = None if amount in ("", "none") else Decimal(amount)
    except InvalidOperation:
        return _plain(f"the amount must be a number of USD (such as 4.80), got {amount!r}", 400)
    if usd is not None and (not usd.is_finite() or usd < 0):
        return _plain(f"the amount must be at least 0, got {amount!r}", 400)
    query = {"group": "set_spend_budget", "type": "set_job_type_budget"}.get(
        scope, "set_service_budget"
    )
    try:
        params: dict[str, Any] = {"usd": usd, "period": period}
        if scope != "service":
            params["key"] = key
        await _db(request).fetch_all(query, params)
    except DatabaseError as exc:
        if exc.outage:
            raise
        return _plain(f"budget refused: {exc.reason}", exc.status)
    return RedirectResponse("/ui#budgets", 303)


BULK_LIMIT = 100  # jobs one bulk action takes, oldest first (the CLI takes up to 10,000)
BULK_STATUSES = {
    "retry": ("failed", "cancelled"),
    "cancel": ("pending", "processing", "waiting"),
}


async def bulk(request: Request) -> Response:
    """Retry or cancel every job the list's filter selects: a dry run first, then the confirmed
    action (retry_jobs / cancel_jobs), with the page's CSRF rules."""
    session = await _sessions(request).load(request)
    if session is None:
        return _to_login(request)
    form = await _checked_form(request, session)
    if form is None:
        return Response("bad or missing CSRF token", 403)
    action = request.path_params["action"]
    if action not in BULK_STATUSES:
        return Response("unknown action", 404)
    status = form.get("status")
    if status not in BULK_STATUSES[action]:
        allowed = " or ".join(BULK_STATUSES[action])
        return _plain(f"{action} all: filter the list to {allowed} jobs first", 400)
    job_type, user_id = form.get("type") or None, form.get("user") or None
    if not all(_storable(v) for v in (job_type, user_id) if v):
        return _plain("a filter holds a control character; no job has one", 400)
    confirmed = form.get("confirm") == "yes"
    shown = {"status": status, "type": job_type, "user": user_id}
    params = {
        **{"status": status, "job_type": job_type, "user_id": user_id},
        **{"since": None, "until": None, "error": None},
        **{"limit": BULK_LIMIT, "dry_run": not confirmed, "workflow_id": None},
    }
    try:
        rows = await _db(request).fetch_all(f"{action}_jobs", params)
    except DatabaseError as exc:
        if exc.outage:
            raise
        return _plain(f"{action} refused: {exc.reason}", exc.status)
    priced = [r["max_retry_usd"] for r in rows if r.get("max_retry_usd") is not None]
    return _render(
        request,
        "bulk.html",
        session,
        action=action,
        confirmed=confirmed,
        rows=rows,
        filters=shown,
        back="/ui/jobs?" + urlencode({k: v for k, v in shown.items() if v}),
        done=sum(1 for r in rows if r["done"]),
        paid=sum((r.get("paid_usd") or 0 for r in rows), 0),
        most=sum(priced, 0) if priced else None,
        unpriced=len(rows) - len(priced),
        limit=BULK_LIMIT,
    )


def _storable(value: str) -> bool:
    return not any(ord(c) < 32 or ord(c) == 127 for c in value)


def _plain(message: str, status: int) -> Response:
    return Response(message, status, media_type="text/plain; charset=utf-8")


async def home(request: Request) -> Response:
    return RedirectResponse("/ui", 307)


routes: list[BaseRoute] = [
    Route("/", home, methods=["GET"]),
    Route("/ui", overview, methods=["GET"]),
    Route("/ui/login", login, methods=["GET", "POST"]),
    Route("/ui/logout", logout, methods=["POST"]),
    Route("/ui/jobs", jobs, methods=["GET"]),
    Route("/ui/jobs/{job_id}", job, methods=["GET"]),
    Route("/ui/bulk/{action}", bulk, methods=["POST"]),
    Route("/ui/jobs/{job_id}/{action}", act, methods=["POST"]),
    Route("/ui/types/{job_type}/{action}", pause, methods=["POST"]),
    Route("/ui/budgets", set_budget, methods=["POST"]),
    Mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="ui-static"),
]
