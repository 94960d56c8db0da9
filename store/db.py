"""Engines and sessions, and the one dialect-aware insert that ignores or merges conflicts."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from tierflow.routing.errors import ServiceUnavailable


def redact(url: str) -> str:
    """The URL with any password hidden, fit for errors and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown without its credentials part
        return url.split("@")[-1]


def make_engine(
    url: str, pool_size: int = 5, max_overflow: int = 20, pooled: bool = True, pre_ping: bool = True
) -> Engine:
    """An engine for `url`; `pooled=False`: a connection per checkout, kept by nothing (safe across
    a fork). `pre_ping=False` leaves out the round trip that tests a pooled connection before each
    checkout: for callers that retry on a dropped connection instead (the workers' tasks do)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # psycopg prepares a statement on the server after its fifth run; PgBouncer in transaction
    # mode hands each transaction another server connection, where it does not exist. Off, so
    # that the same settings work straight to PostgreSQL and through PgBouncer.
    connect_args = {"prepare_threshold": None} if url.startswith("postgresql+psycopg") else {}
    if not pooled:
        return create_engine(url, poolclass=NullPool, connect_args=connect_args)
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        connect_args=connect_args,
    )


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: committed when the block ends, rolled back if it raises."""
    with sessions() as session, session.begin():
        yield session


def check_database(engine: Engine) -> None:
    """Raise ServiceUnavailable naming the database when it cannot be reached."""
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except OperationalError as exc:
        reason = str(exc.orig) if exc.orig else str(exc)
        raise ServiceUnavailable("database", redact(str(engine.url)), reason) from None


def insert_for(session: Session, table: Any) -> Any:
    """An INSERT for the session's dialect (PostgreSQL or SQLite), ready for on_conflict_* clauses
    and for executing with rows of parameters."""
    module = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return module.insert(getattr(table, "__table__", table))


def insert_stmt(session: Session, table: Any, values: dict[str, Any] | Sequence[dict[str, Any]]) -> Any:
    """`insert_for` with its values."""
    return insert_for(session, table).values(values)


def insert_ignore(
    session: Session, table: Any, values: dict[str, Any] | Sequence[dict[str, Any]], conflict: Sequence[str]
) -> int:
    """Insert rows, skipping any that conflict on `conflict`; return how many went in."""
    if not values:
        return 0
    if isinstance(values, dict):  # one row: a statement built once, its values bound
        stmt = ignoring_insert(session, table, tuple(conflict))
        return int(session.execute(stmt, values).rowcount or 0)  # type: ignore[attr-defined]
    # many rows: one multi-row INSERT, whose rowcount counts what went in
    stmt = insert_stmt(session, table, values).on_conflict_do_nothing(index_elements=list(conflict))
    return int(session.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]


def ignoring_insert(session: Session, table: Any, conflict: tuple[str, ...]) -> Any:
    """The session's dialect's INSERT into `table` that skips rows conflicting on `conflict`,
    built once; executed with the rows as parameters."""
    return _ignoring_insert(session.get_bind().dialect.name, getattr(table, "__table__", table), conflict)


@cache
def _ignoring_insert(dialect: str, table: Any, conflict: tuple[str, ...]) -> Any:
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing(index_elements=list(conflict))
