"""Named, run-once migrations for the store, recorded in a `_migrations` table.

One history for SQLite and Postgres: the scripts are written once, in SQL both take; the only
translation is SQLite's REAL, which is double precision there but single precision (seconds lost
on an epoch time) in Postgres. Append new migrations to the end of MIGRATIONS; never edit one
that has shipped (stores written by earlier versions have them recorded by name).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, text

from feedback.database import WRITE

Migration = Callable[[Connection], None]

# Any number: it names the lock that keeps two app processes from migrating one Postgres at once.
_PG_MIGRATION_LOCK = 7_204_851


def _run(db: Connection, script: str) -> None:
    # Statement by statement, so the whole migration stays inside one transaction (DDL is
    # transactional in both databases).
    if db.dialect.name == "postgresql":
        script = re.sub(r"\bREAL\b", "DOUBLE PRECISION", script)
    for statement in script.split(";"):
        if statement.strip():
            db.exec_driver_sql(statement)


def m001_traces_and_spans(db: Connection) -> None:
    _run(
        db,
        """
        CREATE TABLE traces (
            id TEXT PRIMARY KEY,
            name TEXT,
            input TEXT,
            output TEXT,
            user_id TEXT,
            session_id TEXT,
            status TEXT,
            status_message TEXT,
            start_time REAL,
            end_time REAL,
            latency_ms REAL,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            total_tokens INTEGER NOT NULL DEFAULT 0,
            model TEXT,
            tags TEXT,
            metadata TEXT
        );
        CREATE INDEX traces_session ON traces (session_id);
        CREATE INDEX traces_start ON traces (start_time);
        CREATE TABLE spans (
            trace_id TEXT NOT NULL,
            span_id TEXT NOT NULL,
            parent_id TEXT,
            name TEXT,
            kind TEXT,
            start_time REAL,
            end_time REAL,
            status TEXT,
            status_message TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            total_tokens INTEGER,
            attributes TEXT,
            PRIMARY KEY (trace_id, span_id)
        );
        """,
    )


def m002_scores(db: Connection) -> None:
    # `version` counts changes; the outbox delivers until delivered_version catches up.
    _run(
        db,
        """
        CREATE TABLE scores (
            id TEXT PRIMARY KEY,
            trace_id TEXT NOT NULL,
            session_id TEXT,
            user_id TEXT,
            name TEXT NOT NULL,
            value REAL,
            data_type TEXT NOT NULL,
            reason TEXT,
            note TEXT,
            comment TEXT,
            source TEXT NOT NULL,
            created TEXT NOT NULL,
            updated TEXT NOT NULL,
            deleted INTEGER NOT NULL DEFAULT 0,
            version INTEGER NOT NULL DEFAULT 1,
            delivered_version INTEGER NOT NULL DEFAULT 0,
            rejected_version INTEGER NOT NULL DEFAULT 0,
            remote_exists INTEGER NOT NULL DEFAULT 0,
            delivery_error TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL DEFAULT 0
        );
        CREATE INDEX scores_trace ON scores (trace_id);
        CREATE INDEX scores_pending ON scores (delivered_version, version);
        """,
    )


def m003_spans_start(db: Connection) -> None:
    # Retention walks spans oldest first; with trace_id in the index it never reads the rows.
    _run(db, "CREATE INDEX spans_start ON spans (start_time, trace_id)")


def m004_score_leases(db: Connection) -> None:
    # Several app processes share one Postgres: the outbox claims a score for a while before it
    # delivers it, so no two processes send it, and one that dies hands it over when it expires.
    _run(
        db,
        """
        ALTER TABLE scores ADD COLUMN lease_owner TEXT;
        ALTER TABLE scores ADD COLUMN lease_until REAL NOT NULL DEFAULT 0
        """,
    )


MIGRATIONS: list[tuple[str, Migration]] = [
    ("001_traces_and_spans", m001_traces_and_spans),
    ("002_scores", m002_scores),
    ("003_spans_start", m003_spans_start),
    ("004_score_leases", m004_score_leases),
]


def migrate(engine: Engine) -> list[str]:
    """Apply the migrations this database has not seen yet; return their names.

    Each runs in its own transaction holding the database's write lock (SQLite's BEGIN
    IMMEDIATE, an advisory lock on Postgres), so app processes starting together apply each once.
    """
    applied = []
    with engine.connect() as db:
        db.execution_options(**{WRITE: True})
        for name, migration in MIGRATIONS:
            with db.begin():
                if db.dialect.name == "postgresql":
                    db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
                db.exec_driver_sql(
                    "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
                )
                if db.execute(text("SELECT 1 FROM _migrations WHERE name = :name"), {"name": name}).first():
                    continue
                migration(db)
                db.execute(
                    text("INSERT INTO _migrations (name, applied_at) VALUES (:name, :at)"),
                    {"name": name, "at": datetime.now(UTC).isoformat()},
                )
            applied.append(name)
    return applied
