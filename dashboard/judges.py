"""The dashboard's Judges panel: may each LLM judge be believed, and what is the true quality?

Per LLM judge of the evaluators file (turn and conversation judges; code checks are code, not
judges, and are left out):

- **Trust** (issue 25 item 3): agreement with reviewers' labels (Cohen's kappa, or Pearson's r
  for numbers) with its bootstrap 95% interval and n, over every label and over the last window;
  drift between the last window and the one before; the verdict (verified / unverified) with its
  reasons, exactly as `evals.judge_trust.judge_trust` gives it to the gates. These use every
  label, whatever the page's time range: a verdict that moved with the range would not be the
  one the gates use.
- **Quality** (item 4), over the page's time range and filters (`dashboard.queries.Filters`,
  chat turns only, as the overview selects them): the raw judge mean (NUMERIC; the rate of true
  for BOOLEAN; nothing for CATEGORICAL, whose categories have no mean), the users' like rate
  among the rated turns the judge scored (Wilson interval) and the judge's agreement with those
  thumbs (Cohen's kappa, a score of 0.5 or more read as a like: for information, never a
  verdict), and the corrected estimate of the reviewers' mean over all judged turns: PPI++
  (`evals.estimate.ppi_mean`) over every judge value of the range and the reviewed turns of the
  random calibration sample in the range. The sample is a uniform draw of turns made when they
  arrive (evals.review_rules), so its part in any range or filter is a uniform draw of that
  range's turns; turns reviewed because a rule chose them are never in it. With too few reviewed
  sample turns a sentence says how many are needed instead of a number.

A judge's value is its score *at the evaluator's current version* (as `evals.judge_trust` pairs
them: a score with no version in its metadata predates versions and counts as current), so the
figures and the verdict are about the same judge. The corrected estimate rests on people's
labels and is valid whatever the judge's bias, so it is not greyed with an unverified judge's
own figures, and says so.

Everything shown that came from a file or a person (names, categories, reasons) is hostile text:
it reaches the page only through `_text` (bidirectional controls made visible, html.escape with
quotes), inside elements, never in a tag or attribute; numbers are formatted here.

Speed (`python -m bench.judges_panel`: 100,000 turns, 5,000 labels). Reading every judged turn
of 90 days costs about a second on 2 cores (no index leads from a score's name to its rows, and
a score row is big), so, as the overview does, the figures of each UTC day that lies wholly in
the range are kept (in memory, per process) with the day's `dashboard_changes` version, which
the database bumps in the same transaction as any change to a trace or score of that day, and
the day's count of calibration items (added without a score change); a day is read again only
when one of them moved. The range's partial days at its ends and any user or session filter
(few turns, by index) are read from the rows each time. A judge's verdict is kept while the
count and latest time of its labels (read from their partial index alone) stay the same, for
at most TRUST_RECHECK_S: then its pairs are read again (20 ms a judge), so a judge scoring a
labelled turn after the label shows within that time; its bootstrap (up to a tenth of a second
a judge) runs again only when the pairs differ. Measured: see bench/judges_panel.py.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, text

from dashboard.bidi import visible_controls
from dashboard.queries import DAY_S, DEMO_LABEL, Filters, wilson
from dashboard.queries import _check as check_filters
from dashboard.queries import _Checked as Checked
from dashboard.queries import _day_sql as day_sql
from dashboard.queries import _like_literal as like_literal
from dashboard.queries import _tags as tag_list
from dashboard.queries import _where as where_turns
from evals.config import Evaluator
from evals.estimate import MIN_REVIEWED, QualityEstimate, ppi_mean
from evals.judge_trust import _verdict as verdict_of
from evals.judge_trust import reviewer_pairs
from evals.scheduler import CONVERSATION
from evals.trust import (
    BOOLEAN,
    CATEGORICAL,
    DEFAULT,
    NUMERIC,
    Agreement,
    Measure,
    Thresholds,
    TrustVerdict,
    agreement,
    cohen_kappa,
)
from feedback.store import BY_REVIEWER, RATING_NAME, Store

__all__ = [
    "JUDGES_CSS",
    "JudgeRow",
    "JudgesPanel",
    "Quality",
    "Sample",
    "Thumbs",
    "forget_cached",
    "judge_trust_labels",
    "judges_data",
    "judges_html",
    "judges_panel",
    "trust_marker",
]

NAME_CHARS = 200  # longest evaluator name or category shown
REASON_CHARS = 2000  # longest reason shown
UNVERIFIED_MARK = "unverified"
ALL_TIME = Filters(since=0.0, until=99_999_999_999.0)
_CACHED_DAYS = 800  # (store, judges, day) entries kept: about 80 KB each on a day of 1,100 turns
_CACHED_VERDICTS = 256
# Longest a verdict is shown without reading its pairs again when none of its labels changed.
TRUST_RECHECK_S = 30.0


# ----- data --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thumbs:
    """Users' votes on the turns a judge scored in the range: `table[judge][liked]` counts, the
    judge's value read as 1 when 0.5 or more (as evals.trust reads it against a thumb)."""

    table: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
    agreement: Measure | None = None

    @property
    def rated(self) -> int:
        return sum(map(sum, self.table))

    @property
    def liked(self) -> int:
        return self.table[0][1] + self.table[1][1]

    @property
    def rate(self) -> float | None:
        return self.liked / self.rated if self.rated else None

    @property
    def interval(self) -> tuple[float | None, float | None]:
        return wilson(self.liked, self.rated)


@dataclass(frozen=True)
class Sample:
    """The random calibration sample's turns in the range, by state (a turn counted once)."""

    drawn: int = 0
    reviewed: int = 0
    waiting: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class Quality:
    """One judge's quality figures over the range.

    `judged` (N) are the targets it scored at its current version, `judge_mean` their mean (a
    rate of true for BOOLEAN); `pairs` (n) the reviewed calibration turns it scored too, and
    `unjudged` the reviewed calibration turns it did not score (left out of n). `estimate` is
    None with `note` saying why (too few reviewed turns, a CATEGORICAL or conversation judge)."""

    judged: int
    judge_mean: float | None
    thumbs: Thumbs | None
    estimate: QualityEstimate | None
    pairs: int = 0
    unjudged: int = 0
    note: str | None = None


