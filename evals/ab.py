"""An experiment's results per variant, read from the store: is a variant better than the control?

The experiment (VARIANTS_FILE) serves each user one variant of the agent; every turn's trace
records it (`traces.variant`, the root's metadata `variant` and `experiment`, and `assigned` when
the user's own variant is paused and they were served the control). This module reads those
traces and their scores and gives, per variant:

- turns, users (distinct user ids with a turn), errors;
- the like rate among rated turns (people's votes only) with its 95% interval, the share of turns
  rated, and the dislike reasons;
- each judge's mean (its current version's scores), and the corrected estimate (PPI++,
  `evals.estimate.ppi_mean`) from the reviewed turns of the random calibration sample that fell
  in the variant, where there are enough of them;
- cost per turn (known prices only; unknown ones counted), latency p50 / p95;

and, per variant against the control (`evals.experiment_stats`, which does all the statistics):
the difference with its fixed-horizon 95% interval (for display), the always-valid sequential
test (for decisions: the like rate is the primary metric, two-sided; judges, cost, latency and
errors are guardrails, one-sided: "did it get worse?"), the sample-ratio check of users per
variant against the weights, and the verdict (better / worse / no difference yet / stop:
assignment is broken).

WHICH TURNS. Chat turns (not a judge's or a dataset item's trace) whose variant is one of the
experiment's, from `Experiment.since` (when the weights were last set) on. A turn served to the
control only because its user's variant is paused (metadata `assigned`) is in no arm: counting
it in the control would put users of another arm into it; it is counted apart and, for the
sample-ratio check, its user counts for the variant they were assigned (pausing changes what a
user is served, not their assignment, so the split still follows the weights).

THE UNIT OF THE PRIMARY METRIC, and why. Users are randomised, not votes: one user's votes are
correlated (a user who likes one answer likes the next), so treating votes as independent makes
the like rate's interval too narrow, and the test too quick to decide, whenever users differ.
Two remedies: (a) one value per user, their own like rate, averaged over users; (b) the
pooled like rate (likes / rated turns: the figure the page shows) with its variance computed
over users, by the delta method for a ratio of per-user sums (Deng, Knoblich, Lu, "Applying the
Delta Method in Metric Analytics", KDD 2018; the standard in online experiments). We take (b):
(a) tests another quantity than the one shown (a user with one vote weighs as much as one with
a hundred), so the page could say "likes rose" while the test says "worse"; (b) tests exactly
the figure shown, and for users who vote once it IS the per-vote test whose error rates
evals.experiment_stats measured. It reaches that test as an effective number of votes: the
design effect d = (delta-method variance) / (the per-vote variance p(1-p)/(votes - 1)), taken as
at least 1 (never narrower than if votes were independent; exactly 1 when every user voted
once), and the arm becomes `votes / d` votes at the same like rate. Newcombe's interval with that effective n is the survey statistician's
design-effect interval (Korn & Graubard, "Confidence intervals for proportions with small
expected number of positive counts estimated from survey data", Survey Methodology 1998), and the
mSPRT sees exactly the delta-method standard error. The guardrails are ratios of per-user sums
too (errors per turn, dollars per known-cost turn, milliseconds per turn, a judge's score per
judged turn) and go the same way: their effective n is their count over their design effect.
This matters: on bench.ab_page's store (a few users with thousands of turns), per-turn variances
raised alarms on cost, latency and a judge in an arm with no true difference; over users, only
the judge's remained (decided on the 8th day's look: one chance alarm among the ten guardrail
tests of two variants is about what a 2 to 5% rate per test gives).

LOOKS. The sequential test is given one look at the end of each UTC day of the experiment
(every figure cumulative from the start) and one now, all recomputed from the rows: the
always-valid p-value is the running minimum over them and the interval their intersection, so
a decision once reached stays reached, however often the page is opened.

SPEED. Everything is SQL aggregates per variant, user and UTC day (COUNT, SUM, SUM of squares;
judge values counted per level), never a row per turn in Python except the latencies for the
exact percentiles (one text per variant and day). A day that has ended is kept in memory while
its change counter (dashboard_changes, bumped by the database in the same transaction as any
change to a trace or score of that day) stays the same; today is read each time.
bench.ab_page: 100,000 turns over 90 days, 50 ms (the first call of a process, every day read:
3 s).
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, text

from evals.config import Evaluator
from evals.estimate import MIN_REVIEWED, QualityEstimate, ppi_mean
from evals.experiment_stats import (
    ALPHA,
    COST,
    ERRORS,
    GUARDRAIL,
    JUDGE,
    LATENCY,
    LIKE_RATE,
    PRIMARY,
    Looks,
    MetricComparison,
    SampleRatio,
    Verdict,
    compare_metric,
    proportion_difference,
    sample_ratio_mismatch,
    verdict,
    wilson,
)
from evals.scheduler import CONVERSATION
from feedback.review_queue import ReviewQueue
from feedback.store import BY_DEMO_JUDGE, BY_REVIEWER, RATING_NAME, Store, chat_turn_sql

__all__ = [
    "ASSIGNED_KEY",
    "Experiment",
    "JudgeFigures",
    "Results",
    "VariantComparison",
    "VariantFigures",
    "VariantSpec",
    "describe",
    "results",
]

DAY_S = 86400
DATASET_SCORE = "dataset-correct"  # evals.dataset_run.SCORE_NAME (no agent import here)
NAME_CHARS = 200  # longest dislike reason kept
REASONS_SHOWN = 20  # dislike reasons kept per variant (the most frequent)
NO_REASON = "no reason given"
# The root's metadata key set when a paused variant's user was served the control; written with
# json.dumps (feedback.store), so as `"assigned": "name"`.
ASSIGNED_KEY = "assigned"
_REDIRECTED_SQL = f"""COALESCE(t.metadata, '') LIKE '%"{ASSIGNED_KEY}": %'"""


# ----- the experiment's definition ---------------------------------------------------------


@dataclass(frozen=True)
class VariantSpec:
    """One variant as the results need it: its name, traffic weight and whether it is paused."""

    name: str
    weight: float
    paused: bool = False


@dataclass(frozen=True)
class Experiment:
    """What the results need to know of the experiment: its name, control and variants, and when
    its weights were last set (`since`, epoch seconds; None: every turn of its variants)."""

    name: str
    control: str
    variants: tuple[VariantSpec, ...]
    since: float | None = None

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        if self.control not in names:
            raise ValueError(f"the control {self.control!r} is not one of the variants")

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.variants]

    @property
    def weights(self) -> dict[str, float]:
        return {v.name: float(v.weight) for v in self.variants}

    @classmethod
    def of(cls, definition: Any, *, since: float | None = None) -> Experiment:
        """From the app's parsed VARIANTS_FILE (any object with name, control and variants whose
        items have name, weight and paused), or an Experiment as it is."""
        if isinstance(definition, Experiment):
            return definition if since is None else cls(**{**definition.__dict__, "since": since})
        variants = tuple(
            VariantSpec(str(v.name), float(v.weight), bool(getattr(v, "paused", False)))
            for v in definition.variants
        )
        control = getattr(definition, "control", None)
        if control is not None and not isinstance(control, str):
            control = control.name
        started = since if since is not None else getattr(definition, "since", None)
        return cls(str(definition.name), str(control), variants, started)


# ----- results -----------------------------------------------------------------------------


@dataclass(frozen=True)
class JudgeFigures:
    """One judge's (or code check's) figures in one variant.

    `counted`: whether its guardrail counts in the verdict (a code check, or an LLM judge that is
    verified against reviewers); `note` says why not. `estimate` is the corrected estimate
    (None: `estimate_note` says why)."""

    name: str
    n: int
    mean: float | None
    counted: bool
    note: str | None
    estimate: QualityEstimate | None
    estimate_note: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": self.n,
            "mean": self.mean,
            "counted": self.counted,
            "note": self.note,
            "corrected": None if self.estimate is None else self.estimate.as_dict(),
            "corrected_note": self.estimate_note,
        }


@dataclass(frozen=True)
class VariantFigures:
    """One variant's own figures over the experiment so far."""

    name: str
    weight: float  # its share of the traffic (the weights normalised)
    paused: bool
    control: bool
    turns: int
    users: int
    errors: int
    rated: int
    likes: int
    voters: int
    design_effect: float
    effective_votes: float
    reasons: tuple[tuple[str, int], ...]
    cost_known: int
    cost_sum: float
    cost_unknown: int
    latency_p50: float | None
    latency_p95: float | None
    judges: tuple[JudgeFigures, ...]
    # Turns served to this variant (the control) for users whose own variant is paused: in no arm.
    redirected_turns: int = 0
    # Users assigned to this variant (the sample-ratio check's count).
    assigned_users: int = 0

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.turns if self.turns else None

    @property
    def like_rate(self) -> float | None:
        return self.likes / self.rated if self.rated else None

    @property
    def like_interval(self) -> tuple[float | None, float | None]:
        """The like rate's 95% interval: Wilson's with the effective number of votes."""
        if not self.rated or self.effective_votes <= 0:
            return None, None
        n = self.effective_votes
        p = self.likes / self.rated
        low, high = wilson(p * n, n) if n >= 1 else (0.0, 1.0)
        return low, high

    @property
    def rated_share(self) -> float | None:
        return self.rated / self.turns if self.turns else None

    @property
    def cost_per_turn(self) -> float | None:
        return self.cost_sum / self.cost_known if self.cost_known else None

    def as_dict(self) -> dict[str, Any]:
        low, high = self.like_interval
        return {
            "name": self.name,
            "weight": self.weight,
            "paused": self.paused,
            "control": self.control,
            "turns": self.turns,
            "users": self.users,
            "assigned_users": self.assigned_users,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "rated": self.rated,
            "rated_share": self.rated_share,
            "likes": self.likes,
            "dislikes": self.rated - self.likes,
            "like_rate": self.like_rate,
            "like_rate_95": [low, high] if low is not None else None,
            "voters": self.voters,
            "design_effect": self.design_effect,
            "effective_votes": self.effective_votes,
            "dislike_reasons": dict(self.reasons),
            "cost_per_turn": self.cost_per_turn,
            "cost_known_turns": self.cost_known,
            "cost_unknown_turns": self.cost_unknown,
            "latency_ms_p50": self.latency_p50,
            "latency_ms_p95": self.latency_p95,
            "judges": [j.as_dict() for j in self.judges],
            "redirected_turns": self.redirected_turns,
        }


