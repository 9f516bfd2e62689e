"""The dashboard's queries on a big store: 100,000 chat turns over 90 days.

Builds a synthetic store (bulk inserts; cached at --store so later runs start at once) with what
a busy app leaves behind: chat turns of several models, users, tags and sessions, 3 to 6 spans
each with attribute JSON of realistic size (about 6 KB a turn, as bench.trace_bytes measured),
ratings with reasons on about 10%, two judges on about 30% (their scores, eval_jobs and their own
"evaluation" traces; skipped jobs for the rest), conversation judgements, dataset runs with their
"dataset" traces, errors, unknown costs, a few scores waiting for Langfuse and an evaluation
backlog. Then it times every function of dashboard.queries (median of --repeats after one warm
run) and prints PASS/FAIL against --target-ms; then the chat's own writes (a turn's spans and a
vote) while the dashboard queries run in a loop in another thread, against idle.

    python -m bench.dashboard [--store /tmp/dash.sqlite3] [--postgres] [--turns 100000]
Target: every query under 200 ms on 2 cores; the chat's writes not slowed.

Measured on 2 shared cores, 100,000 turns (160,800 traces with the judges' and the dataset runs'):
- First version (SQL aggregation over `traces` and joins to `scores` at every call, no new
  index): overview 7 days 202 ms, 30 days 1,036 ms, 90 days 1,823 ms (by model 1,088, by tag
  949, by user 619 to 711), filter_choices 373 ms, worst_answers up to 128 ms.
- A covering index alone left each of the overview's passes at 170 to 380 ms over 90 days.
- Now (ended days cached, kept right by migration 010's triggers; covering indexes for the time
  and user paths): every query passes. SQLite: overview 90 days 24 ms, by model 13, by tag 15,
  by the busiest user (7,600 turns) 52; 7 and 30 days 2 to 21 ms; worst_answers 0.1 to 4 ms;
  filter_choices 37 ms; dataset_runs 1 ms. Postgres: overview 90 days 35 ms, by user 83 ms, the
  rest 2 to 41 ms. Filling the cache once (90 days, nothing cached): 0.5 s SQLite, 0.4 s Postgres.
- Chat writes (a turn's spans and a vote): SQLite p50 1.2 ms idle, 2.0 ms with the dashboard
  refreshing without pause in another thread (1.7x; the same from another process: the 2 cores
  are shared, not the GIL), 1.2 ms with one refresh a second. Postgres (server on the same 2
  cores) 3.1, 8.1 (2.6x) and 3.1 ms. The triggers add 0.05 ms (SQLite) and 0.3 ms (Postgres).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dashboard import queries  # noqa: E402
from dashboard.queries import Filters  # noqa: E402
from feedback.store import SpanRecord, Store, TraceRecord  # noqa: E402

DAY = 86400.0
# (model id, share of turns, $ per prompt token, $ per completion token, share of unknown prices)
MODELS = [
    ("HuggingFaceTB/SmolLM2-135M-Instruct", 0.45, 0.0, 0.0, 0.0),
    ("gpt-4o-mini", 0.25, 0.15e-6, 0.6e-6, 0.0),
    ("Qwen/Qwen2.5-Coder-32B-Instruct", 0.20, 0.2e-6, 0.6e-6, 0.3),
    ("my-endpoint/llama-3-8b", 0.10, 0.0, 0.0, 1.0),
]
EXTRA_TAGS = [((), 0.70), (("beta",), 0.20), (("mobile",), 0.07), (("beta", "mobile"), 0.03)]
REASONS = [("Incorrect", 0.35), ("Not helpful", 0.25), ("Too slow", 0.10), ("Unsafe", 0.05), (None, 0.25)]
EVALUATORS = [("helpfulness", "NUMERIC"), ("correctness", "BOOLEAN")]
USERS = 3000

_WORDS = (
    "the agent wrote some python code to compute an answer and printed the result then called "
    "final_answer with a short explanation of each step for the user who asked about numbers "
    "dates weather prices recipes travel plans and a few other everyday questions"
).split()


class Text:
    """Random-looking text of any length, cut from one long string (fast to make)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.pool = " ".join(rng.choice(_WORDS) for _ in range(40000))

    def __call__(self, n: int) -> str:
        start = self.rng.randrange(0, len(self.pool) - n - 1)
        return self.pool[start : start + n]


