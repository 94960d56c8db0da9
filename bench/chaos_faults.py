"""The chaos benchmark's faults, and how long the system took to get going again after each.

A fault is recorded with the moment it happened and the jobs it took away (non-terminal
at the fault): the jobs a killed worker held by its last beat, the jobs waiting in the
queues of a flushed broker, the jobs held by workers whose database connections were
terminated. After each fault the monitor notes:

- `first_terminal_s`: until the first job of the batch reached a terminal state after it;
- `moving_s`: until every job it took away had a message sent for it again (reconcile's
  re-send, or the next stage's message) or was terminal;
- `done_s`: until every job it took away was terminal.

"The queues were moving again" is `moving_s` where the fault took jobs away, else
`first_terminal_s`.
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.chaos_stack import TIERS, Broker, Fleet, ProviderProcess

TERMINAL = ["succeeded", "needs_review", "failed"]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class FaultEvent:
    fault: str
    at: datetime
    at_s: float
    detail: dict[str, Any]
    affected: list[str]
    first_terminal_s: float | None = None
    moving_s: float | None = None
    done_s: float | None = None

    @property
    def settled(self) -> bool:
        return self.first_terminal_s is not None and (not self.affected or self.done_s is not None)

    def recovered_s(self) -> float | None:
        return self.moving_s if self.affected else self.first_terminal_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "at_s": round(self.at_s, 1),
            **self.detail,
            "jobs_taken": len(self.affected),
            "recovered_s": _round(self.recovered_s()),
            "first_terminal_s": _round(self.first_terminal_s),
            "moving_s": _round(self.moving_s),
            "done_s": _round(self.done_s),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass
class Monitor:
    """Reads the store for the batch's progress and for each fault's recovery."""

    connection: psycopg.Connection[Any]
    batch_id: str
    database_name: str
    started: float  # time.monotonic() of the submit
    events: list[FaultEvent] = field(default_factory=list)
    connections_peak: int = 0

    def terminal(self) -> int:
        """Terminal jobs of the batch; notes the peak of the run's PostgreSQL connections on the way."""
        row = self.connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.database_name,)
        ).fetchone()
        self.connections_peak = max(self.connections_peak, int(row[0]) if row else 0)
        row = self.connection.execute(
            "SELECT count(*) FROM jobs WHERE batch_id = %s AND state = ANY(%s)", (self.batch_id, TERMINAL)
        ).fetchone()
        return int(row[0]) if row else 0

    def held(self, worker: str | None = None) -> set[str]:
        """Jobs held under a current lease (or, with `worker`, by that worker's last beat)."""
        if worker is None:
            query, params = "SELECT holding FROM worker_beats WHERE lease_until > now()", ()
        else:
            query, params = "SELECT holding FROM worker_beats WHERE worker = %s", (worker,)
        jobs: set[str] = set()
        for (holding,) in self.connection.execute(query, params).fetchall():
            jobs.update(holding or [])
        return jobs

    def unfinished(self, among: set[str] | None = None) -> list[str]:
        rows = self.connection.execute(
            "SELECT id FROM jobs WHERE batch_id = %s AND state <> ALL(%s)", (self.batch_id, TERMINAL)
        ).fetchall()
        ids = [job_id for (job_id,) in rows]
        return ids if among is None else [job_id for job_id in ids if job_id in among]

    def record(
        self, fault: str, at: datetime, at_s: float, detail: dict[str, Any], affected: list[str]
    ) -> None:
        if affected:
            # How often the jobs taken had been sent again before: each re-send waits longer.
            detail = {**detail, "taken_by_redeliveries": self.redeliveries(affected)}
        self.events.append(FaultEvent(fault, at, at_s, detail, sorted(affected)))

    def redeliveries(self, job_ids: list[str]) -> dict[str, int]:
        rows = self.connection.execute(
            "SELECT redeliveries, count(*) FROM jobs WHERE id = ANY(%s) GROUP BY 1 ORDER BY 1", (job_ids,)
        ).fetchall()
        return {str(times): int(count) for times, count in rows}

    def update(self, now: datetime) -> None:
        for event in self.events:
            if not event.settled:
                self._update_event(event, now)

    def _update_event(self, event: FaultEvent, now: datetime) -> None:
        seconds = (now - event.at).total_seconds()
        if event.first_terminal_s is None:
            row = self.connection.execute(
                "SELECT min(finished_at) FROM jobs WHERE batch_id = %s AND finished_at > %s",
                (self.batch_id, event.at),
            ).fetchone()
            if row and row[0] is not None:
                event.first_terminal_s = (row[0] - event.at).total_seconds()
        if not event.affected:
            return
        if event.moving_s is None:
            row = self.connection.execute(
                "SELECT count(*) FROM jobs WHERE id = ANY(%s) AND state <> ALL(%s) AND sent_at <= %s",
                (event.affected, TERMINAL, event.at),
            ).fetchone()
            if row and row[0] == 0:
                event.moving_s = seconds
        if event.done_s is None:
            row = self.connection.execute(
                "SELECT count(*) FILTER (WHERE state <> ALL(%s)), max(finished_at) "
                "FROM jobs WHERE id = ANY(%s)",
                (TERMINAL, event.affected),
            ).fetchone()
            if row and row[0] == 0:
                event.done_s = 0.0 if row[1] is None else max(0.0, (row[1] - event.at).total_seconds())


