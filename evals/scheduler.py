"""Which evaluations are due: the scheduler turns what happened in the store into jobs.

It reads the store, not in-process events, so nothing is missed when the app restarts or when
another process took the turn or the vote: a finished turn is a trace not seen yet, a new,
changed or undone rating is a rating version not seen yet, a conversation falls idle when its
last turn is older than an evaluator's idle time. Filters and sampling are decided here, and a
skipped evaluation is recorded as such (the log shows why an evaluator did not run).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from evals.config import Evaluator
from evals.context import conversation_data, turn_data
from evals.jobs import SKIPPED_FILTER, SKIPPED_SAMPLING, JobQueue, NewJob
from feedback.store import Store
from feedback.tracing import EVALUATION_TAG
from feedback.votes import SCORE_NAME, score_id_for

log = logging.getLogger(__name__)

TURN = "turn"
DATASET_TAG = "dataset"
CONVERSATION = "conversation"


def turn_revision(evaluator: Evaluator, rating_version: int) -> str:
    """One run per turn; one more each time the rating changes, for evaluators that read it."""
    return f"rating-{rating_version}" if evaluator.uses_feedback else "turn"


def rating_version(store: Store, trace_id: str) -> int:
    """The version of a turn's user rating (0: never rated): part of a rating reader's revision."""
    row = store.row(
        "SELECT version FROM scores WHERE trace_id = :t AND name = :n", {"t": trace_id, "n": SCORE_NAME}
    )
    return int(row["version"]) if row else 0


def rating_cause(evaluator: Evaluator, trace_id: str, version: int) -> tuple[str | None, int]:
    """What a job of `evaluator` on this turn depends on: the user's rating at `version` when the
    evaluator reads it and the turn was rated (a change of that vote withdraws the job), else
    nothing (the turn alone caused it)."""
    if evaluator.uses_feedback and version > 0:
        return score_id_for(trace_id), version
    return None, 0


def conversation_revision(turns: int) -> str:
    """A conversation is judged once per length: coming back after being judged makes a new one."""
    return f"turns-{turns}"


def job_on_trace(store: Store, evaluator: Evaluator, trace: dict[str, Any], trigger: str) -> NewJob | None:
    """The job of `evaluator` on this trace at its current revision, asked for by hand (a CLI run,
    a dataset run): on its conversation for a conversation evaluator (None: the trace has none)."""
    if evaluator.target == CONVERSATION:
        if not trace.get("session_id"):
            return None
        turns = conversation_data(store, trace["session_id"])
        target_kind, target_id = CONVERSATION, trace["session_id"]
        revision = conversation_revision(len(turns.turns) if turns else 0)
        cause: tuple[str | None, int] = (None, 0)
    else:
        target_kind, target_id = TURN, trace["id"]
        version = rating_version(store, trace["id"])
        revision = turn_revision(evaluator, version)
        cause = rating_cause(evaluator, trace["id"], version)
    return NewJob(
        evaluator.name, evaluator.version, evaluator.kind, target_kind, target_id, revision, trigger,
        cause_score_id=cause[0], cause_version=cause[1],
    )  # fmt: skip


def decide(
    evaluator: Evaluator,
    data: Any,
    target_kind: str,
    target_id: str,
    revision: str,
    trigger: str,
    cause: tuple[str | None, int] = (None, 0),
) -> NewJob:
    """The job for one evaluator and target, with its status: pending, or why it is skipped;
    `cause` is the rating version it reads (rating_cause)."""
    status = "pending"
    if not evaluator.sampled(target_id):
        status = SKIPPED_SAMPLING
    elif not evaluator.matches(data):
        status = SKIPPED_FILTER
    return NewJob(
        evaluator.name, evaluator.version, evaluator.kind, target_kind, target_id, revision, trigger, status,
        cause_score_id=cause[0], cause_version=cause[1],
    )  # fmt: skip


def _has_tag(tags: Any, tag: str) -> bool:
    if isinstance(tags, str):
        try:
            tags = json.loads(tags)
        except ValueError:
            return False
    return isinstance(tags, list) and tag in tags


def is_evaluation_trace(tags: Any) -> bool:
    return _has_tag(tags, EVALUATION_TAG)


def is_dataset_trace(tags: Any) -> bool:
    """An offline dataset item's trace: scored by the evaluators its run names (--evaluator), never
    by the app's online evaluators (a run of 1,000 items would spend 1,000 judge calls unasked)."""
    return _has_tag(tags, DATASET_TAG)