@dataclass(frozen=True)
class JudgeRow:
    evaluator: Evaluator
    verdict: TrustVerdict
    quality: Quality

    @property
    def name(self) -> str:
        return self.evaluator.name

    @property
    def verified(self) -> bool:
        return self.verdict.verified

    @property
    def reason(self) -> str:
        return self.verdict.reason

    @property
    def reviewers(self) -> Agreement | None:
        return self.verdict.agreement


@dataclass(frozen=True)
class JudgesPanel:
    rows: list[JudgeRow]
    filters: Filters
    sample: Sample
    thresholds: Thresholds = DEFAULT
    min_reviewed: int = MIN_REVIEWED
    conversations_filtered_out: bool = False
    seconds: float = field(default=0.0, compare=False)

    def trust_labels(self) -> dict[str, tuple[bool, str]]:
        """{judge's score name: (verified, the reason sentence)}, for greying elsewhere."""
        return {r.name: (r.verified, r.reason) for r in self.rows}


def _judges(evaluators: Iterable[Evaluator]) -> list[Evaluator]:
    """The LLM judges, each score name once (the first, as the evaluators file has it)."""
    seen: dict[str, Evaluator] = {}
    for e in evaluators:
        if e.kind == "llm" and e.name not in seen:
            seen[e.name] = e
    return list(seen.values())


# ----- trust: evals.judge_trust, kept while its labels have not changed ---------------------

_VERDICTS: OrderedDict[tuple[Any, ...], TrustVerdict] = OrderedDict()  # by the exact pairs
_CHECKED: dict[tuple[Any, ...], tuple[Any, float, TrustVerdict]] = {}  # (labels, when, verdict)
_LOCK = threading.Lock()  # Gradio runs handlers in several threads


def _label_stamps(store: Store, judges: Sequence[Evaluator]) -> dict[str, tuple[int, str]]:
    """Per score name, the count and latest time of its live reviewer labels: read from the
    partial index scores_labels alone. A label written, changed, deleted or restored moves it
    (a write sets `updated`; a delete takes the label out of the index)."""
    if not judges:
        return {}
    params: dict[str, Any] = {}
    names = _names_in("s", judges, params)
    return {
        name: (int(n), str(last or ""))
        for name, n, last in (
            (r["name"], r["n"], r["last"])
            for r in store.rows(
                f"""SELECT s.name AS name, COUNT(*) AS n, MAX(s.updated) AS last FROM scores s
                    WHERE s.scored_by = '{BY_REVIEWER}' AND s.deleted = 0 AND {names} GROUP BY s.name""",
                params,
            )
        )
    }


def _verdicts(
    store: Store, judges: Sequence[Evaluator], thresholds: Thresholds, clock: Any = time.monotonic
) -> dict[str, TrustVerdict]:
    """`evals.judge_trust.judge_trust(store, judges)`, each verdict kept while the judge's labels
    have not changed and for at most TRUST_RECHECK_S; then its pairs are read again (a judge
    scoring a labelled turn after its label shows within that time), and its bootstrap runs again
    only if they differ from those of a verdict already computed."""
    stamps = _label_stamps(store, judges)
    now = clock()
    out = {}
    for e in judges:
        judge = (store.url, e.name, e.version, e.data_type, e.target, tuple(e.categories), thresholds)
        stamp = stamps.get(e.name, (0, ""))
        with _LOCK:
            checked = _CHECKED.get(judge)
        if checked is not None and checked[0] == stamp and now - checked[1] < TRUST_RECHECK_S:
            out[e.name] = checked[2]
            continue
        found = reviewer_pairs(store, e)
        digest = hashlib.blake2b(repr(found.pairs).encode(), digest_size=16).hexdigest()
        key = (*judge, digest, found.other_versions)
        with _LOCK:
            verdict = _VERDICTS.get(key)
            if verdict is not None:
                _VERDICTS.move_to_end(key)
        if verdict is None:
            # What judge_trust(store, [e]) does with the pairs just read (read twice, they could
            # differ): the reviewers' agreement, then the verdict with its reasons.
            found_agreement = agreement(
                found.pairs, e.data_type, categories=e.categories or None, thresholds=thresholds
            )
            verdict = verdict_of(found_agreement, found.other_versions, thresholds, e.version)
        with _LOCK:
            _VERDICTS[key] = verdict
            while len(_VERDICTS) > _CACHED_VERDICTS:
                _VERDICTS.popitem(last=False)
            _CHECKED[judge] = (stamp, now, verdict)
        out[e.name] = verdict
    return out


# ----- quality: per-day figures ------------------------------------------------------------


def _version_ok(alias: str, judges: Sequence[Evaluator], params: dict[str, Any]) -> str:
    """SQL true when the score `alias` is at its evaluator's current version (no version in its
    metadata: written before versions existed, taken as current), as evals.judge_trust reads it.
    The metadata is matched as text the way the worker writes it (json.dumps)."""
    cases = []
    for i, e in enumerate(judges):
        params[f"vn{i}"] = e.name
        params[f"vp{i}"] = f'%"evaluator_version": "{e.version}"%'
        cases.append(f"WHEN :vn{i} THEN :vp{i}")
    return f"""({alias}.metadata IS NULL OR {alias}.metadata NOT LIKE '%"evaluator_version"%'
             OR {alias}.metadata LIKE (CASE {alias}.name {" ".join(cases)} END))"""


