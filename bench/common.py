"""What the benchmarks share: a throw-away PostgreSQL cluster (fsync on, as a server runs),
migrated, removed afterwards."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The benchmarks reuse the tests' local servers (tests/support.py, tests/fakes.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from processor.ops.migrate import migrate
from processor.ops.pgcluster import LocalCluster, free_port

TOKEN = "bench-token-Nc6Wq2Zr9Ht5Xm8Kb3V"


@contextmanager
def private_database(
    preload: tuple[str, ...] = ("pg_cron",),
) -> Iterator[tuple[LocalCluster, Path]]:
    """A migrated private cluster and a scratch folder beside it."""
    folder = Path(tempfile.mkdtemp(prefix="processor-bench-"))
    folder.chmod(0o755)
    cluster = LocalCluster(folder / "pg", free_port(), preload=preload)
    cluster.start()
    try:
        migrate(cluster.url)
        yield cluster, folder
    finally:
        cluster.destroy()