@dataclass(frozen=True)
class VariantComparison:
    """A variant against the control: the verdict (with the primary metric and the guardrails
    that count), and the judges' comparisons shown but not counted (unverified judges, the demo
    judge)."""

    variant: str
    verdict: Verdict
    shown_only: tuple[MetricComparison, ...] = ()
    decided_on: str | None = None  # the UTC day of the look where the primary was decided

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.verdict.as_dict(),
            "decided_on": self.decided_on,
            "not_counted": [m.as_dict() for m in self.shown_only],
        }


@dataclass(frozen=True)
class Results:
    experiment: Experiment
    variants: tuple[VariantFigures, ...]
    comparisons: tuple[VariantComparison, ...]
    srm: SampleRatio
    looks: int
    first_turn: float | None
    last_turn: float | None
    seconds: float = field(default=0.0, compare=False)
    # Each look's UTC day (ISO date), oldest first: a Sequential's decided_at indexes it.
    look_days: tuple[str, ...] = ()

    def decided_on(self, m: MetricComparison) -> str | None:
        """The UTC day of the look at which a metric's test first decided (None: undecided)."""
        at = m.sequential.decided_at
        return self.look_days[at] if at is not None and 0 <= at < len(self.look_days) else None

    @property
    def control(self) -> VariantFigures:
        return next(v for v in self.variants if v.control)

    def figures(self, name: str) -> VariantFigures:
        return next(v for v in self.variants if v.name == name)

    def as_dict(self) -> dict[str, Any]:
        e = self.experiment
        return {
            "experiment": e.name,
            "control": e.control,
            "since": e.since,
            "weights": e.weights,
            "paused": [v.name for v in e.variants if v.paused],
            "first_turn": self.first_turn,
            "last_turn": self.last_turn,
            "looks": self.looks,
            "look_days": list(self.look_days),
            "alpha": ALPHA,
            "variants": [v.as_dict() for v in self.variants],
            "comparisons": [c.as_dict() for c in self.comparisons],
            "srm": self.srm.as_dict(),
        }


# ----- reading the store: per UTC day, ended days kept in memory -----------------------------