@dataclass
class Chaos:
    """The faults of the run, each applied once or on its schedule, recorded on the monitor."""

    fleet: Fleet
    broker: Broker
    provider: ProviderProcess
    monitor: Monitor
    admin_conninfo: str
    rng: random.Random
    kills: int = 0
    restarts_unasked: int = 0

    def kill_random_tier(self, at_s: float) -> None:
        role = self.rng.choice(TIERS)
        held_before = self.monitor.held(self._worker_id(role))
        at = utcnow()
        pid = self.fleet.kill(role)
        self.fleet.start(role)
        self.kills += 1
        affected = self.monitor.unfinished(held_before)
        self.monitor.record("kill", at, at_s, {"worker": role, "pid": pid}, affected)

    def _worker_id(self, role: str) -> str:
        """The id the role's worker beats under (tasks/leases.py: host/pid)."""
        process = self.fleet.running[role].process
        assert process is not None
        return f"{socket.gethostname()}/{process.pid}"

    def flush_broker(self, at_s: float) -> None:
        held = self.monitor.held()
        waiting = set(self.monitor.unfinished()) - held
        at = utcnow()
        detail = self.broker.flush()
        self.monitor.record("broker_flush", at, at_s, detail, self.monitor.unfinished(waiting))

    def terminate_database_backends(self, at_s: float) -> None:
        held = self.monitor.held()
        at = utcnow()
        with psycopg.connect(self.admin_conninfo, autocommit=True, connect_timeout=10) as admin:
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.monitor.database_name,),
            ).fetchall()
        # The monitor's own connection was among them.
        dsn = self.monitor.connection.info.dsn
        self.monitor.connection.close()
        self.monitor.connection = psycopg.connect(dsn, autocommit=True)
        detail = {"backends_terminated": sum(1 for (done,) in rows if done)}
        self.monitor.record("pg_terminate_backend", at, at_s, detail, self.monitor.unfinished(held))

    def provider_faults_on(self, rules: list[dict[str, Any]], at_s: float) -> None:
        at = utcnow()
        self.provider.control("faults", {"rules": rules})
        detail = {"rules": [{k: v for k, v in rule.items()} for rule in rules]}
        self.monitor.record("provider_faults", at, at_s, detail, [])

    def restart_exited(self) -> list[str]:
        """A worker that ended on its own (not killed here) is started again, and counted."""
        ended = self.fleet.exited()
        for role in ended:
            self.fleet.running[role].reap(5.0)
            self.fleet.start(role)
            self.restarts_unasked += 1
        return [f"{role} exited with {code}" for role, code in ended.items()]
