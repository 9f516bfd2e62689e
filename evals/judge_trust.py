"""Judge trust read from the store: each LLM judge against reviewers' labels and users' thumbs.

`evals.trust` computes; this module finds the pairs. A reviewer's label of a judge's score is a
score of the same name on the same target written by a reviewer (source ANNOTATION, scored_by
"reviewer"); a thumb is the `user-feedback` rating (1 like, 0 dislike). The two are kept apart:
only reviewer labels decide a verdict, because a reviewer labels the judge's own criterion on
turns drawn for the purpose, while a thumb says whether a user was pleased, and thumbs come
mostly from unhappy users (the thumbs figures are shown for information).

A pair is the judge's score *at the evaluator's current version* (its `evaluator_version`
metadata) against the label: an edited prompt or setting is a different judge, and must earn
trust again (a backfill of the labelled turns re-judges them; the verdict says how many labels
pair only with earlier versions). One pair per target: the latest judge score and the latest
label. Pairs are ordered by the label's time, so "the last window" is the latest labels.

Gates (`score_gates`, `python -m evals dataset run --fail-under-score`) call `judge_trust` and
ignore an unverified judge's score, saying why; code checks are code, not judges, and are never
held back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evals.config import Evaluator
from evals.scheduler import CONVERSATION
from evals.trust import (
    BOOLEAN,
    CATEGORICAL,
    DEFAULT,
    UNVERIFIED,
    Agreement,
    Thresholds,
    TrustVerdict,
    agreement,
    clean_pairs,
    verdict,
)
from feedback.store import BY_REVIEWER, RATING_NAME, Store

REVIEWERS = "reviewer labels"
THUMBS = "user thumbs"


@dataclass(frozen=True)
class Pairs:
    """(judge, human) pairs, oldest label first, and labels that pair only with earlier versions."""

    pairs: list[tuple[Any, Any]]
    other_versions: int = 0


def _pairs(
    store: Store, evaluator: Evaluator, human_sql: str, params: dict[str, Any], human_type: str
) -> Pairs:
    """Judge scores of `evaluator` joined to the human scores `human_sql` selects (alias h)."""
    if evaluator.target == CONVERSATION:
        join = (
            "j.session_id = h.session_id AND j.trace_id = '' AND h.trace_id = '' AND h.session_id IS NOT NULL"
        )
        target = "h.session_id"
    else:
        join = "j.trace_id = h.trace_id AND h.trace_id <> ''"
        target = "h.trace_id"
    # The version is read from the metadata text as the worker writes it (json.dumps: `"key":
    # "value"`), in SQL: parsing thousands of JSON texts in Python cost more than the query.
    rows = store.tuples(
        f"""SELECT {target} AS target, j.value AS jv, j.string_value AS js, j.updated AS ju,
                  h.value AS hv, h.string_value AS hs, h.updated AS hu,
                  CASE WHEN j.metadata IS NULL OR j.metadata NOT LIKE '%"evaluator_version"%'
                       OR j.metadata LIKE :version THEN 1 ELSE 0 END AS current_version
           FROM scores h JOIN scores j ON {join}
           WHERE {human_sql}
             AND j.name = :judge_name AND j.source = 'EVAL' AND j.deleted = 0""",
        {**params, "judge_name": evaluator.name, "version": f'%"evaluator_version": "{evaluator.version}"%'},
    )
    # Plain tuples (store.tuples): (target, jv, js, ju, hv, hs, hu, current_version).
    current: dict[str, tuple[Any, ...]] = {}
    older: set[str] = set()
    for r in rows:
        if not r[7]:
            older.add(r[0])
            continue
        best = current.get(r[0])
        if best is None or (r[3], r[6]) > (best[3], best[6]):
            current[r[0]] = r
    ordered = sorted(current.values(), key=lambda r: (r[6], r[0]))
    judge_at = 2 if evaluator.data_type == CATEGORICAL else 1  # js or jv
    human_at = 5 if human_type == CATEGORICAL else 4  # hs or hv
    pairs = [(r[judge_at], r[human_at]) for r in ordered]
    return Pairs(pairs, len(older - set(current)))


def reviewer_pairs(store: Store, evaluator: Evaluator) -> Pairs:
    """The judge's score against reviewers' labels of the same score name on the same target."""
    return _pairs(
        store,
        evaluator,
        # Literals, not parameters, so that the database sees the partial index scores_labels.
        f"h.name = :name AND h.scored_by = '{BY_REVIEWER}' AND h.deleted = 0",
        {"name": evaluator.name},
        evaluator.data_type,
    )


def thumbs_pairs(store: Store, evaluator: Evaluator) -> Pairs:
    """The judge's score against users' thumbs on the same turn (turn evaluators with a number)."""
    if evaluator.target == CONVERSATION or evaluator.data_type == CATEGORICAL:
        return Pairs([])
    # As the partial index scores_live_ratings reads a live vote.
    live_vote = f"h.name = '{RATING_NAME}' AND h.source = 'user' AND h.deleted = 0"
    return _pairs(store, evaluator, live_vote, {}, BOOLEAN)


def _verdict(found: Agreement, other_versions: int, thresholds: Thresholds, version: str) -> TrustVerdict:
    v = verdict(found, thresholds, basis=REVIEWERS)
    if other_versions and not v.verified:
        more = (
            f"{other_versions} more reviewer label{'s' if other_versions != 1 else ''} pair only with "
            f"earlier versions of this evaluator (the current one is {version}): a backfill of the "
            "labelled turns (`python -m evals backfill`) would count them."
        )
        v = TrustVerdict(v.status, (*v.reasons, more), v.agreement, v.basis)
    return v


@dataclass
class Trust:
    """One evaluator's agreement with reviewers (decides the verdict) and with thumbs (shown)."""

    evaluator: Evaluator
    reviewers: Agreement
    thumbs: Agreement | None
    verdict: TrustVerdict | None  # None for a code check: code is not a judge
    other_versions: int = 0
    thumbs_pairs: list[tuple[Any, Any]] = field(default_factory=list)


