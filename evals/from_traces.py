"""Datasets grown from real conversations: the turns users disliked, or that a judge scored low.

`python -m evals dataset from-traces --name NAME --feedback 0` keeps those turns' questions as
dataset items in the store, so a regression set grows from the ratings the app collects; the
next model or prompt is run over them (`dataset run NAME --evaluator ...`). Real turns have no
known right answer: their items are run and judged but not graded, unless an expected output is
filled in (`--output FILE.jsonl` writes them out for that; run the file afterwards).

`--reviewed` takes the turns a reviewer corrected in the review queue (feedback.review_queue):
the corrected answer is the item's expected output, so a fix is checked offline against what
people said was right. Selecting them again updates the expected output to the latest correction.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, text

from evals.datasets import GSM8K, Item
from evals.scheduler import is_dataset_trace, is_evaluation_trace
from feedback.store import BY_REVIEWER, Store
from feedback.votes import SCORE_NAME

# Questions and answers kept per item (a pasted document must not become a 1 MB dataset item).
MAX_CHARS = 20_000


@dataclass(frozen=True)
class Selection:
    """Which turns become items; every condition given must hold."""

    feedback: int | None = None  # 0: disliked, 1: liked
    evaluator: str | None = None
    below: float | None = None  # with evaluator: its score below this
    since: float | None = None  # epoch seconds
    limit: int = 1000
    reviewed: bool = False  # turns a reviewer corrected: their corrected answer is the expected output


def item_id(trace_id: str) -> str:
    """Stable per source turn: selecting it again updates the same item."""
    return f"trace-{trace_id}"


def select_turns(store: Store, selection: Selection) -> list[dict[str, Any]]:
    """The chat turns that match, oldest first, with their rating and the evaluator's score."""
    where = ["t.input IS NOT NULL", "t.start_time >= :since"]
    params: dict[str, Any] = {"since": selection.since or 0.0, "fb_name": SCORE_NAME, "n": selection.limit}
    if selection.feedback is not None:
        where.append("r.value = :fb")
        params["fb"] = float(selection.feedback)
    if selection.evaluator is not None:
        where.append(
            """EXISTS (SELECT 1 FROM scores e WHERE e.trace_id = t.id AND e.name = :ev AND e.deleted = 0
                       AND e.source = 'EVAL' AND e.value IS NOT NULL AND e.value < :below)"""
        )
        params["ev"] = selection.evaluator
        params["below"] = 0.5 if selection.below is None else selection.below
    review = ""
    if selection.reviewed:
        # A review is one per trace (feedback.review_queue); only those with a corrected answer.
        review = "JOIN reviews v ON v.trace_id = t.id AND v.corrected_answer IS NOT NULL"
    rows = store.rows(
        # A turn has one rating at most (its score id is made from the trace id).
        f"""SELECT t.id, t.input, t.output, t.model, t.tags, t.start_time, t.session_id,
                  r.value AS feedback, r.reason, r.comment
                  {", v.corrected_answer, v.reviewer, v.note AS review_note" if review else ""}
           FROM traces t {review}
           LEFT JOIN scores r ON r.trace_id = t.id AND r.name = :fb_name AND r.deleted = 0
           WHERE {" AND ".join(where)} ORDER BY t.start_time LIMIT :n""",
        params,
    )
    return [r for r in rows if not is_evaluation_trace(r["tags"]) and not is_dataset_trace(r["tags"])]


def _judged(
    store: Store, trace_ids: Sequence[str], who: str = "source = 'EVAL'"
) -> dict[str, dict[str, Any]]:
    """The judges' current scores on these traces (`who`: which scores), by trace and score name."""
    query = text(
        "SELECT trace_id, name, value, string_value FROM scores"
        f" WHERE {who} AND deleted = 0 AND trace_id IN :ids ORDER BY updated"
    ).bindparams(bindparam("ids", expanding=True))
    scores: dict[str, dict[str, Any]] = {}
    ids = list(trace_ids)
    with store.read() as db:
        for start in range(0, len(ids), 500):
            for r in db.execute(query, {"ids": ids[start : start + 500]}).mappings():
                value = r["string_value"] if r["string_value"] is not None else r["value"]
                scores.setdefault(r["trace_id"], {})[r["name"]] = value
    return scores


def items_from(store: Store, turns: Sequence[dict[str, Any]]) -> list[Item]:
    """Each turn as an item: its question; what happened to it in the metadata."""
    wanted = {t["id"] for t in turns}
    judged = _judged(store, list(wanted))
    labelled = _judged(store, list(wanted), f"scored_by = '{BY_REVIEWER}'")
    items = []
    for t in turns:
        metadata = {
            "source_trace": t["id"],
            "answer": (t["output"] or "")[:MAX_CHARS],
            "feedback": t["feedback"],
            "reason": t["reason"],
            "comment": t["comment"],
            "model": t["model"],
            "scores": judged.get(t["id"], {}),
        }
        expected = ""
        if t.get("corrected_answer"):
            expected = str(t["corrected_answer"])[:MAX_CHARS]
            metadata.update(
                reviewed_by=t.get("reviewer"),
                review_note=t.get("review_note"),
                labels=labelled.get(t["id"], {}),
            )
        items.append(Item(item_id(t["id"]), str(t["input"])[:MAX_CHARS], expected, metadata))
    return items


def save_items(store: Store, dataset: str, items: Sequence[Item]) -> int:
    """Add the items to the stored dataset (an item already there is updated); return how many were new."""
    if dataset == GSM8K:
        raise ValueError("gsm8k is the shipped GSM8K dataset: choose another --name.")
    with store.transaction() as db:
        before = db.execute(
            text("SELECT COUNT(*) FROM dataset_items WHERE dataset = :d"), {"d": dataset}
        ).scalar_one()
        for item in items:
            db.execute(
                text(
                    """INSERT INTO dataset_items (dataset, item_id, input, expected, metadata, source_trace, created)
                       VALUES (:d, :id, :input, :expected, :metadata, :source, :now)
                       ON CONFLICT (dataset, item_id) DO UPDATE SET metadata = excluded.metadata,
                           expected = COALESCE(excluded.expected, dataset_items.expected)"""
                ),
                {
                    "d": dataset,
                    "id": item.id,
                    "input": item.input,
                    "expected": item.expected or None,
                    "metadata": json.dumps(item.metadata, default=str),
                    "source": item.metadata.get("source_trace"),
                    "now": time.time(),
                },
            )
        after = db.execute(
            text("SELECT COUNT(*) FROM dataset_items WHERE dataset = :d"), {"d": dataset}
        ).scalar_one()
    return int(after) - int(before)
