"""The review queue: traces people should label, handed out one at a time with a lease.

An item is one trace in one queue: the review rule that put it there (evals.review_rules) or
"manual" (added by hand from the trace viewer). It is unique per (trace, queue), so a rule that
fires again, or two app processes sweeping at once, never adds it twice. Its state is pending,
leased (a reviewer has it until `lease_until`), done or skipped.

Claims follow the evaluation job queue (evals.jobs): a quick read first (no write lock when there
is nothing to claim), then in one write transaction the oldest claimable item is taken, on
Postgres with FOR UPDATE SKIP LOCKED so reviewers claiming at once each get another item, on
SQLite under its one write lock. A lease that runs out returns the item to whoever claims next;
a reviewer who asks again while holding a live lease gets the same item back (a reload, a
second tab). Two reviewers never hold the same trace at once, even through two queues.

A review is per trace, not per queue: saving it writes one label per score name (a score with
source ANNOTATION, scored_by "reviewer", the judge's own score name, so judge and person are
compared name for name), the corrected answer and the note (table `reviews`), and marks every
item of that trace done, in one transaction. The corrected answer has a column of its own rather
than a score's comment: it is one text per trace whatever the number of labels (a comment would
copy it onto each), it may be long, a review may correct the answer without labelling anything,
and `dataset from-traces --reviewed` reads it with one index.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

from feedback.store import BY_REVIEWER, RATING_NAME, ScoreRow, Store

__all__ = [
    "ANNOTATION",
    "DONE",
    "LEASED",
    "MANUAL",
    "PENDING",
    "SKIPPED",
    "Label",
    "NewItem",
    "ReviewError",
    "ReviewItem",
    "ReviewQueue",
    "Saved",
    "item_id",
    "label_score_id",
]

PENDING = "pending"
LEASED = "leased"
DONE = "done"
SKIPPED = "skipped"
STATES = (PENDING, LEASED, DONE, SKIPPED)
MANUAL = "manual"  # the queue of traces added by hand from the trace viewer
ANNOTATION = "ANNOTATION"  # a label's source (Langfuse's name for a person's annotation)
DEFAULT_LEASE_S = 1800.0
# Longest corrected answer and note kept (a pasted document is not a correction).
MAX_ANSWER_CHARS = 20_000
MAX_NOTE_CHARS = 2_000
LABEL_TYPES = ("NUMERIC", "BOOLEAN", "CATEGORICAL")

_IDS = uuid.UUID("3c1f4a8e-2b7d-4e95-8a06-d1e5b7c9f203")


class ReviewError(ValueError):
    """A review that cannot be saved or an item that cannot be claimed; the message says why."""


def item_id(trace_id: str, queue: str) -> str:
    """Stable per (trace, queue): a rule firing again finds the same item."""
    return str(uuid.uuid5(_IDS, f"item|{trace_id}|{queue}"))


def label_score_id(trace_id: str, name: str) -> str:
    """One label per trace and score name: a second review of the trace overwrites it."""
    return str(uuid.uuid5(_IDS, f"label|{trace_id}|{name}"))


@dataclass(frozen=True)
class NewItem:
    """An item to add: why it is there, and whether it is part of the random calibration sample
    (drawn at `sample_rate`; the corrected quality estimate uses only those)."""

    trace_id: str
    queue: str
    reason: str
    calibration: bool = False
    sample_rate: float | None = None
    added_by: str | None = None


@dataclass(frozen=True)
class ReviewItem:
    id: str
    trace_id: str
    queue: str
    reason: str | None
    created: float
    state: str
    lease_owner: str | None
    lease_until: float
    calibration: bool
    sample_rate: float | None
    added_by: str | None
    finished: float | None
    finished_by: str | None

    def leased_to(self, reviewer: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.state == LEASED and self.lease_owner == reviewer and self.lease_until > now


def _item(row: Any) -> ReviewItem:
    data = dict(row)
    data["calibration"] = bool(data["calibration"])
    return ReviewItem(**data)


@dataclass(frozen=True)
class Label:
    """A reviewer's value for one score name, of the type the judge of that name writes."""

    name: str
    data_type: str
    value: float | None = None
    string_value: str | None = None
    categories: tuple[str, ...] = ()

    def checked(self) -> Label:
        if self.data_type not in LABEL_TYPES:
            raise ReviewError(f"The label {self.name} has an unknown type {self.data_type!r}.")
        if self.name == RATING_NAME:
            raise ReviewError(f"{RATING_NAME} is the users' own rating; a reviewer cannot label it.")
        if self.data_type == "CATEGORICAL":
            if not isinstance(self.string_value, str) or not self.string_value:
                raise ReviewError(f"The label {self.name} needs one of its categories.")
            if self.categories and self.string_value not in self.categories:
                raise ReviewError(
                    f"{self.string_value!r} is not a category of {self.name} ({', '.join(self.categories)})."
                )
            return self
        value = self.value
        if value is None or isinstance(value, bool) or not math.isfinite(float(value)):
            raise ReviewError(f"The label {self.name} needs a number.")
        if self.data_type == "BOOLEAN" and float(value) not in (0.0, 1.0):
            raise ReviewError(f"The label {self.name} is true (1) or false (0), not {value!r}.")
        if not 0.0 <= float(value) <= 1.0:
            raise ReviewError(f"The label {self.name} is a number from 0 to 1, not {value!r}.")
        return self


