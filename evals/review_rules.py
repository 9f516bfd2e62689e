"""The review queue's rules ([review] in evaluators.toml), applied as ratings and judge scores
arrive; the label controls a reviewer gets; and adding a trace to the queue by hand.

The rules run in the evaluation scheduler's thread (evals.worker), after its own pass: woken by
every turn and vote, and every couple of seconds for the judges' scores. A sweep reads what the
store says changed since the last one (traces and score versions not seen yet, marked in the
same transaction as the items it adds), so nothing is missed across restarts or when another
process wrote the vote, and a vote or a turn never waits for it. A sweep that fails is logged
and tried again at the next pass; it never reaches the chat.

- A new chat turn is looked at once, for the random calibration sample (`sample` rule): drawn
  by a hash of (rule, trace id) when the turn arrives, before anyone has rated it, so the sample
  is a uniform draw of turns whatever their rating. (A sample drawn only from liked and unrated
  turns would leave dislikes out and make the corrected quality look better than it is; disliked
  turns in the sample are reviewed like the others, and every dislike is in the `dislike` queue
  anyway.) Each such item records the rate it was drawn at.
- A changed score (a vote, its undo, a judge's score) makes the rules of its turn be looked at
  again: `dislike`, `disagreement`, `low-score`. A rule that no longer holds (the dislike was
  undone) takes its item out while nobody has started on it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, text

from evals.config import Evaluator, EvaluatorsFile, ReviewConfig, ReviewRule
from feedback.review_queue import MANUAL, Label, NewItem, ReviewError, ReviewQueue
from feedback.store import RATING_NAME, Store, is_chat_turn

log = logging.getLogger(__name__)

__all__ = ["NUMERIC_STEPS", "LabelSpec", "ReviewRules", "add_by_hand", "label_specs"]

# The values a reviewer picks for a NUMERIC score (the judges' scale is 0..1).
NUMERIC_STEPS = tuple(round(n / 10, 1) for n in range(11))
# The judges whose scores the rules read (a dataset grade is on dataset items, never on turns).
_JUDGE_SOURCE = "EVAL"


def _number(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class LabelSpec:
    """One score name a reviewer labels, with the type the judge of that name writes."""

    name: str
    data_type: str
    categories: tuple[str, ...] = ()

    @classmethod
    def of(cls, evaluator: Evaluator) -> LabelSpec:
        return cls(evaluator.name, evaluator.data_type, tuple(evaluator.categories))

    def choices(self) -> list[tuple[str, str]]:
        """(what the page shows, the value sent back) for each value a reviewer can pick; the
        keyboard key of each is shown in front of it."""
        if self.data_type == "BOOLEAN":
            return [("1 · true", "1"), ("0 · false", "0")]
        if self.data_type == "NUMERIC":
            return [
                (f"{key} · {_number(step)}" if (key := self.key_of(step)) else _number(step), _number(step))
                for step in NUMERIC_STEPS
            ]
        return [(f"{n} · {c}", c) for n, c in enumerate(self.categories, start=1)]

    @staticmethod
    def key_of(step: float) -> str:
        """The key of a NUMERIC value: 0 is 0, 1 is 1, 2..9 are 0.2..0.9 ("": 0.1 has no key)."""
        if step == 1.0:
            return "1"
        if step == 0.0:
            return "0"
        tenth = round(step * 10)
        return str(tenth) if tenth >= 2 else ""

    def parse(self, raw: Any) -> Label | None:
        """The label for a value from the page; None when left empty; ReviewError when it is not
        a value of this score (a sentence saying which values are)."""
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        text_value = str(raw).strip()
        if self.data_type == "CATEGORICAL":
            if text_value not in self.categories:
                raise ReviewError(
                    f"{text_value[:100]!r} is not a category of {self.name}: pick one of {', '.join(self.categories)}."
                )
            return Label(self.name, self.data_type, string_value=text_value, categories=self.categories)
        try:
            value = float(text_value)
        except ValueError:
            value = math.nan
        if self.data_type == "BOOLEAN":
            if value not in (0.0, 1.0):
                raise ReviewError(f"{self.name} is true (1) or false (0), not {text_value[:100]!r}.")
        elif not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ReviewError(f"{self.name} is a number from 0 to 1, not {text_value[:100]!r}.")
        return Label(self.name, self.data_type, value=value)


def label_specs(file: EvaluatorsFile) -> list[LabelSpec]:
    """The score names a reviewer labels ([review] labels, or every enabled LLM judge of turns)."""
    return [LabelSpec.of(e) for e in file.labelled()]


def add_by_hand(queue: ReviewQueue, trace_id: str, who: str, reason: str | None = None) -> tuple[bool, str]:
    """Put a trace in the "manual" queue (the trace viewer's button): (added, a sentence)."""
    trace = queue.store.row("SELECT id, tags FROM traces WHERE id = :id", {"id": trace_id})
    if trace is None:
        return False, f"No trace with the id {trace_id} is in the store."
    if not is_chat_turn(trace["tags"]):
        return (
            False,
            "This trace is a judge's or a dataset run's own, not a chat turn: only turns are reviewed.",
        )
    added = queue.add([NewItem(trace_id, MANUAL, reason or f"added by hand by {who}", added_by=who)])
    if not added:
        return False, "This trace is in the review queue already (manual)."
    return True, "Added to the review queue (manual)."


class ReviewRules:
    """The [review] rules of one evaluators file, over one store; `sweep` applies them."""

    def __init__(self, store: Store, config: ReviewConfig, *, batch: int = 500, rounds: int = 10) -> None:
        self.queue = ReviewQueue(store)
        self.store = store
        self.config = config
        self.rules = config.enabled_rules
        self.samples = [r for r in self.rules if r.kind == "sample"]
        self.conditions = [r for r in self.rules if r.kind != "sample"]
        self.batch = batch
        self.rounds = rounds

    def sweep(self) -> int:
        """Apply the rules to what changed since the last sweep; return how many items were new.
        At most `rounds` batches per call: a long backlog is worked through over several passes."""
        added = 0
        for _ in range(self.rounds):
            traces = self.queue.unseen_traces(self.batch)
            scores = self.queue.unseen_scores(self.batch)
            if not traces and not scores:
                break
            new: list[NewItem] = []
            for trace in traces:
                if is_chat_turn(trace["tags"]):
                    new.extend(self._drawn(trace["id"]))
            withdraw: list[tuple[str, str]] = []
            touched = list(dict.fromkeys(s["trace_id"] for s in scores if s["trace_id"]))
            if self.conditions and touched:
                more, gone = self._conditions_of(touched)
                new.extend(more)
                withdraw.extend(gone)
            added += self.queue.seen(
                [t["id"] for t in traces],
                [(s["id"], int(s["version"])) for s in scores],
                add=new,
                withdraw=withdraw,
            )
            if len(traces) < self.batch and len(scores) < self.batch:
                break
        return added

    def _drawn(self, trace_id: str) -> list[NewItem]:
        return [
            NewItem(
                trace_id,
                rule.name,
                f"random calibration sample ({rule.rate:.0%} of turns)",
                calibration=True,
                sample_rate=rule.rate,
                added_by=f"rule {rule.name}",
            )
            for rule in self.samples
            if rule.sampled(trace_id)
        ]

    def _conditions_of(self, trace_ids: Sequence[str]) -> tuple[list[NewItem], list[tuple[str, str]]]:
        """The items the condition rules add for these turns, and those they take out."""
        turns = self._turns(trace_ids)
        scores = self._scores(list(turns))
        add: list[NewItem] = []
        withdraw: list[tuple[str, str]] = []
        for trace_id in turns:
            own = scores.get(trace_id, [])
            for rule in self.conditions:
                reason = holds(rule, own)
                if reason is None:
                    withdraw.append((trace_id, rule.name))
                else:
                    add.append(NewItem(trace_id, rule.name, reason, added_by=f"rule {rule.name}"))
        return add, withdraw

    def _turns(self, trace_ids: Sequence[str]) -> list[str]:
        query = text("SELECT id, tags FROM traces WHERE id IN :ids").bindparams(
            bindparam("ids", expanding=True)
        )
        out = []
        with self.store.read() as db:
            for start in range(0, len(trace_ids), 500):
                for r in db.execute(query, {"ids": list(trace_ids[start : start + 500])}):
                    if is_chat_turn(r.tags):
                        out.append(r.id)
        return out

    def _scores(self, trace_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        query = text(
            """SELECT trace_id, name, value, string_value, source, reason, updated FROM scores
               WHERE trace_id IN :ids AND deleted = 0 ORDER BY updated"""
        ).bindparams(bindparam("ids", expanding=True))
        out: dict[str, list[dict[str, Any]]] = {}
        with self.store.read() as db:
            for start in range(0, len(trace_ids), 500):
                for r in db.execute(query, {"ids": list(trace_ids[start : start + 500])}).mappings():
                    out.setdefault(r["trace_id"], []).append(dict(r))
        return out


def _latest_judges(scores: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Each judge's latest live value by score name (scores come oldest first)."""
    out: dict[str, float] = {}
    for s in scores:
        if s["source"] == _JUDGE_SOURCE and s["value"] is not None:
            out[s["name"]] = float(s["value"])
    return out


def _rating(scores: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    for s in scores:
        if s["name"] == RATING_NAME and s["source"] == "user" and s["value"] is not None:
            return s
    return None


def holds(rule: ReviewRule, scores: Sequence[Mapping[str, Any]]) -> str | None:
    """Why the rule puts this turn in its queue (from the turn's live scores), or None."""
    rating = _rating(scores)
    liked = None if rating is None else float(rating["value"]) >= 0.5
    if rule.kind == "dislike":
        if liked is not False:
            return None
        reason = (rating or {}).get("reason")
        if rule.reasons and (
            not reason or reason.strip().casefold() not in {r.casefold() for r in rule.reasons}
        ):
            return None
        return f"disliked ({reason})" if reason else "disliked"
    judged = _latest_judges(scores)
    if rule.kind == "disagreement":
        if liked is None:
            return None
        found = []
        for name in rule.evaluators:
            value = judged.get(name)
            if value is None:
                continue
            if (value >= rule.threshold) != liked:
                found.append(f"{name} {_number(value)} from the judge")
        if not found:
            return None
        return f"{', '.join(found)} vs the user's {'like' if liked else 'dislike'}"
    if rule.kind == "low-score":
        (name,) = rule.evaluators
        value = judged.get(name)
        if value is None or value >= rule.below:
            return None
        return f"{name} {_number(value)} from the judge, below {_number(rule.below)}"
    return None