def _pick(rng: random.Random, weighted: list[tuple[Any, float]]) -> Any:
    x, acc = rng.random(), 0.0
    for value, weight in weighted:
        acc += weight
        if x < acc:
            return value
    return weighted[-1][0]


def _hex(rng: random.Random, bits: int) -> str:
    return format(rng.getrandbits(bits), f"0{bits // 4}x")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


# ----- the synthetic store ----------------------------------------------------------------

TRACE_COLS = (
    "id, name, input, output, user_id, session_id, status, status_message, start_time, end_time, "
    "latency_ms, prompt_tokens, completion_tokens, total_tokens, model, tags, metadata, eval_seen, cost"
).split(", ")
SPAN_COLS = (
    "trace_id, span_id, parent_id, name, kind, start_time, end_time, status, status_message, "
    "prompt_tokens, completion_tokens, total_tokens, attributes, cost"
).split(", ")
SCORE_COLS = (
    "id, trace_id, session_id, user_id, name, value, data_type, reason, note, comment, source, created, "
    "updated, deleted, version, delivered_version, eval_seen_version, metadata"
).split(", ")
JOB_COLS = (
    "id, evaluator, version, kind, target_kind, target_id, revision, trigger, status, attempts, created, "
    "called_at, finished, latency_ms, prompt_tokens, completion_tokens, score_id, eval_trace_id, value, "
    "reasoning, cost"
).split(", ")