@dataclass(frozen=True)
class Saved:
    """What a saved review wrote."""

    trace_id: str
    labels: list[ScoreRow] = field(default_factory=list)
    corrected_answer: str | None = None
    note: str | None = None
    items_done: int = 0
    # Set when the lease had run out and another reviewer holds the item now: saved anyway (a
    # reviewer's work is never dropped), and the page says so.
    taken_by: str | None = None


# Written so that the open items' partial indexes (migration 016) are used: oldest first, the
# first one claimable wins.
_OPEN = "state IN ('pending', 'leased')"
_CLAIMABLE = f"({_OPEN} AND (state = 'pending' OR lease_until <= :now))"
# Not while another reviewer holds the same trace through another queue.
_TRACE_FREE = """NOT EXISTS (SELECT 1 FROM review_items o WHERE o.trace_id = review_items.trace_id
                   AND o.state = 'leased' AND o.lease_until > :now AND o.lease_owner <> :owner)"""


class ReviewQueue:
    """Items, claims, reviews and the review rules' bookkeeping, over one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ----- adding -------------------------------------------------------------------------

    def add(self, items: Iterable[NewItem], *, now: float | None = None) -> int:
        """Add the items that are not there yet; return how many were new. A trace already
        reviewed enters as done (its labels are there), so the queue's progress stays true."""
        rows = [
            {
                "id": item_id(i.trace_id, i.queue),
                "trace_id": i.trace_id,
                "queue": i.queue,
                "reason": (i.reason or "")[:500] or None,
                "created": time.time() if now is None else now,
                "calibration": int(i.calibration),
                "sample_rate": i.sample_rate,
                "added_by": i.added_by,
            }
            for i in items
        ]
        if not rows:
            return 0
        with self.store.transaction() as db:
            return self.add_in(db, rows)

    @staticmethod
    def add_in(db: Connection, rows: Sequence[dict[str, Any]]) -> int:
        added = 0
        for row in rows:
            added += db.execute(
                text(
                    """INSERT INTO review_items (id, trace_id, queue, reason, created, state, calibration,
                           sample_rate, added_by, finished)
                       VALUES (:id, :trace_id, :queue, :reason, :created,
                           CASE WHEN EXISTS (SELECT 1 FROM reviews WHERE trace_id = :trace_id)
                               THEN 'done' ELSE 'pending' END,
                           :calibration, :sample_rate, :added_by,
                           CASE WHEN EXISTS (SELECT 1 FROM reviews WHERE trace_id = :trace_id)
                               THEN :created END)
                       ON CONFLICT (trace_id, queue) DO NOTHING"""
                ),
                row,
            ).rowcount
        return added

    def withdraw(self, trace_id: str, queue: str) -> int:
        """Take a trace out of a queue while nobody has started on it (the rule that put it
        there no longer holds: a dislike undone); a leased, done or skipped item stays."""
        with self.store.transaction() as db:
            return db.execute(
                text("DELETE FROM review_items WHERE trace_id = :t AND queue = :q AND state = 'pending'"),
                {"t": trace_id, "q": queue},
            ).rowcount

    # ----- claiming -----------------------------------------------------------------------

    def claim(
        self,
        reviewer: str,
        *,
        queue: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        now: float | None = None,
    ) -> ReviewItem | None:
        """The reviewer's next item, leased to them for `lease_s` seconds; None when the queue
        (every queue when None) has nothing left for them. An item they hold already comes back."""
        if not reviewer:
            raise ReviewError("A reviewer needs a name to claim an item.")
        now = time.time() if now is None else now
        params: dict[str, Any] = {"now": now, "owner": reviewer, "until": now + lease_s}
        in_queue = ""
        if queue is not None:
            in_queue = "AND queue = :queue"
            params["queue"] = queue
        mine = f"""SELECT id FROM review_items WHERE state = 'leased' AND lease_owner = :owner
                   AND lease_until > :now {in_queue} ORDER BY created LIMIT 1"""
        where = f"{_CLAIMABLE} {in_queue} AND {_TRACE_FREE}"
        if (
            self.store.row(mine, params) is None
            and self.store.row(f"SELECT id FROM review_items WHERE {where} LIMIT 1", params) is None
        ):
            return None  # the usual answer of an empty queue, found without the write lock
        postgres = self.store.dialect == "postgresql"
        skip_locked = " FOR UPDATE SKIP LOCKED" if postgres else ""
        with self.store.transaction() as db:
            # Looked up again under the write lock: two requests of one reviewer (the tab opened
            # and the page loaded) both get the item the first one took.
            held = db.execute(text(mine + (" FOR UPDATE" if postgres else "")), params).first()
            if held is not None:
                row = (
                    db.execute(
                        text("UPDATE review_items SET lease_until = :until WHERE id = :id RETURNING *"),
                        {**params, "id": held.id},
                    )
                    .mappings()
                    .first()
                )
                if row is not None:
                    return _item(row)
            # One item at a time: what the reviewer held elsewhere (another queue) goes back.
            db.execute(
                text(
                    """UPDATE review_items SET state = 'pending', lease_owner = NULL, lease_until = 0
                       WHERE state = 'leased' AND lease_owner = :owner"""
                ),
                params,
            )
            for _ in range(5):
                pick = db.execute(
                    text(
                        f"SELECT id, trace_id FROM review_items WHERE {where} ORDER BY created LIMIT 1{skip_locked}"
                    ),
                    params,
                ).first()
                if pick is None:
                    return None
                if postgres:
                    # Two reviewers taking two queues' items of one trace at once: the second
                    # waits here for the first to commit, then sees its lease and picks again.
                    db.execute(text("SELECT pg_advisory_xact_lock(hashtext(:t))"), {"t": pick.trace_id})
                    busy = db.execute(
                        text(
                            """SELECT 1 FROM review_items WHERE trace_id = :t AND state = 'leased'
                               AND lease_until > :now AND lease_owner <> :owner AND id <> :id LIMIT 1"""
                        ),
                        {**params, "t": pick.trace_id, "id": pick.id},
                    ).first()
                    if busy is not None:
                        continue
                row = (
                    db.execute(
                        text(
                            f"""UPDATE review_items SET state = 'leased', lease_owner = :owner, lease_until = :until
                            WHERE id = :id AND {_CLAIMABLE} RETURNING *"""
                        ),
                        {**params, "id": pick.id},
                    )
                    .mappings()
                    .first()
                )
                if row is not None:
                    return _item(row)
        return None

    def release(self, item: str, reviewer: str) -> bool:
        """Give a held item back untouched (the reviewer leaves it for someone else)."""
        with self.store.transaction() as db:
            return bool(
                db.execute(
                    text(
                        """UPDATE review_items SET state = 'pending', lease_owner = NULL, lease_until = 0
                           WHERE id = :id AND state = 'leased' AND lease_owner = :owner"""
                    ),
                    {"id": item, "owner": reviewer},
                ).rowcount
            )

    def skip(self, item: str, reviewer: str, *, now: float | None = None) -> bool:
        """The reviewer will not label this item (cannot judge it): it leaves the queue as skipped.
        Refused (False) while another reviewer holds it, and for an item already done."""
        now = time.time() if now is None else now
        with self.store.transaction() as db:
            return bool(
                db.execute(
                    text(
                        """UPDATE review_items SET state = 'skipped', finished = :now, finished_by = :owner,
                               lease_owner = NULL, lease_until = 0
                           WHERE id = :id AND state IN ('pending', 'leased')
                             AND (state = 'pending' OR lease_owner = :owner OR lease_until <= :now)"""
                    ),
                    {"id": item, "owner": reviewer, "now": now},
                ).rowcount
            )

    # ----- saving a review ----------------------------------------------------------------

    def save(
        self,
        item: str,
        reviewer: str,
        labels: Sequence[Label],
        *,
        corrected_answer: str | None = None,
        note: str | None = None,
        now: float | None = None,
    ) -> Saved:
        """Write the review of the item's trace: each label as an ANNOTATION score, the corrected
        answer and note, and every item of that trace done; all in one transaction."""
        if not reviewer:
            raise ReviewError("A review needs the reviewer's name.")
        checked = [label.checked() for label in labels]
        names = [label.name for label in checked]
        if len(set(names)) != len(names):
            raise ReviewError("Each score name is labelled once per review.")
        corrected = (corrected_answer or "").strip()[:MAX_ANSWER_CHARS] or None
        note_text = (note or "").strip()[:MAX_NOTE_CHARS] or None
        if not checked and corrected is None:
            raise ReviewError("Nothing to save: give at least one label or a corrected answer (or skip).")
        now = time.time() if now is None else now
        with self.store.transaction() as db:
            current = (
                db.execute(text("SELECT * FROM review_items WHERE id = :id"), {"id": item}).mappings().first()
            )
            if current is None:
                raise ReviewError("That review item is not in the queue any more.")
            got = _item(current)
            trace = db.execute(
                text("SELECT id, session_id, user_id FROM traces WHERE id = :id"), {"id": got.trace_id}
            ).first()
            if trace is None:
                raise ReviewError(f"The trace {got.trace_id} is not in the store any more.")
            taken_by = None
            if got.state == LEASED and got.lease_owner != reviewer and got.lease_until > now:
                taken_by = got.lease_owner
            rows = []
            for label in checked:
                metadata: dict[str, Any] = {"reviewer": reviewer, "queue": got.queue, "review_item": got.id}
                if label.categories:
                    metadata["categories"] = list(label.categories)
                rows.append(
                    self.store.upsert_score_in(
                        db,
                        score_id=label_score_id(got.trace_id, label.name),
                        trace_id=got.trace_id,
                        name=label.name,
                        value=None if label.data_type == "CATEGORICAL" else float(label.value or 0.0),
                        string_value=label.string_value if label.data_type == "CATEGORICAL" else None,
                        data_type=label.data_type,
                        source=ANNOTATION,
                        session_id=trace.session_id,
                        user_id=trace.user_id,
                        note=note_text,
                        keep_note=False,
                        metadata=metadata,
                        scored_by=BY_REVIEWER,
                    )
                )
            db.execute(
                text(
                    """INSERT INTO reviews (trace_id, reviewer, corrected_answer, note, labels, created, updated)
                       VALUES (:t, :r, :answer, :note, :n, :now, :now)
                       ON CONFLICT (trace_id) DO UPDATE SET reviewer = excluded.reviewer,
                           corrected_answer = COALESCE(excluded.corrected_answer, reviews.corrected_answer),
                           note = excluded.note, labels = excluded.labels, updated = excluded.updated"""
                ),
                {
                    "t": got.trace_id,
                    "r": reviewer,
                    "answer": corrected,
                    "note": note_text,
                    "n": len(rows),
                    "now": now,
                },
            )
            done = db.execute(
                text(
                    """UPDATE review_items SET state = 'done', finished = :now, finished_by = :r,
                           lease_owner = NULL, lease_until = 0
                       WHERE trace_id = :t AND state <> 'done'"""
                ),
                {"t": got.trace_id, "r": reviewer, "now": now},
            ).rowcount
        return Saved(got.trace_id, rows, corrected, note_text, done, taken_by)

    # ----- reading ------------------------------------------------------------------------

    def get(self, item: str) -> ReviewItem | None:
        row = self.store.row("SELECT * FROM review_items WHERE id = :id", {"id": item})
        return _item(row) if row else None

    def items_of(self, trace_id: str) -> list[ReviewItem]:
        rows = self.store.rows(
            "SELECT * FROM review_items WHERE trace_id = :t ORDER BY created", {"t": trace_id}
        )
        return [_item(r) for r in rows]

    def items(
        self, *, queue: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[ReviewItem]:
        where, params = ["1 = 1"], {"n": limit}
        if queue is not None:
            where.append("queue = :q")
            params["q"] = queue
        if state is not None:
            where.append("state = :s")
            params["s"] = state
        rows = self.store.rows(
            f"SELECT * FROM review_items WHERE {' AND '.join(where)} ORDER BY created LIMIT :n", params
        )
        return [_item(r) for r in rows]

    def review_of(self, trace_id: str) -> dict[str, Any] | None:
        """The trace's review (reviewer, corrected answer, note), if it has one."""
        return self.store.row("SELECT * FROM reviews WHERE trace_id = :t", {"t": trace_id})

    def labels_of(self, trace_id: str) -> list[ScoreRow]:
        """The reviewers' live labels on a trace."""
        return [
            s
            for s in (
                self.store.get_score(r["id"])
                for r in self.store.rows(
                    "SELECT id FROM scores WHERE trace_id = :t AND scored_by = :by AND deleted = 0 ORDER BY name",
                    {"t": trace_id, "by": BY_REVIEWER},
                )
            )
            if s is not None
        ]

    def progress(self, *, now: float | None = None) -> list[dict[str, Any]]:
        """Per queue: items in all, done, skipped, being reviewed now, still to do; the random
        calibration sample's items counted apart."""
        now = time.time() if now is None else now
        rows = self.store.rows(
            """SELECT queue, COUNT(*) AS total,
                   SUM(CASE WHEN state = 'done' THEN 1 ELSE 0 END) AS done,
                   SUM(CASE WHEN state = 'skipped' THEN 1 ELSE 0 END) AS skipped,
                   SUM(CASE WHEN state = 'leased' AND lease_until > :now THEN 1 ELSE 0 END) AS in_review,
                   SUM(calibration) AS calibration
               FROM review_items GROUP BY queue ORDER BY queue""",
            {"now": now},
        )
        out = []
        for r in rows:
            total, done, skipped, busy = (int(r[k] or 0) for k in ("total", "done", "skipped", "in_review"))
            out.append(
                {
                    "queue": r["queue"],
                    "total": total,
                    "done": done,
                    "skipped": skipped,
                    "in_review": busy,
                    "to_do": total - done - skipped,
                    "calibration": int(r["calibration"] or 0),
                }
            )
        return out

    def corrected(self, *, since: float | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Reviewed turns with a corrected answer, oldest review first, with the turn's question."""
        return self.store.rows(
            """SELECT r.trace_id, r.reviewer, r.corrected_answer, r.note, r.updated,
                   t.input, t.output, t.model, t.tags, t.start_time, t.session_id
               FROM reviews r JOIN traces t ON t.id = r.trace_id
               WHERE r.corrected_answer IS NOT NULL AND t.input IS NOT NULL AND t.start_time >= :since
               ORDER BY r.updated LIMIT :n""",
            {"since": since or 0.0, "n": limit},
        )

    def label_pairs(self, name: str | None = None, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Every reviewer label with the judges' live score of the same name on the same trace,
        oldest label first: what judge-vs-reviewer agreement is computed from."""
        # Literals, not parameters: the database then reads the partial index scores_labels.
        where = f"l.scored_by = '{BY_REVIEWER}' AND l.deleted = 0"
        params: dict[str, Any] = {}
        if name is not None:
            where += " AND l.name = :name"
            params["name"] = name
        # The judge's latest live score of that name (an evaluator edited since keeps its older
        # version's score too: one pair per label, never one per version).
        sql = f"""SELECT l.trace_id, l.name, l.data_type, l.value AS label, l.string_value AS label_category,
                      j.value AS judge, j.string_value AS judge_category, j.scored_by AS judge_by, l.updated
                  FROM scores l JOIN scores j ON j.id = (
                      SELECT j2.id FROM scores j2 WHERE j2.trace_id = l.trace_id AND j2.name = l.name
                          AND j2.source = 'EVAL' AND j2.deleted = 0 ORDER BY j2.updated DESC LIMIT 1)
                  WHERE {where} ORDER BY l.updated, l.trace_id"""
        if limit:
            sql += f" LIMIT {int(limit)}"
        return self.store.rows(sql, params)

    def calibration_pairs(self, name: str) -> list[dict[str, Any]]:
        """The random calibration sample's reviewed turns for one score name: the judge's value
        (None if it did not judge the turn), the reviewer's label and the rate the turn was drawn
        at. The corrected quality estimate uses only these (other items were chosen, not drawn)."""
        return self.store.rows(
            """SELECT i.trace_id, MIN(i.sample_rate) AS sample_rate, l.value AS label,
                   l.string_value AS label_category,
                   (SELECT j.value FROM scores j WHERE j.trace_id = i.trace_id AND j.name = :name
                      AND j.source = 'EVAL' AND j.deleted = 0 ORDER BY j.updated DESC LIMIT 1) AS judge
               FROM review_items i JOIN scores l ON l.trace_id = i.trace_id AND l.name = :name
                   AND l.scored_by = :by AND l.deleted = 0
               WHERE i.calibration = 1
               GROUP BY i.trace_id, l.value, l.string_value""",
            {"name": name, "by": BY_REVIEWER},
        )

    # ----- the rules' bookkeeping (evals.review_rules) ------------------------------------

    def unseen_traces(self, limit: int = 500) -> list[dict[str, Any]]:
        """Traces the review rules have not looked at yet."""
        return self.store.rows(
            "SELECT id, tags, start_time FROM traces WHERE review_seen = 0 LIMIT :n", {"n": limit}
        )

    def unseen_scores(self, limit: int = 500) -> list[dict[str, Any]]:
        """Scores created or changed since the review rules last looked (their traces are what
        the rules look at again)."""
        return self.store.rows(
            "SELECT id, trace_id, version FROM scores WHERE review_seen_version < version LIMIT :n",
            {"n": limit},
        )

    def seen(
        self,
        traces: Iterable[str] = (),
        scores: Iterable[tuple[str, int]] = (),
        *,
        add: Iterable[NewItem] = (),
        withdraw: Iterable[tuple[str, str]] = (),
        now: float | None = None,
    ) -> int:
        """In one transaction: add the items the rules found, take out those whose rule no longer
        holds (pending only), and mark the traces and score versions seen; return how many items
        were new."""
        trace_ids = list(dict.fromkeys(traces))
        versions = list(scores)
        now = time.time() if now is None else now
        rows = [
            {
                "id": item_id(i.trace_id, i.queue),
                "trace_id": i.trace_id,
                "queue": i.queue,
                "reason": (i.reason or "")[:500] or None,
                "created": now,
                "calibration": int(i.calibration),
                "sample_rate": i.sample_rate,
                "added_by": i.added_by,
            }
            for i in add
        ]
        gone = list(dict.fromkeys(withdraw))
        if not (trace_ids or versions or rows or gone):
            return 0
        with self.store.transaction() as db:
            added = self.add_in(db, rows)
            for trace_id, queue in gone:
                db.execute(
                    text("DELETE FROM review_items WHERE trace_id = :t AND queue = :q AND state = 'pending'"),
                    {"t": trace_id, "q": queue},
                )
            if trace_ids:
                db.execute(
                    text("UPDATE traces SET review_seen = 1 WHERE id = :id AND review_seen = 0"),
                    [{"id": t} for t in trace_ids],
                )
            if versions:
                db.execute(
                    text(
                        "UPDATE scores SET review_seen_version = :v WHERE id = :id AND review_seen_version < :v"
                    ),
                    [{"id": i, "v": v} for i, v in versions],
                )
        return added
