"""The local store (named migrations, upserts) and the `python -m feedback` CLI over it."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from feedback.cli import main as cli
from feedback.migrations import MIGRATIONS
from feedback.store import SpanRecord, Store, StoreError, TraceRecord
from feedback.votes import Vote, VoteRecorder, score_id_for, vote_from_liked

ROOT = Path(__file__).resolve().parents[2]
TRACE = "0123456789abcdef0123456789abcdef"


def test_migrations_run_once_and_are_recorded(tmp_path):
    store = Store(tmp_path / "db.sqlite3")
    store.close()
    store = Store(tmp_path / "db.sqlite3")
    names = [r[0] for r in sqlite3.connect(tmp_path / "db.sqlite3").execute("SELECT name FROM _migrations")]
    assert names == [name for name, _ in MIGRATIONS]
    store.close()


def test_unwritable_data_dir_names_the_path(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=str(blocker)):
        Store(blocker / "sub" / "db.sqlite3")


@pytest.mark.parametrize(
    "liked, vote",
    [
        (True, Vote(1.0)),
        (False, Vote(0.0)),
        ("", Vote(None)),
        ("Like", Vote(1.0)),
        ("Too slow", Vote(0.0, "Too slow")),
    ],
)
def test_liked_values_map_to_votes(liked, vote):
    assert vote_from_liked(liked) == vote


def test_vote_from_unknown_value_is_refused():
    with pytest.raises(ValueError):
        vote_from_liked(3)


def _seed(store: Store) -> None:
    rec = VoteRecorder(store)
    rec.record(trace_id=TRACE, vote=Vote(0.0, "Incorrect"), session_id="s1", user_id="u1")
    rec.record(trace_id="f" * 32, vote=Vote(1.0), session_id="s2", user_id="u2")
    rec.record(trace_id="e" * 32, vote=Vote(1.0), session_id="s2", user_id="u2")
    rec.record(trace_id="e" * 32, vote=Vote(None), session_id="s2", user_id="u2")


def test_cli_list_export_status(store_url):
    db = store_url  # both backends
    store = Store(db)
    _seed(store)
    store.close()
    out = io.StringIO()
    assert cli(["--db", str(db), "list", "--json"], out) == 0
    rows = json.loads(out.getvalue())
    assert {r["trace_id"] for r in rows} == {TRACE, "f" * 32}
    out = io.StringIO()
    assert cli(["--db", str(db), "export", "--format", "csv"], out) == 0
    table = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert {(r["score_id"], r["value"], r["comment"]) for r in table} >= {
        (score_id_for(TRACE), "0.0", "Incorrect")
    }
    out = io.StringIO()
    assert cli(["--db", str(db), "export", "--format", "jsonl"], out) == 0
    assert len(out.getvalue().splitlines()) == 2
    out = io.StringIO()
    assert cli(["--db", str(db), "status"], out) == 0
    assert "pending: 3" in out.getvalue()  # the undone vote was never sent: still to settle


def test_cli_runs_as_a_module(tmp_path):
    db = tmp_path / "db.sqlite3"
    store = Store(db)
    _seed(store)
    store.close()
    done = subprocess.run(
        [sys.executable, "-m", "feedback", "--db", str(db), "list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert TRACE in done.stdout and "Incorrect" in done.stdout


def test_cli_sync_delivers_pending_scores(store_url, fake_langfuse, monkeypatch):
    db = store_url  # both backends
    store = Store(db)
    _seed(store)
    store.close()
    # A key of its own: the Langfuse SDK keeps one client per public key in a process.
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", f"pk-lf-sync-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-sync")
    monkeypatch.setenv("LANGFUSE_BASE_URL", fake_langfuse.url)
    out = io.StringIO()
    assert cli(["--db", str(db), "sync"], out) == 0, out.getvalue()
    assert set(fake_langfuse.state.scores) == {score_id_for(TRACE), score_id_for("f" * 32)}
    assert "pending: 0, rejected: 0" in out.getvalue().replace("delivered: 3, ", "")
    fake_langfuse.state.mode = "reject"
    store = Store(db)
    VoteRecorder(store).record(trace_id=TRACE, vote=Vote(1.0), session_id="s1", user_id="u1")
    store.close()
    out = io.StringIO()
    assert cli(["--db", str(db), "sync"], out) == 1
    assert "rejected: 1" in out.getvalue()


# ----- "ratings" are people's votes; judges' scores are shown apart (issue 22, item 4) ----------


def _turn(
    store: Store, tid: str, question: str, tags: list[str] | None = None, start: float = 1_760_000_000.0
) -> str:
    root = SpanRecord(tid, tid[:16], None, "Smolagent-Trace", "CHAIN", start, start + 1, "OK", None, {})
    summary = TraceRecord(
        tid, "Smolagent-Trace", question, f"answer to {question}", "u1", "s1", "OK", None, start, start + 1,
        "m", tags or [], {},
    )  # fmt: skip
    store.write_spans([root], [summary])
    return tid


def _judge(store: Store, tid: str, name: str, value: float | None, **kw) -> None:
    data_type = kw.pop("data_type", "CATEGORICAL" if value is None else "NUMERIC")
    store.upsert_score(
        score_id=f"{name}-{tid}", trace_id=tid, name=name, value=value, data_type=data_type,
        source="EVAL", note=kw.pop("note", f"{name} reasoning"), keep_note=False, **kw,
    )  # fmt: skip


def _mixed(store: Store) -> tuple[str, str]:
    """Two chat turns, one vote each (one undone), and five scores nobody clicked."""
    paris, maths = (
        _turn(store, "a" * 32, "Capital of France?"),
        _turn(store, "b" * 32, "12 times 3?", start=1_760_000_100.0),
    )
    _turn(store, "c" * 32, "judge call", tags=["evaluation"], start=1_760_000_200.0)
    _turn(store, "d" * 32, "dataset item", tags=["dataset"], start=1_760_000_300.0)
    rec = VoteRecorder(store)
    rec.record(trace_id=paris, vote=Vote(0.0, "Incorrect"), session_id="s1", user_id="u1")
    rec.record(trace_id=maths, vote=Vote(1.0), session_id="s1", user_id="u1")
    rec.record(trace_id=maths, vote=Vote(None), session_id="s1", user_id="u1")
    _judge(store, paris, "helpfulness", 1.0, scored_by="judge")
    _judge(store, paris, "safety", 0.0, data_type="BOOLEAN", scored_by="demo-judge")
    _judge(store, paris, "dislike-reason", None, string_value="wrong-answer", scored_by="judge")
    _judge(store, maths, "no-error", 1.0, data_type="BOOLEAN", scored_by="check")
    _judge(store, maths, "helpfulness", 0.5)  # written without a label: a judge (source EVAL)
    return paris, maths


def test_list_and_export_are_peoples_votes_and_judges_are_apart_labelled(store_url, tmp_path):
    store = Store(store_url)
    paris, _ = _mixed(store)
    store.close()

    out = io.StringIO()
    assert cli(["--db", store_url, "list", "--json"], out) == 0
    (vote,) = json.loads(out.getvalue())  # the undone vote is gone; no judge row is a "rating"
    assert (vote["trace_id"], vote["value"], vote["by"], vote["comment"]) == (paris, 0.0, "user", "Incorrect")
    out = io.StringIO()
    assert cli(["--db", store_url, "list"], out) == 0
    lines = out.getvalue().splitlines()
    assert (
        len(lines) == 1 and "👎" in lines[0] and "by user u1" in lines[0] and "Capital of France?" in lines[0]
    )

    out = io.StringIO()
    assert cli(["--db", store_url, "list", "--scores"], out) == 0
    text = out.getvalue()
    assert "👍" not in text and "👎" not in text  # nobody clicked these
    by_name = {line.split("  ")[1].split(" = ")[0]: line for line in text.splitlines()}
    assert (
        set(by_name) == {"helpfulness", "safety", "dislike-reason", "no-error"}
        and len(text.splitlines()) == 5
    )
    assert "safety = 0  by demo judge" in text and "dislike-reason = wrong-answer  by judge" in text
    assert "no-error = 1  by code check" in text

    out = io.StringIO()
    assert cli(["--db", store_url, "export", "--format", "jsonl", "--scores"], out) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    reason = next(r for r in rows if r["name"] == "dislike-reason")
    assert (reason["value"], reason["data_type"], reason["by"]) == ("wrong-answer", "CATEGORICAL", "judge")
    assert {r["by"] for r in rows} == {"judge", "demo-judge", "check"} and len(rows) == 5

    target = tmp_path / "ratings.csv"
    done = subprocess.run(
        [sys.executable, "-m", "feedback", "--db", store_url, "export", "-o", str(target)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Exported 1 ratings" in done.stderr  # not 1 + 5 judge scores
    (row,) = list(csv.DictReader(target.open(encoding="utf-8")))
    assert (row["trace_id"], row["by"], row["value"]) == (paris, "user", "0.0")
    out = io.StringIO()
    assert cli(["--db", store_url, "export", "--format", "csv", "--all"], out) == 0
    table = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(table) == 6 and {r["value"] for r in table if r["name"] == "dislike-reason"} == {
        "wrong-answer"
    }


def test_status_says_when_langfuse_is_not_configured(store_url, monkeypatch):
    for key in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"):
        monkeypatch.setenv(key, "")
    Store(store_url).close()
    out = io.StringIO()
    assert cli(["--db", store_url, "status"], out) == 0
    assert "Langfuse is not configured" in out.getvalue()
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-x")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-x")
    out = io.StringIO()
    assert cli(["--db", store_url, "status"], out) == 0
    assert "not configured" not in out.getvalue()


def test_status_counts_ratings_apart_from_judge_scores(store_url):
    store = Store(store_url)
    _mixed(store)
    store.close()
    out = io.StringIO()
    assert cli(["--db", store_url, "status", "--json"], out) == 0
    counts = json.loads(out.getvalue())
    # Two ratings to settle (the dislike, and the undone like's delete); five judge scores.
    assert (counts["ratings"]["pending"], counts["scores"]["pending"]) == (2, 5)
    out = io.StringIO()
    assert cli(["--db", store_url, "status"], out) == 0
    ratings, scores = out.getvalue().split("Judges'")
    assert (
        ratings.startswith("Ratings (people's votes)") and "pending: 2" in ratings and "pending: 5" in scores
    )


def test_traces_lists_chat_turns_unless_asked(store_url):
    store = Store(store_url)
    paris, maths = _mixed(store)
    store.close()
    out = io.StringIO()
    assert cli(["--db", store_url, "traces", "--json"], out) == 0
    assert [t["id"] for t in json.loads(out.getvalue())] == [maths, paris]
    out = io.StringIO()
    assert cli(["--db", store_url, "traces"], out) == 0
    assert "judge call" not in out.getvalue() and "dataset item" not in out.getvalue()
    out = io.StringIO()
    assert cli(["--db", store_url, "traces", "--all", "--json"], out) == 0
    kinds = {t["input"]: t["kind"] for t in json.loads(out.getvalue())}
    assert kinds == {
        "Capital of France?": "turn", "12 times 3?": "turn", "judge call": "evaluation", "dataset item": "dataset",
    }  # fmt: skip


def test_the_status_line_counts_only_peoples_ratings(make_settings, fake_langfuse):
    from feedback.backends import FeedbackBackends

    backends = FeedbackBackends.from_settings(make_settings(fake_langfuse))
    try:
        paris = _turn(backends.store, "a" * 32, "Capital of France?")
        for n in range(3):
            _judge(backends.store, paris, f"judge-{n}", 1.0)
        assert backends.waiting_line() == ""  # three judge scores wait: none of the user's business
        backends.votes.record(trace_id=paris, vote=Vote(0.0), session_id="s1", user_id="u1")
        assert backends.waiting_line() == "1 rating waiting for Langfuse"
    finally:
        backends.close()


def test_store_gives_each_judges_reasoning_by_name(tmp_path):
    store = Store(tmp_path / "db.sqlite3")
    try:
        paris, maths = _mixed(store)
        assert store.judge_reasoning([paris, maths, "f" * 32]) == {
            paris: {
                "dislike-reason": "dislike-reason reasoning",
                "helpfulness": "helpfulness reasoning",
                "safety": "safety reasoning",
            },
            maths: {"helpfulness": "helpfulness reasoning", "no-error": "no-error reasoning"},
        }
        assert [s.name for s in store.ratings()] == ["user-feedback"]
        assert {s.name: s.by for s in store.judge_scores()}["safety"] == "demo-judge"
    finally:
        store.close()


def test_an_older_store_learns_what_caused_each_score_and_who_scored(store_url, monkeypatch):
    """Migration 012 on a store written before it: a dislike's judge score becomes withdrawable
    with that dislike, and each score is labelled (a judge call on the bundled model: demo judge)."""
    import feedback.migrations as migrations

    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:11])
    store = Store(store_url)
    paris = "a" * 32
    with store.transaction() as db:  # the columns of the time (the trace summary has more now)
        db.exec_driver_sql(
            "INSERT INTO traces (id, name, input, output, user_id, session_id, status, start_time, end_time, "
            f"tags, metadata) VALUES ('{paris}', 'Smolagent-Trace', 'Capital of France?', 'Paris', 'u1', 's1', "
            "'OK', 1760000000.0, 1760000001.0, '[]', '{}')"
        )
    store.write_spans(
        [SpanRecord(paris, paris[:16], None, "Smolagent-Trace", "CHAIN", 1.0, 2.0, "OK", None, {})], []
    )
    for tid, model in (("e" * 32, "SmolLM2-135M-Instruct.Q4_1.gguf"), ("f" * 32, "gpt-4o-mini")):
        llm = SpanRecord(tid, tid[:16], None, "judge", "LLM", 1.0, 2.0, "OK", None, {"llm.model_name": model})
        store.write_spans([llm], [])
    rating = score_id_for(paris)
    scores = [  # id, name, value, string_value, data_type, source
        (rating, "user-feedback", 0.0, None, "BOOLEAN", "user"),
        ("why", "dislike-reason", None, "wrong-answer", "CATEGORICAL", "EVAL"),
        ("safe", "safety", 0.0, None, "BOOLEAN", "EVAL"),
        ("help", "helpfulness", 1.0, None, "NUMERIC", "EVAL"),
        ("check", "no-error", 1.0, None, "BOOLEAN", "EVAL"),
    ]
    jobs = [  # id, evaluator, kind, revision, score id, judge trace
        ("j0", "dislike-reason", "llm", "rating-0", None, None),
        ("j1", "dislike-reason", "llm", "rating-1", "why", "f" * 32),
        ("j2", "safety", "llm", "turn", "safe", "e" * 32),
        ("j3", "helpfulness", "llm", "turn", "help", "f" * 32),
        ("j4", "no-error", "code", "turn", "check", None),
    ]
    with store.transaction() as db:
        for sid, name, value, text, data_type, source in scores:
            db.exec_driver_sql(
                "INSERT INTO scores (id, trace_id, name, value, string_value, data_type, source, created, updated) "
                f"VALUES ('{sid}', '{paris}', '{name}', {'NULL' if value is None else value}, "
                f"{'NULL' if text is None else repr(text)}, '{data_type}', '{source}', '2026-01-01', '2026-01-01')"
            )
        for n, (jid, evaluator, kind, revision, sid, judge) in enumerate(jobs):
            db.exec_driver_sql(
                "INSERT INTO eval_jobs (id, evaluator, version, kind, target_kind, target_id, revision, trigger, "
                "status, created, finished, score_id, eval_trace_id) VALUES "
                f"('{jid}', '{evaluator}', 'v1', '{kind}', 'turn', '{paris}', '{revision}', 'turn', "
                f"'{'skipped-filter' if sid is None else 'completed'}', {n}, {n}, "
                f"{'NULL' if sid is None else repr(sid)}, {'NULL' if judge is None else repr(judge)})"
            )
    store.close()
    monkeypatch.undo()

    store = Store(store_url)
    try:
        by = {s.name: (s.by, s.cause_score_id, s.cause_version) for s in store.scores()}
        assert by == {
            "user-feedback": ("user", None, 0),
            "dislike-reason": ("judge", rating, 1),
            "safety": ("demo-judge", None, 0),
            "helpfulness": ("judge", None, 0),
            "no-error": ("check", None, 0),
        }
        causes = {
            r["id"]: (r["cause_score_id"], r["cause_version"]) for r in store.rows("SELECT * FROM eval_jobs")
        }
        assert causes["j1"] == (rating, 1) and causes["j0"] == (None, 0) and causes["j2"] == (None, 0)
        VoteRecorder(store).record(trace_id=paris, vote=Vote(None), session_id="s1", user_id="u1")
        assert {s.name for s in store.scores()} == {"safety", "helpfulness", "no-error"}
    finally:
        store.close()