class Builder:
    """Makes the rows, one day at a time, and hands them to a bulk writer."""

    def __init__(self, turns: int, days: int, end: float, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.text = Text(self.rng)
        self.turns, self.days, self.end = turns, days, end
        self.start = end - days * DAY
        weights = [1 / (k + 1) ** 0.9 for k in range(USERS)]
        total = sum(weights)
        self.user_weights = [w / total for w in weights]
        self.users = [f"user-{k:04d}" for k in range(USERS)]

    def _spans(self, trace_id: str, t0: float, latency_s: float, model: str, error: bool, cost: Any) -> tuple:
        rng, text = self.rng, self.text
        root = _hex(rng, 64)
        agent = _hex(rng, 64)
        steps = rng.choice((1, 1, 1, 2))
        spans = [
            (trace_id, root, None, "chat-turn", "AGENT", t0, t0 + latency_s, "ERROR" if error else "OK",
             "boom" if error else None, None, None, None,
             json.dumps({"input.value": text(rng.randint(60, 300)), "output.value": text(rng.randint(200, 900)),
                         "user.id": "x", "langfuse.trace.tags": ["smolagents-chat"],
                         "langfuse.trace.metadata.model_id": json.dumps(model)}), None),
            (trace_id, agent, root, "CodeAgent.run", "AGENT", t0 + 0.01, t0 + latency_s - 0.01, "OK", None,
             None, None, None, json.dumps({"input.value": text(300), "output.value": text(rng.randint(600, 1600))}),
             None),
        ]  # fmt: skip
        prompt_sum = completion_sum = 0
        llm_costs: list[float | None] = []
        step_len = latency_s / steps
        for k in range(steps):
            s0 = t0 + 0.02 + k * step_len
            chain = _hex(rng, 64)
            prompt, completion = rng.randint(900, 4000), rng.randint(40, 400)
            prompt_sum += prompt
            completion_sum += completion
            span_cost = None if cost is None else round(cost * (prompt / 4000), 10)
            llm_costs.append(span_cost)
            spans.append(
                (trace_id, chain, agent, f"Step {k + 1}", "CHAIN", s0, s0 + step_len * 0.95, "OK", None,
                 None, None, None, json.dumps({"input.value": text(200), "output.value": text(150)}), None)
            )  # fmt: skip
            spans.append(
                (trace_id, _hex(rng, 64), chain, "OpenAIServerModel.generate", "LLM", s0 + 0.01,
                 s0 + step_len * 0.9, "OK", None, prompt, completion, prompt + completion,
                 json.dumps({"input.value": text(rng.randint(1500, 3200)), "output.value": text(rng.randint(100, 500)),
                             "llm.model_name": model, "llm.token_count.prompt": prompt,
                             "llm.token_count.completion": completion}), span_cost)
            )  # fmt: skip
        return spans, prompt_sum, completion_sum

    def days_of_rows(self) -> Iterator[dict[str, list[tuple]]]:
        """One dict of table -> rows per day, in time order (as a real store fills up)."""
        rng = self.rng
        per_day = self.turns / self.days
        made = 0
        for d in range(self.days):
            day_start = self.start + d * DAY
            # Growth over the period and a weekly dip, around the mean.
            share = (0.7 + 0.6 * d / max(1, self.days - 1)) * (0.8 if d % 7 in (5, 6) else 1.07)
            quota = self.turns - made if d == self.days - 1 else int(per_day * share)
            made += quota
            out: dict[str, list[tuple]] = {
                k: [] for k in ("traces", "spans", "scores", "eval_jobs", "sessions")
            }
            turns_today: list[tuple] = []
            while len(turns_today) < quota:
                user = rng.choices(self.users, self.user_weights)[0]
                model, _, p_in, p_out, unknown = _pick(rng, [(m, m[1]) for m in MODELS])
                session = str(uuid.UUID(int=rng.getrandbits(128)))
                extra = _pick(rng, EXTRA_TAGS)
                t = day_start + rng.random() * DAY * 0.95
                n = min(quota - len(turns_today), rng.choice((1, 1, 2, 3, 4, 5, 8, 12)))
                for _ in range(n):
                    turns_today.append((t, user, session, model, p_in, p_out, unknown, extra))
                    t += rng.uniform(20, 240)
                if rng.random() < 0.2:
                    out["sessions"].append((session, user, n, t))
            turns_today.sort()
            for t0, user, session, model, p_in, p_out, unknown, extra in turns_today:
                self._turn(out, t0, user, session, model, p_in, p_out, unknown, extra)
            yield out

    def _turn(self, out: dict[str, list[tuple]], t0: float, user: str, session: str, model: str,
              p_in: float, p_out: float, unknown: float, extra: tuple) -> None:  # fmt: skip
        rng, text = self.rng, self.text
        trace_id = _hex(rng, 128)
        error = rng.random() < 0.03
        latency_s = min(120.0, rng.lognormvariate(math.log(2.5), 0.8))
        cost_unknown = rng.random() < unknown
        spans, prompt, completion = self._spans(trace_id, t0, latency_s, model, error, None)
        cost = None if cost_unknown else round(prompt * p_in + completion * p_out, 10)
        # Spans carry their share of the turn's cost (None where the price is unknown).
        llm = [i for i, s in enumerate(spans) if s[4] == "LLM"]
        for i in llm:
            s = spans[i]
            share = None if cost is None else round(s[9] * p_in + s[10] * p_out, 10)
            spans[i] = (*s[:-1], share)
        end = t0 + latency_s
        out["spans"].extend(spans)
        out["traces"].append(
            (trace_id, "chat-turn", text(rng.randint(40, 300)), None if error else text(rng.randint(150, 1500)),
             user, session, "ERROR" if error else "OK", "the agent failed" if error else None, t0, end,
             round(latency_s * 1000, 3), prompt, completion, prompt + completion, model,
             json.dumps(["smolagents-chat", *extra]),
             json.dumps({"model_id": model, "provider": "local" if "SmolLM" in model else "openai"}),
             0 if end > self.end - 120 else 1, cost)
        )  # fmt: skip
        if rng.random() < 0.10:
            liked = rng.random() < 0.65
            reason = None if liked else _pick(rng, REASONS)
            note = text(rng.randint(20, 200)) if not liked and rng.random() < 0.2 else None
            at = _iso(end + rng.uniform(5, 300))
            version = rng.choice((1, 1, 1, 2))
            delivered = 0 if rng.random() < 0.01 else version
            out["scores"].append(
                (str(uuid.UUID(int=rng.getrandbits(128))), trace_id, session, user, "user-feedback",
                 1.0 if liked else 0.0, "BOOLEAN", reason, note, "; ".join(p for p in (reason, note) if p) or None,
                 "user", at, at, 1 if rng.random() < 0.01 else 0, version, delivered, version, None)
            )  # fmt: skip
        judged = rng.random() < 0.30
        for name, data_type in EVALUATORS:
            job_id = str(uuid.UUID(int=rng.getrandbits(128)))
            created = end + 1
            if not judged:
                out["eval_jobs"].append(
                    (job_id, name, "v1", "llm", "turn", trace_id, "turn", "turn", "skipped-sampling", 0,
                     created, None, created, None, None, None, None, None, None, None, None)
                )  # fmt: skip
                continue
            if end > self.end - 600:
                out["eval_jobs"].append(
                    (job_id, name, "v1", "llm", "turn", trace_id, "turn", "turn", "pending", 0, created,
                     None, None, None, None, None, None, None, None, None, None)
                )  # fmt: skip
                continue
            value = float(rng.random() < 0.8) if data_type == "BOOLEAN" else round(rng.betavariate(4, 2), 3)
            reasoning = text(rng.randint(150, 600))
            eval_trace = _hex(rng, 128)
            score_id = str(uuid.UUID(int=rng.getrandbits(128)))
            called = created + rng.uniform(1, 30)
            judge_ms = rng.uniform(800, 6000)
            jp, jc = rng.randint(1500, 3000), rng.randint(60, 250)
            at = _iso(called + judge_ms / 1000)
            out["scores"].append(
                (score_id, trace_id, session, user, name, value, data_type, None, reasoning, reasoning, "EVAL",
                 at, at, 0, 1, 1, 0, json.dumps({"evaluator": name, "evaluator_version": "v1",
                                                 "eval_trace_id": eval_trace}))
            )  # fmt: skip
            out["eval_jobs"].append(
                (job_id, name, "v1", "llm", "turn", trace_id, "turn", "turn", "completed", 1, created, called,
                 called + judge_ms / 1000, judge_ms, jp, jc, score_id, eval_trace, value, reasoning, 0.0)
            )  # fmt: skip
            # The judge's own trace, tagged "evaluation" (never a chat turn).
            root = _hex(rng, 64)
            out["traces"].append(
                (eval_trace, name, f"turn {trace_id}", f"{name} = {value}", "evaluator", None, "OK", None,
                 called, called + judge_ms / 1000, judge_ms, jp, jc, jp + jc, "HuggingFaceTB/SmolLM2-135M-Instruct",
                 json.dumps(["smolagents-chat", "evaluation"]), json.dumps({"evaluator": name}), 1, 0.0)
            )  # fmt: skip
            out["spans"].append(
                (eval_trace, root, None, name, "EVALUATOR", called, called + judge_ms / 1000, "OK", None,
                 None, None, None, json.dumps({"input.value": f"turn {trace_id}"}), None)
            )  # fmt: skip
            out["spans"].append(
                (eval_trace, _hex(rng, 64), root, "judge", "LLM", called, called + judge_ms / 1000, "OK", None,
                 jp, jc, jp + jc, json.dumps({"input.value": text(1800), "output.value": reasoning}), 0.0)
            )  # fmt: skip

    def conversation_rows(self, sessions: list[tuple]) -> dict[str, list[tuple]]:
        """A conversation judge's scores (no trace: the session is the target)."""
        rng, text = self.rng, self.text
        out: dict[str, list[tuple]] = {"scores": [], "eval_jobs": []}
        for session, user, turns, last in sessions:
            at = last + 600
            if at > self.end:
                continue
            value = float(rng.random() < 0.7)
            score_id = str(uuid.UUID(int=rng.getrandbits(128)))
            reasoning = text(200)
            out["scores"].append(
                (score_id, "", session, user, "goal-reached", value, "BOOLEAN", None, reasoning, reasoning,
                 "EVAL", _iso(at), _iso(at), 0, 1, 1, 0, None)
            )  # fmt: skip
            out["eval_jobs"].append(
                (str(uuid.UUID(int=rng.getrandbits(128))), "goal-reached", "v1", "llm", "conversation", session,
                 f"turns-{turns}", "idle", "completed", 1, at - 5, at - 4, at, 3000.0, 2000, 100, score_id,
                 _hex(rng, 128), value, reasoning, 0.0)
            )  # fmt: skip
        return out

    def dataset_rows(self, runs: int = 3, items: int = 300) -> dict[str, list[tuple]]:
        rng, text = self.rng, self.text
        out: dict[str, list[tuple]] = {"traces": [], "spans": [], "scores": [], "dataset_runs": [],
                                       "dataset_results": []}  # fmt: skip
        for r in range(runs):
            name = f"gsm8k-run-{r + 1}"
            t = self.end - (runs - r) * 5 * DAY
            out["dataset_runs"].append((name, "gsm8k", MODELS[r % len(MODELS)][0], t, t + items * 3))
            for i in range(items):
                trace_id = _hex(rng, 128)
                t0 = t + i * 3
                right = rng.random() < 0.3
                error = None if rng.random() > 0.02 else "timeout"
                out["traces"].append(
                    (trace_id, "chat-turn", text(200), text(300), "dataset", f"dataset:{name}:{i}", "OK", None,
                     t0, t0 + 2.5, 2500.0, 2000, 100, 2100, MODELS[r % len(MODELS)][0],
                     json.dumps(["smolagents-chat", "dataset", f"run:{name}", f"item:{i}"]), "{}", 1, 0.0)
                )  # fmt: skip
                out["spans"].append(
                    (trace_id, _hex(rng, 64), None, "chat-turn", "AGENT", t0, t0 + 2.5, "OK", None, None, None,
                     None, json.dumps({"input.value": text(200)}), None)
                )  # fmt: skip
                out["dataset_results"].append(
                    (name, f"item-{i}", text(200), "#### 42", text(100), trace_id, int(right), int(right), 1,
                     error, 2500.0, 2000, 100, t0)
                )  # fmt: skip
                out["scores"].append(
                    (str(uuid.UUID(int=rng.getrandbits(128))), trace_id, None, None, "dataset-correct",
                     float(right), "BOOLEAN", None, None, None, "EVAL", _iso(t0), _iso(t0), 0, 1, 1, 0, None)
                )  # fmt: skip
        return out


COLUMNS = {
    "traces": TRACE_COLS,
    "spans": SPAN_COLS,
    "scores": SCORE_COLS,
    "eval_jobs": JOB_COLS,
    "dataset_runs": ["name", "dataset", "model", "created", "updated"],
    "dataset_results": (
        "run, item_id, input, expected, answer, trace_id, strict, flexible, has_number, error, latency_ms, "
        "prompt_tokens, completion_tokens, created"
    ).split(", "),
    "eval_sessions": ["session_id", "user_id", "turns", "last_turn_end"],
}


class Writer:
    """Bulk inserts: executemany in one transaction on SQLite, COPY on Postgres."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.raw = store.engine.raw_connection()
        self.conn = self.raw.driver_connection
        if store.dialect == "sqlite":
            self.conn.execute("PRAGMA synchronous=OFF")
            self.conn.execute("BEGIN")

    def write(self, table: str, rows: list[tuple]) -> None:
        if not rows:
            return
        cols = COLUMNS[table]
        if self.store.dialect == "sqlite":
            marks = ", ".join("?" for _ in cols)
            self.conn.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", rows)
            return
        with self.conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def close(self) -> None:
        if self.store.dialect == "sqlite":
            self.conn.execute("COMMIT")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        else:
            self.conn.commit()
        self.raw.close()


def build(store: Store, turns: int, days: int, end: float) -> dict[str, int]:
    """Fill an empty store; return the rows written per table."""
    builder = Builder(turns, days, end)
    writer = Writer(store)
    counts: dict[str, int] = {}
    sessions: list[tuple] = []

    def put(table: str, rows: list[tuple]) -> None:
        writer.write(table, rows)
        counts[table] = counts.get(table, 0) + len(rows)

    try:
        for day in builder.days_of_rows():
            sessions.extend(day.pop("sessions"))
            for table, rows in day.items():
                put(table, rows)
        for table, rows in builder.conversation_rows(sessions).items():
            put(table, rows)
        put("eval_sessions", [(s, u, n, last) for s, u, n, last in sessions])
        for table, rows in builder.dataset_rows().items():
            put(table, rows)
    finally:
        writer.close()
    if store.dialect == "postgresql":
        # What autovacuum does on a live database: statistics, and the visibility map that lets
        # index-only scans skip the table. (The app never runs ANALYZE on SQLite: neither here.)
        with store.engine.connect() as db:
            db.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    return counts


# ----- timing -----------------------------------------------------------------------------


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(median ms of `repeats` runs, ms of the first run before them)."""
    t0 = time.perf_counter()
    fn()  # warm: the pages this query reads are in memory (and ended days cached), as on a refresh
    first = (time.perf_counter() - t0) * 1000
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), first


