"""Workers through PgBouncer in transaction mode (Debian's pgbouncer), as a large deployment runs."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import missing_service
from tests.integration.conftest import running_worker, wait_terminal, write_jobs
from tierflow.store.db import transaction
from tierflow.store.models import Result
from tierflow.tasks.submission import submit_file

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
JOBS = 40


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture()
def pgbouncer(pg_url: str) -> Iterator[str]:
    """PgBouncer on a free loopback port in front of the test database; its URL."""
    if not Path(PGBOUNCER).is_file():
        missing_service("PgBouncer", f"no {PGBOUNCER} (apt-get install pgbouncer)")
    folder = Path(tempfile.mkdtemp(prefix="tierflow-pgbouncer-"))
    folder.chmod(0o755)
    port = _free_port()
    (folder / "users.txt").write_text('"postgres" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n* = host=127.0.0.1 port=5432\n\n[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 8\nmax_client_conn = 200\n"
        f"logfile = {folder / 'pgbouncer.log'}\npidfile = {folder / 'pgbouncer.pid'}\n"
    )
    for path in (folder, *folder.iterdir()):  # pgbouncer runs as postgres: its files are its own
        shutil.chown(path, "postgres")
    process = subprocess.Popen([PGBOUNCER, "-u", "postgres", str(folder / "pgbouncer.ini")])
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert process.poll() is None, (folder / "pgbouncer.log").read_text(errors="replace")
            time.sleep(0.1)
        database = pg_url.rsplit("/", 1)[1]
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_batch_runs_through_pgbouncer_in_transaction_mode(make_app, tmp_path, pgbouncer):
    app, runtime = make_app(database_url=pgbouncer)
    jobs = [
        {"id": f"bouncer-{n:03d}", "kind": "prompt", "payload": {"prompt": f"What is {n} * 3?"}}
        for n in range(JOBS)
    ]
    report = submit_file(app, runtime, write_jobs(tmp_path / "bouncer.jsonl", jobs))
    with running_worker(app, concurrency=8):
        wait_terminal(runtime, report.batch_id, timeout_s=120)
    with transaction(runtime.sessions) as session:
        results = session.execute(select(func.count()).select_from(Result)).scalar_one()
    assert results == JOBS
