"""The local store: one SQLite file holding every trace, span and score.

It is always on. With no Langfuse keys it is the only backend; with keys it is the durable
record the outbox delivers from, so a rating is never lost when Langfuse is down.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feedback.migrations import migrate

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """The store cannot be opened or written; the message names the path."""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class ScoreRow:
    """One score as the store holds it."""

    id: str
    trace_id: str
    session_id: str | None
    user_id: str | None
    name: str
    value: float | None
    data_type: str
    reason: str | None
    note: str | None
    comment: str | None
    source: str
    created: str
    updated: str
    deleted: bool
    version: int
    delivered_version: int
    rejected_version: int
    remote_exists: bool
    delivery_error: str | None
    attempts: int
    next_attempt_at: float

    @property
    def delivery(self) -> str:
        """pending, delivered or rejected, for the current version of this score."""
        if self.delivered_version >= self.version:
            return "delivered"
        if self.rejected_version >= self.version:
            return "rejected"
        return "pending"


@dataclass(frozen=True)
class SpanRecord:
    """A finished span, as the span exporter hands it to the store."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str | None
    start_time: float
    end_time: float
    status: str
    status_message: str | None
    attributes: dict[str, Any]
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


@dataclass(frozen=True)
class TraceRecord:
    """The trace-level summary taken from a turn's root span."""

    id: str
    name: str
    input: str | None
    output: str | None
    user_id: str | None
    session_id: str | None
    status: str
    status_message: str | None
    start_time: float
    end_time: float
    model: str | None
    tags: list[str]
    metadata: dict[str, Any]


