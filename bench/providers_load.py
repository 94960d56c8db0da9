"""The parts of bench/providers.py that drive load: the server process and the timed loop.

`ServerProcess` starts `tierflow provider-server` as a user would, as a separate
process on a free loopback port, waits until it answers, reads its CPU time from
/proc, and always terminates it. `run_arm` calls one function from N threads until
a deadline and returns what it measured (`ArmResult`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def tierflow_command() -> str:
    beside = Path(sys.executable).parent / "tierflow"
    return str(beside) if beside.exists() else "tierflow"


class ServerProcess:
    """`tierflow provider-server --port P [--latency FILE]` in its own process, loopback only."""

    def __init__(self, latency_ms: float = 0.0, ready_timeout_s: float = 30.0) -> None:
        self.port = free_port()
        self.latency_ms = latency_ms
        self._ready_timeout_s = ready_timeout_s
        self._workdir = tempfile.TemporaryDirectory(prefix="tierflow-bench-providers-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def openai_base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def __enter__(self) -> ServerProcess:
        workdir = Path(self._workdir.name)
        command = [tierflow_command(), "provider-server", "--port", str(self.port)]
        if self.latency_ms:
            latency = workdir / "latency.json"
            latency.write_text(json.dumps({"default": {"base_ms": self.latency_ms}}), encoding="utf-8")
            command += ["--latency", str(latency)]
        log = (workdir / "server.log").open("wb")
        self._process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self._ready_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the provider server exited ({self._process.returncode}): {self.log()}")
            try:
                with urllib.request.urlopen(f"{self.openai_base_url}/models", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the provider server did not answer within {self._ready_timeout_s}s")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._process is not None and self._process.poll() is None:
                self._process.terminate()  # the server stops on SIGTERM as on ^C
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(timeout=10)
        finally:
            self._workdir.cleanup()

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server process so far (all its threads)."""
        assert self._process is not None
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def log(self) -> str:
        path = Path(self._workdir.name) / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


@dataclass
class ArmResult:
    """What one arm measured: calls, errors, per-call latencies, and the CPU both sides spent."""

    name: str
    threads: int
    seconds: float
    calls: int
    errors: int
    client_cpu_s: float
    server_cpu_s: float
    latencies_s: list[float] = field(repr=False)
    first_error: str | None = None

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def percentile_ms(self, share: float) -> float:
        """Nearest-rank percentile of the call latencies, in milliseconds."""
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        rank = max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))
        return ordered[rank] * 1000

    def per_call_ms(self, cpu_s: float) -> float:
        return cpu_s / self.calls * 1000 if self.calls else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "arm": self.name,
            "threads": self.threads,
            "seconds": round(self.seconds, 3),
            "calls": self.calls,
            "errors": self.errors,
            "calls_per_s": round(self.calls_per_s, 1),
            "p50_ms": round(self.percentile_ms(0.50), 2),
            "p99_ms": round(self.percentile_ms(0.99), 2),
            "client_cpu_ms_per_call": round(self.per_call_ms(self.client_cpu_s), 3),
            "server_cpu_ms_per_call": round(self.per_call_ms(self.server_cpu_s), 3),
            "first_error": self.first_error,
        }


def run_arm(
    name: str, call: Callable[[], object], threads: int, seconds: float, server: ServerProcess
) -> ArmResult:
    """`call` from `threads` threads, back to back, for `seconds`; calls still running then are counted."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def work(mine: list[float]) -> None:
        start.wait()
        while time.perf_counter() < deadline[0]:
            began = time.perf_counter()
            try:
                call()
            except Exception as exc:  # a failed call is counted, not fatal: the figures show it
                errors.append(repr(exc))
                continue
            mine.append(time.perf_counter() - began)

    workers = [threading.Thread(target=work, args=(mine,), daemon=True) for mine in latencies]
    for worker in workers:
        worker.start()
    client_cpu, server_cpu = time.process_time(), server.cpu_s()
    began = time.perf_counter()
    deadline[0] = began + seconds
    start.wait()
    for worker in workers:
        worker.join(timeout=seconds + 60)  # a call's own timeout is 30 s
    elapsed = time.perf_counter() - began
    client_cpu, server_cpu = time.process_time() - client_cpu, server.cpu_s() - server_cpu
    merged = [latency for mine in latencies for latency in mine]
    first_error = errors[0] if errors else None
    return ArmResult(
        name, threads, elapsed, len(merged), len(errors), client_cpu, server_cpu, merged, first_error
    )
