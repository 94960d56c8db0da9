"""The benchmark's services: a throwaway PostgreSQL database, a Redis database, worker processes.

Everything started here is stopped here: workers run in their own process group,
which is terminated (then killed) by its id; the database is dropped WITH (FORCE).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg
import redis
from celery import Celery

ADMIN_CONNECT_TIMEOUT_S = 10

# What this process started and has not yet cleaned up: the backstop `clean_up_everything`
# reaches these when a timeout interrupted the ordinary cleanup half-way.
_live_workers: list[WorkerProcess] = []
_live_databases: dict[str, str] = {}


def conninfo(sqlalchemy_url: str) -> str:
    """A psycopg conninfo from a SQLAlchemy URL (`postgresql+psycopg://...`)."""
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextlib.contextmanager
def fresh_database(admin_url: str, prefix: str = "tierflow_bench_") -> Iterator[str]:
    """Create `<prefix><random>` (tierflow_bench_ by default), yield its SQLAlchemy URL, always drop it."""
    name = f"{prefix}{secrets.token_hex(5)}"
    admin = conninfo(admin_url)
    with psycopg.connect(admin, autocommit=True, connect_timeout=ADMIN_CONNECT_TIMEOUT_S) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    _live_databases[name] = admin
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        drop_database(name)


def drop_database(name: str) -> None:
    admin = _live_databases[name]
    with psycopg.connect(admin, autocommit=True, connect_timeout=ADMIN_CONNECT_TIMEOUT_S) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    del _live_databases[name]


def clean_up_everything() -> None:
    """Stop every worker and drop every database this process started and still holds."""
    stop_workers(list(_live_workers))
    for name in list(_live_databases):
        drop_database(name)


class BenchTimeout(BaseException):
    """The global time limit passed. A BaseException, so that no library's `except Exception` eats it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise BenchTimeout


def _on_terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def run_bounded(
    timeout_s: float,
    prefix: str,
    body: Callable[[Path], dict[str, Any]],
    expected: tuple[type[Exception], ...],
) -> dict[str, Any] | int:
    """`body` in a temporary folder under a global time limit: its figures (with `wall_s`), or
    an exit status, 2 past the limit, 130 on Ctrl-C, 1 on an `expected` error (printed on one
    line). Whatever it started is stopped and dropped either way."""
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGTERM, _on_terminate)
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as workdir:
            figures = body(Path(workdir))
    except BenchTimeout:
        print(f"error: benchmark not finished after {timeout_s:.0f}s; torn down", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; torn down", file=sys.stderr)
        return 130
    except expected as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        clean_up_everything()
    figures["wall_s"] = round(time.monotonic() - started, 1)
    return figures


def flush_redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        client.flushdb()
    finally:
        client.close()


@dataclass(eq=False)
class WorkerProcess:
    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self, env: dict[str, str], cwd: Path) -> None:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the pool's children go with it
        )
        _live_workers.append(self)

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def signal_group(self, signum: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def reap(self, timeout_s: float) -> None:
        """Wait for the worker to end; kill its whole group if it does not in time."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.signal_group(signal.SIGKILL)  # pool children left behind by an unclean exit
        if self._log is not None:
            self._log.close()
        if self in _live_workers:
            _live_workers.remove(self)


@contextlib.contextmanager
def running_workers(
    workers: list[WorkerProcess], env: dict[str, str], cwd: Path, broker_url: str, ready_timeout_s: float
) -> Iterator[list[WorkerProcess]]:
    """Start the workers, wait until each answers a ping, stop them all at the end, always."""
    try:
        for worker in workers:
            worker.start(env, cwd)
        wait_ready(workers, broker_url, ready_timeout_s)
        yield workers
    finally:
        stop_workers(workers)


def stop_workers(workers: list[WorkerProcess], timeout_s: float = 15.0) -> None:
    for worker in workers:
        if worker.exited() is None:
            worker.signal_group(signal.SIGTERM)  # Celery's warm shutdown
    for worker in workers:
        worker.reap(timeout_s)


class WorkerFailed(RuntimeError):
    """A worker process ended, or never answered, before the benchmark was done with it."""


def wait_ready(workers: list[WorkerProcess], broker_url: str, timeout_s: float) -> None:
    """Ping the workers by node name through the broker until every one has answered."""
    control = Celery("bench-control", broker=broker_url, set_as_current=False)
    waiting = {worker.name: worker for worker in workers}
    deadline = time.monotonic() + timeout_s
    try:
        while waiting:
            check_alive(list(waiting.values()))
            if time.monotonic() > deadline:
                raise WorkerFailed(f"workers not ready after {timeout_s:.0f}s: {', '.join(waiting)}")
            for reply in control.control.ping(destination=list(waiting), timeout=0.5) or []:
                for name in reply:
                    waiting.pop(name, None)
    finally:
        control.close()


def check_alive(workers: list[WorkerProcess]) -> None:
    for worker in workers:
        code = worker.exited()
        if code is not None:
            raise WorkerFailed(f"worker {worker.name} exited with {code}:\n{worker.log_tail()}")
