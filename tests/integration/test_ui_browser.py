"""The status page in a real headless Chromium (Debian's package, driven by Playwright's Python
driver through executable_path: no browser download): sign in, open a completed pack and see
its six thumbnails, cancel a pending job, retry a failed one. Screenshots of each step are
written to .artifacts/ui/. Skipped, with the reason, where Chromium or Playwright is missing."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from psycopg.types.json import Jsonb

from tests.support import TOKEN

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / ".artifacts" / "ui"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The flags this machine's closed network needs (no background calls home), as root.
ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; make test does it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.mark.slow
def test_sign_in_see_a_pack_cancel_a_pending_job_retry_a_failed_one(make_service, conn, browser):
    server = make_service()
    SHOTS.mkdir(parents=True, exist_ok=True)
    pack = conn.execute(
        "select enqueue_job('generate-complete-pack', %s) as id",
        (Jsonb({"project_id": "p1", "product": {"name": "Ceramic Mug"}}),),
    ).fetchone()["id"]
    for _ in range(20):  # the pack hands out its images, they run, it puts them together
        status = conn.execute("select status from job_queue where id = %s", (pack,)).fetchone()
        if status["status"] == "completed":
            break
        httpx.post(
            f"{server.url}/process-jobs",
            json={"wait": True},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )
    assert status["status"] == "completed"
    waiting = conn.execute(
        "insert into job_queue (job_type, run_at) values ('ok', now() + interval '1 hour')"
        " returning id"
    ).fetchone()["id"]
    failed = conn.execute(
        "insert into job_queue (job_type, status, error_message, completed_at)"
        " values ('ok', 'failed', 'handler answered 422: bad input', now()) returning id"
    ).fetchone()["id"]

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{server.url}/ui")
    assert "/ui/login" in page.url  # not signed in yet
    page.fill("input[name=token]", TOKEN)
    page.screenshot(path=str(SHOTS / "1-sign-in.png"))
    page.click("form.login button")
    page.wait_for_url(f"{server.url}/ui")
    assert TOKEN not in page.url
    assert page.locator("h1").inner_text() == "Overview"
    page.screenshot(path=str(SHOTS / "2-overview.png"), full_page=True)

    page.goto(f"{server.url}/ui/jobs/{pack}")
    thumbs = page.locator(".gallery .thumb img")
    assert thumbs.count() == 6
    loaded = "[...document.querySelectorAll('.gallery img')].every(i => i.naturalWidth > 0)"
    page.wait_for_function(f"() => {loaded}")
    slots = page.locator(".gallery .thumb span").all_inner_texts()
    assert {s.split(" ")[0] for s in slots} == {
        "main", "lifestyle", "infographic", "detail", "in_use", "packaging",
    }  # fmt: skip
    page.screenshot(path=str(SHOTS / "3-pack.png"), full_page=True)

    page.goto(f"{server.url}/ui/jobs/{waiting}")
    page.click("button:has-text('Cancel')")
    page.wait_for_selector("h1 .status.cancelled")
    page.screenshot(path=str(SHOTS / "4-cancelled.png"))
    assert (
        conn.execute("select status from job_queue where id = %s", (waiting,)).fetchone()["status"]
        == "cancelled"
    )

    page.goto(f"{server.url}/ui/jobs/{failed}")
    assert "bad input" in page.locator(".facts").inner_text()
    page.click("button:has-text('Retry')")
    page.wait_for_selector("h1 .status.pending")
    page.screenshot(path=str(SHOTS / "5-retried.png"))
    assert (
        conn.execute("select status from job_queue where id = %s", (failed,)).fetchone()["status"]
        == "pending"
    )

    # Updates arrive without a reload: the pending list drops the job once it is cancelled.
    page.goto(f"{server.url}/ui/jobs?status=pending")
    marker = page.evaluate("() => (window.__kept = 1)")
    assert marker == 1
    conn.execute("update job_queue set status = 'cancelled', completed_at = now() where id = %s",
                 (failed,))  # fmt: skip
    page.wait_for_function(
        f"() => !document.querySelector('a[href=\"/ui/jobs/{failed}\"]')", timeout=10_000
    )
    assert page.evaluate("() => window.__kept") == 1  # the same page: no reload happened


# Every page at a phone's width and a desktop's. A phone shows nothing wider than its screen
# (no sideways scroll), and type names and "Sign out" stay on one line.
WIDTHS = {"phone": (390, 844), "desktop": (1280, 900)}
ONE_LINE = """(selector) => [...document.querySelectorAll(selector)].filter(e => {
    const r = document.createRange(); r.selectNodeContents(e);
    return new Set([...r.getClientRects()].map(x => Math.round(x.top))).size > 1;
}).map(e => e.textContent.trim())"""


@pytest.mark.slow
def test_every_page_fits_a_phone_and_type_names_stay_whole(make_service, conn, browser):
    server = make_service()
    SHOTS.mkdir(parents=True, exist_ok=True)
    pack = conn.execute(
        "select enqueue_job('generate-complete-pack', %s) as id",
        (Jsonb({"project_id": "p1", "product": {"name": "Ceramic Mug"}}),),
    ).fetchone()["id"]
    httpx.post(
        f"{server.url}/process-jobs",
        json={"wait": True},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=60,
    ).raise_for_status()
    failed = conn.execute(
        "insert into job_queue (job_type, status, error_message, errors, completed_at, user_id)"
        " values ('generate-complete-pack', 'failed', %s, %s, now(), 'seller-with-a-long-name')"
        " returning id",
        ("handler answered 422 Unprocessable Entity: " + "a long reason " * 12,
         Jsonb([{"attempt": 1, "at": "2026-12-06T10:00:00Z", "error": "x" * 200}])),
    ).fetchone()["id"]  # fmt: skip
    conn.execute(
        "insert into job_queue (job_type, run_at) select 'generate-aplus', now() + interval '1 h'"
        " from generate_series(1, 3)"
    )
    pages = {
        "overview": "/ui",
        "jobs": "/ui/jobs",
        "failed": "/ui/jobs?status=failed",
        "pack": f"/ui/jobs/{pack}",
        "failed-job": f"/ui/jobs/{failed}",
        "missing-job": "/ui/jobs/00000000-0000-4000-8000-000000000000",
        "search-refused": "/ui/jobs?q=generate-image",
    }
    for name, (width, height) in WIDTHS.items():
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(f"{server.url}/ui/login")
        page.fill("input[name=token]", TOKEN)
        too_wide = "() => document.documentElement.scrollWidth - window.innerWidth"
        assert page.evaluate(too_wide) <= 0, (name, "sign-in")
        page.screenshot(path=str(SHOTS / f"{name}-sign-in.png"))
        page.click("form.login button")
        page.wait_for_url(f"{server.url}/ui")
        for label, path in pages.items():
            page.goto(f"{server.url}{path}")
            assert page.evaluate(too_wide) <= 0, (name, label)
            broken = page.evaluate(ONE_LINE, "td, header a, header button, .facts dd")
            assert not [t for t in broken if t.startswith("generate-") or t == "Sign out"], (
                name,
                label,
                broken,
            )
            page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=True)
        # The retry-every-failed-job page (a form's answer: what it would do, then confirm).
        page.goto(f"{server.url}/ui/jobs?status=failed")
        page.click("form.bulk button")
        page.wait_for_selector("table.jobs")
        assert page.evaluate(too_wide) <= 0, (name, "bulk")
        assert not page.evaluate(ONE_LINE, "td"), (name, "bulk")
        page.screenshot(path=str(SHOTS / f"{name}-bulk.png"), full_page=True)
        # A table wider than the phone scrolls inside its own box.
        page.goto(f"{server.url}/ui/jobs")
        box = page.evaluate(
            "() => { const t = document.querySelector('table.jobs');"
            " return [t.scrollWidth, t.clientWidth, getComputedStyle(t).overflowX]; }"
        )
        if name == "phone":
            assert box[0] > box[1] and box[2] == "auto", box
        page.close()