# The values of a unit-day row (one per arm, user and UTC day): turns, errors, known costs (count,
# sum, sum of squares), latencies (count, sum, sum of squares), rated turns, likes.
TURNS, ERRS, COST_N, COST_S, COST_Q, LAT_N, LAT_S, LAT_Q, RATED, LIKES = range(10)
_COLUMNS = 10
_CACHED_DAYS = 2000  # (store, experiment, day) parts kept: a day of 1,100 turns is about 20 KB
_LOCK = threading.Lock()
_UNITS: dict[str, int] = {}  # a user id (or a trace id for a turn with none): its code


def _unit(value: Any) -> int:
    key = str(value)
    code = _UNITS.get(key)
    if code is None:
        with _LOCK:
            code = _UNITS.setdefault(key, len(_UNITS))
    return code


@dataclass
class _Part:
    """Some days' rows of the experiment: arms by their index in the definition, users by code."""

    arm: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    unit: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    day: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    values: np.ndarray = field(default_factory=lambda: np.empty((0, _COLUMNS)))
    # judge label: (arm, unit, day, (rows, 3) count / sum / sum of squares)
    judges: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    # (label, arm, day): {judge value: turns}
    levels: dict[tuple[str, int, int], dict[float, int]] = field(default_factory=dict)
    demo: set[str] = field(default_factory=set)
    reasons: dict[tuple[int, int, str], int] = field(default_factory=dict)  # (arm, day, reason): dislikes
    latencies: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (arm, day): latencies
    redirected: list[tuple[int, str, int, int]] = field(default_factory=list)  # (unit, assigned, day, turns)
    times: dict[int, tuple[float, float]] = field(default_factory=dict)  # day: first and last turn


def _day_sql(dialect: str) -> str:
    """t.start_time's UTC day number (as dashboard.queries and migration 010's triggers)."""
    if dialect == "postgresql":
        return f"CAST(FLOOR(t.start_time / {DAY_S}) AS INTEGER)"
    return f"CAST(t.start_time / {DAY_S} AS INTEGER)"


def _latency_list_sql(dialect: str) -> str:
    if dialect == "postgresql":
        return "STRING_AGG(CAST(t.latency_ms AS TEXT), ',')"
    return "GROUP_CONCAT(t.latency_ms)"


def _where(
    experiment: str,
    names: Sequence[str],
    since: float,
    until: float,
    params: dict[str, Any],
    *,
    arms: bool = True,
) -> str:
    """The experiment's chat turns (traces t) of its variants in [since, until); `arms` leaves
    out the turns served to the control only because their user's variant is paused."""
    params["experiment"] = experiment
    binds = []
    for i, name in enumerate(names):
        params[f"v{i}"] = name
        binds.append(f":v{i}")
    params["since"] = float(since)
    params["until"] = float(until)
    parts = [
        # The index traces_experiment (experiment, variant, start_time): each variant's time range.
        "t.experiment = :experiment",
        f"t.variant IN ({', '.join(binds)})",
        "t.start_time >= :since",
        "t.start_time < :until",
        chat_turn_sql("t"),
    ]
    if arms:
        parts.append(f"NOT ({_REDIRECTED_SQL})")
    return " AND ".join(parts)


def _version_ok(alias: str, judges: Sequence[Evaluator], params: dict[str, Any]) -> str:
    """SQL true when the score is at its evaluator's current version (no version in its
    metadata: written before versions existed, taken as current), as evals.judge_trust reads it."""
    if not judges:
        return "1 = 1"
    cases = []
    for i, e in enumerate(judges):
        params[f"vn{i}"] = e.name
        params[f"vp{i}"] = f'%"evaluator_version": "{e.version}"%'
        cases.append(f"WHEN :vn{i} THEN :vp{i}")
    return f"""({alias}.metadata IS NULL OR {alias}.metadata NOT LIKE '%"evaluator_version"%'
             OR {alias}.metadata LIKE (CASE {alias}.name {" ".join(cases)} ELSE '%' END))"""


_RATING_ON = f"r.name = '{RATING_NAME}' AND r.source = 'user' AND r.deleted = 0 AND r.value IS NOT NULL"


