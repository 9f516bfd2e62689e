"""The dashboard's numbers against a store with known contents, on SQLite and Postgres.

Six chat turns over two past UTC days (one at midnight, one half a second before the next
midnight), a judge's own trace and a dataset run's trace that must not count, ratings (one with
a reason and a comment, one without, one undone), judge scores (one low), costs with one
unknown. Every figure is checked against numbers worked out by hand, through the cache of ended
days, through the rows (partial days, today, user filters), and after the data changes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from statsmodels.stats.proportion import proportion_confint

from dashboard import queries
from dashboard.queries import Filters, dataset_runs, filter_choices, overview, worst_answers
from feedback.store import SpanRecord, Store, TraceRecord
from feedback.votes import SCORE_NAME

DAY = 86400
D0 = 19783  # 2024-03-01 (UTC day number)
D1 = D0 + 1
D0_S, D1_S = D0 * DAY, D1 * DAY
ALL = Filters(since=D0_S, until=D0_S + 3 * DAY)  # whole days: D0 and D1 from the cache
CHAT = ["smolagents-chat"]

# id: (start, model, user, session, tags, status, latency s, (prompt, completion, cost))
TURNS = {
    "t1": (D0_S, "m-a", "alice", "s1", CHAT, "OK", 1.0, (100, 10, 0.001)),
    "t2": (D0_S + 7200, "m-a", "alice", "s1", [*CHAT, "beta"], "ERROR", 3.0, (200, 20, 0.002)),
    "t3": (D0_S + DAY - 0.5, "m-b", "bob", "s2", CHAT, "OK", 2.0, (300, 30, None)),
    "t4": (D1_S + 3600, "m-a", "bob", "s3", [*CHAT, "beta"], "OK", 4.0, (400, 40, 0.004)),
    "t5": (D1_S + 7200, "m-b", "carol", "s4", [], "OK", 0.5, (500, 50, 0.0)),
    "t6": (D1_S + 10800, "m-a", "carol", "s5", CHAT, "OK", 6.0, (600, 60, 0.006)),
}
NOT_TURNS = {
    # A judge's own trace and an offline dataset run's: never chat turns.
    "e1": (D0_S + 100, "judge", "evaluator", None, [*CHAT, "evaluation"], "OK", 5.0, (1000, 100, 0.01)),
    "d1": (
        D1_S + 100,
        "m-a",
        "dataset",
        "ds",
        [*CHAT, "dataset", "run:r1", "item:1"],
        "OK",
        2.5,
        (50, 5, 0.0),
    ),
}


def trace_id(name: str) -> str:
    return f"{name:0>32}"


def write_turn(store: Store, name: str, spec: tuple, *, question: str | None = None) -> None:
    start, model, user, session, tags, status, latency, (prompt, completion, cost) = spec
    tid = trace_id(name)
    end = start + latency
    store.write_spans(
        [
            SpanRecord(tid, f"{name:0>15}r", None, "chat-turn", "AGENT", start, end, status, None, {}),
            SpanRecord(
                tid,
                f"{name:0>15}l",
                f"{name:0>15}r",
                "generate",
                "LLM",
                start,
                end,
                "OK",
                None,
                {},
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                cost=cost,
            ),
        ],  # fmt: skip
        [
            TraceRecord(
                tid,
                "chat-turn",
                question or f"question {name}",
                f"answer {name}",
                user,
                session,
                status,
                None,
                start,
                end,
                model,
                tags,
                {"model_id": model},
            )
        ],  # fmt: skip
    )


def rate(store: Store, name: str, value: float, reason: str | None = None, note: str | None = None) -> str:
    spec = TURNS.get(name) or NOT_TURNS.get(name) or (None,) * 4
    score_id = f"rating-{name}"
    store.upsert_score(
        score_id=score_id, trace_id=trace_id(name), name=SCORE_NAME, value=value, data_type="BOOLEAN",
        source="user", session_id=spec[3], user_id=spec[2], reason=reason, note=note,
    )  # fmt: skip
    return score_id


def judge(store: Store, name: str, evaluator: str, value: float, reasoning: str, data_type: str = "NUMERIC"):
    spec = TURNS.get(name) or NOT_TURNS[name]
    store.upsert_score(
        score_id=f"{evaluator}-{name}", trace_id=trace_id(name), name=evaluator, value=value,
        data_type=data_type, source="EVAL", session_id=spec[3], user_id=spec[2], note=reasoning, keep_note=False,
    )  # fmt: skip


def execute(store: Store, sql: str, params: dict | None = None) -> None:
    from sqlalchemy import text

    with store.transaction() as db:
        db.execute(text(sql), params or {})


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    for name, spec in {**TURNS, **NOT_TURNS}.items():
        write_turn(s, name, spec)
    rate(s, "t1", 1.0)
    rate(s, "t2", 0.0, reason="Incorrect", note="wrong number")
    rate(s, "t3", 0.0)
    rate(s, "t4", 1.0)
    s.delete_score(rate(s, "t6", 0.0, reason="Too slow"))  # undone: counts nowhere
    judge(s, "t3", "helpfulness", 0.2, "vague")
    judge(s, "t4", "helpfulness", 0.9, "clear")
    judge(s, "t4", "correct", 1.0, "right", "BOOLEAN")
    judge(s, "t5", "helpfulness", 0.4, "too short")
    # The dataset run's grade is an EVAL score too: not a judge, and its trace is not a turn.
    s.upsert_score(
        score_id="grade-d1", trace_id=trace_id("d1"), name="dataset-correct", value=0.0,
        data_type="BOOLEAN", source="EVAL",
    )  # fmt: skip
    # A judge of a whole conversation (no trace), written on D1.
    s.upsert_score(
        score_id="goal-s5", trace_id="", name="goal-reached", value=1.0, data_type="BOOLEAN",
        source="EVAL", session_id="s5", user_id="carol",
    )  # fmt: skip
    written = datetime.fromtimestamp(D1_S + 50000, UTC).isoformat(timespec="milliseconds")
    execute(s, "UPDATE scores SET created = :c WHERE id = 'goal-s5'", {"c": written})
    yield s
    s.close()


def by_day_model(result: dict) -> dict[tuple[str, str], dict]:
    return {(r["day"], r["model"]): r for r in result["per_day"]}


# ----- overview ----------------------------------------------------------------------------


def test_totals_over_two_days(store):
    t = overview(store, ALL)["totals"]
    low, high = proportion_confint(2, 4, alpha=0.05, method="wilson")
    expected = {
        "turns": 6,
        "errors": 1,
        "ratings": 4,
        "likes": 2,
        "dislikes": 2,
        "like_rate": 0.5,
        "latency_p50_ms": 2000.0,  # nearest rank: 3rd of 500, 1000, 2000, 3000, 4000, 6000
        "latency_p95_ms": 6000.0,
        "prompt_tokens": 2100,
        "completion_tokens": 210,
        "tokens": 2310,
        "tokens_per_turn": 385.0,
        "cost_unknown_turns": 1,
        "cost_known_turns": 5,
    }
    assert {k: t[k] for k in expected} == expected
    assert t["error_rate"] == pytest.approx(1 / 6)
    assert (t["like_rate_low"], t["like_rate_high"]) == pytest.approx((low, high))
    assert 0.15 < t["like_rate_low"] < 0.16 and 0.84 < t["like_rate_high"] < 0.85
    assert t["cost"] == pytest.approx(0.013)  # t3's unknown cost is not taken for zero
    assert t["cost_per_turn"] == pytest.approx(0.013 / 5)


def test_per_day_and_model(store):
    rows = by_day_model(overview(store, ALL))
    assert set(rows) == {
        ("2024-03-01", "m-a"),
        ("2024-03-01", "m-b"),
        ("2024-03-02", "m-a"),
        ("2024-03-02", "m-b"),
    }
    a0, b0, a1, b1 = (rows[k] for k in sorted(rows))
    assert (a0["turns"], a0["errors"], a0["likes"], a0["dislikes"], a0["tokens"]) == (2, 1, 1, 1, 330)
    assert (a0["latency_p50_ms"], a0["latency_p95_ms"]) == (1000.0, 3000.0)
    assert a0["cost"] == pytest.approx(0.003) and a0["cost_unknown_turns"] == 0
    # t3 starts half a second before midnight: still the 1st (Postgres' CAST would round it over).
    assert (b0["turns"], b0["dislikes"], b0["cost"], b0["cost_unknown_turns"]) == (1, 1, None, 1)
    assert (b0["latency_p50_ms"], b0["latency_p95_ms"]) == (2000.0, 2000.0)
    assert (a1["turns"], a1["likes"], a1["dislikes"], a1["tokens"]) == (2, 1, 0, 1100)
    assert (a1["latency_p50_ms"], a1["latency_p95_ms"]) == (4000.0, 6000.0)
    assert a1["cost"] == pytest.approx(0.010)
    assert (b1["turns"], b1["cost"], b1["cost_unknown_turns"], b1["latency_p50_ms"]) == (1, 0.0, 0, 500.0)


def test_dislike_reasons_and_evaluators(store):
    result = overview(store, ALL)
    assert result["dislike_reasons"] == [
        {"reason": "Incorrect", "count": 1},
        {"reason": "no reason given", "count": 1},
    ]
    got = [(e["day"], e["evaluator"], round(e["mean"], 9), e["n"]) for e in result["evaluators"]]
    assert got == [
        ("2024-03-01", "helpfulness", 0.2, 1),
        ("2024-03-02", "correct", 1.0, 1),
        ("2024-03-02", "goal-reached", 1.0, 1),  # the conversation judge, on the day it was written
        ("2024-03-02", "helpfulness", 0.65, 2),
    ]


def test_filters_narrow(store):
    def totals(**kw):
        t = overview(store, Filters(ALL.since, ALL.until, **kw))["totals"]
        return t["turns"], t["likes"], t["dislikes"], t["errors"]

    assert totals(model="m-a") == (4, 2, 1, 1)
    assert totals(model="m-b") == (2, 0, 1, 0)
    assert totals(tag="beta") == (2, 1, 1, 1)
    assert totals(tag="smolagents-chat") == (5, 2, 2, 1)
    assert totals(user_id="alice") == (2, 1, 1, 1)
    assert totals(session_id="s3") == (1, 1, 0, 0)
    assert totals(user_id="bob", model="m-b") == (1, 0, 1, 0)
    assert totals(user_id="bob", tag="beta") == (1, 1, 0, 0)
    assert totals(model="nobody") == (0, 0, 0, 0)
    assert totals(tag="b_ta") == (0, 0, 0, 0)  # no wildcard: a tag matches only itself
    assert totals(user_id="x" * 10_000) == (0, 0, 0, 0)
    # The judges of a conversation follow user and session filters, not model or tag ones.
    names = {
        e["evaluator"] for e in overview(store, Filters(ALL.since, ALL.until, user_id="carol"))["evaluators"]
    }
    assert names == {"goal-reached", "helpfulness"}
    names = {
        e["evaluator"] for e in overview(store, Filters(ALL.since, ALL.until, model="m-a"))["evaluators"]
    }
    assert names == {"correct", "helpfulness"}
    # Per day with a user filter (computed from the rows, not the cache).
    rows = by_day_model(overview(store, Filters(ALL.since, ALL.until, user_id="carol")))
    assert rows[("2024-03-02", "m-a")]["latency_p50_ms"] == 6000.0
    assert rows[("2024-03-02", "m-b")]["cost"] == 0.0


def test_judges_and_dataset_traces_are_not_turns(store):
    result = overview(store, ALL)
    assert result["totals"]["turns"] == 6
    assert "judge" not in {r["model"] for r in result["per_day"]}
    assert "dataset-correct" not in {e["evaluator"] for e in result["evaluators"]}
    for tag in ("evaluation", "dataset"):
        assert overview(store, Filters(ALL.since, ALL.until, tag=tag))["totals"]["turns"] == 0
    assert overview(store, Filters(ALL.since, ALL.until, user_id="evaluator"))["totals"]["turns"] == 0


def test_cached_days_and_rows_give_the_same_numbers(store):
    whole = overview(store, ALL)
    again = overview(store, ALL)  # now from the cache (and the decoded-days memo)
    queries._DECODED.clear()
    from_store = overview(store, ALL)  # from the cache as stored
    assert whole == again == from_store
    assert {r["day"] for r in store.rows("SELECT day FROM dashboard_days")} >= {D0, D1}
    # D0 from the cache, D1 read from the rows (the range ends before D1 does).
    mixed = overview(store, Filters(D0_S, D1_S + DAY - 1))
    # D0 from the rows alone (the range ends before D0 does: no whole day).
    rows_only = overview(store, Filters(D0_S, D0_S + DAY - 0.25))
    assert mixed["totals"] == whole["totals"]
    assert mixed["per_day"] == whole["per_day"]
    assert rows_only["per_day"] == [r for r in whole["per_day"] if r["day"] == "2024-03-01"]
    assert rows_only["totals"]["latency_p50_ms"] == 2000.0  # of 1000, 2000, 3000: rank ceil(1.5) = 2


def test_changes_reach_a_cached_day(store):
    overview(store, ALL)  # caches D0 and D1
    rate(store, "t5", 0.0, reason="Too long")  # a late vote on an ended day
    t = overview(store, ALL)["totals"]
    assert (t["ratings"], t["dislikes"]) == (5, 3)
    assert {"reason": "Too long", "count": 1} in overview(store, ALL)["dislike_reasons"]
    store.delete_score("rating-t1")  # undone
    assert overview(store, ALL)["totals"]["likes"] == 1
    # A trace written again (late spans): its latency and model change.
    start, _, user, session, tags, status, _, llm = TURNS["t6"]
    write_turn(store, "t6", (start, "m-c", user, session, tags, status, 8.0, llm))
    rows = by_day_model(overview(store, ALL))
    assert rows[("2024-03-02", "m-c")]["latency_p50_ms"] == 8000.0
    assert rows[("2024-03-02", "m-a")]["turns"] == 1
    judge(store, "t3", "helpfulness", 0.8, "fine after all")
    day0 = [e for e in overview(store, ALL)["evaluators"] if e["day"] == "2024-03-01"]
    assert day0 == [{"day": "2024-03-01", "evaluator": "helpfulness", "mean": 0.8, "n": 1}]


def test_bookkeeping_does_not_invalidate_the_cache(store):
    overview(store, ALL)
    before = store.rows("SELECT day, version FROM dashboard_changes ORDER BY day")
    execute(store, "UPDATE traces SET eval_seen = 1")  # the scheduler saw every trace
    store.mark_delivered("rating-t1", 1, exists_remotely=True)  # the outbox delivered a vote
    assert store.rows("SELECT day, version FROM dashboard_changes ORDER BY day") == before


def test_a_stale_computation_never_overwrites_a_newer_one(store):
    queries._save(store, {D0 - 5: (7, {})})
    queries._save(store, {D0 - 5: (3, {(D0 - 5, "m", None): queries.Fact(turns=9)})})
    row = store.row("SELECT version, facts FROM dashboard_days WHERE day = :d", {"d": D0 - 5})
    assert (row["version"], row["facts"]) == (7, "[]")


def test_today_is_read_from_the_rows(store):
    now = time.time()
    write_turn(store, "n1", (now - 5, "m-a", "dave", "s9", CHAT, "OK", 1.5, (10, 1, 0.0)))
    t = overview(store, Filters(now - 60, now + 60))["totals"]
    assert (t["turns"], t["latency_p50_ms"]) == (1, 1500.0)
    rate(store, "n1", 1.0)
    assert overview(store, Filters(now - 60, now + 60))["totals"]["likes"] == 1
    # A range of whole days up to tomorrow: the ended days from the cache, today from the rows.
    t = overview(store, Filters(ALL.since, (int(now // DAY) + 1) * DAY))["totals"]
    assert (t["turns"], t["likes"]) == (7, 3)


def test_outbox_and_evaluation_backlog(store):
    t = overview(store, ALL)["totals"]
    # Every score (the undone vote too: its deletion is still to be sent).
    assert t["outbox_waiting"] == store.delivery_counts()["pending"] == 11
    store.mark_delivered("rating-t1", 1, exists_remotely=True)
    assert overview(store, ALL)["totals"]["outbox_waiting"] == store.delivery_counts()["pending"] == 10
    for i, status in enumerate(["pending", "delayed", "running", "completed", "error", "skipped-sampling"]):
        execute(
            store,
            """INSERT INTO eval_jobs (id, evaluator, version, kind, target_kind, target_id, revision, trigger,
                   status, created) VALUES (:id, 'helpfulness', 'v1', 'llm', 'turn', 'x', 'turn', 'turn', :s, 0)""",
            {"id": f"job-{i}", "s": status},
        )
    execute(store, "UPDATE traces SET eval_seen = 1 WHERE id <> :t", {"t": trace_id("t6")})
    t = overview(store, ALL)["totals"]
    assert (t["eval_jobs_waiting"], t["eval_unseen_traces"], t["eval_backlog"]) == (3, 1, 4)


def test_bad_filters_are_refused_with_a_sentence(store):
    with pytest.raises(ValueError, match="number of seconds"):
        overview(store, Filters("yesterday", 0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="between 1970"):
        overview(store, Filters(float("nan"), 1e9))
    with pytest.raises(ValueError, match="model filter must be text"):
        worst_answers(store, Filters(0, 1e9, model=["m-a"]))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="whole number"):
        worst_answers(store, ALL, limit="50; DROP TABLE traces")  # type: ignore[arg-type]
    assert len(worst_answers(store, ALL, limit=10**9)) == 3  # bounded (WORST_LIMIT), never an error
    empty = overview(store, Filters(ALL.until, ALL.since))  # end before start: nothing
    assert empty["totals"]["turns"] == 0 and empty["per_day"] == []
    assert empty["totals"]["like_rate"] is None and empty["totals"]["latency_p50_ms"] is None


# ----- worst answers, choices, dataset runs -------------------------------------------------


def test_worst_answers_newest_first(store):
    got = worst_answers(store, ALL)
    # People's dislikes first (newest first), then what only a judge scored low (issue 22).
    assert [w["trace_id"] for w in got] == [trace_id(n) for n in ("t3", "t2", "t5")]
    t3, t2, t5 = got
    assert (t2["question"], t2["answer"], t2["feedback"], t2["reason"], t2["comment"], t2["judge"]) == (
        "question t2", "answer t2", 0, "Incorrect", "wrong number", [],
    )  # fmt: skip
    assert (t3["feedback"], t3["reason"], t3["comment"]) == (0, None, None)
    assert t3["judge"] == [{"name": "helpfulness", "value": 0.2, "reasoning": "vague", "demo": False}]
    assert t5["feedback"] is None and t5["judge"] == [
        {"name": "helpfulness", "value": 0.4, "reasoning": "too short", "demo": False}
    ]
    assert t5["start_time"] == TURNS["t5"][0]


def test_worst_answers_filters_and_bounds(store):
    def ids(**kw):
        return [w["trace_id"][-2:] for w in worst_answers(store, Filters(ALL.since, ALL.until, **kw))]

    assert ids(model="m-b") == ["t3", "t5"]  # the disliked first
    assert ids(user_id="alice") == ["t2"]
    assert ids(tag="beta") == ["t2"]
    assert ids(tag="b_ta") == []
    assert ids(session_id="s2") == ["t3"]
    assert [w["trace_id"][-2:] for w in worst_answers(store, ALL, limit=2)] == ["t3", "t2"]
    assert [w["trace_id"][-2:] for w in worst_answers(store, Filters(D1_S, D1_S + DAY))] == ["t5"]
    write_turn(
        store, "t7", (D1_S + 20000, "m-a", "eve", "s7", CHAT, "OK", 1.0, (1, 1, 0.0)), question="?" * 9000
    )
    rate(store, "t7", 0.0, note="n" * 5000)
    first = worst_answers(store, ALL)[0]
    assert len(first["question"]) == queries.TEXT_LIMIT and first["question"].endswith("…")
    assert len(first["comment"]) == queries.TEXT_LIMIT


def test_filter_choices(store):
    assert filter_choices(store) == {
        "model": ["m-a", "m-b"],
        "user_id": ["alice", "bob", "carol"],
        "tag": ["smolagents-chat", "beta"],
    }


def test_dataset_runs(store):
    execute(
        store, "INSERT INTO dataset_runs VALUES ('r1', 'gsm8k', 'm-a', 10, 20), ('r2', 'mine', NULL, 10, 30)"
    )
    for run, item, strict, error, graded in [
        ("r1", "1", 1, None, 1), ("r1", "2", 1, None, 1), ("r1", "3", 0, "timeout", 1),
        ("r2", "1", 1, None, 1), ("r2", "2", 0, None, 0),
    ]:  # fmt: skip
        execute(
            store,
            """INSERT INTO dataset_results (run, item_id, strict, error, graded, created)
               VALUES (:r, :i, :s, :e, :g, 0)""",
            {"r": run, "i": item, "s": strict, "e": error, "g": graded},
        )
    r2, r1 = dataset_runs(store)
    low, high = proportion_confint(2, 3, alpha=0.05, method="wilson")
    assert (r1["name"], r1["dataset"], r1["model"], r1["items"], r1["correct"], r1["errors"]) == (
        "r1", "gsm8k", "m-a", 3, 2, 1,
    )  # fmt: skip
    assert r1["accuracy"] == pytest.approx(2 / 3)
    assert (r1["accuracy_low"], r1["accuracy_high"]) == pytest.approx((low, high))
    assert (r2["items"], r2["graded"], r2["correct"], r2["accuracy"], r2["updated"]) == (2, 1, 1, 1.0, 30.0)