class Scheduler:
    """One pass at a time over new traces, changed ratings and idle conversations."""

    def __init__(self, queue: JobQueue, evaluators: Sequence[Evaluator]) -> None:
        self.queue = queue
        self.store = queue.store
        self.evaluators = [e for e in evaluators if e.enabled]
        self.turn_evaluators = [e for e in self.evaluators if e.target == TURN]
        self.conversation_evaluators = [e for e in self.evaluators if e.target == CONVERSATION]

    def run_once(self, now: float | None = None) -> int:
        """Create the jobs due now; return how many were new."""
        now = time.time() if now is None else now
        return self.new_traces() + self.changed_ratings() + self.idle_conversations(now)

    def new_traces(self) -> int:
        created = 0
        while batch := self.queue.unseen_traces():
            for trace in batch:
                try:
                    created += self._trace(trace)
                except Exception:  # noqa: BLE001 - one unreadable trace must not stop the others
                    log.exception("Cannot schedule the evaluators of trace %s; it is skipped", trace["id"])
                    self.queue.trace_seen(trace["id"], [], None)
        return created

    def _trace(self, trace: dict[str, Any]) -> int:
        if is_evaluation_trace(trace.get("tags")) or is_dataset_trace(trace.get("tags")):
            return self.queue.trace_seen(trace["id"], [], None)  # never judged, never a turn
        jobs = []
        if self.turn_evaluators:
            data = turn_data(self.store, trace["id"])
            if data is not None:
                version = rating_version(self.store, trace["id"])
                jobs = [
                    decide(
                        e, data, TURN, trace["id"], turn_revision(e, version), "turn",
                        rating_cause(e, trace["id"], version),
                    )
                    for e in self.turn_evaluators
                ]  # fmt: skip
        session = None
        if trace.get("session_id"):
            session = (trace["session_id"], trace.get("user_id"), float(trace.get("end_time") or 0))
        return self.queue.trace_seen(trace["id"], jobs, session)

    def changed_ratings(self) -> int:
        created = 0
        readers = [e for e in self.turn_evaluators if e.uses_feedback]
        while batch := self.queue.changed_ratings(SCORE_NAME):
            for rating in batch:
                jobs = []
                data = turn_data(self.store, rating["trace_id"]) if readers else None
                if data is not None:
                    jobs = [
                        decide(
                            e, data, TURN, rating["trace_id"], turn_revision(e, rating["version"]), "rating",
                            rating_cause(e, rating["trace_id"], rating["version"]),
                        )
                        for e in readers
                    ]  # fmt: skip
                created += self.queue.rating_seen(rating["id"], rating["version"], jobs)
        return created

    def idle_conversations(self, now: float) -> int:
        if not self.conversation_evaluators:
            return 0
        shortest = min(e.idle_s for e in self.conversation_evaluators)
        longest = max(e.idle_s for e in self.conversation_evaluators)
        created = 0
        for conv in self.queue.idle_conversations(now - shortest):
            idle_for = now - conv["last_turn_end"]
            ready = [e for e in self.conversation_evaluators if idle_for >= e.idle_s]
            data = conversation_data(self.store, conv["session_id"])
            revision = conversation_revision(conv["turns"])
            jobs = [] if data is None else [
                decide(e, data, CONVERSATION, conv["session_id"], revision, "idle") for e in ready
            ]  # fmt: skip
            # Judged by every conversation evaluator once the longest idle time has passed; a
            # new turn later makes `turns` grow, and the conversation is judged again.
            created += self.queue.conversation_seen(
                conv["session_id"], conv["turns"], jobs, done=data is None or idle_for >= longest
            )
        return created