def _read_range(
    db: Connection,
    experiment: str,
    names: Sequence[str],
    specs: Sequence[Evaluator] | None,
    since: float,
    until: float,
) -> _Part:
    """The experiment's rows of [since, until), grouped per arm, user and day."""
    arm_of = {name: i for i, name in enumerate(names)}
    part = _Part()
    if since >= until:
        return part
    dialect = db.dialect.name
    day = _day_sql(dialect)
    unit = "COALESCE(t.user_id, t.id)"
    params: dict[str, Any] = {}
    where = _where(experiment, names, since, until, params)

    arms, units, days, values = [], [], [], []
    for row in db.execute(
        text(
            f"""SELECT t.variant, {unit}, {day}, COUNT(*), SUM(CASE WHEN t.status = 'ERROR' THEN 1 ELSE 0 END),
                   COUNT(t.cost), SUM(t.cost), SUM(t.cost * t.cost),
                   COUNT(t.latency_ms), SUM(t.latency_ms), SUM(t.latency_ms * t.latency_ms),
                   COUNT(r.id), SUM(CASE WHEN r.value >= 0.5 THEN 1 ELSE 0 END),
                   MIN(t.start_time), MAX(t.start_time)
                FROM traces t LEFT JOIN scores r ON r.trace_id = t.id AND {_RATING_ON}
                WHERE {where} GROUP BY t.variant, {unit}, {day}"""
        ),
        params,
    ):
        arm = arm_of.get(row[0])
        if arm is None:
            continue
        arms.append(arm)
        units.append(_unit(row[1]))
        days.append(int(row[2]))
        values.append([float(v or 0.0) for v in row[3:13]])
        lo, hi = float(row[13]), float(row[14])
        known = part.times.get(int(row[2]))
        part.times[int(row[2])] = (lo, hi) if known is None else (min(known[0], lo), max(known[1], hi))
    if not arms:
        return part
    part.arm = np.array(arms, np.int64)
    part.unit = np.array(units, np.int64)
    part.day = np.array(days, np.int64)
    part.values = np.array(values, float).reshape(-1, _COLUMNS)

    for name, d, reason, n in db.execute(
        text(
            f"""SELECT t.variant, {day}, r.reason, COUNT(*) FROM traces t JOIN scores r ON r.trace_id = t.id
                WHERE {where} AND {_RATING_ON} AND r.value < 0.5 GROUP BY t.variant, {day}, r.reason"""
        ),
        params,
    ):
        if name in arm_of:
            label = (str(reason).strip() if reason else "")[:NAME_CHARS] or NO_REASON
            key = (arm_of[name], int(d), label)
            part.reasons[key] = part.reasons.get(key, 0) + int(n)

    for name, d, joined in db.execute(
        text(
            f"""SELECT t.variant, {day}, {_latency_list_sql(dialect)} FROM traces t
                WHERE {where} AND t.latency_ms IS NOT NULL GROUP BY t.variant, {day}"""
        ),
        params,
    ):
        if name in arm_of and joined:
            part.latencies[(arm_of[name], int(d))] = np.array(str(joined).split(","), dtype=float)

    jparams = dict(params)
    chosen = "1 = 1"
    if specs is not None:
        binds = []
        for i, j in enumerate(specs):
            jparams[f"jn{i}"] = j.name
            binds.append(f":jn{i}")
        chosen = f"s.name IN ({', '.join(binds)})" if binds else "1 = 0"
    version = _version_ok("s", specs or [], jparams)
    demo = f"CASE WHEN s.scored_by = '{BY_DEMO_JUDGE}' THEN 1 ELSE 0 END"
    scored = f"""s.source = 'EVAL' AND s.deleted = 0 AND s.value IS NOT NULL AND s.name <> '{DATASET_SCORE}'
                 AND {chosen} AND {version}"""

    def label_of(name: Any, is_demo: Any) -> str:
        key = str(name)
        if is_demo:
            key = f"{key} (demo judge)"
            part.demo.add(key)
        return key

    found: dict[str, list[tuple[int, int, int, float, float, float]]] = {}
    for name, who, d, judge, is_demo, n, total, squares in db.execute(
        text(
            f"""SELECT t.variant, {unit}, {day}, s.name, {demo}, COUNT(*), SUM(s.value), SUM(s.value * s.value)
                FROM traces t JOIN scores s ON s.trace_id = t.id
                WHERE {where} AND {scored}
                GROUP BY t.variant, {unit}, {day}, s.name, {demo}"""
        ),
        jparams,
    ):
        if name in arm_of:
            found.setdefault(label_of(judge, is_demo), []).append(
                (arm_of[name], _unit(who), int(d), float(n), float(total), float(squares))
            )
    for label, rows in found.items():
        a = np.array(rows, float).reshape(-1, 6)
        part.judges[label] = (
            a[:, 0].astype(np.int64),
            a[:, 1].astype(np.int64),
            a[:, 2].astype(np.int64),
            a[:, 3:],
        )
    # Judges write a few levels (tenths, 0/1): the values of the corrected estimate, counted.
    for name, d, judge, is_demo, value, n in db.execute(
        text(
            f"""SELECT t.variant, {day}, s.name, {demo}, s.value, COUNT(*) FROM traces t
                JOIN scores s ON s.trace_id = t.id
                WHERE {where} AND {scored} GROUP BY t.variant, {day}, s.name, {demo}, s.value"""
        ),
        jparams,
    ):
        if name in arm_of:
            levels = part.levels.setdefault((label_of(judge, is_demo), arm_of[name], int(d)), {})
            levels[float(value)] = levels.get(float(value), 0) + int(n)

    rparams: dict[str, Any] = {}
    everything = _where(experiment, names, since, until, rparams, arms=False)
    for who, d, meta, n in db.execute(
        text(
            f"""SELECT {unit}, {day}, t.metadata, COUNT(*) FROM traces t WHERE {everything} AND {_REDIRECTED_SQL}
                GROUP BY {unit}, {day}, t.metadata"""
        ),
        rparams,
    ):
        try:
            assigned = json.loads(meta or "{}").get(ASSIGNED_KEY)
        except (ValueError, AttributeError):
            assigned = None
        part.redirected.append(
            (_unit(who), str(assigned) if isinstance(assigned, str) else "", int(d), int(n))
        )
    return part


def _concat(parts: Sequence[_Part]) -> _Part:
    """One part of many (their rows side by side)."""
    parts = [p for p in parts if len(p.arm) or p.redirected or p.times]
    if len(parts) == 1:
        return parts[0]
    out = _Part()
    if not parts:
        return out
    out.arm = np.concatenate([p.arm for p in parts])
    out.unit = np.concatenate([p.unit for p in parts])
    out.day = np.concatenate([p.day for p in parts])
    out.values = np.concatenate([p.values for p in parts])
    labels = dict.fromkeys(label for p in parts for label in p.judges)
    for label in labels:
        have = [p.judges[label] for p in parts if label in p.judges]
        out.judges[label] = tuple(np.concatenate([h[k] for h in have]) for k in range(4))  # type: ignore[assignment]
    for p in parts:
        # Each day is in one part only: its keys are its own.
        out.levels.update(p.levels)
        out.demo |= p.demo
        out.reasons.update(p.reasons)
        out.latencies.update(p.latencies)
        out.redirected.extend(p.redirected)
        out.times.update(p.times)
    return out


_DAYS: OrderedDict[tuple[Any, ...], tuple[int, _Part]] = OrderedDict()


def forget_cached() -> None:
    """Drop every kept day (tests; a store replaced under the same URL)."""
    with _LOCK:
        _DAYS.clear()
        _PAIRS.clear()