def _names_in(alias: str, judges: Sequence[Evaluator], params: dict[str, Any]) -> str:
    binds = []
    for i, e in enumerate(judges):
        params[f"jn{i}"] = e.name
        binds.append(f":jn{i}")
    return f"{alias}.name IN ({', '.join(binds)})"


Group = tuple[Any, Any, str]  # (model, tags as stored, judge's score name)
Values = tuple[np.ndarray, np.ndarray]  # a judge's distinct values and how many targets got each
_NO_VALUES: Values = (np.empty(0), np.empty(0, dtype=np.int64))


def _arrays(counts: Mapping[Any, dict[float, int]]) -> dict[Any, Values]:
    return {
        key: (np.fromiter(c.keys(), float, len(c)), np.fromiter(c.values(), np.int64, len(c)))
        for key, c in counts.items()
    }


@dataclass
class _Part:
    """The turn judges' figures of some turns (a day, or the partial days at the range's ends),
    per model, tag list and judge; a part read with the model and tag filters applied (`filtered`)
    has None for both."""

    filtered: bool
    values: dict[Group, Values] = field(default_factory=dict)
    totals: dict[str, Values] = field(default_factory=dict)  # values over every model and tag list
    # [judge under 0.5 & dislike, under 0.5 & like, 0.5 or more & dislike, 0.5 or more & like]
    thumbs: dict[Group, list[int]] = field(default_factory=dict)
    # trace id: ((label's time, judge score's time), judge value or None, label)
    labels: dict[Group, dict[str, tuple[Any, float | None, float]]] = field(default_factory=dict)


def _filter_sql(checked: Checked, params: dict[str, Any]) -> str:
    """The model and tag filters as SQL on traces t ("1 = 1" without them), as the overview's."""
    parts = ["1 = 1"]
    if checked.model is not None:
        parts.append("t.model = :f_model")
        params["f_model"] = checked.model
    if checked.tag is not None:
        parts.append("t.tags LIKE :f_tag ESCAPE '!'")
        params["f_tag"] = "%" + like_literal(json.dumps(checked.tag)) + "%"
    return " AND ".join(parts)


def _read_parts(
    db: Connection,
    judges: Sequence[Evaluator],
    checked: Checked,
    since: float,
    until: float,
    *,
    by_group: bool,
) -> dict[int, _Part]:
    """The turn judges' figures over the turns of [since, until), user and session filters
    applied, per UTC day: per model and tag list (`by_group`, the days kept in memory), or with
    the model and tag filters applied here (the partial days, read each time)."""
    if not judges or since >= until:
        return {}
    where, base = where_turns(checked, since, until, all_filters=not by_group)
    day = day_sql(db.dialect.name)
    select = "t.model, t.tags" if by_group else "NULL, NULL"
    group = f"{day}, t.model, t.tags" if by_group else day
    values: dict[int, dict[Group, dict[float, int]]] = {}
    parts: dict[int, _Part] = {}

    def part(d: Any) -> _Part:
        return parts.setdefault(int(d), _Part(filtered=not by_group))

    params = dict(base)
    names, version = _names_in("s", judges, params), _version_ok("s", judges, params)
    # Grouped by value: judges write a few levels, so a day's turns are a few rows per judge.
    for d, model, tags, name, value, n in db.execute(
        text(
            f"""SELECT {day}, {select}, s.name, s.value, COUNT(*)
                FROM traces t JOIN scores s ON s.trace_id = t.id
                WHERE {where} AND {names} AND s.source = 'EVAL' AND s.deleted = 0 AND s.value IS NOT NULL
                  AND {version}
                GROUP BY {group}, s.name, s.value"""
        ),
        params,
    ):
        counts = values.setdefault(int(d), {}).setdefault((model, tags, name), {})
        counts[float(value)] = counts.get(float(value), 0) + int(n)
    for d, by_key in values.items():
        totals: dict[str, dict[float, int]] = {}
        for (_, _, name), counts in by_key.items():
            total = totals.setdefault(name, {})
            for value, n in counts.items():
                total[value] = total.get(value, 0) + n
        part(d).values = _arrays(by_key)
        part(d).totals = _arrays(totals)
    params = dict(base)
    names, version = _names_in("j", judges, params), _version_ok("j", judges, params)
    cell = "CASE WHEN j.value >= 0.5 THEN 2 ELSE 0 END + CASE WHEN r.value >= 0.5 THEN 1 ELSE 0 END"
    # Live votes (their partial index scores_live_ratings) and the judges' scores of those turns.
    for d, model, tags, name, c, n in db.execute(
        text(
            f"""SELECT {day}, {select}, j.name, {cell}, COUNT(*)
                FROM traces t JOIN scores r ON r.trace_id = t.id JOIN scores j ON j.trace_id = t.id
                WHERE {where} AND r.name = '{RATING_NAME}' AND r.source = 'user' AND r.deleted = 0
                  AND r.value IS NOT NULL AND {names} AND j.source = 'EVAL' AND j.deleted = 0
                  AND j.value IS NOT NULL AND {version}
                GROUP BY {group}, j.name, {cell}"""
        ),
        params,
    ):
        part(d).thumbs.setdefault((model, tags, name), [0, 0, 0, 0])[int(c)] += int(n)
    params = dict(base)
    names, version = _names_in("l", judges, params), _version_ok("j", judges, params)
    # Reviewer labels (literals: as the partial index scores_labels reads them) on turns of the
    # random calibration sample, each with the judge's current-version score on that turn, if
    # any. From the range's turns (CROSS JOIN: SQLite keeps that order) to their labels: the
    # partial days are a few turns, and a kept day is read once.
    for d, model, tags, name, trace_id, label, lu, judge, ju in db.execute(
        text(
            f"""SELECT {day}, {select}, l.name, l.trace_id, l.value, l.updated, j.value, j.updated
                FROM traces t CROSS JOIN scores l
                     LEFT JOIN scores j ON j.trace_id = l.trace_id AND j.name = l.name AND j.source = 'EVAL'
                          AND j.deleted = 0 AND j.value IS NOT NULL AND {version}
                WHERE {where}
                  AND EXISTS (SELECT 1 FROM review_items i WHERE i.trace_id = t.id AND i.calibration = 1)
                  AND l.trace_id = t.id AND l.scored_by = '{BY_REVIEWER}' AND l.deleted = 0 AND {names}
                  AND l.value IS NOT NULL"""
        ),
        params,
    ):
        labels = part(d).labels.setdefault((model, tags, name), {})
        order = (str(lu or ""), str(ju or ""))
        known = labels.get(trace_id)
        if known is None or order > known[0]:
            labels[trace_id] = (order, None if judge is None else float(judge), float(label))
    return parts


