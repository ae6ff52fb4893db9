"""A private PostgreSQL cluster with pg_cron, created, started and stopped by the project.

`processor dev` and the test suite use it, so nothing depends on a machine-wide database
service. initdb refuses to run as root, so as root every server program runs as the `postgres`
OS user, in a data directory that user owns.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from processor.errors import ClusterError

SERVER_USER = "postgres"


def bindir() -> Path:
    """Where initdb and pg_ctl live: PG_BINDIR, else pg_config --bindir, else the newest."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        path = Path(out.stdout.strip())
        if (path / "initdb").exists():
            return path
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    if candidates:
        return candidates[0].parent
    raise ClusterError(
        "PostgreSQL server programs not found: install postgresql (Debian: apt-get install "
        "postgresql postgresql-15-cron) or set PG_BINDIR"
    )


def _sharedir(bindir: Path) -> Path:
    pg_config = bindir / "pg_config"
    exe = str(pg_config) if pg_config.exists() else shutil.which("pg_config")
    if exe:
        out = subprocess.run([exe, "--sharedir"], capture_output=True, text=True)
        if out.returncode == 0:
            return Path(out.stdout.strip())
    return Path("/usr/share/postgresql") / bindir.parent.name


def _as_root() -> bool:
    return os.geteuid() == 0


def _server_user_can_enter(path: Path) -> bool:
    """Whether the postgres OS user can reach a folder (every parent must let it through)."""
    result = subprocess.run(
        ["runuser", "-u", SERVER_USER, "--", "test", "-x", str(path)], capture_output=True
    )
    return result.returncode == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalCluster:
    """One private cluster: a data directory, a port on 127.0.0.1, trust auth for local use."""

    data_dir: Path
    port: int
    database: str = "processor"
    fast: bool = False  # fsync off: for throw-away test clusters only
    preload: tuple[str, ...] = ("pg_cron",)  # the benchmarks add pg_net (a real build of it)
    superuser: str = SERVER_USER  # the bootstrap role (a Supabase-like test cluster renames it)

    @classmethod
    def for_project(cls, root: Path, port: int) -> LocalCluster:
        """The dev cluster under root/.data, or in /tmp when the postgres user can't reach it."""
        data_dir = root / ".data" / "pg"
        if _as_root() and not _server_user_can_enter(root):
            digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]
            data_dir = Path(tempfile.gettempdir()) / f"processor-{digest}" / "pg"
        return cls(data_dir=data_dir, port=port)

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{database}"

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / "postgres.log"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        exe = str(bindir() / args[0])
        cmd = [exe, *args[1:]]
        if _as_root():
            cmd = ["runuser", "-u", SERVER_USER, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, cwd="/")
        if check and result.returncode != 0:
            raise ClusterError(
                f"{args[0]} failed ({result.returncode}): {result.stderr.strip() or result.stdout}"
                + (f"\nserver log: {self.log_file}" if self.log_file.exists() else "")
            )
        return result

    def _prepare_dirs(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if _as_root():
            info = pwd.getpwnam(SERVER_USER)
            os.chown(self.data_dir.parent, info.pw_uid, info.pw_gid)

    def check_pg_cron(self) -> None:
        control = _sharedir(bindir()) / "extension" / "pg_cron.control"
        if not control.exists():
            version = bindir().parent.name
            raise ClusterError(
                f"pg_cron is not installed for PostgreSQL {version}: "
                f"apt-get install postgresql-{version}-cron (or run `make system-deps`)"
            )

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """Creates the cluster once; a second call leaves the data alone."""
        if self.initialized():
            return
        self.check_pg_cron()
        self._prepare_dirs()
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            self.superuser,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8" if _has_locale("C.UTF-8") else "--locale=C",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": "''",
            "shared_preload_libraries": f"'{','.join(self.preload)}'",
            "cron.database_name": f"'{self.database}'",
            "cron.use_background_workers": "on",
            "max_worker_processes": "32",
            "max_connections": "200",
            "timezone": "'UTC'",
        }
        if "pg_net" in self.preload:
            settings["pg_net.database_name"] = f"'{self.database}'"
        if self.fast:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# processor: private local cluster\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def running(self) -> bool:
        if not self.initialized():
            return False
        return self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False).returncode == 0

    def start(self) -> None:
        """Initialises if needed, starts the server, and creates the database."""
        self.init()
        if not self.running():
            self._run(
                "pg_ctl",
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                f"-p {self.port}",
            )
        self._wait_ready()
        self.create_database(self.database)

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url_for("postgres"), connect_timeout=3):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise ClusterError(f"PostgreSQL did not accept connections: {exc}") from exc
                time.sleep(0.2)

    def create_database(self, name: str, template: str | None = None) -> None:
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (name,))
            if exists.fetchone():
                return
            stmt = psycopg.sql.SQL("create database {}").format(psycopg.sql.Identifier(name))
            if template:
                stmt += psycopg.sql.SQL(" template {}").format(psycopg.sql.Identifier(template))
            conn.execute(stmt)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("drop database if exists {} with (force)").format(
                    psycopg.sql.Identifier(name)
                )
            )

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data_dir))

    def destroy(self) -> None:
        """Stops the server and deletes its files (test clusters)."""
        with contextlib.suppress(ClusterError):
            self.stop()
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def _has_locale(name: str) -> bool:
    out = subprocess.run(["locale", "-a"], capture_output=True, text=True)
    return name.lower().replace("-", "") in out.stdout.lower().replace("-", "")