def _rows(store: Store, e: Experiment, specs: Sequence[Evaluator] | None, until: float) -> _Part:
    """The experiment's rows: each UTC day that ended since its start kept in memory while the
    database's change counter of that day (dashboard_changes, bumped in the same transaction as
    any change to a trace or score of the day) stays the same; the partial days at the ends
    (today) read from the rows each time."""
    names = tuple(e.names)
    signature = (
        store.url,
        e.name,
        names,
        None if specs is None else tuple((j.name, j.version) for j in specs),
    )
    with store.read() as db:
        # The experiment's first and last turn (no day before or after is read): per variant, one
        # step down the index traces_experiment (experiment, variant, start_time) each, ordered by
        # its whole key. Postgres needs statistics that know the variants (autovacuum's ANALYZE):
        # with those of before the experiment it takes the variant index and reads every turn of
        # the variant (50 ms a variant at 50,000 turns), here and for today's figures.
        ends = []
        for name in names:
            ends.append(
                [
                    db.execute(
                        text(
                            f"""SELECT start_time FROM traces WHERE experiment = :x AND variant = :v
                                ORDER BY experiment {way}, variant {way}, start_time {way} LIMIT 1"""
                        ),
                        {"x": e.name, "v": name},
                    ).scalar()
                    for way in ("ASC", "DESC")
                ]
            )
        lows = [float(r[0]) for r in ends if r is not None and r[0] is not None]
        highs = [float(r[1]) for r in ends if r is not None and r[1] is not None]
        if not lows:
            return _Part()
        since = max(float(e.since or 0.0), math.floor(min(lows) / DAY_S) * DAY_S)
        until = min(until, (math.floor(max(highs) / DAY_S) + 1) * DAY_S)
        if since >= until:
            return _Part()
        first, end = math.ceil(since / DAY_S), math.floor(until / DAY_S)
        if first >= end:
            return _read_range(db, e.name, names, specs, since, until)
        parts = [_read_range(db, e.name, names, specs, since, first * DAY_S)]
        versions = {
            int(d): int(v)
            for d, v in db.execute(
                text("SELECT day, version FROM dashboard_changes WHERE day >= :a AND day < :b"),
                {"a": first, "b": end},
            )
        }
        stale = []
        with _LOCK:
            for d in range(first, end):
                known = _DAYS.get((signature, d))
                if known is not None and known[0] == versions.get(d, 0):
                    _DAYS.move_to_end((signature, d))
                    parts.append(known[1])
                else:
                    stale.append(d)
        for lo, hi in _spans(stale):
            found = _read_range(db, e.name, names, specs, lo * DAY_S, hi * DAY_S)
            for d in range(lo, hi):
                one = _one_day(found, d) if hi - lo > 1 else found
                parts.append(one)
                with _LOCK:
                    _DAYS[(signature, d)] = (versions.get(d, 0), one)
        with _LOCK:
            while len(_DAYS) > _CACHED_DAYS:
                _DAYS.popitem(last=False)
        parts.append(_read_range(db, e.name, names, specs, end * DAY_S, until))
    return _concat(parts)


