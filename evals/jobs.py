"""The evaluation job queue, kept in the store so jobs survive restarts and are shared by every
app process on one database.

A job is one evaluator (at one version) on one target (a turn's trace or a conversation's
session) at one revision of it: the turn, the turn after its rating changed, the conversation at
N turns. Its id is derived from exactly that, so a job is created once however many times the
scheduler, a restart or a backfill asks for it, and is never run twice. Skipped jobs (filter,
sampling) are kept too: together the rows are the evaluator log.

A job that read a user's rating records its cause (the rating's score id and version), and so
does its score: when the vote changes or is undone, the store cancels such jobs still waiting
and deletes their scores (feedback.store.Store._withdraw), and a job finishing after that
writes nothing (CauseWithdrawn): the status is then "cancelled".
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from feedback.store import Store

_IDS = uuid.UUID("6f0b7c1e-5d2a-4c8e-9a41-3b7e2d9f1c55")

PENDING = "pending"
RUNNING = "running"
DELAYED = "delayed"
COMPLETED = "completed"
ERROR = "error"
SKIPPED_FILTER = "skipped-filter"
SKIPPED_SAMPLING = "skipped-sampling"
CANCELLED = "cancelled"  # the vote that caused it changed or was undone before it finished
STATUSES = (PENDING, RUNNING, DELAYED, COMPLETED, ERROR, SKIPPED_FILTER, SKIPPED_SAMPLING, CANCELLED)


def job_id(evaluator: str, version: str, target_kind: str, target_id: str, revision: str) -> str:
    return str(uuid.uuid5(_IDS, f"job|{evaluator}|{version}|{target_kind}|{target_id}|{revision}"))


def eval_score_id(evaluator: str, version: str, target_kind: str, target_id: str, revision: str = "") -> str:
    """Stable per evaluator version and target: a re-run overwrites its score.

    A conversation judged again after it resumed gets a new score (revision = its turn count),
    so both results are kept and the latest is the current one.
    """
    key = f"score|{evaluator}|{version}|{target_kind}|{target_id}"
    if target_kind == "conversation":
        key += f"|{revision}"
    return str(uuid.uuid5(_IDS, key))


@dataclass(frozen=True)
class NewJob:
    evaluator: str
    version: str
    kind: str
    target_kind: str
    target_id: str
    revision: str
    trigger: str
    status: str = PENDING
    # The rating (score id, version) this job read, when it read one: a change of that vote
    # withdraws the job and its score.
    cause_score_id: str | None = None
    cause_version: int = 0

    @property
    def cause(self) -> tuple[str, int] | None:
        return (self.cause_score_id, self.cause_version) if self.cause_score_id else None

    @property
    def id(self) -> str:
        return job_id(self.evaluator, self.version, self.target_kind, self.target_id, self.revision)


@dataclass(frozen=True)
class Job:
    id: str
    evaluator: str
    version: str
    kind: str
    target_kind: str
    target_id: str
    revision: str
    trigger: str
    status: str
    attempts: int
    next_attempt_at: float
    lease_owner: str | None
    lease_until: float
    created: float
    called_at: float | None
    finished: float | None
    latency_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    score_id: str | None
    eval_trace_id: str | None
    value: float | None
    string_value: str | None
    reasoning: str | None
    error: str | None
    cost: float | None = None
    cause_score_id: str | None = None
    cause_version: int = 0

    @property
    def cause(self) -> tuple[str, int] | None:
        """The rating (score id, version) whose vote this job's result depends on, if any."""
        return (self.cause_score_id, self.cause_version) if self.cause_score_id else None


_INSERT = text(
    """INSERT INTO eval_jobs (id, evaluator, version, kind, target_kind, target_id, revision, trigger,
           status, created, finished, cause_score_id, cause_version)
       VALUES (:id, :evaluator, :version, :kind, :target_kind, :target_id, :revision, :trigger,
           :status, :created, :finished, :cause_score_id, :cause_version)
       ON CONFLICT (id) DO NOTHING"""
)


