"""Named, run-once migrations for the local store, recorded in a `_migrations` table.

Append new migrations to the end of MIGRATIONS; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime

Migration = Callable[[sqlite3.Connection], None]


def _run(db: sqlite3.Connection, script: str) -> None:
    # Statement by statement, so the whole migration stays inside one transaction.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def m001_traces_and_spans(db: sqlite3.Connection) -> None:
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


def m002_scores(db: sqlite3.Connection) -> None:
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


def m003_spans_start(db: sqlite3.Connection) -> None:
    # Retention walks spans oldest first; with trace_id in the index it never reads the rows.
    _run(db, "CREATE INDEX spans_start ON spans (start_time, trace_id)")


MIGRATIONS: list[tuple[str, Migration]] = [
    ("001_traces_and_spans", m001_traces_and_spans),
    ("002_scores", m002_scores),
    ("003_spans_start", m003_spans_start),
]


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply the migrations this database has not seen yet; return their names."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
    done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    applied = []
    for name, migration in MIGRATIONS:
        if name in done:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            migration(db)
            db.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                (name, datetime.now(UTC).isoformat()),
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        applied.append(name)
    return applied