@contextmanager
def sql_profile(enabled: bool) -> Iterator[dict[str, list[float]]]:
    """Time each SQL statement the dashboard runs (by its first words)."""
    spent: dict[str, list[float]] = {}
    if not enabled:
        yield spent
        return
    original = queries._fetch

    def fetch(db: Any, sql: str, params: Any = None) -> Any:
        t0 = time.perf_counter()
        try:
            return original(db, sql, params)
        finally:
            key = " ".join(sql.split())[:90]
            spent.setdefault(key, []).append((time.perf_counter() - t0) * 1000)

    queries._fetch = fetch
    try:
        yield spent
    finally:
        queries._fetch = original


def cases(store: Store) -> list[tuple[str, Callable[[], Any]]]:
    end = float(store.row("SELECT MAX(start_time) AS t FROM traces")["t"]) + 1
    model = MODELS[0][0]
    user_busy, user_some = "user-0000", "user-0100"  # the busiest synthetic user (~8%), a rare one
    session = store.row(
        "SELECT session_id FROM traces WHERE start_time > :t AND session_id IS NOT NULL ORDER BY start_time LIMIT 1",
        {"t": end - 20 * DAY},
    )["session_id"]
    out: list[tuple[str, Callable[[], Any]]] = []
    for days in (7, 30, 90):
        base = Filters(since=end - days * DAY, until=end)
        variants = [
            ("", base),
            (f" model={model}", Filters(base.since, base.until, model=model)),
            (f" user={user_busy}", Filters(base.since, base.until, user_id=user_busy)),
            (f" user={user_some}", Filters(base.since, base.until, user_id=user_some)),
            (" tag=beta", Filters(base.since, base.until, tag="beta")),
            (" session", Filters(base.since, base.until, session_id=session)),
        ]
        for label, f in variants:
            out.append((f"overview {days}d{label}", lambda f=f: queries.overview(store, f)))
        for label, f in variants:
            out.append((f"worst_answers {days}d{label}", lambda f=f: queries.worst_answers(store, f)))
    # The last 24 hours, by the hour (read from the rows, never from the day cache).
    day = Filters(since=end - DAY, until=end)
    out.append(("overview 24h hourly", lambda: queries.overview(store, day, hourly=True)))
    out.append(("worst_answers 24h", lambda: queries.worst_answers(store, day)))
    out.append(("filter_choices", lambda: queries.filter_choices(store)))
    out.append(("dataset_runs", lambda: queries.dataset_runs(store)))
    return out


