"""Where the store lives: a database URL made into a SQLAlchemy engine, SQLite or Postgres.

The store has one code path for both; what differs is set up here once: SQLite's pragmas and its
single writer (`BEGIN IMMEDIATE` for writes), Postgres' connection pool, its timeouts and a ping
that replaces connections a restarted server dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

from config.database_url import DIALECTS, normalize_url, password_of, sqlite_url  # noqa: F401 - used here and by the CLI

# The option a write transaction sets on its connection (see `_begin`).
WRITE = "store_write"


class StoreError(RuntimeError):
    """The store cannot be opened or written; the message names where it is.

    `reason` says what went wrong without saying where (no host, no path): it is what a visitor
    of a public Space may be shown.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


def where(url: str | URL) -> str:
    """The store for the start banner and error messages, never with the password."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return f"sqlite at {u.database}"
    host = u.host or "localhost"
    if u.port:
        host = f"{host}:{u.port}"
    return f"postgres at {host}/{u.database or ''}"


def sqlite_path(url: str | URL) -> Path | None:
    u = make_url(url)
    return Path(u.database) if u.get_backend_name() == "sqlite" and u.database else None


def create(url: str) -> Engine:
    """An engine for the store; connections are opened lazily (`Store` checks the first one)."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        engine = create_engine(
            u,
            # One connection per thread at a time; a file connection is cheap, so the pool keeps
            # eight and opens more when more threads write at once (a chat's many workers).
            pool_size=8,
            max_overflow=-1,
            connect_args={"timeout": 30, "check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    engine = create_engine(
        u,
        pool_size=10,
        max_overflow=20,
        pool_timeout=10,
        # A server restart closes every pooled connection: test each one before it is used.
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": 5,
            "application_name": "smolagent-chat",
            # A vote behind a lock (a VACUUM FULL, an admin's open transaction) fails after 10 s
            # with a clear message instead of holding a worker for ever; so does a hung query.
            "options": "-c lock_timeout=10s -c statement_timeout=30s -c idle_in_transaction_session_timeout=60s",
            # A connection dropped silently (NAT, a failover) is noticed in about a minute.
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "tcp_user_timeout": 30000,
        },
    )
    event.listen(engine, "before_cursor_execute", _postgres_text, retval=True)
    return engine


def _clean(value: Any) -> Any:
    return value.replace("\x00", "\ufffd") if isinstance(value, str) and "\x00" in value else value


def _postgres_text(
    _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool
) -> Any:
    # Postgres text cannot hold U+0000 (SQLite can); a model's answer may end with chr(0), and
    # one such string would fail the write of a whole batch of other visitors' traces.
    if isinstance(parameters, dict):
        parameters = {k: _clean(v) for k, v in parameters.items()}
    elif isinstance(parameters, (list, tuple)):
        parameters = type(parameters)(
            {k: _clean(v) for k, v in p.items()} if isinstance(p, dict) else _clean(p) for p in parameters
        )
    return statement, parameters


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Autocommit at the driver level: transactions are begun explicitly by `_sqlite_begin`.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL keeps every commit across a process crash (SIGKILL); only a power cut
    # may lose the last ones. It keeps a vote well under a millisecond.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # A write takes SQLite's one write lock at its start, so two writers queue on the busy
    # timeout instead of failing halfway with "database is locked". A read opens no transaction
    # of its own: each of its statements reads one consistent snapshot (WAL), with no BEGIN and
    # ROLLBACK around it.
    if connection.get_execution_options().get(WRITE):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