_DAYS: OrderedDict[tuple[Any, ...], tuple[tuple[int, int], _Part]] = OrderedDict()


def forget_cached() -> None:
    """Drop every kept day and verdict (tests; a store replaced under the same URL)."""
    with _LOCK:
        _DAYS.clear()
        _VERDICTS.clear()
        _CHECKED.clear()
        _KAPPAS.clear()


def _whole_days(
    db: Connection,
    store: Store,
    judges: Sequence[Evaluator],
    first: int,
    end: int,
    calibration: Mapping[int, int],
) -> list[_Part]:
    """The parts of days [first, end), kept ones where the day has not changed since."""
    versions = {
        int(d): int(v)
        for d, v in db.execute(
            text("SELECT day, version FROM dashboard_changes WHERE day >= :a AND day < :b"),
            {"a": first, "b": end},
        )
    }
    signature = tuple((e.name, e.version) for e in judges)
    out: list[_Part] = []
    stale: list[int] = []
    with _LOCK:
        for d in range(first, end):
            known = _DAYS.get((store.url, signature, d))
            if known is not None and known[0] == (versions.get(d, 0), calibration.get(d, 0)):
                _DAYS.move_to_end((store.url, signature, d))
                out.append(known[1])
            else:
                stale.append(d)
    everything = Checked(0, 0, None, None, None, None)
    for lo, hi in _spans(stale):
        found = _read_parts(db, judges, everything, lo * DAY_S, hi * DAY_S, by_group=True)
        with _LOCK:
            for d in range(lo, hi):
                part = found.get(d, _Part(filtered=False))
                _DAYS[(store.url, signature, d)] = ((versions.get(d, 0), calibration.get(d, 0)), part)
                out.append(part)
            while len(_DAYS) > _CACHED_DAYS:
                _DAYS.popitem(last=False)
    return out


def _spans(days: list[int]) -> Iterable[tuple[int, int]]:
    """Sorted day numbers as [lo, hi) runs of consecutive days."""
    runs: list[list[int]] = []
    for d in days:
        if runs and d == runs[-1][1]:
            runs[-1][1] = d + 1
        else:
            runs.append([d, d + 1])
    return [(lo, hi) for lo, hi in runs]


_RANK = "MAX(CASE i.state WHEN 'done' THEN 3 WHEN 'skipped' THEN 1 ELSE 2 END)"


def _sample(db: Connection, checked: Checked) -> tuple[Sample, dict[int, int]]:
    """The calibration sample's turns of the filtered range by state (a turn in two sample queues
    once: reviewed if either item is done, then waiting, then skipped), and every day's count of
    sample turns (what a kept day's figures depend on besides its scores: items are added
    without a score changing)."""
    where, params = where_turns(checked, checked.since, checked.until, all_filters=False)
    wanted = _filter_sql(checked, params)
    day = day_sql(db.dialect.name)
    ranks = {1: 0, 2: 0, 3: 0}
    per_day: dict[int, int] = {}
    # From the sample's items (their partial index) to their turns (CROSS JOIN: SQLite keeps
    # that order instead of walking every turn of the range).
    for d, chosen, rank, n in db.execute(
        text(
            f"""SELECT day, chosen, rank, COUNT(*) FROM (
                    SELECT i.trace_id AS trace_id, {day} AS day,
                           CASE WHEN {wanted} THEN 1 ELSE 0 END AS chosen, {_RANK} AS rank
                    FROM review_items i CROSS JOIN traces t
                    WHERE i.calibration = 1 AND t.id = i.trace_id AND {where}
                    GROUP BY i.trace_id, {day}, CASE WHEN {wanted} THEN 1 ELSE 0 END
                ) x GROUP BY day, chosen, rank"""
        ),
        params,
    ):
        per_day[int(d)] = per_day.get(int(d), 0) + int(n)
        if int(chosen):
            ranks[int(rank)] = ranks.get(int(rank), 0) + int(n)
    sample = Sample(drawn=sum(ranks.values()), reviewed=ranks[3], waiting=ranks[2], skipped=ranks[1])
    return sample, per_day


@dataclass
class _Found:
    values: dict[str, Values] = field(default_factory=dict)
    thumbs: dict[str, list[int]] = field(default_factory=dict)
    pairs: dict[str, list[tuple[str, float | None, float]]] = field(default_factory=dict)


def _combine(parts: Iterable[_Part], checked: Checked) -> _Found:
    """The parts' figures per judge, for the turns of the model and tag filters."""
    tag_lists: dict[Any, tuple[str, ...]] = {}
    unfiltered = checked.model is None and checked.tag is None

    def wanted(part: _Part, model: Any, tags: Any) -> bool:
        if part.filtered or unfiltered:
            return True
        if checked.model is not None and model != checked.model:
            return False
        if checked.tag is not None:
            if tags not in tag_lists:
                tag_lists[tags] = tag_list(tags)
            return checked.tag in tag_lists[tags]
        return True

    values: dict[str, list[Values]] = {}
    found = _Found()
    for part in parts:
        if part.filtered or unfiltered:
            for name, arrays in part.totals.items():
                values.setdefault(name, []).append(arrays)
        else:
            for (model, tags, name), arrays in part.values.items():
                if wanted(part, model, tags):
                    values.setdefault(name, []).append(arrays)
        for (model, tags, name), cells in part.thumbs.items():
            if wanted(part, model, tags):
                total = found.thumbs.setdefault(name, [0, 0, 0, 0])
                for i, n in enumerate(cells):
                    total[i] += n
        for (model, tags, name), labels in part.labels.items():
            if wanted(part, model, tags):
                found.pairs.setdefault(name, []).extend(
                    (trace_id, judge, label) for trace_id, (_, judge, label) in labels.items()
                )
    found.values = {
        name: (np.concatenate([v for v, _ in arrays]), np.concatenate([c for _, c in arrays]))
        for name, arrays in values.items()
    }
    return found


