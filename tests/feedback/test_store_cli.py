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
from feedback.store import Store, StoreError
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
