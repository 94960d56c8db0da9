"""Fixtures for the end-to-end tests: `tierflow` processes started the way a user starts them.

Each process is `.venv/bin/tierflow ...` with TIERFLOW_* environment variables, against
the session's fresh PostgreSQL database and the test Redis database. Every process
writes its stdout and stderr to files under the test's tmp_path; when the test fails
the tails of those files are printed. Every process is stopped at teardown (SIGTERM to
its process group, SIGKILL after a grace period), whatever happened in the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.conftest import purge_queues, service_settings
from tierflow.store.db import make_engine
from tierflow.worker.app import ALL_QUEUES, TierflowCelery, create_app
from tierflow.worker.settings import load_settings

TIERFLOW = Path(sys.executable).with_name("tierflow")
HOST = socket.gethostname()
STOP_GRACE_S = 5.0
READY_TIMEOUT_S = 60.0

# The environment every process gets, on top of the database and broker URLs: the defaults a
# user gets (recovery included), but for faster fake models.
E2E_SETTINGS = {
    "TIERFLOW_FAKE_LATENCY_SCALE": "0.2",
}

# name -> the `tierflow` arguments, as a user would type them; the node name each worker answers ping with.
WORKERS: dict[str, tuple[list[str], str]] = {
    "classify": (["worker", "--queues", "classify"], f"classify-{HOST}@{HOST}"),
    "small": (
        ["worker", "--tier", "small", "--concurrency", "16", "--hostname", "small-1@%h"],
        f"small-1@{HOST}",
    ),
    "medium": (
        ["worker", "--tier", "medium", "--concurrency", "8", "--hostname", "medium-1@%h"],
        f"medium-1@{HOST}",
    ),
    "large": (
        ["worker", "--tier", "large", "--concurrency", "8", "--hostname", "large-1@%h"],
        f"large-1@{HOST}",
    ),
    "maintenance": (["worker", "--queues", "maintenance"], f"maintenance-{HOST}@{HOST}"),
}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so a fixture's teardown knows whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@dataclass
class Process:
    name: str
    args: list[str]
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path


@dataclass
class Processes:
    """The `tierflow` processes of one test, with their logs under `logs`."""

    logs: Path
    env: dict[str, str]
    running: dict[str, Process] = field(default_factory=dict)
    stopped: list[Process] = field(default_factory=list)
    _runs: int = 0

    def start(self, name: str, *args: str) -> Process:
        generation = sum(1 for p in self.stopped if p.name == name)
        stem = name if not generation else f"{name}-{generation + 1}"
        stdout, stderr = self.logs / f"{stem}.out", self.logs / f"{stem}.err"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            popen = subprocess.Popen(  # noqa: S603 - our own console script
                [str(TIERFLOW), *args],
                env=self.env,
                cwd=self.logs,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group: teardown reaches prefork children too
            )
        process = Process(name, list(args), popen, stdout, stderr)
        self.running[name] = process
        return process

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """A one-shot command (`db upgrade`, `submit`); its output is kept in the logs as well."""
        self._runs += 1
        done = subprocess.run(  # noqa: S603 - our own console script
            [str(TIERFLOW), *args],
            env=self.env,
            cwd=self.logs,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        stem = f"run-{self._runs}-{args[0]}"
        (self.logs / f"{stem}.out").write_text(done.stdout)
        (self.logs / f"{stem}.err").write_text(done.stderr)
        assert done.returncode == 0, f"tierflow {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
        return done

    def forget(self, name: str) -> Process:
        """Take a process that has ended (or been killed) out of the running set."""
        process = self.running.pop(name)
        self.stopped.append(process)
        return process

    def check_alive(self) -> None:
        ended = {n: p.popen.poll() for n, p in self.running.items() if p.popen.poll() is not None}
        assert not ended, f"processes ended unexpectedly (exit codes {ended}):\n{self.tails()}"

    def stop_all(self) -> None:
        for process in self.running.values():
            _signal_group(process.popen, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self.running.values():
            try:
                process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process.popen, signal.SIGKILL)
                process.popen.wait(timeout=STOP_GRACE_S)
        self.stopped.extend(self.running.values())
        self.running.clear()

    def tails(self, lines: int = 25) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.out")) + sorted(self.logs.glob("*.err")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"----- {path.name} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(parts)


def _signal_group(popen: subprocess.Popen[bytes], signum: int) -> None:
    if popen.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signum)  # the group this Popen created (start_new_session), nothing else


def child_pids(pid: int) -> list[int]:
    """The direct children of `pid`, from /proc (every thread of the process can have children)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


def answering_workers(app: TierflowCelery) -> set[str]:
    return {name for reply in app.control.ping(timeout=1.0) for name in reply}


def wait_for_workers(app: TierflowCelery, processes: Processes, expected: set[str]) -> None:
    """Ping until every expected node answers; fail with the logs' tails if they do not come up."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    answered: set[str] = set()
    while time.monotonic() < deadline:
        processes.check_alive()
        answered = answering_workers(app)
        if expected <= answered:
            return
    pytest.fail(
        f"workers not ready after {READY_TIMEOUT_S:.0f}s: missing {sorted(expected - answered)}, "
        f"answered {sorted(answered)}\n{processes.tails()}"
    )


@pytest.fixture()
def broker_url(request: pytest.FixtureRequest, clean_redis: str) -> str:
    """The broker of the test: Redis (the default), or RabbitMQ with `indirect` parametrisation
    (`@pytest.mark.parametrize("broker_url", ["redis", "amqp"], indirect=True)`). The result
    backend is Redis either way."""
    if getattr(request, "param", "redis") == "redis":
        return clean_redis
    url = str(request.getfixturevalue("amqp_url"))
    purge_queues(url, ALL_QUEUES)
    return url


@pytest.fixture()
def control_app(pg_url: str, broker_url: str, clean_redis: str) -> Iterator[TierflowCelery]:
    """A Celery app in the test process, used only to ping the workers."""
    settings = service_settings(
        pg_url, broker_url, result_backend=clean_redis, resilience_redis_url=clean_redis
    )
    app = create_app(load_settings(**settings))
    yield app
    app.close()


@pytest.fixture()
def store_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture()
def processes(
    request: pytest.FixtureRequest, tmp_path: Path, pg_url: str, broker_url: str, clean_redis: str
) -> Iterator[Processes]:
    """Started processes, all stopped at teardown; their logs' tails printed if the test failed."""
    assert TIERFLOW.is_file(), f"no console script at {TIERFLOW}: pip install -e . in this venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    env.update(
        E2E_SETTINGS,
        TIERFLOW_DATABASE_URL=pg_url,
        TIERFLOW_BROKER_URL=broker_url,
        TIERFLOW_RESULT_BACKEND=clean_redis,
        TIERFLOW_RESILIENCE_REDIS_URL=clean_redis,
        PYTHONUNBUFFERED="1",
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    started = Processes(logs, env)
    try:
        yield started
    finally:
        started.stop_all()
        report = getattr(request.node, "report_call", None)
        if report is None or report.failed:
            print(f"\n===== tierflow process logs ({logs})\n{started.tails()}", flush=True)


@pytest.fixture()
def cluster(processes: Processes, control_app: TierflowCelery, tmp_path: Path) -> Processes:
    """A migrated database, the five workers of the brief's topology and beat, all answering."""
    processes.run("db", "upgrade")
    for name, (args, _) in WORKERS.items():
        processes.start(name, *args)
    processes.start("beat", "beat", "--schedule", str(tmp_path / "beat-schedule"))
    wait_for_workers(control_app, processes, {node for _, node in WORKERS.values()})
    return processes