def cold_cache(store: Store) -> None:
    """The first overview of 90 days on a store whose ended days are not cached yet (after the
    upgrade that adds the cache, or after a change to its format): done once."""
    end = float(store.row("SELECT MAX(start_time) AS t FROM traces")["t"]) + 1
    with store.transaction() as db:
        db.exec_driver_sql("DELETE FROM dashboard_days")
    queries._DECODED.clear()
    t0 = time.perf_counter()
    queries.overview(store, Filters(end - 90 * DAY, end))
    print(
        f"  overview 90d with nothing cached (once: fills the cache)   {(time.perf_counter() - t0) * 1000:8.1f} ms"
    )


def run_timings(store: Store, repeats: int, target_ms: float, profile: bool) -> list[tuple[str, float]]:
    cold_cache(store)
    results = []
    for name, fn in cases(store):
        with sql_profile(profile) as spent:
            ms, first = timed(fn, repeats)
        verdict = "PASS" if ms < target_ms else "FAIL"
        print(f"  {name:<58} {ms:8.1f} ms  {verdict}   (first run {first:.0f} ms)", flush=True)
        if profile:
            for sql, times in spent.items():
                print(f"      {statistics.median(times):7.1f} ms  {sql}")
        results.append((name, ms))
    return results


# ----- the chat while the dashboard is used ------------------------------------------------