def _turn_figures(
    db: Connection, store: Store, judges: Sequence[Evaluator], checked: Checked
) -> tuple[_Found, Sample]:
    """The turn judges' figures over the filtered turns: whole days kept in memory that have not
    changed since, the rest from the rows."""
    sample, calibration = _sample(db, checked)
    if not judges:
        return _Found(), sample
    # Two subqueries: each is one step down the index (one query with both reads every row).
    span = db.execute(
        text("SELECT (SELECT MIN(start_time) FROM traces), (SELECT MAX(start_time) FROM traces)")
    ).first()
    if span is None or span[0] is None:
        return _Found(), sample
    # No day before the first turn's or after the last turn's (an "all time" range is not a
    # million empty days); whole days, so that those two can be kept too.
    since = max(checked.since, math.floor(float(span[0]) / DAY_S) * DAY_S)
    until = min(checked.until, (math.floor(float(span[1]) / DAY_S) + 1) * DAY_S)
    if since >= until:
        return _Found(), sample
    parts: list[_Part] = []
    first, end = math.ceil(since / DAY_S), math.floor(until / DAY_S)
    if checked.user_id is not None or checked.session_id is not None or first >= end:
        parts.extend(_read_parts(db, judges, checked, since, until, by_group=False).values())  # few turns
    else:
        parts.extend(_read_parts(db, judges, checked, since, first * DAY_S, by_group=False).values())
        parts.extend(_whole_days(db, store, judges, first, end, calibration))
        parts.extend(_read_parts(db, judges, checked, end * DAY_S, until, by_group=False).values())
    return _combine(parts, checked), sample


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _conversation_values(db: Connection, judges: Sequence[Evaluator], checked: Checked) -> dict[str, Values]:
    """The conversation judges' latest current-version score per session, of the scores written
    in the range (as the overview dates them), user and session filters applied: the values of
    every score grouped in the database, then corrected for the few sessions judged again."""
    params: dict[str, Any] = {"since": _iso(checked.since), "until": _iso(checked.until)}
    names, version = _names_in("s", judges, params), _version_ok("s", judges, params)
    where = f"""s.trace_id = '' AND {names} AND s.source = 'EVAL' AND s.deleted = 0 AND s.value IS NOT NULL
                AND s.created >= :since AND s.created < :until AND {version}"""
    for column in ("user_id", "session_id"):
        value = getattr(checked, column)
        if value is not None:
            where += f" AND s.{column} = :{column}"
            params[column] = value
    counts: dict[str, dict[float, int]] = {}
    for name, value, n in db.execute(
        text(f"SELECT s.name, s.value, COUNT(*) FROM scores s WHERE {where} GROUP BY s.name, s.value"), params
    ):
        counts.setdefault(name, {})[float(value)] = int(n)
    # Sessions judged again (a conversation resumed): usually none, so their rows are read only
    # when there are some.
    again = [
        (name, session)
        for name, session in db.execute(
            text(
                f"""SELECT s.name, s.session_id FROM scores s WHERE {where}
                    GROUP BY s.name, s.session_id HAVING COUNT(*) > 1"""
            ),
            params,
        )
    ]
    latest: dict[tuple[str, str], tuple[str, float]] = {}
    for start in range(0, len(again), 200):
        chunk = again[start : start + 200]
        sessions = {f"again{i}": session for i, (_, session) in enumerate(chunk)}
        for name, session, value, updated in db.execute(
            text(
                f"""SELECT s.name, s.session_id, s.value, s.updated FROM scores s
                    WHERE {where} AND s.session_id IN ({", ".join(f":{k}" for k in sessions)})"""
            ),
            {**params, **sessions},
        ):
            if (name, session) not in chunk:
                continue
            # Every score of a session judged again out of the counts, then its latest back in.
            of = counts.setdefault(name, {})
            of[float(value)] = of.get(float(value), 0) - 1
            key = (name, session)
            if key not in latest or str(updated or "") > latest[key][0]:
                latest[key] = (str(updated or ""), float(value))
    for (name, _), (_, value) in latest.items():
        counts[name][value] = counts[name].get(value, 0) + 1
    return _arrays({name: {v: n for v, n in c.items() if n > 0} for name, c in counts.items()})


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


_KAPPAS: OrderedDict[tuple[Any, ...], Measure] = OrderedDict()


def _thumbs(cells: list[int] | None, thresholds: Thresholds) -> Thumbs:
    """The like rate and the judge's kappa against the thumbs (kept per table: its bootstrap
    over 10,000 votes costs more than reading them)."""
    if not cells:
        return Thumbs()
    table = ((cells[0], cells[1]), (cells[2], cells[3]))
    key = (table, thresholds)
    with _LOCK:
        kappa = _KAPPAS.get(key)
    if kappa is None:
        pairs = [(j, u) for j in (0, 1) for u in (0, 1) for _ in range(table[j][u])]
        kappa = cohen_kappa(pairs, categories=(0, 1), thresholds=thresholds)
        with _LOCK:
            _KAPPAS[key] = kappa
            while len(_KAPPAS) > _CACHED_VERDICTS:
                _KAPPAS.popitem(last=False)
    return Thumbs(table, kappa)


