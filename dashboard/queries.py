"""Every number the dashboard shows, fast on a store of 100,000 turns.

A chat turn is a row of `traces` that is neither a judge's own trace (tagged "evaluation") nor
an offline dataset run's (tagged "dataset"). The overview is built from *facts*: per UTC day,
model and tag list, the turns' counts, tokens, cost, every latency (percentiles are exact),
ratings, dislike reasons and judges' sums. Facts of a day that has ended are cached in the store
(`dashboard_days`) and recomputed only when the day changed: migration 010's triggers bump a
per-day counter (`dashboard_changes`) in the same transaction as any change to a trace or score of
that day, so a cached day is used only if nothing of it changed since it was computed. Today,
the partial days at the ends of the range, and user or session filters (few turns, by index)
are computed from the rows each time. Measured with `python -m bench.dashboard`: scanning 90
days of rows takes over a second on 2 cores; the cached days about a tenth of that.

Unknown is never zero: a turn whose cost is unknown (a model without a price) is left out of the
cost sum and counted next to it, and a sum with no known cost at all is None.

A rating is a person's vote (the `user-feedback` score with source "user"): like rates, rating
counts and ratings waiting for Langfuse never include a judge's score. Judges are counted apart,
by name, the bundled demo judge's scores (marked in their metadata) under their own label.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, TextClause, text
from statsmodels.stats.proportion import proportion_confint

from evals.dataset_run import list_runs
from feedback.store import Store
from feedback.votes import SCORE_NAME as RATING

__all__ = ["Filters", "dataset_runs", "filter_choices", "overview", "run_items", "worst_answers"]

DAY_S = 86400
HOUR_S = 3600
# The longest range read hour by hour when asked ("Last 24 hours" ends a minute from now); a
# longer one goes by the day whatever is asked (hours are never cached: always read from rows).
HOURLY_MAX_S = 25 * HOUR_S
DATASET_SCORE = "dataset-correct"  # evals.dataset_run.SCORE_NAME (importing it pulls the agent in)
NO_REASON = "no reason given"
TEXT_LIMIT = 2000  # characters of a question, answer, comment or reasoning returned
NAME_LIMIT = 200  # characters of a model, user, tag, evaluator or run name returned
CHOICES_LIMIT = 200
CHOICES_RECENT = 20_000  # filter choices are counted over this many latest turns
PER_DAY_LIMIT = 5000  # rows of (day, model) or (day, evaluator)
REASONS_LIMIT = 30
WORST_LIMIT = 200
RUNS_LIMIT = 200
RUN_ITEMS_LIMIT = 500
METADATA_LIMIT = 10_000  # a score's metadata read to find the demo-judge mark (the worker's is small)
FILTER_TEXT_LIMIT = 500  # a longer filter value matches nothing (the choices offered are shorter)
# The cached facts' layout: a change to what a fact holds or how turns are selected bumps it,
# so facts cached by an older version are recomputed, never misread.
FORMAT = "2"  # 2: ratings are people's votes only; demo judges' means apart

# The judges' own traces and the offline runs' are not chat turns. Tags are stored as a JSON
# list (json.dumps), so a tag is matched with its quotes: "evaluation" never matches
# "re-evaluation" nor a tag holding an escaped quote.
_CHAT = """(t.tags IS NULL OR (t.tags NOT LIKE '%"evaluation"%' AND t.tags NOT LIKE '%"dataset"%'))"""

# A rating is a person's vote: the `user-feedback` score a person wrote (source "user"). A judge's
# score is never one, whatever its name: like rates, rating counts and "not sent" counts are
# people's alone. (Written here against the table until feedback.store defines it for everyone.)
_RATING = f"s.name = '{RATING}' AND s.source = 'user'"

# A low judge score: below the middle of a NUMERIC (0 to 1) or BOOLEAN scale.
_LOW_JUDGE = f"s.source = 'EVAL' AND s.data_type IN ('NUMERIC', 'BOOLEAN') AND s.name <> '{DATASET_SCORE}'"

# A score the bundled demo judge wrote: the worker marks its metadata `"demo_judge": true` (JSON as
# json.dumps writes it). Scores written before that marker existed have none: taken as a judge's.
DEMO_KEY = "demo_judge"
DEMO_LABEL = "demo judge"
# The escaped colon keeps SQLAlchemy from reading ":true" as a bind parameter; COALESCE makes no
# metadata no mark (NOT of a comparison with NULL would drop the score).
_DEMO = """(COALESCE(s.metadata, '') LIKE '%"demo_judge": true%'
            OR COALESCE(s.metadata, '') LIKE '%"demo_judge"\\:true%')"""


@dataclass(frozen=True)
class Filters:
    """What the page asks for: a time range (epoch seconds, days are UTC) and optional filters."""

    since: float
    until: float
    model: str | None = None
    user_id: str | None = None
    tag: str | None = None
    session_id: str | None = None


# ----- helpers ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=128)
def _q(sql: str) -> TextClause:
    return text(sql)


def _fetch(db: Connection, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    return [dict(r) for r in db.execute(_q(sql), dict(params or {})).mappings()]


def _day(epoch: float) -> int:
    """The UTC day number (days since 1970-01-01), as migration 010's triggers compute it."""
    return int(epoch // DAY_S)


def _day_text(day: int) -> str:
    return datetime.fromtimestamp(day * DAY_S, UTC).date().isoformat()


def _bucket_text(index: int, size: int) -> str:
    """A bucket's start as the charts read it: the UTC date, or the date and hour."""
    if size == DAY_S:
        return _day_text(index)
    return datetime.fromtimestamp(index * size, UTC).strftime("%Y-%m-%d %H:00")


def _iso(epoch: float) -> str:
    # The format of scores.created (utc_now in feedback.store): ordered as text.
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _trim(value: Any, limit: int = TEXT_LIMIT) -> str | None:
    if value is None:
        return None
    value = str(value)
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _like_literal(value: str) -> str:
    """`value` as a LIKE pattern matching itself (escape character "!")."""
    return value.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def _epoch(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"The time range's {name} must be a number of seconds since 1970.") from None
    if not math.isfinite(number) or not 0 <= number < 1e11:
        raise ValueError(f"The time range's {name} must be a time between 1970 and the year 5000.")
    return number


def _text_filter(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"The {name} filter must be text.")
    return value


def _matchable(value: str | None) -> bool:
    """Whether a stored name could equal this filter value. A longer one is not sent to the
    database (nor cut: its first 500 characters would match a name it is not), and NUL or a
    lone surrogate cannot be in a stored name (Postgres and UTF-8 refuse them)."""
    if value is None:
        return True
    if len(value) > FILTER_TEXT_LIMIT or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class _Checked:
    since: float
    until: float
    model: str | None
    user_id: str | None
    tag: str | None
    session_id: str | None


def _check(f: Filters) -> _Checked:
    """The filters as the queries use them; a clear ValueError for anything malformed."""
    checked = _Checked(
        since=_epoch(f.since, "start"),
        until=_epoch(f.until, "end"),
        model=_text_filter(f.model, "model"),
        user_id=_text_filter(f.user_id, "user"),
        tag=_text_filter(f.tag, "tag"),
        session_id=_text_filter(f.session_id, "session"),
    )
    texts = (checked.model, checked.user_id, checked.tag, checked.session_id)
    if not all(_matchable(v) for v in texts):
        # Nothing can match: an empty range, and no filter text goes to the database.
        return _Checked(checked.since, checked.since, None, None, None, None)
    return checked


def _where(f: _Checked, since: float, until: float, *, all_filters: bool) -> tuple[str, dict[str, Any]]:
    """The WHERE clause selecting chat turns (traces aliased t) in [since, until), filtered by
    user and session (and by model and tag with all_filters), and its parameters."""
    parts = ["t.start_time >= :since", "t.start_time < :until", _CHAT]
    params: dict[str, Any] = {"since": since, "until": until}
    columns = ("user_id", "session_id", "model") if all_filters else ("user_id", "session_id")
    for column in columns:
        value = getattr(f, column)
        if value is not None:
            parts.append(f"t.{column} = :{column}")
            params[column] = value
    if all_filters and f.tag is not None:
        parts.append("t.tags LIKE :tag ESCAPE '!'")
        params["tag"] = "%" + _like_literal(json.dumps(f.tag)) + "%"
    return " AND ".join(parts), params


def _int(value: Any) -> int:
    return int(value or 0)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def wilson(successes: int, n: int) -> tuple[float | None, float | None]:
    """The 95% Wilson interval of a proportion (None, None with no observation)."""
    if not n:
        return None, None
    low, high = proportion_confint(successes, n, alpha=0.05, method="wilson")
    return float(low), float(high)


def percentiles(chunks: list[np.ndarray], qs: tuple[int, ...] = (50, 95)) -> list[float | None]:
    """Nearest rank: for each q, the smallest value with at least q% of the values at or below it.

    numpy selects the ranks in linear time without holding the GIL, so a chat thread of the same
    process is not held up while 100,000 latencies are looked at.
    """
    values = chunks[0] if len(chunks) == 1 else np.concatenate(chunks) if chunks else np.empty(0)
    n = len(values)
    if not n:
        return [None for _ in qs]
    ranks = [max(0, math.ceil(n * q / 100) - 1) for q in qs]
    chosen = np.partition(values, sorted(set(ranks)))
    return [float(chosen[k]) for k in ranks]


def _tags(raw: Any) -> tuple[str, ...]:
    try:
        tags = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return ()
    if not isinstance(tags, list):
        return ()
    return tuple(str(t) for t in tags)


# ----- facts -----------------------------------------------------------------------------


@dataclass
class Fact:
    """The chat turns of one UTC day, model and tag list (the tags as stored: JSON text)."""

    turns: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None  # the sum over the turns whose cost is known
    cost_unknown: int = 0
    latencies: list[np.ndarray] = field(default_factory=list)  # chunks, in no order
    likes: int = 0
    dislikes: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # dislike reason ("" for none): count
    judges: dict[str, list[float]] = field(default_factory=dict)  # evaluator: [sum, count]

    def add(self, other: Fact) -> None:
        self.turns += other.turns
        self.errors += other.errors
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        if other.cost is not None:
            self.cost = (self.cost or 0.0) + other.cost
        self.cost_unknown += other.cost_unknown
        self.latencies.extend(other.latencies)
        self.likes += other.likes
        self.dislikes += other.dislikes
        for reason, n in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + n
        for name, (total, n) in other.judges.items():
            entry = self.judges.setdefault(name, [0.0, 0])
            entry[0] += total
            entry[1] += n

    def encode(self) -> list[Any]:
        """For the cache: JSON, with the latencies as little-endian doubles in base64 (90 days
        of latencies as JSON numbers took 30 ms to read; as bytes, well under one)."""
        latencies = np.concatenate(self.latencies) if self.latencies else np.empty(0)
        raw = base64.b64encode(latencies.astype("<f8").tobytes()).decode("ascii")
        return [
            self.turns, self.errors, self.prompt_tokens, self.completion_tokens, self.cost,
            self.cost_unknown, raw, self.likes, self.dislikes, self.reasons, self.judges,
        ]  # fmt: skip

    @classmethod
    def decode(cls, data: list[Any]) -> Fact:
        latencies = np.frombuffer(base64.b64decode(data[6]), dtype="<f8")
        return cls(*data[:6], [latencies], *data[7:])


Key = tuple[int, str | None, str | None]  # (day, model, tags)


def _day_sql(dialect: str, size: int = DAY_S) -> str:
    """The UTC day (or hour, size 3600) number of t.start_time in SQL, as `_day` and migration
    010's triggers compute it: SQLite's CAST truncates (it has no FLOOR without its math
    extension), Postgres' rounds."""
    if dialect == "postgresql":
        return f"CAST(FLOOR(t.start_time / {int(size)}) AS INTEGER)"
    return f"CAST(t.start_time / {int(size)} AS INTEGER)"


def _latency_list_sql(dialect: str) -> str:
    """A group's latencies as one comma-separated text (exact: the store keeps 3 decimals, within
    SQLite's 15 digits; Postgres writes the shortest exact text)."""
    if dialect == "postgresql":
        return "STRING_AGG(CAST(t.latency_ms AS TEXT), ',')"
    return "GROUP_CONCAT(t.latency_ms)"


def _live_facts(
    db: Connection, f: _Checked, since: float, until: float, size: int = DAY_S
) -> dict[Key, Fact]:
    """The facts of [since, until) from the rows (user and session filters applied), per UTC day
    (or per hour with size 3600: the key's first part is then the hour's number).

    The database groups the rows (a day's turns come back as a few groups, their latencies as
    one text each): Python work per turn held a chat thread of the same process up on the GIL.
    """
    where, params = _where(f, since, until, all_filters=False)
    day = _day_sql(db.dialect.name, size)
    facts: dict[Key, Fact] = {}
    for r in db.execute(
        _q(
            f"""SELECT {day}, t.model, t.tags, COUNT(*),
                   SUM(CASE WHEN t.status = 'ERROR' THEN 1 ELSE 0 END),
                   SUM(t.prompt_tokens), SUM(t.completion_tokens), SUM(t.cost),
                   SUM(CASE WHEN t.cost IS NULL THEN 1 ELSE 0 END), {_latency_list_sql(db.dialect.name)}
                FROM traces t WHERE {where}
                GROUP BY 1, 2, 3"""
        ),
        params,
    ):
        facts[(int(r[0]), r[1], r[2])] = Fact(
            turns=int(r[3]),
            errors=_int(r[4]),
            prompt_tokens=_int(r[5]),
            completion_tokens=_int(r[6]),
            cost=_float(r[7]),
            cost_unknown=_int(r[8]),
            latencies=[np.array(r[9].split(","), dtype="<f8")] if r[9] else [],
        )
    for d, model, tags, name, rating, demo, high, reason, total, n in db.execute(
        _q(
            f"""SELECT {day}, t.model, t.tags, s.name, CASE WHEN {_RATING} THEN 1 ELSE 0 END,
                   CASE WHEN {_DEMO} THEN 1 ELSE 0 END, CASE WHEN s.value >= 0.5 THEN 1 ELSE 0 END,
                   CASE WHEN {_RATING} AND s.value < 0.5 THEN s.reason END,
                   SUM(s.value), COUNT(*)
                FROM scores s JOIN traces t ON t.id = s.trace_id
                WHERE s.deleted = 0 AND s.value IS NOT NULL
                  AND (({_RATING}) OR (s.source = 'EVAL' AND s.name <> '{DATASET_SCORE}'))
                  AND {where}
                GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"""
        ),
        params,
    ):
        x = facts.get((int(d), model, tags))
        if x is None:
            continue  # a score on a turn the first query did not see yet (written in between)
        n = int(n)
        if rating:
            if high:
                x.likes += n
            else:
                x.dislikes += n
                label = (reason or "").strip()[:NAME_LIMIT]
                x.reasons[label] = x.reasons.get(label, 0) + n
            continue
        entry = x.judges.setdefault(judge_label(str(name), bool(demo)), [0.0, 0])
        entry[0] += float(total)
        entry[1] += n
    return facts


def judge_label(name: str, demo: bool) -> str:
    """An evaluator's name as shown, its scores by the demo judge apart and said so."""
    name = name[:NAME_LIMIT]
    return f"{name} ({DEMO_LABEL})" if demo else name


def is_demo(metadata: Any) -> bool:
    """Whether a score's metadata (JSON text) marks it as the demo judge's; none says no."""
    if not metadata:
        return False
    try:
        data = json.loads(metadata) if isinstance(metadata, str) else metadata
    except ValueError:
        return False
    return isinstance(data, dict) and data.get(DEMO_KEY) is True


# Days decoded from the cache, per store: (store url, day) -> (version, facts). A refresh reads
# only the days' versions and decodes a day again only when its version moved.
_DECODED: dict[tuple[str, int], tuple[int, dict[Key, Fact]]] = {}
_DECODED_DAYS = 800  # about 10 KB each on a busy day
_DECODED_LOCK = threading.Lock()  # Gradio runs handlers in several threads


def _remember(url: str, day: int, version: int, facts: dict[Key, Fact]) -> None:
    with _DECODED_LOCK:
        while len(_DECODED) >= _DECODED_DAYS:
            _DECODED.pop(next(iter(_DECODED)))
        _DECODED[(url, day)] = (version, facts)


def _recall(url: str, day: int, version: int) -> dict[Key, Fact] | None:
    with _DECODED_LOCK:
        known = _DECODED.get((url, day))
    return known[1] if known is not None and known[0] == version else None


def _cached_facts(store: Store, first: int, end: int) -> dict[Key, Fact]:
    """The facts of days [first, end) (days that have ended), from the cache where it is current."""
    span = {"a": first, "b": end}
    facts: dict[Key, Fact] = {}
    with store.read() as db:
        changes = {
            int(r["day"]): int(r["version"])
            for r in _fetch(
                db, "SELECT day, version FROM dashboard_changes WHERE day >= :a AND day < :b", span
            )
        }
        fresh: set[int] = set()
        load: list[int] = []
        for r in _fetch(
            db, "SELECT day, version, format FROM dashboard_days WHERE day >= :a AND day < :b", span
        ):
            day, version = int(r["day"]), int(r["version"])
            if r["format"] != FORMAT or version != changes.get(day, 0):
                continue
            fresh.add(day)
            known = _recall(store.url, day, version)
            if known is not None:
                facts.update(known)
            else:
                load.append(day)
        for lo, hi in _runs(sorted(load)):
            for r in _fetch(
                db,
                "SELECT day, version, facts FROM dashboard_days WHERE day >= :a AND day < :b",
                {"a": lo, "b": hi},
            ):
                day = int(r["day"])
                decoded = {
                    (day, model, tags): Fact.decode(data) for model, tags, data in json.loads(r["facts"])
                }
                _remember(store.url, day, int(r["version"]), decoded)
                facts.update(decoded)
        stale = [d for d in range(first, end) if d not in fresh]
        computed: dict[int, dict[Key, Fact]] = {d: {} for d in stale}
        everything = _Checked(0, 0, None, None, None, None)
        for lo, hi in _runs(stale):
            for key, fact in _live_facts(db, everything, lo * DAY_S, hi * DAY_S).items():
                computed[key[0]][key] = fact
                facts[key] = fact
    if stale:
        _save(store, {d: (changes.get(d, 0), computed[d]) for d in stale})
    return facts


def _runs(days: list[int]) -> Iterable[tuple[int, int]]:
    """Sorted day numbers as [lo, hi) runs of consecutive days."""
    start = prev = None
    for d in days:
        if start is None:
            start = prev = d
        elif d == prev + 1:
            prev = d
        else:
            yield start, prev + 1
            start = prev = d
    if start is not None:
        yield start, prev + 1


def _save(store: Store, days: Mapping[int, tuple[int, dict[Key, Fact]]]) -> None:
    """Cache computed days; never over facts computed from a later version of the day."""
    now = time.time()
    rows = []
    for day, (version, found) in days.items():
        data = [[model, tags, fact.encode()] for (_, model, tags), fact in found.items()]
        rows.append({"day": day, "version": version, "format": FORMAT, "facts": json.dumps(data), "at": now})
        _remember(store.url, day, version, found)
    # Small transactions: on SQLite each holds the chat's writers off while it runs.
    for start in range(0, len(rows), 10):
        with store.transaction() as db:
            db.execute(
                _q(
                    """INSERT INTO dashboard_days (day, version, format, facts, computed)
                       VALUES (:day, :version, :format, :facts, :at)
                       ON CONFLICT (day) DO UPDATE SET version = excluded.version,
                           format = excluded.format, facts = excluded.facts, computed = excluded.computed
                       WHERE dashboard_days.version <= excluded.version"""
                ),
                rows[start : start + 10],
            )


def _facts(store: Store, f: _Checked, now: float, size: int = DAY_S) -> dict[Key, Fact]:
    """The facts of the filtered range: ended whole days from the cache, the rest from rows;
    by the hour (size 3600) all from the rows (a short range: a day's turns at most)."""
    facts: dict[Key, Fact] = {}

    def merge(found: Mapping[Key, Fact]) -> None:
        # Facts may be shared with the decoded-days memo: combined into a new one, never changed.
        for key, fact in found.items():
            if key in facts:
                combined = Fact()
                combined.add(facts[key])
                combined.add(fact)
                facts[key] = combined
            else:
                facts[key] = fact

    def live(since: float, until: float) -> None:
        if since < until:
            with store.read() as db:
                merge(_live_facts(db, f, since, until, size))

    if size != DAY_S or f.user_id is not None or f.session_id is not None:
        live(f.since, f.until)  # few turns, found by index: no cache needed
        return facts
    first = math.ceil(f.since / DAY_S)
    end = min(_day(f.until), _day(now))  # whole days in range that have ended
    row = store.row("SELECT MIN(start_time) AS t FROM traces")
    if row is None or row["t"] is None:
        return facts
    first = max(first, _day(float(row["t"])))  # no day before the first trace is cached
    if first >= end:
        live(f.since, f.until)
        return facts
    live(f.since, min(first * DAY_S, f.until))
    merge(_cached_facts(store, first, end))
    live(max(end * DAY_S, f.since), f.until)
    return facts


# ----- overview --------------------------------------------------------------------------


def overview(store: Store, f: Filters, *, hourly: bool = False) -> dict[str, Any]:
    """Totals, the figures per day and model, dislike reasons and judges' means per day.

    With `hourly` (the page asks for it for ranges of a day: one day would be a single point)
    they are grouped by the hour instead, if the range is HOURLY_MAX_S or shorter: `bucket` says
    which, and each row's "day" is then its UTC hour ("2024-03-01 13:00").
    """
    checked = _check(f)
    hourly = hourly and checked.until - checked.since <= HOURLY_MAX_S
    size = HOUR_S if hourly else DAY_S
    facts = _facts(store, checked, time.time(), size)
    tag_lists: dict[str | None, tuple[str, ...]] = {}
    by_day_model: dict[tuple[int, str | None], Fact] = {}
    judges: dict[tuple[int, str], list[float]] = {}
    total = Fact()
    for (day, model, tags), fact in facts.items():
        if checked.model is not None and model != checked.model:
            continue
        if checked.tag is not None:
            if tags not in tag_lists:
                tag_lists[tags] = _tags(tags)
            if checked.tag not in tag_lists[tags]:
                continue
        by_day_model.setdefault((day, model), Fact()).add(fact)
        for name, (value_sum, n) in fact.judges.items():
            entry = judges.setdefault((day, name), [0.0, 0])
            entry[0] += value_sum
            entry[1] += n
    for key, entry in _conversation_judges(store, checked, size).items():
        judges.setdefault(key, [0.0, 0])
        judges[key][0] += entry[0]
        judges[key][1] += entry[1]

    per_day = []
    for fact in by_day_model.values():
        total.add(fact)
    for (day, model), fact in sorted(by_day_model.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        p50, p95 = percentiles(fact.latencies)
        known = fact.turns - fact.cost_unknown
        per_day.append(
            {
                "day": _bucket_text(day, size),
                "model": _trim(model, NAME_LIMIT),
                "turns": fact.turns,
                "errors": fact.errors,
                "error_rate": _rate(fact.errors, fact.turns),
                "likes": fact.likes,
                "dislikes": fact.dislikes,
                "prompt_tokens": fact.prompt_tokens,
                "completion_tokens": fact.completion_tokens,
                "tokens": fact.prompt_tokens + fact.completion_tokens,
                "cost": fact.cost,
                "cost_per_turn": fact.cost / known if fact.cost is not None and known else None,
                "cost_unknown_turns": fact.cost_unknown,
                "latency_p50_ms": p50,
                "latency_p95_ms": p95,
            }
        )
    totals = _totals(total)
    totals.update(_outbox_waiting(store))
    totals.update(_backlog(store))
    reasons = sorted(total.reasons.items(), key=lambda kv: (-kv[1], kv[0] or NO_REASON))
    return {
        "filters": {"since": checked.since, "until": checked.until},
        "bucket": "hour" if hourly else "day",
        "totals": totals,
        "per_day": per_day[:PER_DAY_LIMIT],
        "dislike_reasons": [{"reason": r or NO_REASON, "count": n} for r, n in reasons[:REASONS_LIMIT]],
        "evaluators": [
            {"day": _bucket_text(day, size), "evaluator": name, "mean": value_sum / n, "n": int(n)}
            for (day, name), (value_sum, n) in sorted(judges.items())
            if n
        ][:PER_DAY_LIMIT],
    }


def _totals(total: Fact) -> dict[str, Any]:
    ratings = total.likes + total.dislikes
    low, high = wilson(total.likes, ratings)
    p50, p95 = percentiles(total.latencies)
    tokens = total.prompt_tokens + total.completion_tokens
    known = total.turns - total.cost_unknown
    return {
        "turns": total.turns,
        "errors": total.errors,
        "error_rate": _rate(total.errors, total.turns),
        "ratings": ratings,
        "likes": total.likes,
        "dislikes": total.dislikes,
        "like_rate": _rate(total.likes, ratings),
        "like_rate_low": low,
        "like_rate_high": high,
        "latency_p50_ms": p50,
        "latency_p95_ms": p95,
        "prompt_tokens": total.prompt_tokens,
        "completion_tokens": total.completion_tokens,
        "tokens": tokens,
        "tokens_per_turn": tokens / total.turns if total.turns else None,
        "cost": total.cost,
        "cost_per_turn": total.cost / known if total.cost is not None and known else None,
        "cost_known_turns": known,
        "cost_unknown_turns": total.cost_unknown,
    }


def _conversation_judges(store: Store, f: _Checked, size: int = DAY_S) -> dict[tuple[int, str], list[float]]:
    """Judges of whole conversations (scores with no trace), by the day (or hour) they were
    written; only with no model or tag filter (a conversation has neither)."""
    if f.model is not None or f.tag is not None:
        return {}
    # scores.created is ISO text ("2024-03-01T13:05:00.123+00:00"): its date, or date and hour.
    chars, rest = (10, "T00:00:00+00:00") if size == DAY_S else (13, ":00:00+00:00")
    where = ["s.created >= :since", "s.created < :until"]
    params: dict[str, Any] = {"since": _iso(f.since), "until": _iso(f.until)}
    for column in ("user_id", "session_id"):
        value = getattr(f, column)
        if value is not None:
            where.append(f"s.{column} = :{column}")
            params[column] = value
    out: dict[tuple[int, str], list[float]] = {}
    for r in store.rows(
        f"""SELECT SUBSTR(s.created, 1, {chars}) AS day, s.name AS name,
                   CASE WHEN {_DEMO} THEN 1 ELSE 0 END AS demo, SUM(s.value) AS total, COUNT(*) AS n
            FROM scores s
            WHERE s.trace_id = '' AND s.source = 'EVAL' AND s.deleted = 0 AND s.value IS NOT NULL
              AND {" AND ".join(where)}
            GROUP BY SUBSTR(s.created, 1, {chars}), s.name, CASE WHEN {_DEMO} THEN 1 ELSE 0 END""",
        params,
    ):
        bucket = int(datetime.fromisoformat(f"{r['day']}{rest}").timestamp() // size)
        out[(bucket, judge_label(str(r["name"]), bool(r["demo"])))] = [float(r["total"]), _int(r["n"])]
    return out


def _outbox_waiting(store: Store) -> dict[str, int]:
    """Scores whose current version Langfuse has not taken yet (Store.delivery_counts' pending):
    all of them, people's ratings among them, and every other score (judges', checks')."""
    row = store.row(
        f"""SELECT COUNT(*) AS n, SUM(CASE WHEN {_RATING} THEN 1 ELSE 0 END) AS ratings
            FROM scores s WHERE s.delivered_version < s.version AND s.rejected_version < s.version"""
    )
    n, ratings = (_int(row["n"]), _int(row["ratings"])) if row else (0, 0)
    return {"outbox_waiting": n, "ratings_waiting": ratings, "judge_scores_waiting": n - ratings}


def _backlog(store: Store) -> dict[str, int]:
    """Evaluation work not done: jobs waiting or running, and turns the scheduler has not seen."""
    row = store.row(
        """SELECT (SELECT COUNT(*) FROM eval_jobs WHERE status IN ('pending', 'delayed', 'running')) AS jobs,
                  (SELECT COUNT(*) FROM traces WHERE eval_seen = 0) AS unseen"""
    )
    jobs, unseen = (_int(row["jobs"]), _int(row["unseen"])) if row else (0, 0)
    return {"eval_backlog": jobs + unseen, "eval_jobs_waiting": jobs, "eval_unseen_traces": unseen}


# ----- filter choices --------------------------------------------------------------------


def filter_choices(store: Store) -> dict[str, list[str]]:
    """The models, users and tags of the latest chat turns, most frequent first (bounded)."""
    models: dict[str, int] = {}
    users: dict[str, int] = {}
    tag_counts: dict[str | None, int] = {}
    with store.read() as db:
        for model, user, tags in db.execute(
            _q(
                f"""SELECT t.model, t.user_id, t.tags FROM traces t WHERE {_CHAT}
                    ORDER BY t.start_time DESC LIMIT {CHOICES_RECENT}"""
            )
        ):
            models[model] = models.get(model, 0) + 1
            users[user] = users.get(user, 0) + 1
            tag_counts[tags] = tag_counts.get(tags, 0) + 1
    tags_found: dict[str, int] = {}
    for raw, n in tag_counts.items():
        for tag in set(_tags(raw)):
            tags_found[tag] = tags_found.get(tag, 0) + n

    def ranked(counts: Mapping[Any, int]) -> list[str]:
        found = [(v, n) for v, n in counts.items() if isinstance(v, str) and len(v) <= FILTER_TEXT_LIMIT]
        return [v for v, _ in sorted(found, key=lambda vn: (-vn[1], vn[0]))][:CHOICES_LIMIT]

    return {"model": ranked(models), "user_id": ranked(users), "tag": ranked(tags_found)}


# ----- worst answers ---------------------------------------------------------------------


def worst_answers(store: Store, f: Filters, limit: int = 50) -> list[dict[str, Any]]:
    """The answers people disliked, newest first; then, as room allows, answers only a judge
    scored low, newest first. A demo judge's low score alone never lists an answer (the bundled
    judge called "Paris" unsafe): its verdicts are shown on the rows, marked as a demo judge's.
    Each row carries the person's rating and every judge's verdict and reasoning, by judge."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise ValueError("The number of answers to show must be a whole number.")
    limit = max(1, min(limit, WORST_LIMIT))
    checked = _check(f)
    where, params = _where(checked, checked.since, checked.until, all_filters=True)
    # People's dislikes as a set the database builds once (one pass over the scores): checked per
    # turn instead, a range with none walked all its turns (190 ms over 100,000 turns, against a
    # steady 30 to 40 ms this way; bench.dashboard's store, SQLite).
    # (feedback/migrations.py m013: a partial index of exactly these rows.)
    disliked = f"""t.id IN (SELECT s.trace_id FROM scores s WHERE s.name = '{RATING}' AND s.source = 'user'
                       AND s.deleted = 0 AND s.value < 0.5)"""
    not_disliked = f"""NOT EXISTS (SELECT 1 FROM scores s WHERE s.trace_id = t.id AND s.deleted = 0
                           AND s.value < 0.5 AND {_RATING})"""
    judged_low = f"""EXISTS (SELECT 1 FROM scores s WHERE s.trace_id = t.id AND s.deleted = 0
                         AND s.value < 0.5 AND {_LOW_JUDGE} AND NOT {_DEMO})"""
    select = f"""SELECT t.id AS trace_id, t.start_time AS start_time,
                     SUBSTR(t.input, 1, {TEXT_LIMIT + 1}) AS question,
                     SUBSTR(t.output, 1, {TEXT_LIMIT + 1}) AS answer
                 FROM traces t WHERE {where}"""
    order = "ORDER BY t.start_time DESC, t.id LIMIT :limit"
    with store.read() as db:
        # Two walks down the time index, each stopping at `limit` (one ORDER BY over "disliked
        # first" would read every candidate of the range).
        traces = _fetch(db, f"{select} AND {disliked} {order}", {**params, "limit": limit})
        if len(traces) < limit:
            traces += _fetch(
                db,
                f"{select} AND {judged_low} AND {not_disliked} {order}",
                {**params, "limit": limit - len(traces)},
            )
        scores = _scores_of(db, [t["trace_id"] for t in traces])
    out = []
    for t in traces:
        own = scores.get(t["trace_id"], [])
        rating = next((s for s in own if s["name"] == RATING and s["source"] == "user"), None)
        judges = [s for s in own if s["source"] == "EVAL" and s["name"] != DATASET_SCORE]
        out.append(
            {
                "trace_id": t["trace_id"],
                "start_time": float(t["start_time"]),
                "question": _trim(t["question"]),
                "answer": _trim(t["answer"]),
                "feedback": None
                if rating is None or rating["value"] is None
                else int(rating["value"] >= 0.5),
                "reason": _trim(rating["reason"], NAME_LIMIT) if rating else None,
                "comment": _trim(rating["note"]) if rating else None,
                "judge": [
                    {
                        "name": _trim(s["name"], NAME_LIMIT),
                        "value": s["value"]
                        if s["value"] is not None
                        else _trim(s["string_value"], NAME_LIMIT),
                        # The worker writes the judge's reasoning as the score's note (and in
                        # its eval_jobs row).
                        "reasoning": _trim(s["note"]),
                        "demo": is_demo(s["metadata"]),
                    }
                    for s in sorted(judges, key=lambda s: s["name"])[:20]
                ],
            }
        )
    return out


_IN_CHUNK = 50


def _scores_of(db: Connection, trace_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    ids = list(trace_ids)
    binds = ", ".join(f":id{i}" for i in range(_IN_CHUNK))
    sql = f"""SELECT trace_id, name, source, value, SUBSTR(string_value, 1, {NAME_LIMIT + 1}) AS string_value,
                  SUBSTR(reason, 1, {TEXT_LIMIT + 1}) AS reason, SUBSTR(note, 1, {TEXT_LIMIT + 1}) AS note,
                  CASE WHEN LENGTH(metadata) <= {METADATA_LIMIT} THEN metadata END AS metadata
              FROM scores WHERE deleted = 0 AND trace_id IN ({binds})"""
    out: dict[str, list[dict[str, Any]]] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        params = {f"id{i}": chunk[i] if i < len(chunk) else None for i in range(_IN_CHUNK)}
        for r in _fetch(db, sql, params):
            out.setdefault(r["trace_id"], []).append(r)
    return out


# ----- dataset runs ----------------------------------------------------------------------


def dataset_runs(store: Store) -> list[dict[str, Any]]:
    """The offline runs, newest first, as `python -m evals dataset list` lists them; accuracy is
    over the graded items (an item with no expected output is run but not graded), as
    `python -m evals compare` computes it."""
    out = []
    for r in list_runs(store, RUNS_LIMIT):
        items, graded, correct = _int(r["items"]), _int(r["graded"]), _int(r["correct"])
        low, high = wilson(correct, graded)
        out.append(
            {
                "name": _trim(r["name"], NAME_LIMIT),
                "dataset": _trim(r["dataset"], NAME_LIMIT),
                "model": _trim(r["model"], NAME_LIMIT),
                "updated": float(r["updated"]),
                "items": items,
                "graded": graded,
                "correct": correct,
                "accuracy": _rate(correct, graded),
                "accuracy_low": low,
                "accuracy_high": high,
                "errors": _int(r["errors"]),
            }
        )
    return out


def run_items(store: Store, run: str) -> list[dict[str, Any]]:
    """One dataset run item by item, as `python -m evals dataset show RUN` lists them: the
    question, the expected and given answers, right or wrong, the error and the item's trace."""
    if not isinstance(run, str) or not _matchable(run):
        return []
    rows = store.rows(
        f"""SELECT item_id, SUBSTR(input, 1, {TEXT_LIMIT + 1}) AS question,
                   SUBSTR(expected, 1, {TEXT_LIMIT + 1}) AS expected,
                   SUBSTR(answer, 1, {TEXT_LIMIT + 1}) AS answer, trace_id, strict, graded,
                   SUBSTR(error, 1, {TEXT_LIMIT + 1}) AS error, latency_ms
            FROM dataset_results WHERE run = :run ORDER BY item_id LIMIT {RUN_ITEMS_LIMIT}""",
        {"run": run},
    )
    return [
        {
            "item_id": _trim(r["item_id"], NAME_LIMIT),
            "question": _trim(r["question"]),
            "expected": _trim(r["expected"]),
            "answer": _trim(r["answer"]),
            "correct": bool(r["strict"]) if _int(r["graded"]) else None,
            "error": _trim(r["error"]),
            "latency_ms": _float(r["latency_ms"]),
            "trace_id": r["trace_id"] or None,
        }
        for r in rows
    ]
