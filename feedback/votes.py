"""Votes become `user-feedback` scores: like = 1, dislike = 0, a reason = 0 with a comment.

The trace id always comes from the server-side map of the session, never from the browser.
A vote is committed to the local store before `record` returns; delivery happens later.
Changing or undoing a vote withdraws, in the same transaction, the evaluation jobs and judge
scores the earlier vote alone caused (Store._withdraw): a dislike's `dislike-reason` goes with it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from feedback.sanitize import clean_text
from feedback.store import BY_USER, RATING_NAME, ScoreRow, Store

log = logging.getLogger(__name__)

SCORE_NAME = RATING_NAME  # a person's vote: what "a rating" means everywhere
DATA_TYPE = "BOOLEAN"
_SCORE_NAMESPACE = uuid.UUID("7f6d4bb8-7f8f-4a53-9d89-0c3f1f1b6a51")


def score_id_for(trace_id: str, name: str = SCORE_NAME) -> str:
    """One stable id per trace and score name, so a changed vote overwrites the same score."""
    return str(uuid.uuid5(_SCORE_NAMESPACE, f"{trace_id}:{name}"))


@dataclass(frozen=True)
class Vote:
    """What one click means: a value with an optional reason, or None to undo."""

    value: float | None
    reason: str | None = None


def vote_from_liked(liked: object) -> Vote:
    """Map Gradio's LikeData.liked (True, False, a feedback option label, or "") to a vote."""
    if liked is True:
        return Vote(1.0)
    if liked is False:
        return Vote(0.0)
    if isinstance(liked, str):
        label = clean_text(liked).strip()
        if not label:
            return Vote(None)
        if label.lower() == "like":
            return Vote(1.0)
        if label.lower() == "dislike":
            return Vote(0.0)
        return Vote(0.0, reason=label[:200])
    raise ValueError(f"unknown vote value {liked!r}")


class VoteRecorder:
    """Writes votes to the store first, then tells the outbox (if any) to deliver them."""

    def __init__(
        self,
        store: Store,
        notify: Callable[[], None] | None = None,
        flush_spans: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._notify = notify or (lambda: None)
        self._flush_spans = flush_spans or (lambda: None)

    def record(
        self, *, trace_id: str, vote: Vote, session_id: str | None, user_id: str | None
    ) -> ScoreRow | None:
        with self._store.urgent():  # a person waits for this write: before background writers
            row = self._record(trace_id=trace_id, vote=vote, session_id=session_id, user_id=user_id)
        self._notify()
        return row

    def _record(
        self, *, trace_id: str, vote: Vote, session_id: str | None, user_id: str | None
    ) -> ScoreRow | None:
        score_id = score_id_for(trace_id)
        if not self._store.has_trace(trace_id):
            # A vote right after its answer can beat the span exporter's batch: write the
            # trace first, so even a crash right after this vote keeps the rated trace.
            self._flush_spans()
        if vote.value is None:
            return self._store.delete_score(score_id)
        return self._store.upsert_score(
            score_id=score_id,
            trace_id=trace_id,
            name=SCORE_NAME,
            value=vote.value,
            data_type=DATA_TYPE,
            source="user",
            session_id=session_id,
            user_id=user_id,
            reason=vote.reason,
            scored_by=BY_USER,
        )

    def comment(self, *, trace_id: str, text: str) -> ScoreRow | None:
        """Add free text to the rated answer's score; None if that answer has no live score."""
        current = self._store.get_score(score_id_for(trace_id))
        if current is None or current.deleted or current.value is None:
            return None
        with self._store.urgent():
            row = self._upsert_comment(current, text)
        self._notify()
        return row

    def _upsert_comment(self, current: ScoreRow, text: str) -> ScoreRow | None:
        return self._store.upsert_score(
            score_id=current.id,
            trace_id=current.trace_id,
            name=current.name,
            value=current.value,
            data_type=current.data_type,
            source=current.source,
            session_id=current.session_id,
            user_id=current.user_id,
            reason=current.reason,
            note=text.strip()[:2000] or None,
            keep_note=False,
        )