def _quality(
    e: Evaluator,
    values: Values,
    thumbs: Thumbs | None,
    pairs: Sequence[tuple[str, float | None, float]],
    min_reviewed: int,
) -> Quality:
    judge_all = np.repeat(values[0], values[1]).astype(float)
    judged = len(judge_all)
    judge_mean = float(judge_all.mean()) if judged else None
    if e.data_type == CATEGORICAL:
        return Quality(judged, None, None, None, note="Categories have no mean: agreement only.")
    if e.target == CONVERSATION:
        return Quality(
            judged, judge_mean, None, None,
            note="The random calibration sample draws turns, not conversations, so a conversation "
            "judge has no corrected estimate.",
        )  # fmt: skip
    ordered = sorted(pairs, key=lambda p: p[0])
    paired = [(j, h) for _, j, h in ordered if j is not None]
    unjudged = len(ordered) - len(paired)
    n = len(paired)
    need = max(2, min_reviewed)
    if n < need:
        note = (
            f"No corrected estimate yet: it needs at least {need:,} reviewed calibration turns that "
            f"this judge also scored; {n:,} so far."
        )
        return Quality(judged, judge_mean, thumbs, None, n, unjudged, note)
    if n > judged:  # only if the store changed between two reads
        note = "No corrected estimate: the store changed while it was read; refresh the page."
        return Quality(judged, judge_mean, thumbs, None, n, unjudged, note)
    estimate = ppi_mean(judge_all, [j for j, _ in paired], [h for _, h in paired], min_reviewed=min_reviewed)
    return Quality(judged, judge_mean, thumbs, estimate, n, unjudged, estimate.reason)


def judges_data(
    store: Store,
    evaluators: Iterable[Evaluator],
    filters: Filters | None = None,
    *,
    thresholds: Thresholds = DEFAULT,
    min_reviewed: int = MIN_REVIEWED,
) -> JudgesPanel:
    """Every figure of the Judges panel: trust from every label, quality over `filters` (the
    dashboard's range and filters; None: all time). ValueError for malformed filters (as
    dashboard.queries), StoreError when the store cannot be read."""
    started = time.perf_counter()
    filters = filters or ALL_TIME
    checked = check_filters(filters)
    judges = _judges(evaluators)
    turn_judges = [e for e in judges if e.target != CONVERSATION and e.data_type != CATEGORICAL]
    talk_judges = [e for e in judges if e.target == CONVERSATION and e.data_type != CATEGORICAL]
    # A conversation has no model or tag (the overview leaves them out under those filters too).
    filtered_out = bool(talk_judges) and (checked.model is not None or checked.tag is not None)
    # Each statement reads its own snapshot; the order (the sample's counts and the days'
    # versions before their rows) can only make a kept day look older than it is, never newer.
    with store.read() as db:
        found, sample = _turn_figures(db, store, turn_judges, checked)
        if talk_judges and not filtered_out:
            found.values.update(_conversation_values(db, talk_judges, checked))
    verdicts = _verdicts(store, judges, thresholds)
    rows = []
    for e in judges:
        verdict = verdicts[e.name]
        thumbs = None
        if e.target != CONVERSATION and e.data_type != CATEGORICAL:
            thumbs = _thumbs(found.thumbs.get(e.name), thresholds)
        quality = _quality(
            e, found.values.get(e.name, _NO_VALUES), thumbs, found.pairs.get(e.name, []), min_reviewed
        )
        rows.append(JudgeRow(e, verdict, quality))
    return JudgesPanel(
        rows, filters, sample, thresholds, min_reviewed, filtered_out, time.perf_counter() - started
    )


def judge_trust_labels(
    store: Store, evaluators: Iterable[Evaluator], *, thresholds: Thresholds = DEFAULT
) -> dict[str, tuple[bool, str]]:
    """{judge's score name: (verified, reason sentence)} for every LLM judge (code checks are
    not in it: they are never greyed). The gates' verdicts (evals.judge_trust), kept as above."""
    found = _verdicts(store, _judges(evaluators), thresholds)
    return {name: (v.verified, v.reason) for name, v in found.items()}


def trust_marker(name: str, labels: Mapping[str, tuple[bool, str]]) -> str:
    """The text to put after a judge's name in a chart or list: " (unverified)" for an
    unverified judge, "" otherwise (a verified judge, a code check, an unknown name). The
    overview's label of a demo judge's scores ("name (demo judge)") is its judge's name too."""
    demo = f" ({DEMO_LABEL})"
    found = labels.get(name)
    if found is None and name.endswith(demo):
        found = labels.get(name[: -len(demo)])
    return f" ({UNVERIFIED_MARK})" if found is not None and not found[0] else ""


# ----- HTML --------------------------------------------------------------------------------

JUDGES_CSS = """
<style>
.jp { font-size: 14px; line-height: 1.45; }
.jp p { margin: 4px 0; }
.jp table.jp-table { border-collapse: collapse; width: 100%; }
.jp table.jp-table th, .jp table.jp-table td { border-bottom: 1px solid rgba(127,127,127,.25);
  padding: 6px; text-align: left; vertical-align: top; }
.jp table.jp-table th { font-weight: 600; }
.jp .jp-name { font-weight: 600; word-break: break-word; }
.jp .jp-meta { font-size: 12px; color: #6b7280; word-break: break-word; }
.jp .jp-badge { display: inline-block; font-size: 12px; font-weight: 600; padding: 0 6px;
  border-radius: 4px; border: 1px solid currentColor; }
.jp .jp-badge.jp-ok { color: #15803d; }
.jp .jp-badge.jp-no { color: #6b7280; }
.jp tr.jp-unverified td { color: #6b7280; background: rgba(127,127,127,.07); }
.jp tr.jp-unverified td .jp-figure { opacity: .7; }
.jp tr.jp-unverified td.jp-keep { color: inherit; background: transparent; }
.jp .jp-drift { border-left: 3px solid #d97706; padding-left: 6px; }
.jp .jp-muted { color: #6b7280; font-size: 12px; }
.jp .jp-caution { color: #b45309; }
</style>
"""