def _spans(days: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted day numbers as [lo, hi) runs of consecutive days."""
    runs: list[list[int]] = []
    for d in days:
        if runs and d == runs[-1][1]:
            runs[-1][1] = d + 1
        else:
            runs.append([d, d + 1])
    return [(lo, hi) for lo, hi in runs]


def _one_day(part: _Part, d: int) -> _Part:
    """The rows of one day of a part read over several (what is kept per day)."""
    out = _Part()
    keep = part.day == d
    out.arm, out.unit, out.day, out.values = (
        part.arm[keep],
        part.unit[keep],
        part.day[keep],
        part.values[keep],
    )
    for label, (arm, unit, day, sums) in part.judges.items():
        k = day == d
        if k.any():
            out.judges[label] = (arm[k], unit[k], day[k], sums[k])
    out.levels = {k: v for k, v in part.levels.items() if k[2] == d}
    out.demo = {k[0] for k in out.levels if k[0] in part.demo}
    out.reasons = {k: v for k, v in part.reasons.items() if k[1] == d}
    out.latencies = {k: v for k, v in part.latencies.items() if k[1] == d}
    out.redirected = [r for r in part.redirected if r[2] == d]
    out.times = {k: v for k, v in part.times.items() if k == d}
    return out


# ----- one metric over users (delta method) ------------------------------------------------


def _clustered(
    arm: np.ndarray,
    unit: np.ndarray,
    day: np.ndarray,
    y: np.ndarray,
    n: np.ndarray,
    q: np.ndarray,
    arms: int,
    looks: int,
) -> np.ndarray:
    """Per arm and look (the end of each day, cumulative), shape (arms, looks, 7): the sums over
    users of Y, N, Y*Y, N*N, Y*N (Y: the user's sum of the metric, N: their count of values),
    the users with a value, and the sum of the squared values (for the per-value variance).
    `day` holds each row's look index. Vectorised: each row adds what its user's running sums
    change by (a user in two arms is two users)."""
    out = np.zeros((arms * looks, 7))
    keep = n > 0
    if not keep.any():
        return out.reshape(arms, looks, 7)
    arm, unit, day, y, n, q = arm[keep], unit[keep], day[keep], y[keep], n[keep], q[keep]
    order = np.lexsort((day, arm, unit))
    arm, unit, day, y, n, q = arm[order], unit[order], day[order], y[order], n[order], q[order]
    starts = np.r_[True, (unit[1:] != unit[:-1]) | (arm[1:] != arm[:-1])]
    first = np.flatnonzero(starts)
    lengths = np.diff(np.r_[first, len(unit)])
    cy, cn = np.cumsum(y), np.cumsum(n)
    Y = cy - np.repeat(cy[first] - y[first], lengths)
    N = cn - np.repeat(cn[first] - n[first], lengths)
    PY, PN = Y - y, N - n
    cell = arm * looks + day
    steps = (y, n, Y * Y - PY * PY, N * N - PN * PN, Y * N - PY * PN, starts.astype(float), q)
    for k, w in enumerate(steps):
        out[:, k] = np.bincount(cell, weights=w, minlength=arms * looks)
    return np.cumsum(out.reshape(arms, looks, 7), axis=1)


@dataclass(frozen=True)
class _Metric:
    """One metric per arm and look: values n, mean, per-value variance, users, the design
    effect (delta-method variance over the per-value one, at least 1) and the effective n."""

    n: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    users: np.ndarray
    design_effect: np.ndarray
    effective: np.ndarray
    total: np.ndarray

    def looks(self, i: int, c: int) -> Looks:
        """Variant i against control c at every look: n is the effective n, so that var / n is
        the delta method's squared standard error."""
        return Looks(
            self.effective[i], self.mean[i], self.var[i], self.effective[c], self.mean[c], self.var[c]
        )


def _metric(sums: np.ndarray, proportion: bool) -> _Metric:
    sy, sn, syy, snn, syn, users, sq = (sums[..., k] for k in range(7))
    with np.errstate(divide="ignore", invalid="ignore"):
        safe_n = np.where(sn > 0, sn, 1.0)
        mean = np.where(sn > 0, sy / safe_n, 0.0)
        if proportion:
            var = mean * (1 - mean)
        else:
            var = np.where(sn > 1, (sq - sy * mean) / np.where(sn > 1, sn - 1, 1.0), 0.0)
        var = np.maximum(var, 0.0)
        resid = np.maximum(0.0, syy - 2 * mean * syn + mean * mean * snn)
        delta = np.where(
            users > 1, resid * users / np.where(users > 1, (users - 1), 1.0) / (safe_n * safe_n), 0.0
        )
        # Against the per-value variance with n - 1 (a rate's p(1 - p) n / (n - 1)), as the delta
        # method's is over users: one value per user is then a design effect of exactly 1.
        unbiased = var * sn / np.where(sn > 1, sn - 1, 1.0) if proportion else var
        plain = unbiased / safe_n
        ratio = np.where((users > 1) & (plain > 0), delta / np.where(plain > 0, plain, 1.0), 1.0)
    deff = np.maximum(1.0, ratio)
    return _Metric(sn, mean, var, users, deff, sn / deff, sy)


# ----- computing -----------------------------------------------------------------------------


def _percentile(values: np.ndarray, q: float) -> float | None:
    """Nearest rank: the smallest value with at least q% of the values at or below it."""
    if not len(values):
        return None
    k = max(0, math.ceil(len(values) * q / 100) - 1)
    return float(np.partition(values, k)[k])


def _judge_specs(evaluators: Sequence[Evaluator] | None) -> list[Evaluator] | None:
    """The turn judges and checks whose scores have a mean (None: every score name found)."""
    if evaluators is None:
        return None
    seen: dict[str, Evaluator] = {}
    for ev in evaluators:
        if ev.target != CONVERSATION and ev.data_type != "CATEGORICAL" and ev.name not in seen:
            seen[ev.name] = ev
    return list(seen.values())


def _counted(
    label: str, demo: bool, spec: Evaluator | None, trust: Mapping[str, bool] | None
) -> tuple[bool, str | None]:
    """Whether a judge's guardrail counts in the verdict, and why not."""
    if demo:
        return False, "the bundled demo judge's scores: shown, never counted"
    if spec is not None and spec.kind != "llm":
        return True, None
    if trust is None or label not in trust:
        if spec is None:
            return False, "not in the evaluators file, so not known to be verified: shown, not counted"
        return False, "not verified against reviewers (python -m evals agreement): shown, not counted"
    if trust[label]:
        return True, None
    return False, "unverified against reviewers (python -m evals agreement): shown, not counted"


def results(
    store: Store,
    experiment: Experiment,
    *,
    evaluators: Sequence[Evaluator] | None = None,
    trust: Mapping[str, bool] | None = None,
    now: float | None = None,
    min_reviewed: int = MIN_REVIEWED,
) -> Results:
    """Every figure of the experiment, from the store.

    evaluators: the evaluators file's (which scores are judges, at which version; None: every
    judge score found, none of them counted in the verdict). trust: {judge: verified} (None: read
    with evals.judge_trust when evaluators are given). StoreError when the store cannot be read."""
    started = time.perf_counter()
    e = experiment
    until = (time.time() if now is None else now) + 60.0
    specs = _judge_specs(evaluators)
    if trust is None and evaluators is not None:
        from evals.judge_trust import judge_trust

        trust = {name: v.verified for name, v in judge_trust(store, evaluators).items()}
    rows = _rows(store, e, specs, until)
    arms = len(e.variants)
    c = e.names.index(e.control)
    days = np.array(sorted(rows.times), dtype=np.int64)
    D = max(1, len(days))
    look = np.searchsorted(days, rows.day) if len(days) else rows.day * 0

    def over_users(y: np.ndarray, n: np.ndarray, q: np.ndarray, proportion: bool) -> _Metric:
        return _metric(_clustered(rows.arm, rows.unit, look, y, n, q, arms, D), proportion)

    v = rows.values
    turns = over_users(v[:, ERRS], v[:, TURNS], v[:, ERRS], True)
    likes = over_users(v[:, LIKES], v[:, RATED], v[:, LIKES], True)
    cost = over_users(v[:, COST_S], v[:, COST_N], v[:, COST_Q], False)
    latency = over_users(v[:, LAT_S], v[:, LAT_N], v[:, LAT_Q], False)
    judges: dict[str, _Metric] = {}
    for label, (j_arm, j_unit, j_day, sums) in rows.judges.items():
        j_look = np.searchsorted(days, j_day) if len(days) else j_day * 0
        judges[label] = _metric(
            _clustered(j_arm, j_unit, j_look, sums[:, 1], sums[:, 0], sums[:, 2], arms, D), False
        )
    spec_of = {s.name: s for s in specs or []}

    # The random calibration sample's reviewed turns per judge, by arm (that sample only: turns
    # reviewed because a rule chose them would bias the correction).
    pairs = _calibration(store, e, until, [label for label in judges if label not in rows.demo], arms)

    # Users per assigned variant (the sample-ratio check): each arm's users, and the users served
    # the control while their variant was paused, counted for that variant (once).
    arm_units = [set(rows.unit[rows.arm == i].tolist()) for i in range(arms)]
    assigned = [len(u) for u in arm_units]
    redirected_turns = sum(n for _, _, _, n in rows.redirected)
    extra: dict[str, set[int]] = {}
    for who, name, _, _ in rows.redirected:
        if name in e.names:
            extra.setdefault(name, set()).add(who)
    for name, users in extra.items():
        i = e.names.index(name)
        assigned[i] += len(users - arm_units[i])

    levels: dict[tuple[str, int], dict[float, int]] = {}
    for (label, arm, _), counted_levels in rows.levels.items():
        into = levels.setdefault((label, arm), {})
        for value, n in counted_levels.items():
            into[value] = into.get(value, 0) + n
    total_w = sum(max(0.0, s.weight) for s in e.variants) or 1.0
    figures = []
    for i, spec in enumerate(e.variants):
        latencies = [a for (arm, _), a in rows.latencies.items() if arm == i]
        values = np.concatenate(latencies) if latencies else np.empty(0)
        reasons: dict[str, int] = {}
        for (arm, _, reason), n in rows.reasons.items():
            if arm == i:
                reasons[reason] = reasons.get(reason, 0) + n
        shown = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:REASONS_SHOWN]
        judge_rows = []
        for label in sorted(judges):
            m = judges[label]
            n = int(m.n[i, -1])
            counted, note = _counted(label, label in rows.demo, spec_of.get(label), trust)
            est, est_note = _corrected(label, i, rows, levels, pairs, min_reviewed)
            judge_rows.append(
                JudgeFigures(label, n, float(m.mean[i, -1]) if n else None, counted, note, est, est_note)
            )
        figures.append(
            VariantFigures(
                name=spec.name,
                weight=max(0.0, spec.weight) / total_w,
                paused=spec.paused,
                control=i == c,
                turns=int(turns.n[i, -1]),
                users=int(turns.users[i, -1]),
                errors=int(turns.total[i, -1]),
                rated=int(likes.n[i, -1]),
                likes=int(round(likes.total[i, -1])),
                voters=int(likes.users[i, -1]),
                design_effect=float(likes.design_effect[i, -1]),
                effective_votes=float(likes.effective[i, -1]),
                reasons=tuple(shown),
                cost_known=int(cost.n[i, -1]),
                cost_sum=float(cost.total[i, -1]),
                cost_unknown=int(turns.n[i, -1] - cost.n[i, -1]),
                latency_p50=_percentile(values, 50),
                latency_p95=_percentile(values, 95),
                judges=tuple(judge_rows),
                redirected_turns=redirected_turns if i == c else 0,
                assigned_users=assigned[i],
            )  # fmt: skip
        )

    srm = sample_ratio_mismatch(dict(zip(e.names, assigned, strict=True)), e.weights)
    comparisons = []
    for i, name in enumerate(e.names):
        if i == c:
            continue
        primary = _exact(compare_metric(likes.looks(i, c), kind=LIKE_RATE, role=PRIMARY), likes, i, c)
        guardrails = [
            _exact(compare_metric(turns.looks(i, c), kind=ERRORS, role=GUARDRAIL), turns, i, c),
            compare_metric(cost.looks(i, c), kind=COST, role=GUARDRAIL),
            compare_metric(latency.looks(i, c), kind=LATENCY, role=GUARDRAIL),
        ]
        shown_only = []
        for label in sorted(judges):
            m = compare_metric(judges[label].looks(i, c), kind=JUDGE, name=label, role=GUARDRAIL)
            counted, _ = _counted(label, label in rows.demo, spec_of.get(label), trust)
            (guardrails if counted else shown_only).append(m)
        at = primary.sequential.decided_at
        decided_on = _day_text(int(days[at])) if at is not None and 0 <= at < len(days) else None
        comparisons.append(
            VariantComparison(
                name, verdict(name, e.control, primary, guardrails, srm), tuple(shown_only), decided_on
            )
        )
    first = min((t[0] for t in rows.times.values()), default=None)
    last = max((t[1] for t in rows.times.values()), default=None)
    return Results(
        e, tuple(figures), tuple(comparisons), srm, len(days), first, last, time.perf_counter() - started,
        tuple(_day_text(int(d)) for d in days),
    )  # fmt: skip


# Longest the calibration pairs are kept while no reviewer label and no calibration item changed
# (a judge scoring a reviewed turn later shows within this time).
CALIBRATION_RECHECK_S = 30.0
_PAIRS: OrderedDict[
    tuple[Any, ...], tuple[tuple[Any, ...], float, dict[str, list[list[tuple[float, float]]]]]
]
_PAIRS = OrderedDict()


def _exact(m: MetricComparison, metric: _Metric, i: int, c: int) -> MetricComparison:
    """A rate's fixed-horizon interval from the exact effective counts: compare_metric takes whole
    numbers of values and successes (Arm.successes rounds), which moved the shown difference off
    the difference of the rates by up to half a vote over the effective n."""
    nv, nc = float(metric.effective[i, -1]), float(metric.effective[c, -1])
    fixed = proportion_difference(
        float(metric.mean[i, -1]) * nv, nv, float(metric.mean[c, -1]) * nc, nc,
        what="rated turns" if m.kind == LIKE_RATE else "turns",
    )  # fmt: skip
    return dataclasses.replace(m, fixed=fixed)


def _calibration(
    store: Store, e: Experiment, until: float, labels: Sequence[str], arms: int
) -> dict[str, list[list[tuple[float, float]]]]:
    """Per judge, per arm: (judge value, reviewer's label) of the calibration sample's reviewed
    turns (feedback.review_queue.ReviewQueue.calibration_pairs) that are turns of that arm. Kept
    while the reviewers' labels (their count and latest change, from their partial index) and
    the sample's items are the same, for at most CALIBRATION_RECHECK_S."""
    if not labels:
        return {}
    stamp = tuple(
        store.tuples(
            f"""SELECT (SELECT COUNT(*) FROM scores s WHERE s.scored_by = '{BY_REVIEWER}' AND s.deleted = 0),
                       (SELECT MAX(s.updated) FROM scores s WHERE s.scored_by = '{BY_REVIEWER}' AND s.deleted = 0),
                       (SELECT COUNT(*) FROM review_items i WHERE i.calibration = 1)"""
        )[0]
    )
    key = (store.url, tuple(e.names), e.since, tuple(labels), math.floor(until / DAY_S))
    now = time.monotonic()
    with _LOCK:
        known = _PAIRS.get(key)
    if known is not None and known[0] == stamp and now - known[1] < CALIBRATION_RECHECK_S:
        return known[2]
    params: dict[str, Any] = {}
    where = _where(e.name, e.names, float(e.since or 0.0), until, params)
    arm_of = {name: i for i, name in enumerate(e.names)}
    in_arm = {
        str(tid): arm_of[name]
        for tid, name in store.tuples(
            f"""SELECT t.id, t.variant FROM review_items i CROSS JOIN traces t
                WHERE i.calibration = 1 AND t.id = i.trace_id AND {where}""",
            params,
        )
        if name in arm_of
    }
    out: dict[str, list[list[tuple[float, float]]]] = {}
    if in_arm:
        queue = ReviewQueue(store)
        for label in labels:
            per_arm: list[list[tuple[float, float]]] = [[] for _ in range(arms)]
            for p in queue.calibration_pairs(label):
                arm = in_arm.get(str(p["trace_id"]))
                if arm is not None and p["judge"] is not None and p["label"] is not None:
                    per_arm[arm].append((float(p["judge"]), float(p["label"])))
            out[label] = per_arm
    with _LOCK:
        _PAIRS[key] = (stamp, now, out)
        while len(_PAIRS) > 64:
            _PAIRS.popitem(last=False)
    return out


def _corrected(
    label: str,
    arm: int,
    rows: _Part,
    levels: Mapping[tuple[str, int], Mapping[float, int]],
    pairs: Mapping[str, list[list[tuple[float, float]]]],
    min_reviewed: int,
) -> tuple[QualityEstimate | None, str | None]:
    """The PPI++ estimate of the reviewers' mean over the arm's judged turns, or why none."""
    if label in rows.demo:
        return None, "no corrected estimate for the demo judge"
    found = pairs.get(label)
    if not found or not found[arm]:
        return (
            None,
            "no corrected estimate: no reviewed turn of the random calibration sample in this variant yet",
        )
    counts = levels.get((label, arm), {})
    judge_all = np.repeat(
        np.fromiter(counts, float, len(counts)), np.fromiter(counts.values(), np.int64, len(counts))
    )
    reviewed = found[arm]
    if len(reviewed) > len(judge_all):
        return None, "no corrected estimate: the store changed while it was read; read it again"
    est = ppi_mean(judge_all, [j for j, _ in reviewed], [h for _, h in reviewed], min_reviewed=min_reviewed)
    return est, None if est.estimate is not None else f"no corrected estimate: {est.reason}"


def _day_text(day: int) -> str:
    return datetime.fromtimestamp(day * DAY_S, UTC).date().isoformat()


# ----- text (python -m evals ab status) ------------------------------------------------------


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _usd(v: float) -> str:
    """Dollars with the digits a turn's cost needs (a local model's turn costs thousandths of a cent)."""
    digits = 4 if abs(v) >= 0.01 or v == 0 else min(8, 3 - math.floor(math.log10(abs(v))))
    return f"${v:.{digits}f}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f} ms"


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _one_line(value: Any) -> str:
    """A name from a file or a person on one line: control characters shown as their escapes."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(value))


def variant_lines(v: VariantFigures) -> list[str]:
    """One variant's own figures, as `ab status` prints them."""
    role = "control" if v.control else "variant"
    head = f"{_one_line(v.name)} ({role}, weight {100 * v.weight:.3g}%{', PAUSED' if v.paused else ''})"
    lines = [f"{head}: {v.turns:,} turns, {v.users:,} users, errors {v.errors:,} ({_pct(v.error_rate)})"]
    if v.rated:
        low, high = v.like_interval
        lines.append(
            f"  like rate {_pct(v.like_rate)} (95% interval {_pct(low)} to {_pct(high)}) of {v.rated:,} rated "
            f"turns ({_pct(v.rated_share)} of turns rated) by {v.voters:,} users; design effect "
            f"{v.design_effect:.2f}, effective votes {v.effective_votes:,.0f}"
        )
    else:
        lines.append("  no rated turn yet")
    if v.reasons:
        lines.append("  dislike reasons: " + ", ".join(f"{_one_line(r)} {n:,}" for r, n in v.reasons))
    cost = "unknown" if v.cost_per_turn is None else _usd(v.cost_per_turn)
    unknown = f" ({v.cost_unknown:,} turns of unknown cost left out)" if v.cost_unknown else ""
    lines.append(
        f"  cost per turn {cost}{unknown}; latency p50 {_ms(v.latency_p50)}, p95 {_ms(v.latency_p95)}"
    )
    for j in v.judges:
        mean = "-" if j.mean is None else f"{j.mean:.3f}"
        line = f"  {_one_line(j.name)}: mean {mean} over {j.n:,} turns"
        if j.estimate is not None and j.estimate.estimate is not None:
            est = j.estimate
            line += f"; corrected {est.estimate:.3f} (95% interval {est.low:.3f} to {est.high:.3f}, {est.n} reviewed)"
        elif j.estimate_note:
            line += f"; {j.estimate_note}"
        if j.note:
            line += f" [{j.note}]"
        lines.append(line)
    if v.redirected_turns:
        lines.append(f"  {v.redirected_turns:,} turns served to users of a paused variant are in no arm")
    return lines


def describe(r: Results) -> str:
    """The text of `python -m evals ab status`: the experiment, the check of the split, each
    variant's figures, then a verdict line per variant."""
    e = r.experiment
    weights = ", ".join(
        f"{_one_line(v.name)} {100 * v.weight:.3g}%{' (paused)' if v.paused else ''}" for v in r.variants
    )
    lines = [
        f"Experiment {_one_line(e.name)}: control {_one_line(e.control)}; {weights}",
        f"  turns from {_when(r.first_turn)} to {_when(r.last_turn)}"
        + (f" (counted since {_when(e.since)})" if e.since else "")
        + f"; {r.looks} looks (one per UTC day)",
        f"Assignment: {_one_line(r.srm.reason)}" + (" [FLAGGED]" if r.srm.flagged else ""),
        "",
    ]
    for v in r.variants:
        lines += variant_lines(v)
    lines.append("")
    for cmp in r.comparisons:
        lines.append(f"{_one_line(cmp.variant)} against {_one_line(e.control)}:")
        p = cmp.verdict.primary
        if p is not None:
            lines.append(f"  {_fixed_text(p)}")
        for g in cmp.verdict.guardrails:
            lines.append(f"  guardrail [{g.status}] {_one_line(g.reason)}")
        for g in cmp.shown_only:
            lines.append(f"  not counted [{g.status}] {_one_line(g.reason)}")
    lines.append("")
    for cmp in r.comparisons:
        when = f" (decided on {cmp.decided_on})" if cmp.decided_on else ""
        lines.append(
            f"VERDICT {_one_line(cmp.variant)}: {cmp.verdict.status.upper()}{when}: {_one_line(cmp.verdict.reason)}"
        )
    if not r.comparisons:
        lines.append("No variant besides the control: nothing to compare.")
    return "\n".join(lines)


def _fixed_text(m: MetricComparison) -> str:
    f = m.fixed
    if f.estimate is None:
        return f"like rate difference: none yet ({f.reason})"
    if f.low is None or f.high is None:
        return f"like rate difference {100 * f.estimate:+.1f} points (no interval: {f.reason})"
    return (
        f"like rate difference {100 * f.estimate:+.1f} points, 95% interval {100 * f.low:+.1f} to "
        f"{100 * f.high:+.1f} (fixed horizon, for display; decisions use the always-valid test)"
    )