class Store:
    """Thread-safe access to the SQLite file (one connection per thread, WAL mode)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            probe = self.path.parent / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise StoreError(
                f"The data folder {self.path.parent.resolve()} is not writable ({exc.strerror or exc}). "
                "Set DATA_DIR to a folder this app can write to."
            ) from exc
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            migrate(self._db())
        except sqlite3.Error as exc:
            raise StoreError(f"Cannot open the local store at {self.path.resolve()}: {exc}") from exc

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL keeps every commit across a process crash (SIGKILL); only
            # a power cut may lose the last ones. It keeps a vote well under a millisecond.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        else:
            db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for db in self._connections:
                try:
                    db.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
        self._local = threading.local()

    # ----- traces and spans -------------------------------------------------------------

    def write_spans(self, spans: Iterable[SpanRecord], traces: Iterable[TraceRecord]) -> None:
        """Store finished spans and root summaries, then refresh token totals of their traces."""
        spans = list(spans)
        traces = list(traces)
        touched = {s.trace_id for s in spans} | {t.id for t in traces}
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO spans VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        s.trace_id,
                        s.span_id,
                        s.parent_id,
                        s.name,
                        s.kind,
                        s.start_time,
                        s.end_time,
                        s.status,
                        s.status_message,
                        s.prompt_tokens,
                        s.completion_tokens,
                        s.total_tokens,
                        json.dumps(s.attributes, default=str),
                    )
                    for s in spans
                ],
            )
            for t in traces:
                db.execute(
                    """INSERT OR REPLACE INTO traces (id, name, input, output, user_id, session_id,
                       status, status_message, start_time, end_time, latency_ms, model, tags, metadata)
                       VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
                    (
                        t.id,
                        t.name,
                        t.input,
                        t.output,
                        t.user_id,
                        t.session_id,
                        t.status,
                        t.status_message,
                        t.start_time,
                        t.end_time,
                        round((t.end_time - t.start_time) * 1000.0, 3),
                        t.model,
                        json.dumps(t.tags),
                        json.dumps(t.metadata, default=str),
                    ),
                )
            # Token totals of a trace: the sum over its LLM spans, whichever batch they came in.
            db.executemany(
                """UPDATE traces SET (prompt_tokens, completion_tokens, total_tokens) = (
                       SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),
                              COALESCE(SUM(total_tokens), 0)
                       FROM spans WHERE spans.trace_id = traces.id AND kind = 'LLM')
                   WHERE id = ?""",
                [(trace_id,) for trace_id in touched],
            )

    def has_trace(self, trace_id: str) -> bool:
        return self._db().execute("SELECT 1 FROM traces WHERE id = ?", (trace_id,)).fetchone() is not None

    def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        row = self._db().execute("SELECT * FROM traces WHERE id = ?", (trace_id,)).fetchone()
        return dict(row) if row else None

    def list_traces(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = (
            self._db().execute("SELECT * FROM traces ORDER BY start_time DESC LIMIT ?", (limit,)).fetchall()
        )
        return [dict(r) for r in rows]

    def spans_of(self, trace_id: str) -> list[dict[str, Any]]:
        rows = (
            self._db()
            .execute("SELECT * FROM spans WHERE trace_id = ? ORDER BY start_time", (trace_id,))
            .fetchall()
        )
        return [dict(r) for r in rows]

    # ----- retention --------------------------------------------------------------------

    # A trace started when its root span did and every other span starts later, so the spans
    # older than the cutoff name exactly the traces that started before it (index spans_start).
    _OLD_TRACES = "SELECT trace_id FROM spans WHERE start_time < ? ORDER BY start_time LIMIT ?"

    def delete_spans_before(self, cutoff_epoch_s: float, batch: int = 1000, *, pause_s: float = 0.01) -> int:
        """Drop the span details of traces that started before the cutoff; return how many.

        Trace summaries (`traces`) and every score stay, so old ratings keep their question and
        answer. Each batch (whole traces, about `batch` spans) is its own short transaction and
        the pause after it lets a waiting vote in, so a big first prune never holds a vote up:
        LLM spans carry whole prompts (tens of KB), and 1000 of them take about 0.1 s to delete.
        """
        deleted = 0
        while True:
            with self.transaction() as db:
                count = db.execute(
                    f"DELETE FROM spans WHERE trace_id IN ({self._OLD_TRACES})", (cutoff_epoch_s, batch)
                ).rowcount
            if count <= 0:
                return deleted
            deleted += count
            time.sleep(pause_s)

    def count_spans_before(self, cutoff_epoch_s: float) -> int:
        """What `delete_spans_before` would delete now (for `prune --dry-run`)."""
        row = (
            self._db()
            .execute(
                f"SELECT COUNT(*) FROM spans WHERE trace_id IN ({self._OLD_TRACES})",
                (cutoff_epoch_s, -1),
            )
            .fetchone()
        )
        return int(row[0])

    def disk_size(self) -> int:
        """Bytes the store takes on disk: the file and its write-ahead log."""
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())

    def vacuum(self) -> tuple[int, int]:
        """Give the pages of deleted rows back to the disk; return the size before and after.

        SQLite reuses freed pages for new rows, so this is only needed to shrink the file. It
        runs on a connection of its own (VACUUM cannot run inside a transaction, and the app's
        threads keep theirs); writers wait on their busy timeout meanwhile, readers go on.
        """
        before = self.disk_size()
        db = sqlite3.connect(self.path, timeout=5, isolation_level=None)
        try:
            # Short waits: a TRUNCATE checkpoint holds writers off while it waits for readers,
            # and a vote must not wait long. Pages it leaves go back at a later checkpoint.
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            db.execute("VACUUM")
            # In WAL mode VACUUM writes the new file into the log; the checkpoint copies it back
            # and truncates both.
            busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if busy:
                log.warning(
                    "A reader kept the store's log busy; %s shrinks at the next checkpoint.", self.path
                )
        except sqlite3.Error as exc:
            raise StoreError(f"Cannot vacuum the local store at {self.path.resolve()}: {exc}") from exc
        finally:
            db.close()
        return before, self.disk_size()

    # ----- scores -----------------------------------------------------------------------

    def upsert_score(
        self,
        *,
        score_id: str,
        trace_id: str,
        name: str,
        value: float,
        data_type: str,
        source: str,
        session_id: str | None = None,
        user_id: str | None = None,
        reason: str | None = None,
        note: str | None = None,
        keep_note: bool = True,
    ) -> ScoreRow:
        """Write a score's new state; a changed score keeps its id and its first `created`."""
        now = utc_now()
        with self.transaction() as db:
            old = db.execute("SELECT note FROM scores WHERE id = ?", (score_id,)).fetchone()
            if old is not None and keep_note and note is None:
                note = old["note"]
            comment = "; ".join(part for part in (reason, note) if part) or None
            db.execute(
                """INSERT INTO scores (id, trace_id, session_id, user_id, name, value, data_type,
                       reason, note, comment, source, created, updated, deleted, version)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,0,1)
                   ON CONFLICT (id) DO UPDATE SET
                       value = excluded.value, reason = excluded.reason, note = excluded.note,
                       comment = excluded.comment, session_id = excluded.session_id,
                       user_id = excluded.user_id, updated = excluded.updated, deleted = 0,
                       version = scores.version + 1, delivery_error = NULL, attempts = 0,
                       next_attempt_at = 0""",
                (
                    score_id,
                    trace_id,
                    session_id,
                    user_id,
                    name,
                    float(value),
                    data_type,
                    reason,
                    note,
                    comment,
                    source,
                    now,
                    now,
                ),
            )
            row = db.execute("SELECT * FROM scores WHERE id = ?", (score_id,)).fetchone()
        return _score(row)

    def delete_score(self, score_id: str) -> ScoreRow | None:
        """Mark a score deleted (the outbox then deletes it in Langfuse); None if unknown."""
        with self.transaction() as db:
            cur = db.execute(
                """UPDATE scores SET deleted = 1, updated = ?, version = version + 1,
                       delivery_error = NULL, attempts = 0, next_attempt_at = 0
                   WHERE id = ? AND deleted = 0""",
                (utc_now(), score_id),
            )
            if cur.rowcount == 0:
                return None
            row = db.execute("SELECT * FROM scores WHERE id = ?", (score_id,)).fetchone()
        return _score(row)

    def get_score(self, score_id: str) -> ScoreRow | None:
        row = self._db().execute("SELECT * FROM scores WHERE id = ?", (score_id,)).fetchone()
        return _score(row) if row else None

    def scores(self, *, include_deleted: bool = False, limit: int | None = None) -> list[ScoreRow]:
        sql = "SELECT * FROM scores"
        if not include_deleted:
            sql += " WHERE deleted = 0"
        sql += " ORDER BY created DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [_score(r) for r in self._db().execute(sql).fetchall()]

    def pending_scores(self, now: float | None = None, limit: int = 100) -> list[ScoreRow]:
        """Scores whose current version Langfuse has neither accepted nor rejected, due now."""
        now = time.time() if now is None else now
        rows = (
            self._db()
            .execute(
                """SELECT * FROM scores
               WHERE delivered_version < version AND rejected_version < version
                 AND next_attempt_at <= ?
               ORDER BY updated LIMIT ?""",
                (now, limit),
            )
            .fetchall()
        )
        return [_score(r) for r in rows]

    def mark_sent(self, score_id: str) -> None:
        """Remember that a create may have reached Langfuse, so an undo must delete remotely."""
        with self.transaction() as db:
            db.execute("UPDATE scores SET remote_exists = 1 WHERE id = ?", (score_id,))

    def mark_delivered(self, score_id: str, version: int, *, exists_remotely: bool) -> None:
        with self.transaction() as db:
            db.execute(
                """UPDATE scores SET delivered_version = MAX(delivered_version, ?),
                       remote_exists = ?, delivery_error = NULL, attempts = 0
                   WHERE id = ?""",
                (version, int(exists_remotely), score_id),
            )

    def mark_rejected(self, score_id: str, version: int, message: str) -> None:
        with self.transaction() as db:
            db.execute(
                """UPDATE scores SET rejected_version = MAX(rejected_version, ?), delivery_error = ?
                   WHERE id = ?""",
                (version, message, score_id),
            )

    def mark_retry(self, score_id: str, error: str, next_attempt_at: float) -> None:
        with self.transaction() as db:
            db.execute(
                """UPDATE scores SET attempts = attempts + 1, delivery_error = ?, next_attempt_at = ?
                   WHERE id = ?""",
                (error, next_attempt_at, score_id),
            )

    def retry_now(self) -> None:
        """Make every pending score due now (for `python -m feedback sync`)."""
        with self.transaction() as db:
            db.execute("UPDATE scores SET next_attempt_at = 0 WHERE delivered_version < version")

    def delivery_counts(self) -> dict[str, Any]:
        row = (
            self._db()
            .execute(
                """SELECT
                 SUM(CASE WHEN delivered_version < version AND rejected_version < version THEN 1 ELSE 0 END),
                 SUM(CASE WHEN delivered_version >= version THEN 1 ELSE 0 END),
                 SUM(CASE WHEN delivered_version < version AND rejected_version >= version THEN 1 ELSE 0 END),
                 MIN(CASE WHEN delivered_version < version AND rejected_version < version THEN updated END)
               FROM scores"""
            )
            .fetchone()
        )
        oldest = row[3]
        age = None
        if oldest:
            age = (datetime.now(UTC) - datetime.fromisoformat(oldest)).total_seconds()
        return {
            "pending": row[0] or 0,
            "delivered": row[1] or 0,
            "rejected": row[2] or 0,
            "oldest_pending_age_s": age,
        }


_BOOL_FIELDS = {"deleted", "remote_exists"}


def _score(row: sqlite3.Row) -> ScoreRow:
    data = dict(row)
    for key in _BOOL_FIELDS:
        data[key] = bool(data[key])
    return ScoreRow(**data)