def chat_writes(store: Store, n: int, rng: random.Random) -> list[float]:
    """What a turn and a vote write: the turn's spans and trace, then a score upsert."""
    times = []
    for _ in range(n):
        trace_id = _hex(rng, 128)
        now = time.time()
        root = _hex(rng, 64)
        spans = [
            SpanRecord(trace_id, root, None, "chat-turn", "AGENT", now - 2, now, "OK", None,
                       {"input.value": "x" * 300, "output.value": "y" * 800}),
            SpanRecord(trace_id, _hex(rng, 64), root, "CodeAgent.run", "AGENT", now - 2, now, "OK", None,
                       {"output.value": "z" * 1500}),
            SpanRecord(trace_id, _hex(rng, 64), root, "generate", "LLM", now - 2, now, "OK", None,
                       {"input.value": "m" * 2500}, 2000, 100, 2100),
        ]  # fmt: skip
        trace = TraceRecord(trace_id, "chat-turn", "question", "answer", "bench-user", "bench-session", "OK",
                            None, now - 2, now, "gpt-4o-mini", ["smolagents-chat"], {"model_id": "gpt-4o-mini"})  # fmt: skip
        t0 = time.perf_counter()
        store.write_spans(spans, [trace])
        store.upsert_score(
            score_id=str(uuid.uuid4()), trace_id=trace_id, name="user-feedback", value=1.0,
            data_type="BOOLEAN", source="user", session_id="bench-session", user_id="bench-user",
        )  # fmt: skip
        times.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.01)  # turns come one after another, not in a tight loop
    return times