def _reviewer_agreement(store: Store, evaluator: Evaluator, thresholds: Thresholds) -> tuple[Agreement, int]:
    found = reviewer_pairs(store, evaluator)
    categories = evaluator.categories or None
    found_agreement = agreement(
        found.pairs, evaluator.data_type, categories=categories, thresholds=thresholds
    )
    return found_agreement, found.other_versions


def assess_evaluator(store: Store, evaluator: Evaluator, thresholds: Thresholds = DEFAULT) -> Trust:
    """Everything `python -m evals agreement` shows for one evaluator."""
    reviewers, other_versions = _reviewer_agreement(store, evaluator, thresholds)
    thumbs_found = thumbs_pairs(store, evaluator)
    thumbs = None
    if evaluator.target != CONVERSATION and evaluator.data_type != CATEGORICAL:
        thumbs = agreement(thumbs_found.pairs, BOOLEAN, thresholds=thresholds)
    v = None
    if evaluator.kind == "llm":
        v = _verdict(reviewers, other_versions, thresholds, evaluator.version)
    return Trust(evaluator, reviewers, thumbs, v, other_versions, thumbs_found.pairs)


def judge_trust(
    store: Store, evaluators: Iterable[Evaluator], *, thresholds: Thresholds = DEFAULT
) -> dict[str, TrustVerdict]:
    """The verdict of each LLM judge among `evaluators`, by score name (code checks are left
    out: they are code, not judges). What the dashboard greys and the gates ignore."""
    out = {}
    for e in evaluators:
        if e.kind != "llm":
            continue
        found, other_versions = _reviewer_agreement(store, e, thresholds)
        out[e.name] = _verdict(found, other_versions, thresholds, e.version)
    return out


# ----- what the CLI prints -------------------------------------------------------------------


def legacy_thumbs(pairs: Sequence[tuple[Any, Any]], thumbs: Agreement | None) -> dict[str, Any]:
    """The fields `agreement --json` has always had: the judge (>= 0.5 a like) against thumbs."""
    clean = clean_pairs(pairs, BOOLEAN)
    table = [[0, 0], [0, 0]]
    for judge, user in clean:
        table[user][judge] += 1
    out: dict[str, Any] = {"pairs": len(clean), "table": table}
    if clean:
        out["agreement"] = (table[0][0] + table[1][1]) / len(clean)
        out["kappa"] = None if thumbs is None else thumbs.overall.value
    return out


def report(trust: Trust) -> dict[str, Any]:
    e = trust.evaluator
    return {
        "evaluator": e.name,
        "kind": e.kind,
        "data_type": e.data_type,
        "version": e.version,
        # Today's fields: the judge against users' thumbs (turns with both).
        **legacy_thumbs(trust.thumbs_pairs, trust.thumbs),
        "reviewers": trust.reviewers.as_dict(),
        "reviewer_labels_of_earlier_versions": trust.other_versions,
        "thumbs": None if trust.thumbs is None else trust.thumbs.as_dict(),
        "verdict": None if trust.verdict is None else trust.verdict.as_dict(),
    }


# ----- gates ---------------------------------------------------------------------------------


@dataclass
class GateOutcome:
    """Which `NAME >= MIN` gates failed, which were ignored (unverified judge) and why."""

    failed: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def score_gates(
    means: Mapping[str, float | None], gates: Mapping[str, float], verdicts: Mapping[str, TrustVerdict]
) -> GateOutcome:
    """Hold each score's mean to its minimum, unless the score is an unverified judge's: a gate
    must not pass or fail on a judge nobody has shown to agree with people."""
    out = GateOutcome()
    for name, minimum in gates.items():
        v = verdicts.get(name)
        if v is not None and v.status == UNVERIFIED:
            out.ignored.append(
                f"Not holding {name} to its minimum {minimum:g}: its judge is unverified. {v.reason}"
            )
            continue
        mean = means.get(name)
        if mean is None:
            out.failed.append(f"No item has a {name} score, so there is nothing to hold to {minimum:g}.")
        elif mean < minimum:
            out.failed.append(f"{name} mean {mean:.3f} is under its minimum {minimum:g}.")
        else:
            out.passed.append(f"{name} mean {mean:.3f} is at least {minimum:g}.")
    return out
