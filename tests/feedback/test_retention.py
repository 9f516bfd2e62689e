"""Retention and vacuum: months of traffic leave span details for N days, every trace summary
and rating forever, and a file that can be shrunk while the app runs."""

from __future__ import annotations

import io
import logging
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from config.settings import SettingsError, settings_from_env
from feedback.backends import FeedbackBackends
from feedback.cli import main as cli
from feedback.retention import DAY_S, RetentionLoop, cutoff_for, prune
from feedback.store import SpanRecord, Store, TraceRecord
from feedback.votes import Vote, VoteRecorder, score_id_for

ROOT = Path(__file__).resolve().parents[2]
NOW = time.time()
OLD = NOW - 40 * DAY_S
RECENT = NOW - 3600.0


def trace_id(n: int) -> str:
    return f"{n:032x}"


def write_trace(
    store: Store, n: int, start: float, *, spans: int = 5, size: int = 200, root: bool = True
) -> str:
    """One turn as the exporter writes it: a root span, LLM children a second apart, a summary."""
    tid = trace_id(n)
    records = [
        SpanRecord(
            trace_id=tid,
            span_id=f"{i + 1:016x}",
            parent_id=None if i == 0 else f"{1:016x}",
            name="turn" if i == 0 else "llm",
            kind="AGENT" if i == 0 else "LLM",
            start_time=start + i,
            end_time=start + i + 0.5,
            status="OK",
            status_message=None,
            attributes={"input.value": "p" * size},
            prompt_tokens=None if i == 0 else 10,
            completion_tokens=None if i == 0 else 2,
            total_tokens=None if i == 0 else 12,
        )
        for i in range(spans)
    ]
    summary = TraceRecord(
        id=tid,
        name="Smolagent-Trace",
        input=f"question {n}",
        output=f"answer {n}",
        user_id="u1",
        session_id="s1",
        status="OK",
        status_message=None,
        start_time=start,
        end_time=start + spans,
        model="m",
        tags=["t"],
        metadata={},
    )
    store.write_spans(records, [summary] if root else [])
    return tid


def span_count(store: Store) -> int:
    return store.count_spans_before(float("inf"))


def wait_for(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def store(store_url):
    """The store on each backend (SQLite, Postgres)."""
    s = Store(store_url)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path):
    s = Store(tmp_path / "data" / "feedback.sqlite3")
    yield s
    s.close()


# ----- the setting ---------------------------------------------------------------------


def test_the_default_keeps_everything(make_settings):
    settings = make_settings()
    assert settings.store_retention_days is None
    backends = FeedbackBackends.from_settings(settings)
    try:
        assert backends.retention is None
    finally:
        backends.close()


@pytest.mark.parametrize("raw, days", [("30", 30.0), (" 0.5 ", 0.5), ("365", 365.0), ("", None)])
def test_retention_days_are_read(raw, days):
    assert settings_from_env({"STORE_RETENTION_DAYS": raw}).store_retention_days == days


@pytest.mark.parametrize("raw", ["0", "-3", "thirty", "nan", "inf"])
def test_bad_retention_days_are_refused_with_a_clear_sentence(raw):
    with pytest.raises(SettingsError, match="STORE_RETENTION_DAYS must be a number of days greater than 0"):
        settings_from_env({"STORE_RETENTION_DAYS": raw})


# ----- what a prune deletes and keeps -----------------------------------------------------


def test_old_spans_go_and_recent_spans_traces_and_scores_stay(store):
    old = write_trace(store, 1, OLD)
    recent = write_trace(store, 2, RECENT)
    # Started before the cutoff, still running after it: the whole trace goes, not half of it.
    straddling = write_trace(store, 3, cutoff_for(30, NOW) - 2, spans=6)
    orphan = write_trace(store, 4, OLD, root=False)  # a turn whose root span never arrived
    votes = VoteRecorder(store)
    votes.record(trace_id=old, vote=Vote(0.0, "Incorrect"), session_id="s1", user_id="u1")
    votes.record(trace_id=recent, vote=Vote(1.0), session_id="s1", user_id="u1")
    old_summary = store.get_trace(old)

    assert store.count_spans_before(cutoff_for(30, NOW)) == 5 + 6 + 5
    assert store.delete_spans_before(cutoff_for(30, NOW), batch=2) == 5 + 6 + 5

    assert store.spans_of(old) == [] and store.spans_of(straddling) == [] and store.spans_of(orphan) == []
    assert len(store.spans_of(recent)) == 5
    assert store.get_trace(old) == old_summary  # question, answer, latency and token totals
    assert old_summary["total_tokens"] == 4 * 12
    assert {t["id"] for t in store.list_traces(10)} == {old, recent, straddling}
    assert {s.trace_id for s in store.scores()} == {old, recent}
    assert store.get_score(score_id_for(old)).comment == "Incorrect"
    assert store.delete_spans_before(cutoff_for(30, NOW)) == 0  # nothing left to do


