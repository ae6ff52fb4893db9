"""A no-op job handler for the benchmarks, run in its own process by uvicorn:

    python -m uvicorn noop_handler:app --app-dir bench --port 9100

A bare ASGI app (no framework), so the benchmarks measure the processor rather than the
handler. It answers every job at once with 200 and counts deliveries per job id, so a
benchmark can ask GET /stats how many jobs arrived, how many more than once, and (with
?times=1) when each first arrived as time.time(); POST /reset clears it.
`{"respond": {"delay": s}}` in a job's payload makes it wait first.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

deliveries: dict[str, int] = {}
first_seen: dict[str, float] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    now = time.time()
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    path = scope["path"]
    if path == "/stats":
        answer = {
            "jobs": len(deliveries),
            "deliveries": sum(deliveries.values()),
            "duplicates": sum(1 for n in deliveries.values() if n > 1),
            "first_seen": first_seen if b"times=1" in scope["query_string"] else None,
        }
    elif path == "/reset":
        deliveries.clear()
        first_seen.clear()
        answer = {"ok": True}
    else:
        call = json.loads(body)
        job_id = call["job_id"]
        count = deliveries.get(job_id, 0)
        deliveries[job_id] = count + 1
        if not count:
            first_seen[job_id] = now
        delay = (call.get("payload") or {}).get("respond", {}).get("delay")
        if delay:
            await asyncio.sleep(delay)
        answer = {"result": None}
    payload = json.dumps(answer).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
