"""The Dockerfile, built and run with podman: migrations as their own command, `processor
serve` as the image's command, non-root, the HEALTHCHECK passing, a job run end to end, and a
clean exit on SIGTERM.

No image registry is reachable from the machines this runs on, so the base image is made from
Debian's packages with mmdebstrap (Debian bookworm + python3, as python:3.11-slim-bookworm is)
and passed as BASE. Skipped, with the reason, where podman cannot build or run containers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from processor.ops.pgcluster import free_port
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/processor-test-base:bookworm"
IMAGE = "localhost/processor:test"
TOKEN = "container-token-Ys4Kd9Vm2Qx7Lp3W"
# What this sandbox needs from podman: no default ulimits (it may not raise them), runc with
# cgroupfs (no systemd). Kept in the test's own file, never in /etc.
CONF = (
    '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n'
)


def podman(
    *args: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, env=_env()
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])} failed:\n{result.stderr[-2000:]}")
    return result


def _env() -> dict[str, str]:
    conf = Path(tempfile.gettempdir()) / "processor-test-containers.conf"
    conf.write_text(CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def _host_build_mounts() -> list[str]:
    """pip inside the build uses the host's CA bundle and pip settings (a registry mirror or
    proxy certificate, where the host has one)."""
    mounts = []
    for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf"):
        if Path(path).exists():
            mounts += ["-v", f"{path}:{path}:ro"]
    return mounts


@pytest.fixture(scope="module")
def image() -> str:
    missing = [tool for tool in ("podman", "runc", "mmdebstrap") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install podman runc mmdebstrap)")
    if podman("image", "exists", BASE, check=False).returncode != 0:
        with tempfile.TemporaryDirectory() as folder:
            tar = Path(folder) / "rootfs.tar"
            packages = "--include=python3,python3-venv,ca-certificates"
            made = subprocess.run(
                ["mmdebstrap", "--variant=minbase", packages, "bookworm", str(tar)],
                capture_output=True,
                text=True,
                timeout=900,
            )
            if made.returncode != 0:
                pytest.skip(f"cannot make a Debian base image: {made.stderr.strip()[-300:]}")
            podman("import", str(tar), BASE)
    probe = podman("run", "--rm", BASE, "python3", "-c", "print('ok')", check=False)
    if probe.returncode != 0:
        pytest.skip(f"podman cannot run containers here: {probe.stderr.strip()[-300:]}")
    podman(
        "build", "--format", "docker", "--network", "host", *_host_build_mounts(),
        "--build-arg", f"BASE={BASE}", "-t", IMAGE, str(ROOT),
    )  # fmt: skip
    return IMAGE


@pytest.mark.slow
def test_the_image_migrates_serves_as_non_root_stays_healthy_and_stops_cleanly(image, database_url):
    assert podman("run", "--rm", "--network", "host", "-e", f"DATABASE_URL={database_url}",
                  image, "processor", "migrate").stdout.strip() == "up to date"  # fmt: skip
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    assert info["Config"]["User"] == "processor"
    assert info["Config"]["Cmd"][:2] == ["processor", "serve"]
    healthcheck = info.get("Healthcheck") or info["Config"].get("Healthcheck")
    assert "/healthz" in " ".join(healthcheck["Test"])

    port = free_port()
    name = f"processor-test-{port}"
    podman(
        "run", "-d", "--name", name, "--network", "host",
        "-e", f"DATABASE_URL={database_url}", "-e", f"PROCESSOR_TOKEN={TOKEN}",
        "-e", f"PROCESSOR_URL=http://127.0.0.1:{port}", "-e", "LISTEN_FOR_JOBS=off",
        "-e", f"PORT={port}", image,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 60, "the container to answer /healthz")
        assert podman("exec", name, "id", "-u").stdout.strip() != "0"
        assert podman("healthcheck", "run", name, check=False).returncode == 0
        with psycopg.connect(database_url, autocommit=True) as conn:
            job_id = conn.execute(
                "select enqueue_job('generate-complete-pack', %s)",
                (Jsonb({"project_id": "p1", "product": {"name": "Mug"}}),),
            ).fetchone()[0]
        for _ in range(10):  # the pack hands out its images, they run, the pack completes
            answer = httpx.post(
                f"{base}/process-jobs",
                json={"wait": True},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=120,
            ).json()
            with psycopg.connect(database_url) as conn:
                status = conn.execute(
                    "select status from job_queue where id = %s", (job_id,)
                ).fetchone()[0]
            if status == "completed":
                break
        assert status == "completed", answer
        files = podman("exec", name, "ls", f"/app/storage/p1/{job_id}").stdout.split()
        assert len(files) == 6
        started = time.monotonic()
        podman("stop", "-t", "40", name)
        assert time.monotonic() - started < 35  # SIGTERM was enough: no SIGKILL after 40 s
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0
    finally:
        podman("rm", "-f", name, check=False)