def test_votes_on_a_pruned_trace_still_work(store):
    old = write_trace(store, 1, OLD)
    votes = VoteRecorder(store)
    votes.record(trace_id=old, vote=Vote(1.0), session_id="s1", user_id="u1")
    prune(store, 30, now=NOW)
    assert store.spans_of(old) == []

    changed = votes.record(trace_id=old, vote=Vote(0.0, "Too slow"), session_id="s1", user_id="u1")
    assert (changed.value, changed.comment, changed.version) == (0.0, "Too slow", 2)
    assert changed.delivery == "pending"  # the outbox delivers it like any other change
    votes.record(trace_id=old, vote=Vote(None), session_id="s1", user_id="u1")
    assert store.get_score(score_id_for(old)).deleted


def test_a_vote_is_not_held_up_by_a_big_prune(store):
    for n in range(400):
        write_trace(store, n, OLD + n, spans=50)
    write_trace(store, 10_000, RECENT)
    votes = VoteRecorder(store)
    waits: list[float] = []
    done = threading.Event()

    def vote_all_along() -> None:
        n = 0
        while not done.is_set():
            started = time.perf_counter()
            votes.record(trace_id=trace_id(n % 400), vote=Vote(1.0), session_id="s", user_id="u")
            waits.append(time.perf_counter() - started)
            n += 1
            time.sleep(0.002)

    voter = threading.Thread(target=vote_all_along)
    voter.start()
    try:
        deleted = store.delete_spans_before(cutoff_for(30, NOW))
    finally:
        done.set()
        voter.join()
    assert deleted == 400 * 50 and span_count(store) == 5
    assert waits and max(waits) < 1.0, f"longest vote {max(waits):.3f} s"


# ----- vacuum ----------------------------------------------------------------------------


