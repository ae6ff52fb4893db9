"""What an attacker or an unlucky operator can do to the service, row by row, and what it does
now. Real PostgreSQL, real HTTP servers; only the AI providers are fakes."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from psycopg.types.json import Jsonb
from starlette.applications import Starlette
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from processor.ops.pgcluster import free_port
from tests.fakes import FakeGemini, product_photo
from tests.support import PRODUCT, TOKEN, ThreadedServer, enqueue, post, row, wait_until

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def deep_json(depth: int) -> str:
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


def enqueue_builtin(conn, job_type: str, payload: dict, max_retries: int = 3) -> str:
    return str(
        conn.execute(
            "select enqueue_job(%s, %s, p_max_retries => %s) as id",
            (job_type, Jsonb(payload), max_retries),
        ).fetchone()["id"]
    )


@pytest.fixture
def files():
    """A local web server for source photos: /photo.png, /big.png, /text, /to-healthz."""
    served: dict[str, tuple[bytes, str]] = {}

    async def serve(request):
        body, kind = served.get(request.path_params["name"], (b"missing", "text/plain"))
        if kind == "redirect":
            return RedirectResponse(body.decode(), 302)
        return Response(body, media_type=kind)

    app = Starlette(routes=[Route("/{name}", serve)])
    with ThreadedServer(app) as server:
        yield server.url, served


# --- poison payloads -------------------------------------------------------------------------


def test_a_poison_payload_fails_alone_and_the_jobs_claimed_with_it_run(make_service, conn, handler):
    server = make_service()
    normal = [enqueue(conn) for _ in range(4)]
    # Written past the table's depth check (as a row from before it, or with triggers off).
    conn.execute("set session_replication_role = replica")
    poison = conn.execute(
        "insert into job_queue (job_type, payload) values ('ok', %s::jsonb) returning id",
        (deep_json(2000),),
    ).fetchone()["id"]
    conn.execute("set session_replication_role = origin")

    response = post(server, {"limit": 5, "wait": True})
    assert response.status_code == 200
    outcomes = {o["id"]: o["status"] for o in response.json()["outcomes"]}
    assert outcomes == {**{str(j): "completed" for j in normal}, str(poison): "failed"}
    bad = conn.execute(
        "select status, retry_count, error_message from job_queue where id = %s", (poison,)
    ).fetchone()
    assert bad["status"] == "failed" and bad["retry_count"] == 0
    assert "nests more than 512 levels" in bad["error_message"]
    assert handler.calls_for(poison) == []  # never sent
    # Reading it back does not break either.
    answer = httpx.get(f"{server.url}/jobs/{poison}", headers=AUTH)
    assert answer.status_code == 200
    assert "undecodable" in answer.json()["payload"]


def test_a_payload_too_large_for_the_table_is_refused_at_enqueue(conn):
    with pytest.raises(Exception, match="nests more than 64 levels"):
        conn.execute("select enqueue_job('ok', %s::jsonb)", (deep_json(2000),))


# --- images ----------------------------------------------------------------------------------


def test_an_image_over_the_pixel_cap_fails_at_once_before_it_is_decoded(make_service, conn, files):
    url, served = files
    served["big.png"] = (product_photo((1200, 1000)), "image/png")
    server = make_service({"ALLOW_PRIVATE_URLS": "on", "MAX_IMAGE_PIXELS": "1000000"})
    job_id = enqueue_builtin(
        conn,
        "generate-image",
        {"project_id": "p1", "product": PRODUCT, "source_image_url": f"{url}/big.png"},
    )
    response = httpx.post(f"{server.url}/process-jobs", json={"wait": True}, headers=AUTH)
    assert response.json()["outcomes"][0]["status"] == "failed"
    failed = row(conn, job_id)
    assert failed["retry_count"] == 0  # a 4xx: never retried
    assert (
        "1200 x 1000 pixels (1 MP); the limit is 1 MP (MAX_IMAGE_PIXELS)"
        in (failed["error_message"])
    )


def test_a_source_that_is_not_an_image_fails_at_once_with_the_reason(make_service, conn, files):
    url, served = files
    served["text"] = (b"<html>not a photo</html>", "image/png")
    server = make_service({"ALLOW_PRIVATE_URLS": "on"})
    job_id = enqueue_builtin(
        conn,
        "generate-image",
        {"project_id": "p1", "product": PRODUCT, "source_image_url": f"{url}/text"},
    )
    httpx.post(f"{server.url}/process-jobs", json={"wait": True}, headers=AUTH)
    failed = row(conn, job_id)
    assert failed["status"] == "failed" and failed["retry_count"] == 0
    assert "source_image_url is not a readable image" in failed["error_message"]


# --- outbound fetches --------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["/healthz", "/metrics"])
def test_source_urls_on_private_addresses_are_refused_without_saying_what_is_there(
    make_service, conn, target
):
    server = make_service()  # ALLOW_PRIVATE_URLS is off by default
    port = server.url.rsplit(":", 1)[1]
    ids = [
        enqueue_builtin(
            conn,
            "generate-image",
            {"project_id": "p1", "product": PRODUCT, "source_image_url": url},
        )
        for url in (
            f"{server.url}{target}",
            f"http://localhost:{port}{target}",
            f"http://[::1]:{port}{target}",
            "http://169.254.169.254/latest/meta-data/",
            f"http://127.0.0.1:{free_port()}/",  # a closed port
        )
    ]
    httpx.post(f"{server.url}/process-jobs", json={"wait": True, "limit": 5}, headers=AUTH)
    messages = set()
    for job_id in ids:
        failed = row(conn, job_id)
        assert failed["status"] == "failed" and failed["retry_count"] == 0
        messages.add(failed["error_message"])
    # One message for all of them: open port, closed port, metadata address look the same.
    assert messages == {
        "handler answered 422 Unprocessable Entity: source image: source_image_url was "
        "refused: it must be a public http(s) address"
    }


# --- secrets -----------------------------------------------------------------------------------


def test_provider_keys_never_reach_errors_answers_or_logs(make_service, conn, capfd):
    fake = FakeGemini(echo_request=True)
    with ThreadedServer(fake.app()) as gemini:
        server = make_service(
            {
                "GEMINI_API_KEY": "gemini-secret-key-123456",
                "OPENAI_API_KEY": "openai-secret-key-654321",
                "GEMINI_BASE_URL": f"{gemini.url}/v1beta",
                "IMAGE_PROVIDER": "gemini",
            }
        )
        job_id = enqueue_builtin(
            conn, "generate-image", {"project_id": "p1", "product": PRODUCT, "kind": "lifestyle"}
        )
        httpx.post(f"{server.url}/process-jobs", json={"wait": True}, headers=AUTH)
        answer = httpx.get(f"{server.url}/jobs/{job_id}", headers=AUTH).text
    failed = row(conn, job_id)
    stored = json.dumps([failed["error_message"], failed["errors"], failed["result"]])
    assert "x-goog-api-key" in stored  # the echo is there…
    assert "[redacted]" in stored  # …with the key taken out
    logs = capfd.readouterr()
    for text in (stored, answer, logs.out, logs.err):
        assert "gemini-secret-key-123456" not in text
        assert "openai-secret-key-654321" not in text
        assert TOKEN not in text


def test_user_handlers_never_receive_the_processor_token(make_service, conn):
    server = make_service()
    ok = enqueue(conn, "echo", respond={"echo_headers": True})
    refused = enqueue(conn, "echo", respond={"echo_headers": True, "status": 400})
    post(server, {"limit": 2, "wait": True})
    headers = row(conn, ok)["result"]
    assert "authorization" not in headers
    assert headers["processor-signature"].startswith("t=")
    failed = row(conn, refused)
    assert TOKEN not in failed["error_message"] and "processor-signature" in failed["error_message"]


def test_a_route_with_its_own_secret_signs_with_it(make_service, conn, handler, handler_url):
    route_secret = "route-secret-Km7Qx2Wz9Lt4Vb8N"
    server = make_service(
        {"JOB_ROUTES": json.dumps({"ok": {"url": f"{handler_url}/ok", "secret": route_secret}})}
    )
    job_id = enqueue(conn)
    post(server, {"wait": True})
    [call] = handler.calls_for(job_id)
    assert call.verify(route_secret)


def test_built_in_handlers_refuse_a_bad_signature(make_service):
    from processor.signing import new_delivery, sign

    server = make_service()
    body = json.dumps(
        {"job_id": str(uuid.uuid4()), "lease_token": str(uuid.uuid4()), "payload": {}}
    ).encode()

    def call(signature: str, delivery: str | None = None) -> httpx.Response:
        headers: dict[str, str | bytes] = {"Processor-Signature": signature.encode()}
        if delivery is not None:
            headers["Processor-Delivery"] = delivery
        return httpx.post(f"{server.url}/process-image", content=body, headers=headers)

    delivery = new_delivery()
    signed = sign(body, "not-the-secret-000000", path="/process-image", delivery=delivery)
    forged = call(signed, delivery)
    assert forged.status_code == 401
    assert "does not match" in forged.json()["error"]
    old = sign(body, "x" * 20, path="/process-image", delivery=delivery, timestamp=1_000_000)
    assert call(old, delivery).status_code == 401
    assert "older than 300 s" in call(old, delivery).json()["error"]
    # Malformed headers of any length are a 401 with a reason, never a 500.
    hostile = (f"t={'9' * 400},v2=00", f"t={'9' * 5000},v2={'0' * 64}", "t=²,v2=00", "x" * 9000)
    for header in hostile:
        refused = call(header, delivery)
        assert refused.status_code == 401, header[:40]
        assert "malformed" in refused.json()["error"]
    assert "Processor-Delivery" in call(signed).json()["error"]


def test_a_call_signed_for_your_handler_cannot_be_replayed_to_a_built_in(
    make_service, conn, handler
):
    """A handler holding a call for a cheap custom type replays it, headers and all, to each
    built-in route: every one refuses it, and no provider is called."""
    server = make_service()
    job_id = enqueue(conn)
    post(server, {"wait": True})
    [call] = handler.calls_for(job_id)
    for path in ("/process-image", "/process-complete-pack", "/process-aplus"):
        replayed = httpx.post(
            f"{server.url}{path}",
            content=call.raw,
            headers={"Processor-Signature": call.signature, "Processor-Delivery": call.delivery},
        )
        assert replayed.status_code == 401, path
        assert "does not match" in replayed.json()["error"]


def test_a_built_in_refuses_a_job_type_that_is_not_its_own(make_service):
    """Even signed with the built-ins' own secret for the right path, a call for another job
    type is refused before anything runs."""
    from processor.settings import BUILTIN_LABEL, derive_signing_secret
    from processor.signing import new_delivery, sign

    server = make_service()
    secret = derive_signing_secret(TOKEN, BUILTIN_LABEL)
    body = json.dumps(
        {
            "job_id": str(uuid.uuid4()),
            "job_type": "generate-aplus",
            "lease_token": str(uuid.uuid4()),
            "payload": {},
        }
    ).encode()
    delivery = new_delivery()
    refused = httpx.post(
        f"{server.url}/process-image",
        content=body,
        headers={
            "Processor-Signature": sign(body, secret, path="/process-image", delivery=delivery),
            "Processor-Delivery": delivery,
        },
    )
    assert refused.status_code == 403
    assert "not 'generate-aplus'" in refused.json()["error"]


def test_a_delivery_runs_once_even_replayed_at_the_same_moment(make_service, conn, fake_gemini):
    """A captured signed call to /process-image, sent twice at once while its job runs: one
    call runs and pays for one image, the other is refused with 409 before anything is spent,
    and a third copy later is refused too (on any processor: the record is in the database)."""
    from concurrent.futures import ThreadPoolExecutor

    from processor.settings import BUILTIN_LABEL, derive_signing_secret
    from processor.signing import new_delivery, sign

    fake, env = fake_gemini
    fake.delay = 0.5  # both copies arrive while the first one runs
    server, other = make_service(env), make_service(env)
    payload = {"project_id": "p1", "product": PRODUCT, "kind": "main"}
    conn.execute(
        "insert into job_queue (job_type, payload) values ('generate-image', %s)", (Jsonb(payload),)
    )
    [claimed] = conn.execute("select * from claim_jobs('w1', 1)").fetchall()
    body = json.dumps(
        {
            "job_id": str(claimed["id"]),
            "job_type": "generate-image",
            "attempt": 1,
            "lease_token": str(claimed["lease_token"]),
            "user_id": None,
            "payload": payload,
        }
    ).encode()
    delivery = new_delivery()
    secret = derive_signing_secret(TOKEN, BUILTIN_LABEL)
    headers = {
        "Processor-Signature": sign(body, secret, path="/process-image", delivery=delivery),
        "Processor-Delivery": delivery,
        "Content-Type": "application/json",
    }

    def send(target) -> httpx.Response:
        return httpx.post(f"{target.url}/process-image", content=body, headers=headers, timeout=30)

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(send, [server, other]))
    assert sorted(a.status_code for a in answers) == [200, 409]
    refused = next(a for a in answers if a.status_code == 409)
    assert f"delivery {delivery} was already run" in refused.json()["error"]
    later = send(server)
    assert later.status_code == 409
    assert fake.image_calls == 1


# --- retries that make sense -----------------------------------------------------------------


def test_a_hopeless_payload_fails_at_once_before_any_provider_call(make_service, conn):
    fake = FakeGemini()
    with ThreadedServer(fake.app()) as gemini:
        server = make_service(
            {
                "GEMINI_API_KEY": fake.api_key,
                "GEMINI_BASE_URL": f"{gemini.url}/v1beta",
                "IMAGE_PROVIDER": "gemini",
            }
        )
        job_id = enqueue_builtin(
            conn, "generate-image", {"project_id": "../x", "product": PRODUCT, "kind": "detail"}
        )
        httpx.post(f"{server.url}/process-jobs", json={"wait": True}, headers=AUTH)
    failed = row(conn, job_id)
    assert failed["status"] == "failed" and failed["retry_count"] == 0
    assert "project_id may hold only letters" in failed["error_message"]
    assert fake.calls == []


def test_the_final_error_says_how_many_attempts_it_took(make_service, conn):
    server = make_service()
    job_id = enqueue(conn, respond={"status": 503}, max_retries=1)
    post(server, {"wait": True})
    conn.execute("update job_queue set run_at = now() where id = %s", (job_id,))
    post(server, {"wait": True})
    failed = row(conn, job_id)
    assert failed["status"] == "failed"
    assert failed["error_message"].endswith("(gave up after 2 attempts)")


# --- limits ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("[" * 100_000, "nests too deeply"),
        ('{"limit": ' + "9" * 5000 + "}", "body is not valid JSON"),
        ('{"job_types": ["ok\\u0000"]}', "job_types must be a list"),
        ('{"limit": 1e400}', "limit must be an integer"),
        (b"\xff\xfe", "body is not valid JSON"),
    ],
)
def test_malformed_bodies_get_400_never_500(make_service, body, reason):
    server = make_service()
    response = post(server, body)
    assert response.status_code == 400, response.text
    assert reason in response.json()["error"]


def test_request_bodies_over_the_limit_get_413(make_service):
    server = make_service({"MAX_REQUEST_BYTES": "100000"})
    big = b'{"limit": 1' + b" " * 200_000 + b"}"
    declared = post(server, big)
    assert declared.status_code == 413
    assert "MAX_REQUEST_BYTES" in declared.json()["error"]

    def chunks():
        for _ in range(30):
            yield b" " * 10_000

    streamed = httpx.post(f"{server.url}/process-jobs", content=chunks(), headers=AUTH)
    assert streamed.status_code == 413


def test_a_handler_answer_over_the_limit_is_not_stored(make_service, conn):
    server = make_service({"MAX_HANDLER_ANSWER_BYTES": "100000"})
    job_id = enqueue(conn, respond={"bytes": 300_000})
    post(server, {"wait": True})
    failed = row(conn, job_id)
    assert failed["status"] == "failed" and failed["result"] is None
    assert "the limit is 100000" in failed["error_message"]
    assert "MAX_HANDLER_ANSWER_BYTES" in failed["error_message"]


def test_a_2xx_that_is_not_json_is_kept_as_text(make_service, conn):
    server = make_service()
    job_id = enqueue(conn, respond={"text": "done, 3 rows"})
    post(server, {"wait": True})
    assert row(conn, job_id)["result"] == {"text": "done, 3 rows"}


# --- cancellation stops spending -------------------------------------------------------------


def test_a_cancelled_pack_stops_its_images_at_the_calls_in_flight(make_service, conn):
    """A pack's images are its children: cancelling the pack cancels them, and a running image
    job, its lease gone, makes no call after the one in flight (one slot: at most one)."""
    fake = FakeGemini(delay=0.3)
    with ThreadedServer(fake.app()) as gemini:
        server = make_service(
            {
                "GEMINI_API_KEY": fake.api_key,
                "GEMINI_BASE_URL": f"{gemini.url}/v1beta",
                "IMAGE_PROVIDER": "gemini",
                "MAX_RUNNING_JOBS": "1",
                "LISTEN_FOR_JOBS": "on",
            }
        )
        job_id = enqueue_builtin(
            conn, "generate-complete-pack", {"project_id": "p1", "product": PRODUCT}
        )
        stored = (
            "select count(*) as n from generated_images g join job_queue c on c.id = g.job_id "
            "where c.parent_id = %s"
        )
        wait_until(
            lambda: conn.execute(stored, (job_id,)).fetchone()["n"] >= 2,
            timeout=30,
            what="two images stored",
        )
        assert conn.execute("select cancel_job(%s) as ok", (job_id,)).fetchone()["ok"]
        calls_at_cancel = fake.image_calls
        wait_until(lambda: server_running(server) == 0, timeout=30, what="the images to stop")
        after = fake.image_calls - calls_at_cancel
    # Without the cancel reaching the children, the other images would all still be made.
    assert after <= 1, f"{after} provider calls after the cancel"
    assert row(conn, job_id)["status"] == "cancelled"
    kids = conn.execute("select status from job_queue where parent_id = %s", (job_id,)).fetchall()
    assert {k["status"] for k in kids} <= {"completed", "cancelled"}
    assert conn.execute(stored, (job_id,)).fetchone()["n"] < 6


def server_running(server) -> int:
    return httpx.get(f"{server.url}/healthz").json().get("running_jobs", -1)