_HEADERS = (
    "Judge",
    "Trust",
    "Agreement with reviewers (every label)",
    "Last window and drift",
    "Raw judge figure (this range)",
    "Users' thumbs (this range, for information)",
    "Corrected estimate (this range)",
)


def _text(value: Any, limit: int = NAME_CHARS) -> str:
    """Any value as inert HTML text, at most `limit` characters of it."""
    shown = "" if value is None else str(value)
    if len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return html.escape(visible_controls(shown), quote=True)


def _num(value: float | None, percent: bool) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value * 100:.1f}%" if percent else f"{value:.3f}"


def _measure(m: Measure, *, first: bool = False) -> str:
    """The figure as words: Cohen's kappa 0.62 (95% interval 0.41 to 0.80, n=40), or why there is
    none (`first`: it starts a sentence, so its name is capitalised)."""
    name = m.name[:1].upper() + m.name[1:] if first else m.name
    return f"{_text(name)} {_text(m.text(), REASON_CHARS)}"


def _agreement_cells(a: Agreement | None, window: int) -> tuple[str, str]:
    """(every label, last window and drift) of a judge against reviewers."""
    if a is None:
        nothing = '<p class="jp-muted">No agreement could be computed.</p>'
        return nothing, nothing
    o = a.overall
    overall = f'<p class="jp-figure">{_measure(o, first=True)}.</p>'
    if a.data_type == NUMERIC and o.bias is not None:
        overall += f'<p class="jp-figure jp-muted">Mean difference, judge minus reviewer: {o.bias:+.3f}.</p>'
    if a.secondary is not None and a.secondary.value is not None:
        overall += f'<p class="jp-figure jp-muted">{_measure(a.secondary, first=True)}.</p>'
    if a.last is None:
        last = (
            f'<p class="jp-muted">The last window needs more than {_plural(window, "label")}; '
            f"there {'is' if o.n == 1 else 'are'} {o.n:,}.</p>"
        )
    else:
        last = f'<p class="jp-figure">Over the last {_plural(a.last.n, "label")}: {_measure(a.last)}.</p>'
    d = a.drift
    if d is not None and d.flagged:
        drop = "" if d.drop is None else f"Drop {d.drop:.2f}"
        if d.drop_low is not None and d.drop_high is not None:
            drop += f" (95% interval {d.drop_low:.2f} to {d.drop_high:.2f})"
        last += (
            f'<p class="jp-drift"><strong>Drift.</strong> {_text(d.sentence, REASON_CHARS)} '
            f"Previous window: {_measure(d.previous)}. Last window: {_measure(d.last)}. {drop}.</p>"
        )
    elif d is not None:
        last += f'<p class="jp-muted">{_text(d.sentence, REASON_CHARS)}</p>'
    elif a.drift_reason:
        last += f'<p class="jp-muted">Drift is not measured yet: {_text(a.drift_reason, REASON_CHARS)}.</p>'
    return overall, last


def _quality_cells(row: JudgeRow) -> tuple[str, str, str]:
    """(raw judge figure, users' thumbs, corrected estimate) of a judge over the range."""
    e, q = row.evaluator, row.quality
    what = "turn" if e.target != CONVERSATION else "conversation"
    if e.data_type == CATEGORICAL:
        note = '<p class="jp-muted">Categories have no mean or rate: this judge\'s agreement only.</p>'
        return note, note, note
    percent = e.data_type == BOOLEAN
    # Said in words too, beside the grey: an unverified judge's own figure is not to be believed.
    caveat = "" if row.verified else f"; this judge is {UNVERIFIED_MARK}"
    if q.judged == 0:
        raw = f'<p class="jp-muted">No {what} of this range was scored by this judge (current version).</p>'
    elif percent:
        raw = (
            f'<p class="jp-figure">True on {_num(q.judge_mean, True)} of '
            f"{_plural(q.judged, f'judged {what}')} (the judge's own verdicts, uncorrected{caveat}).</p>"
        )
    else:
        raw = (
            f'<p class="jp-figure">Mean {_num(q.judge_mean, False)} over '
            f"{_plural(q.judged, f'judged {what}')} (the judge's own scores, uncorrected{caveat}).</p>"
        )
    thumbs = _thumbs_cell(q.thumbs)
    est = q.estimate
    if est is None or est.estimate is None:
        corrected = f"<p>{_text(q.note or 'No corrected estimate.', REASON_CHARS)}</p>"
    else:
        kind = "Rate of true" if percent else "Mean"
        corrected = (
            f"<p><strong>{kind} {_num(est.estimate, percent)}</strong> (95% interval "
            f"{_num(est.low, percent)} to {_num(est.high, percent)}), from "
            f"{_plural(est.n, 'reviewed calibration turn')} (n) and {_plural(est.N, f'judged {what}')} "
            "(N), by prediction-powered inference (PPI++).</p>"
            '<p class="jp-muted">It rests on reviewers\' labels of a random sample of turns and holds '
            "whatever the judge's bias, verified or not.</p>"
        )
    if q.unjudged:
        corrected += (
            f'<p class="jp-muted">{_plural(q.unjudged, "reviewed calibration turn")} this judge did not '
            f"score (at its current version) {'is' if q.unjudged == 1 else 'are'} left out.</p>"
        )
    return raw, thumbs, corrected