def test_vacuum_shrinks_the_file_while_other_threads_hold_connections(sqlite_store):
    store = sqlite_store
    for n in range(300):
        write_trace(store, n, OLD + n, spans=10, size=4000)
    recent = write_trace(store, 9999, RECENT)
    votes = VoteRecorder(store)
    votes.record(trace_id=trace_id(7), vote=Vote(1.0), session_id="s", user_id="u")

    # App threads: one keeps its connection open and votes once the vacuum is done, another
    # votes all along (each waits its turn on the busy timeout; none fails).
    opened, vacuumed, done = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []
    voted: list[float] = []

    def holder() -> None:
        try:
            store.list_traces(5)
            opened.set()
            vacuumed.wait(60)
            votes.record(trace_id=recent, vote=Vote(0.0), session_id="s", user_id="u")
        except BaseException as exc:
            errors.append(exc)

    def voter() -> None:
        try:
            n = 0
            while not done.is_set():
                votes.record(trace_id=trace_id(n % 300), vote=Vote(1.0), session_id="s", user_id="u")
                voted.append(time.time())
                n += 1
                time.sleep(0.005)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=holder), threading.Thread(target=voter)]
    for t in threads:
        t.start()
    assert opened.wait(10)
    try:
        assert store.delete_spans_before(cutoff_for(30, NOW)) == 300 * 10
        before, after = store.vacuum()
    finally:
        vacuumed.set()
        done.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert before > 10_000_000 and after < before / 5, (before, after)
    assert Path(f"{store.path}-wal").stat().st_size < 1_000_000  # the log was truncated too
    # Everything that was kept is still there and the app's connections still work.
    assert len(store.spans_of(recent)) == 5 and len(store.list_traces(1000)) == 301
    assert store.get_score(score_id_for(recent)).value == 0.0 and voted
    assert sqlite3.connect(store.path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# ----- the background loop ---------------------------------------------------------------


def test_the_app_prunes_at_start_and_then_periodically(make_settings, caplog):
    settings = make_settings(STORE_RETENTION_DAYS="30")
    seed = Store(settings.db_path)
    old = write_trace(seed, 1, OLD)
    recent = write_trace(seed, 2, RECENT)
    seed.close()

    caplog.set_level(logging.INFO, logger="feedback.retention")
    backends = FeedbackBackends.from_settings(settings, retention_interval_s=0.2)
    try:
        assert backends.retention is not None and backends.retention.days == 30
        backends.start()
        assert wait_for(lambda: backends.store.spans_of(old) == [])
        assert wait_for(lambda: "Retention: deleted 5 spans" in caplog.text)  # logged after the delete
        later = write_trace(backends.store, 3, OLD)  # the next pass, 0.2 s later, takes it too
        assert wait_for(lambda: backends.store.spans_of(later) == [])
        assert len(backends.store.spans_of(recent)) == 5 and backends.store.has_trace(old)
    finally:
        backends.close()
    assert backends.retention._thread is None


def test_a_failing_pass_is_logged_and_the_loop_goes_on(store, caplog):
    old = write_trace(store, 1, OLD)
    with store.transaction() as db:
        db.exec_driver_sql("ALTER TABLE spans RENAME TO spans_away")
    loop = RetentionLoop(store, 30, interval_s=0.05)
    caplog.set_level(logging.INFO, logger="feedback.retention")
    loop.start()
    try:
        assert wait_for(lambda: loop.passes >= 2)
        assert "Retention pass failed" in caplog.text
        with store.transaction() as db:
            db.exec_driver_sql("ALTER TABLE spans_away RENAME TO spans")
        assert wait_for(lambda: store.spans_of(old) == [])
    finally:
        loop.stop()


# ----- the CLI ---------------------------------------------------------------------------


def test_cli_prune_dry_run_prune_and_vacuum(store, monkeypatch):
    for n in range(50):
        write_trace(store, n, OLD + n, size=3000)
    recent = write_trace(store, 99, RECENT)
    db = store.url
    monkeypatch.delenv("STORE_RETENTION_DAYS", raising=False)

    out = io.StringIO()
    assert cli(["--db", db, "prune", "--older-than-days", "30", "--dry-run"], out) == 0
    assert "Would delete 250 spans" in out.getvalue() and span_count(store) == 255

    out = io.StringIO()
    assert cli(["--db", db, "prune", "--older-than-days", "30"], out) == 0
    assert "Deleted 250 spans" in out.getvalue() and "trace summaries and ratings kept" in out.getvalue()
    assert span_count(store) == 5 and len(store.spans_of(recent)) == 5 and len(store.list_traces(100)) == 51

    out = io.StringIO()
    assert cli(["--db", db, "vacuum"], out) == 0
    label = str(store.path) if store.path else store.where
    match = re.fullmatch(rf"{re.escape(label)}: ([\d.]+) (MB|KB) -> ([\d.]+) (MB|KB)\n", out.getvalue())
    assert match, out.getvalue()

    # No --older-than-days and no STORE_RETENTION_DAYS: nothing to go by.
    assert cli(["--db", db, "prune"], io.StringIO()) == 2
    with pytest.raises(SystemExit):
        cli(["--db", db, "prune", "--older-than-days", "0"], io.StringIO())


def test_cli_as_a_module_uses_data_dir_and_the_retention_setting(tmp_path):
    data = tmp_path / "data"
    store = Store(data / "feedback.sqlite3")
    for n in range(200):
        write_trace(store, n, OLD + n, size=5000)
    write_trace(store, 999, RECENT)
    store.close()
    env = {**os.environ, "DATA_DIR": str(data), "STORE_RETENTION_DAYS": "30"}

    def feedback(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "feedback", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "Would delete 1000 spans" in feedback("prune", "--dry-run")
    assert "Deleted 1000 spans" in feedback("prune")
    line = feedback("vacuum")
    match = re.fullmatch(r"(.+): ([\d.]+) MB -> ([\d.]+) (MB|KB)\n", line)
    assert match and Path(match[1]) == data / "feedback.sqlite3", line
    assert float(match[2]) > 5.0 and (match[4] == "KB" or float(match[3]) < float(match[2]) / 5), line
