"""Where an arm's time goes: CPU of its worker processes and of its PostgreSQL backends,
and the database's transaction and row-write counters. Linux only (reads /proc).

The CPU figures cover the timed batch alone. The database counters come from
pg_stat_database, which a backend updates when its connection ends, so they are
read after the arm's workers have stopped and cover the warm-up jobs too.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_by_pid(pids: list[int], single_threaded: bool = False) -> dict[int, float]:
    """User + system CPU seconds of each process and of each of its descendants alive now.

    Multi-threaded processes are read in clock ticks (/proc/PID/stat, all threads, 10 ms steps);
    single-threaded ones (PostgreSQL backends) in nanoseconds (/proc/PID/schedstat, main thread).
    """
    seen: dict[int, float] = {}
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        try:
            seen[pid], children = _process_cpu(pid, single_threaded)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # ended between the listing and the reading
        todo.extend(children)
    return seen


def _process_cpu(pid: int, single_threaded: bool) -> tuple[float, list[int]]:
    proc = Path(f"/proc/{pid}")
    if single_threaded:
        seconds = int((proc / "schedstat").read_text().split()[0]) / 1e9
    else:
        fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    children = [
        int(child) for task in (proc / "task").iterdir() for child in (task / "children").read_text().split()
    ]
    return seconds, children


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between the two readings by the processes alive at the second."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


@dataclass(frozen=True)
class DatabaseCounters:
    transactions: int
    sessions: int
    rows_written: int

    def __sub__(self, other: DatabaseCounters) -> DatabaseCounters:
        return DatabaseCounters(
            self.transactions - other.transactions,
            self.sessions - other.sessions,
            self.rows_written - other.rows_written,
        )

    @property
    def statement_transactions(self) -> int:
        """Transactions less the one PostgreSQL counts for every connection it accepts."""
        return self.transactions - self.sessions


class DatabaseMeter:
    """Reads the statistics of one database through a connection to another (the admin one)."""

    def __init__(self, admin_conninfo: str, database: str) -> None:
        self.admin = admin_conninfo
        self.database = database

    def counters(self) -> DatabaseCounters:
        with psycopg.connect(self.admin, autocommit=True) as connection:
            row = connection.execute(
                "SELECT xact_commit + xact_rollback, sessions, tup_inserted + tup_updated + tup_deleted "
                "FROM pg_stat_database WHERE datname = %s",
                (self.database,),
            ).fetchone()
        return DatabaseCounters(*(int(value) for value in row)) if row else DatabaseCounters(0, 0, 0)

    def backend_pids(self) -> list[int]:
        with psycopg.connect(self.admin, autocommit=True) as connection:
            rows = connection.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.database,)
            ).fetchall()
        return [int(pid) for (pid,) in rows]

    def backends_cpu(self) -> dict[int, float]:
        return cpu_by_pid(self.backend_pids(), single_threaded=True)

    def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Wait until no backend is connected: each has then written its statistics."""
        deadline = time.monotonic() + timeout_s
        while self.backend_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