def _thumbs_cell(t: Thumbs | None) -> str:
    if t is None:
        return '<p class="jp-muted">Thumbs rate turns, not conversations: nothing to compare.</p>'
    if t.rated == 0:
        return '<p class="jp-muted">No turn this judge scored in this range has a like or a dislike.</p>'
    low, high = t.interval
    out = (
        f"<p>Users liked {_num(t.rate, True)} (95% interval {_num(low, True)} to {_num(high, True)}) "
        f"of the {_plural(t.rated, 'rated turn')} this judge scored.</p>"
    )
    if t.agreement is not None:
        out += (
            '<p class="jp-figure">The judge against those thumbs (a score of 0.5 or more read as a like): '
            f"{_measure(t.agreement)}.</p>"
        )
    return out + (
        '<p class="jp-muted">Thumbs never verify a judge: they come mostly from unhappy users and rate '
        "the whole answer, not this judge's criterion.</p>"
    )


def _row_html(row: JudgeRow, panel: JudgesPanel) -> str:
    e = row.evaluator
    verified = row.verified
    status = (
        '<span class="jp-badge jp-ok">Verified</span>'
        if verified
        else '<span class="jp-badge jp-no">Unverified</span>'
    )
    kind = "conversations" if e.target == CONVERSATION else "turns"
    disabled = " · disabled" if not e.enabled else ""
    name = (
        f'<div class="jp-name">{_text(e.name)}</div>'
        f'<div class="jp-meta">{_text(e.data_type)} · judges {kind} · '
        f"version {_text(e.version)}{disabled}</div>"
        f"<div>{status}</div>"
    )
    reason = f"<p>{_text(row.reason, REASON_CHARS)}</p>"
    if not verified:
        reason += (
            '<p class="jp-muted">Its scores are greyed on this page, and gates and alerts ignore them '
            "until it is verified.</p>"
        )
    overall, last = _agreement_cells(row.reviewers, panel.thresholds.window)
    raw, thumbs, corrected = _quality_cells(row)
    cells = [
        ("jp-judge", name),
        ("jp-trust", reason),
        ("jp-agreement", overall),
        ("jp-last", last),
        ("jp-raw", raw),
        ("jp-thumbs", thumbs),
        ("jp-corrected jp-keep", corrected),
    ]
    klass = "jp-row jp-verified" if verified else "jp-row jp-unverified"
    return f'<tr class="{klass}">' + "".join(f'<td class="{c}">{body}</td>' for c, body in cells) + "</tr>"


def _range_sentence(f: Filters) -> str:
    if f.since <= 0 and f.until >= ALL_TIME.until:
        return "all time"
    start = datetime.fromtimestamp(max(0.0, f.since), UTC).strftime("%Y-%m-%d %H:%M")
    end = datetime.fromtimestamp(min(f.until, ALL_TIME.until), UTC).strftime("%Y-%m-%d %H:%M")
    extra = [
        f"{label} {_text(value)}"
        for label, value in (
            ("model", f.model),
            ("user", f.user_id),
            ("tag", f.tag),
            ("session", f.session_id),
        )
        if value
    ]
    return f"{start} to {end} UTC" + (f" ({', '.join(extra)})" if extra else "")


def _sample_html(panel: JudgesPanel) -> str:
    s = panel.sample
    if not s.drawn:
        out = (
            "<p>No turn of this range is in the random calibration sample, so there is no corrected "
            'estimate: a <code>kind = "sample"</code> rule in the evaluators file\'s [review] draws one.</p>'
        )
    else:
        out = (
            f"<p>The random calibration sample holds {_plural(s.drawn, 'turn')} of this range: "
            f"{s.reviewed:,} reviewed, {s.waiting:,} waiting in the review queue, {s.skipped:,} skipped.</p>"
        )
        if s.waiting:
            out += (
                '<p class="jp-muted">The corrected estimates use the reviewed turns only. The queue hands '
                "out the oldest first, so if a judge's errors changed lately, its interval may be off "
                "until the waiting turns are reviewed.</p>"
            )
        if s.skipped:
            out += (
                '<p class="jp-caution">Skipped turns are left out of the corrected estimates: if they '
                "differ from the others (the hard ones), the intervals are off by that much.</p>"
            )
    if panel.conversations_filtered_out:
        out += (
            '<p class="jp-muted">A conversation has no model or tag, so conversation judges\' figures of '
            "this range are left out under a model or tag filter.</p>"
        )
    return out


def judges_html(panel: JudgesPanel) -> str:
    """The panel as HTML for gr.HTML (its own <style>; every text escaped)."""
    if not panel.rows:
        return (
            f'{JUDGES_CSS}<div class="jp" id="dash-judges"><p>The evaluators file has no LLM judge, so '
            "there is nothing to verify. Code checks are code, not judges: they are not listed.</p></div>"
        )
    t = panel.thresholds
    intro = (
        f"<p>Each LLM judge against reviewers' labels. A judge is verified once it has at least "
        f"{t.min_labels} labels and the lower bound of its agreement's 95% interval reaches "
        f"{t.kappa_lower:.2f} (Cohen's kappa) or {t.correlation_lower:.2f} (Pearson's r), with no drift "
        f"between the last {t.window} labels and the {t.window} before. Agreement uses every label "
        f"whatever the time range; the other figures are for {_range_sentence(panel.filters)}. Code "
        "checks are code, not judges: they are not listed.</p>"
    )
    head = "".join(f"<th>{h}</th>" for h in _HEADERS)
    body = "".join(_row_html(r, panel) for r in panel.rows)
    return (
        f'{JUDGES_CSS}<div class="jp" id="dash-judges">{intro}{_sample_html(panel)}'
        f'<table class="jp-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    )


def judges_panel(
    store: Store,
    evaluators: Iterable[Evaluator],
    filters: Filters | None = None,
    *,
    thresholds: Thresholds = DEFAULT,
    min_reviewed: int = MIN_REVIEWED,
) -> str:
    """`judges_html(judges_data(...))`: the panel's HTML in one call."""
    return judges_html(
        judges_data(store, evaluators, filters, thresholds=thresholds, min_reviewed=min_reviewed)
    )