def forget_chat_writes(store: Store) -> None:
    """Remove the measured turns and votes, so a cached store stays as it was built."""
    with store.transaction() as db:
        db.exec_driver_sql(
            "DELETE FROM spans WHERE trace_id IN (SELECT id FROM traces WHERE user_id = 'bench-user')"
        )
        db.exec_driver_sql("DELETE FROM scores WHERE user_id = 'bench-user'")
        db.exec_driver_sql("DELETE FROM traces WHERE user_id = 'bench-user'")


def chat_slowdown(store: Store, n: int, rounds: int = 4) -> None:
    """Chat writes with the dashboard idle, refreshing without pause in another thread of the same
    process (as in the app), and refreshing once a second (someone clicking), in alternating
    rounds so the machine's other load falls on all three alike."""
    rng = random.Random(3)
    end = float(store.row("SELECT MAX(start_time) AS t FROM traces")["t"]) + 1
    chat_writes(store, 20, rng)  # warm
    times: dict[str, list[float]] = {"idle": [], "loop": [], "paced": []}
    refreshes = {"loop": 0, "paced": 0}

    def dashboard(stop: threading.Event, mode: str) -> None:
        while not stop.is_set():
            for days in (7, 30, 90):
                f = Filters(end - days * DAY, end)
                queries.overview(store, f)
                queries.worst_answers(store, f)
            queries.filter_choices(store)
            refreshes[mode] += 1
            if mode == "paced":
                stop.wait(1.0)

    for _ in range(rounds):
        times["idle"] += chat_writes(store, n // rounds, rng)
        for mode in ("loop", "paced"):
            stop = threading.Event()
            thread = threading.Thread(target=dashboard, args=(stop, mode), daemon=True)
            thread.start()
            time.sleep(0.2)
            times[mode] += chat_writes(store, n // rounds, rng)
            stop.set()
            thread.join()
    forget_chat_writes(store)

    def p(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    idle = times["idle"]
    print(
        f"  chat turn + vote writes, dashboard idle:     p50 {p(idle, 0.5):6.2f} ms  p95 {p(idle, 0.95):6.2f} ms"
    )
    for mode, label in (("loop", "refreshing in a loop"), ("paced", "refreshed once a second")):
        busy = times[mode]
        print(
            f"  dashboard {label + ':':<34} p50 {p(busy, 0.5):6.2f} ms  p95 {p(busy, 0.95):6.2f} ms"
            f"  ratio to idle p50 {p(busy, 0.5) / p(idle, 0.5):.2f}x  p95 {p(busy, 0.95) / p(idle, 0.95):.2f}x"
            f"  ({refreshes[mode]} refreshes of 3 ranges)"
        )


# ----- main -------------------------------------------------------------------------------


def open_sqlite(path: Path, turns: int, days: int) -> Store:
    marker = path.with_suffix(".json")
    wanted = {"turns": turns, "days": days, "version": 3}
    if path.exists() and marker.exists() and json.loads(marker.read_text()) == wanted:
        t0 = time.perf_counter()
        store = Store(path)  # applies any new migration (e.g. an index) to the cached store
        print(f"store: cached at {path} (opened, migrations applied, in {time.perf_counter() - t0:.1f} s)")
        return store
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), marker):
        p.unlink(missing_ok=True)
    store = Store(path)
    t0 = time.perf_counter()
    counts = build(store, turns, days, end=time.time())
    marker.write_text(json.dumps(wanted))
    print(f"store: built at {path} in {time.perf_counter() - t0:.1f} s: {counts}")
    print(f"       {store.disk_size() / 1e6:.0f} MB on disk")
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, help="SQLite file to build or reuse (default: a temp file)")
    parser.add_argument("--turns", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--target-ms", type=float, default=200.0)
    parser.add_argument("--writes", type=int, default=200, help="chat turns + votes timed, idle and busy")
    parser.add_argument(
        "--postgres", action="store_true", help="also on a throwaway Postgres (tests/pg_server)"
    )
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--profile", action="store_true", help="time each SQL statement too")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_sqlite:
            path = args.store or Path(tmp) / "bench.sqlite3"
            store = open_sqlite(path, args.turns, args.days)
            print(f"SQLite, {args.turns} chat turns over {args.days} days (median of {args.repeats}):")
            run_timings(store, args.repeats, args.target_ms, args.profile)
            chat_slowdown(store, args.writes)
            store.close()
        if args.postgres:
            from tests.pg_server import PostgresServer

            with PostgresServer(settings={"shared_buffers": "256MB"}) as server:
                store = Store(server.create_database("bench"))
                t0 = time.perf_counter()
                counts = build(store, args.turns, args.days, end=time.time())
                print(f"Postgres: built in {time.perf_counter() - t0:.1f} s: {counts}")
                print(f"Postgres, {args.turns} chat turns over {args.days} days (median of {args.repeats}):")
                run_timings(store, args.repeats, args.target_ms, args.profile)
                chat_slowdown(store, args.writes)
                store.close()


if __name__ == "__main__":
    main()