def _rows(jobs: Iterable[NewJob], now: float) -> list[dict[str, Any]]:
    return [
        {
            "id": j.id,
            "evaluator": j.evaluator,
            "version": j.version,
            "kind": j.kind,
            "target_kind": j.target_kind,
            "target_id": j.target_id,
            "revision": j.revision,
            "trigger": j.trigger,
            "status": j.status,
            "created": now,
            "finished": now if j.status in (SKIPPED_FILTER, SKIPPED_SAMPLING) else None,
            "cause_score_id": j.cause_score_id,
            "cause_version": j.cause_version,
        }
        for j in jobs
    ]


class JobQueue:
    """Jobs and the scheduler's bookkeeping (what was seen, which conversations wait)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ----- creating jobs ------------------------------------------------------------------

    def add(self, jobs: Iterable[NewJob], *, now: float | None = None) -> int:
        """Create the jobs that do not exist yet; return how many were new."""
        rows = _rows(jobs, time.time() if now is None else now)
        if not rows:
            return 0
        with self.store.transaction() as db:
            return sum(db.execute(_INSERT, row).rowcount for row in rows)

    def unseen_traces(self, limit: int = 200) -> list[dict[str, Any]]:
        """Traces the evaluators have not looked at yet (turns and judge traces alike)."""
        return self.store.rows(
            "SELECT id, session_id, user_id, end_time, tags FROM traces WHERE eval_seen = 0 LIMIT :n",
            {"n": limit},
        )

    def trace_seen(
        self, trace_id: str, jobs: Iterable[NewJob], session: tuple[str, str | None, float] | None
    ) -> int:
        """Record a trace's jobs, count it in its conversation and mark it seen, at once."""
        rows = _rows(jobs, time.time())
        with self.store.transaction() as db:
            seen = db.execute(
                text("UPDATE traces SET eval_seen = 1 WHERE id = :id AND eval_seen = 0"), {"id": trace_id}
            ).rowcount
            if not seen:
                return 0  # another process took it first
            created = sum(db.execute(_INSERT, row).rowcount for row in rows)
            if session is not None:
                session_id, user_id, end = session
                db.execute(
                    text(
                        """INSERT INTO eval_sessions (session_id, user_id, turns, last_turn_end)
                           VALUES (:sid, :uid, 1, :end)
                           ON CONFLICT (session_id) DO UPDATE SET turns = eval_sessions.turns + 1,
                               last_turn_end = CASE WHEN eval_sessions.last_turn_end > excluded.last_turn_end
                                   THEN eval_sessions.last_turn_end ELSE excluded.last_turn_end END"""
                    ),
                    {"sid": session_id, "uid": user_id, "end": end},
                )
            return created

    def changed_ratings(self, rating_name: str, limit: int = 200) -> list[dict[str, Any]]:
        """Ratings created or changed (or undone) since the evaluators last saw them."""
        return self.store.rows(
            """SELECT id, trace_id, version FROM scores
               WHERE name = :name AND eval_seen_version < version LIMIT :n""",
            {"name": rating_name, "n": limit},
        )

    def rating_seen(self, score_id: str, version: int, jobs: Iterable[NewJob]) -> int:
        """Record the jobs of one rating version; none when the vote changed again meanwhile
        (the next pass schedules the new version, and a job of the old one would be withdrawn)."""
        rows = _rows(jobs, time.time())
        with self.store.transaction() as db:
            seen = db.execute(
                text(
                    """UPDATE scores SET eval_seen_version = :v
                       WHERE id = :id AND eval_seen_version < :v AND version = :v"""
                ),
                {"id": score_id, "v": version},
            ).rowcount
            if not seen:
                return 0
            return sum(db.execute(_INSERT, row).rowcount for row in rows)

    def idle_conversations(self, idle_since: float, limit: int = 100) -> list[dict[str, Any]]:
        """Conversations with turns not judged yet whose last turn ended before `idle_since`."""
        return self.store.rows(
            """SELECT session_id, user_id, turns, last_turn_end FROM eval_sessions
               WHERE judged_turns < turns AND last_turn_end < :t ORDER BY last_turn_end LIMIT :n""",
            {"t": idle_since, "n": limit},
        )

    def conversation_seen(self, session_id: str, turns: int, jobs: Iterable[NewJob], *, done: bool) -> int:
        rows = _rows(jobs, time.time())
        with self.store.transaction() as db:
            created = sum(db.execute(_INSERT, row).rowcount for row in rows)
            if done:
                db.execute(
                    text(
                        """UPDATE eval_sessions SET judged_turns = :t
                           WHERE session_id = :sid AND judged_turns < :t"""
                    ),
                    {"sid": session_id, "t": turns},
                )
            return created

    # ----- running jobs -------------------------------------------------------------------

    def claim(
        self,
        owner: str,
        lease_s: float,
        *,
        llm: bool = True,
        evaluator: str | None = None,
        now: float | None = None,
    ) -> Job | None:
        """Take one due job no other worker holds (llm=False: code jobs only).

        A job still "running" whose lease has expired was left by a worker that died: it is
        taken over (its score id is stable, so a second run overwrites, never duplicates).
        """
        now = time.time() if now is None else now
        where = """status IN ('pending', 'delayed', 'running') AND next_attempt_at <= :now
                   AND lease_until <= :now"""
        params: dict[str, Any] = {"now": now}
        if not llm:
            where += " AND kind <> 'llm'"
        if evaluator is not None:
            where += " AND evaluator = :evaluator"
            params["evaluator"] = evaluator
        if not self.store.rows(f"SELECT id FROM eval_jobs WHERE {where} LIMIT 1", params):
            return None
        skip_locked = " FOR UPDATE SKIP LOCKED" if self.store.dialect == "postgresql" else ""
        with self.store.transaction() as db:
            row = db.execute(
                text(f"SELECT id FROM eval_jobs WHERE {where} ORDER BY created LIMIT 1{skip_locked}"), params
            ).first()
            if row is None:
                return None
            claimed = (
                db.execute(
                    text(
                        """UPDATE eval_jobs SET status = 'running', lease_owner = :owner,
                               lease_until = :until, attempts = attempts + 1
                           WHERE id = :id RETURNING *"""
                    ),
                    {"owner": owner, "until": now + lease_s, "id": row.id},
                )
                .mappings()
                .one()
            )
        return Job(**claimed)

    def mark_called(self, job_id: str, at: float | None = None) -> None:
        """A judge call is being made for this job: it counts against the hourly cap."""
        with self.store.transaction() as db:
            db.execute(
                text("UPDATE eval_jobs SET called_at = :at WHERE id = :id"),
                {"at": time.time() if at is None else at, "id": job_id},
            )

    def calls_since(self, since: float) -> int:
        row = self.store.row("SELECT COUNT(*) AS n FROM eval_jobs WHERE called_at >= :t", {"t": since})
        return int(row["n"]) if row else 0

    def finish(self, job_id: str, owner: str | None, **result: Any) -> None:
        """Completed: record what it produced and end the lease (owner None: a run by hand)."""
        fields = {
            "latency_ms": None,
            "prompt_tokens": None,
            "completion_tokens": None,
            "score_id": None,
            "eval_trace_id": None,
            "value": None,
            "string_value": None,
            "reasoning": None,
            "cost": None,
            **result,
        }
        with self.store.transaction() as db:
            db.execute(
                text(
                    """UPDATE eval_jobs SET status = 'completed', finished = :now, error = NULL,
                           lease_owner = NULL, lease_until = 0, latency_ms = :latency_ms,
                           prompt_tokens = :prompt_tokens, completion_tokens = :completion_tokens,
                           score_id = :score_id, eval_trace_id = :eval_trace_id, value = :value,
                           string_value = :string_value, reasoning = :reasoning, cost = :cost
                       WHERE id = :id AND (lease_owner = :owner OR :owner IS NULL)
                         AND status <> 'cancelled'"""
                ),
                {**fields, "now": time.time(), "id": job_id, "owner": owner},
            )

    def fail(
        self, job_id: str, owner: str | None, error: str, *, retry_at: float | None, **result: Any
    ) -> None:
        """An error: delayed until `retry_at`, or final when there is nothing to retry (owner None:
        a run by hand or by a dataset run)."""
        with self.store.transaction() as db:
            db.execute(
                text(
                    """UPDATE eval_jobs SET status = :status, error = :error, next_attempt_at = :at,
                           finished = :finished, lease_owner = NULL, lease_until = 0,
                           latency_ms = :latency_ms, eval_trace_id = :eval_trace_id
                       WHERE id = :id AND (lease_owner = :owner OR :owner IS NULL)
                         AND status <> 'cancelled'"""
                ),
                {
                    "status": DELAYED if retry_at is not None else ERROR,
                    "error": error[:2000],
                    "at": retry_at or 0,
                    "finished": None if retry_at is not None else time.time(),
                    "latency_ms": result.get("latency_ms"),
                    "eval_trace_id": result.get("eval_trace_id"),
                    "id": job_id,
                    "owner": owner,
                },
            )

    def cancel(self, job_id: str, owner: str | None, why: str) -> None:
        """The vote this job read changed before it finished: it ends without a score."""
        with self.store.transaction() as db:
            db.execute(
                text(
                    """UPDATE eval_jobs SET status = 'cancelled', error = :why, finished = :now,
                           lease_owner = NULL, lease_until = 0
                       WHERE id = :id AND (lease_owner = :owner OR :owner IS NULL OR status = 'cancelled')"""
                ),
                {"id": job_id, "owner": owner, "why": why[:2000], "now": time.time()},
            )

    def cause_current(self, job: Job | NewJob) -> bool:
        """Whether the rating this job read is still at the version it read (True: none read)."""
        cause = job.cause
        if cause is None:
            return True
        row = self.store.row("SELECT version FROM scores WHERE id = :id", {"id": cause[0]})
        return row is not None and int(row["version"]) == cause[1]

    def release(self, job_id: str, owner: str) -> None:
        """Give a claimed job back untouched (the worker is stopping)."""
        with self.store.transaction() as db:
            db.execute(
                text(
                    """UPDATE eval_jobs SET status = 'pending', lease_owner = NULL, lease_until = 0,
                           attempts = attempts - 1
                       WHERE id = :id AND lease_owner = :owner"""
                ),
                {"id": job_id, "owner": owner},
            )

    # ----- reading the log ----------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        row = self.store.row("SELECT * FROM eval_jobs WHERE id = :id", {"id": job_id})
        return Job(**row) if row else None

    def log(self, *, evaluator: str | None = None, status: str | None = None, limit: int = 50) -> list[Job]:
        where, params = ["1 = 1"], {"n": limit}
        if evaluator:
            where.append("evaluator = :evaluator")
            params["evaluator"] = evaluator
        if status:
            where.append("status = :status")
            params["status"] = status
        rows = self.store.rows(
            f"SELECT * FROM eval_jobs WHERE {' AND '.join(where)} ORDER BY created DESC, id LIMIT :n", params
        )
        return [Job(**r) for r in rows]

    def counts(self) -> dict[tuple[str, str], dict[str, int]]:
        """Jobs per (evaluator, version) and status."""
        out: dict[tuple[str, str], dict[str, int]] = {}
        for r in self.store.rows(
            "SELECT evaluator, version, status, COUNT(*) AS n FROM eval_jobs GROUP BY evaluator, version, status"
        ):
            out.setdefault((r["evaluator"], r["version"]), {})[r["status"]] = int(r["n"])
        return out

    def backlog(self) -> int:
        row = self.store.row(
            "SELECT COUNT(*) AS n FROM eval_jobs WHERE status IN ('pending', 'delayed', 'running')"
        )
        return int(row["n"]) if row else 0
