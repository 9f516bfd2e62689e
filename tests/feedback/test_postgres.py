"""The store on Postgres as well as SQLite: a real server (tests/pg_server.py), never a mock.

Both backends: the store's contract, claims and leases. Postgres: two app processes sharing one
database, SIGKILL of the delivering process, the database going away and coming back, an
unreachable database at start. SQLite: a store written by the previous version upgrades in place.
And `python -m feedback copy --to URL`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from app import ChatHandlers
from feedback.backends import FeedbackBackends
from feedback.migrations import MIGRATIONS
from feedback.store import SpanRecord, Store, StoreError, TraceRecord
from feedback.votes import Vote, VoteRecorder, score_id_for
from tests.app.test_app_process import _env, _start, _wait_ready
from tests.fakes import FakeOpenAI
from tests.gradio_queue import QueueClient
from tests.helpers import answer_index, free_port, like, turn, wait_for

ROOT = Path(__file__).resolve().parents[2]
LEGACY = ROOT / "tests" / "data" / "store-written-by-0.1.sqlite3"
# Its scores (tests/data/README.md): delivered, pending, rejected, deleted after delivery.
A, B, C, D = (
    score_id_for(f"{0:032x}"),
    score_id_for(f"{1:032x}"),
    score_id_for(f"{2:032x}"),
    score_id_for(f"{2:032x}", "other"),
)


def _trace(store: Store, n: int, start: float = 1_760_000_000.123456) -> str:
    tid = f"{n:032x}"
    root = SpanRecord(
        tid, f"{n:08x}00000000", None, "Smolagent-Trace", "CHAIN", start, start + 2, "OK", None, {}
    )
    llm = SpanRecord(
        tid, f"{n:08x}00000001", root.span_id, "gen", "LLM", start + 0.5, start + 1, "OK", None,
        {"input.value": "ünïcode \u2028 'quotes' \"and\" ; DROP TABLE scores; --"}, 7, 3, 10,
    )  # fmt: skip
    summary = TraceRecord(
        tid, "Smolagent-Trace", f"question {n}", f"answer {n}", "u", "s", "OK", None, start, start + 2,
        "m", ["t"], {"k": n},
    )  # fmt: skip
    store.write_spans([root, llm], [summary])
    return tid


# ----- the store's contract, on both backends --------------------------------------------


def test_the_store_keeps_what_it_is_given(store_url):
    store = Store(store_url)
    try:
        tid = _trace(store, 1)
        _trace(store, 1)  # written twice (a re-export): still one trace, tokens not doubled
        trace = store.get_trace(tid)
        assert trace["start_time"] == pytest.approx(1_760_000_000.123456, abs=1e-6)  # double precision
        assert (trace["prompt_tokens"], trace["completion_tokens"], trace["total_tokens"]) == (7, 3, 10)
        assert trace["latency_ms"] == 2000.0 and trace["input"] == "question 1"
        (_, llm) = store.spans_of(tid)
        assert json.loads(llm["attributes"])["input.value"].startswith("ünïcode \u2028 'quotes'")
        votes = VoteRecorder(store)
        first = votes.record(trace_id=tid, vote=Vote(1.0), session_id="s", user_id="u")
        second = votes.record(trace_id=tid, vote=Vote(0.0, "Incorrect"), session_id="s", user_id="u")
        assert second.id == first.id and second.version == 2 and second.created == first.created
        assert second.comment == "Incorrect" and store.delivery_counts()["pending"] == 1
        assert store.delete_score(first.id).deleted and store.delete_score(first.id) is None
        assert [s.id for s in store.scores(include_deleted=True)] == [first.id] and store.scores() == []
        assert store.count_spans_before(float("inf")) == 2 and store.disk_size() > 0
    finally:
        store.close()


def test_votes_from_many_threads_all_land(store_url):
    store = Store(store_url)
    try:
        traces = [_trace(store, n) for n in range(40)]
        votes = VoteRecorder(store)
        errors: list[BaseException] = []

        def vote(chunk: list[str]) -> None:
            try:
                for i, tid in enumerate(chunk):
                    votes.record(trace_id=tid, vote=Vote(float(i % 2)), session_id="s", user_id="u")
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=vote, args=(traces[k::8],)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert {s.trace_id for s in store.scores()} == set(traces)
    finally:
        store.close()


def test_claims_of_two_outboxes_never_overlap(store_url):
    first, second = Store(store_url), Store(store_url)
    try:
        votes = VoteRecorder(first)
        for n in range(60):
            votes.record(trace_id=_trace(first, n), vote=Vote(1.0), session_id="s", user_id="u")
        claimed: dict[str, list[str]] = {"a": [], "b": []}
        barrier = threading.Barrier(2)

        def claim(store: Store, owner: str) -> None:
            barrier.wait()
            while batch := store.claim_due(owner, 60, limit=5):
                claimed[owner] += [s.id for s in batch]

        threads = [
            threading.Thread(target=claim, args=(first, "a")),
            threading.Thread(target=claim, args=(second, "b")),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not set(claimed["a"]) & set(claimed["b"])
        assert len(claimed["a"]) + len(claimed["b"]) == 60
        assert second.claim_due("c", 60) == []  # every score is held
    finally:
        first.close()
        second.close()


def test_an_expired_lease_is_taken_over_and_a_late_owner_cannot_free_it(store_url):
    store = Store(store_url)
    try:
        tid = _trace(store, 1)
        VoteRecorder(store).record(trace_id=tid, vote=Vote(1.0), session_id="s", user_id="u")
        (held,) = store.claim_due("other-host:1:dead", 0.5)
        assert held.lease_owner == "other-host:1:dead"
        assert store.claim_due("me", 60) == []  # still leased
        time.sleep(0.6)
        (taken,) = store.claim_due("me", 60)  # expired: taken over
        assert taken.id == held.id and taken.lease_owner == "me"
        # The first owner comes back late and reports: its report counts, my lease stays mine.
        store.mark_retry(held.id, "late", 0, owner="other-host:1:dead")
        assert store.get_score(held.id).lease_owner == "me"
        store.mark_delivered(held.id, taken.version, exists_remotely=True, owner="me")
        row = store.get_score(held.id)
        assert row.delivery == "delivered" and row.lease_owner is None and row.lease_until == 0
    finally:
        store.close()


# ----- SQLite: upgrade in place ----------------------------------------------------------


def test_a_store_written_by_the_previous_version_upgrades_in_place(tmp_path):
    db = tmp_path / "feedback.sqlite3"
    shutil.copy(LEGACY, db)
    before = sqlite3.connect(db)
    old = {
        t: before.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
        for t in ("traces", "spans", "scores")
    }
    before.close()
    assert sorted(r[0] for r in old["scores"]) == sorted([A, B, C, D])

    store = Store(db)
    try:
        with store.read() as conn:
            done = [r[0] for r in conn.exec_driver_sql("SELECT name FROM _migrations ORDER BY name")]
        assert done == [name for name, _ in MIGRATIONS]
        with store.read() as conn:
            new = {
                t: [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {t} ORDER BY 1, 2")]
                for t in ("traces", "spans", "scores")
            }
        # Every row is kept as it was; the columns added since come after the old ones.
        assert [r[: len(old["traces"][0])] for r in new["traces"]] == old["traces"]
        assert [r[: len(old["spans"][0])] for r in new["spans"]] == old["spans"]
        # Costs were not known before 008: unknown, never zero.
        assert all(r[len(old["spans"][0]) :] == (None,) for r in new["spans"])
        assert all(t["cost"] is None for t in store.list_traces(100))
        assert [r[: len(old["scores"][0])] for r in new["scores"]] == old["scores"]
        added = {
            s.id: (s.lease_owner, s.lease_until, s.eval_seen_version, s.string_value)
            for s in store.scores(include_deleted=True)
        }
        assert {k: v[:2] + v[3:] for k, v in added.items()} == dict.fromkeys(added, (None, 0, None))
        # Ratings and traces stored before evaluation existed are not judged by themselves.
        assert all(s.eval_seen_version == s.version for s in store.scores(include_deleted=True))
        assert {r["eval_seen"] for r in store.rows("SELECT eval_seen FROM traces")} == {1}
        a, b, c, d = (store.get_score(x) for x in (A, B, C, D))
        assert (a.delivery, b.delivery, c.delivery, d.delivery) == (
            "delivered",
            "pending",
            "rejected",
            "pending",
        )
        assert b.comment == "Incorrect; wrong number" and b.attempts == 1 and d.deleted and d.remote_exists
        # The upgraded store works: a changed vote and a claim.
        changed = VoteRecorder(store).record(trace_id=a.trace_id, vote=Vote(0.0), session_id="s", user_id="u")
        assert changed.id == A and changed.version == a.version + 1
        assert {s.id for s in store.claim_due("me", 60, now=time.time() + 7200)} == {A, B, D}
    finally:
        store.close()


# ----- the copy command ------------------------------------------------------------------


def _feedback(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATA_DIR")}
    return subprocess.run(
        [sys.executable, "-m", "feedback", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_copy_moves_a_sqlite_store_into_postgres_and_can_run_again(tmp_path, pg_url):
    db = tmp_path / "feedback.sqlite3"
    shutil.copy(LEGACY, db)
    local = Store(db)
    for n in range(10, 610):  # enough rows for several batches
        _trace(local, n)
    local.close()

    done = _feedback(
        "--db", str(db), "copy", "--to", pg_url.replace("postgresql+psycopg://", "postgresql://")
    )
    assert done.returncode == 0, done.stderr
    assert "Copied 603 traces, 1206 spans and 4 scores" in done.stdout  # ratings and judges': "scores"
    assert "postgres at 127.0.0.1" in done.stdout and "1813/1813" in done.stderr  # the progress bar
    remote = Store(pg_url)
    try:
        b = remote.get_score(B)
        assert b.comment == "Incorrect; wrong number" and b.delivery == "pending" and b.attempts == 1
        assert remote.get_score(A).delivery == "delivered"
        assert len(remote.spans_of(f"{0:032x}")) == 2 and len(remote.list_traces(1000)) == 603
        assert remote.get_trace(f"{5:032x}") is None

        # The deployment moves on: a newer state in Postgres is never undone by copying again.
        VoteRecorder(remote).record(trace_id=b.trace_id, vote=Vote(1.0), session_id="s", user_id="u")
        again = _feedback("--db", str(db), "copy", "--to", pg_url)
        assert again.returncode == 0, again.stderr
        assert len(remote.list_traces(1000)) == 603 and len(remote.scores(include_deleted=True)) == 4
        assert remote.get_score(B).value == 1.0 and remote.get_score(B).version == 2
        assert remote.count_spans_before(float("inf")) == 1206
    finally:
        remote.close()
    bad = _feedback("--db", str(db), "copy", "--to", "mysql://u:p@h/db")
    assert bad.returncode == 1 and "postgresql://" in bad.stderr


# ----- Postgres: going away, coming back, not there at all -------------------------------


def test_a_database_that_goes_away_fails_votes_clearly_and_the_chat_goes_on(
    pg_server, pg_url, make_settings, make_runtime, fake_langfuse, caplog
):
    runtime = make_runtime(make_settings(fake_langfuse, DATABASE_URL=pg_url, LANGFUSE_TIMEOUT_S="1"))
    handlers = ChatHandlers(runtime)
    store = runtime.feedback.store
    history, session, _ = turn(handlers, None, [], "before the outage")
    runtime.feedback.telemetry.flush()
    like(handlers, session, answer_index(history, 0), True)
    first = store.scores()[0]

    pg_server.stop()
    try:
        _, status = like(handlers, session, answer_index(history, 0), False)
        assert "could not be saved (the database cannot be reached right now)" in status
        assert "store cannot be reached" in status
        assert "127.0.0.1" not in status and str(pg_server.port) not in status  # the page names no server
        assert f"postgres at 127.0.0.1:{pg_server.port}" in caplog.text  # the log does
        history, session, _ = turn(handlers, session, history, "during the outage")
        assert history[-1]["content"] == "Answer to: during the outage"  # the chat goes on
    finally:
        pg_server.start()
    _, status = like(handlers, session, answer_index(history, 0), False)
    assert "could not be saved" not in status
    row = store.get_score(first.id)
    assert row.value == 0.0 and row.version == 2 and row.created == first.created  # nothing lost


def test_an_unreachable_database_at_start_is_a_clear_error_naming_the_host(tmp_path):
    port = free_port()
    url = f"postgresql://chat:s3cret-pw@127.0.0.1:{port}/ratings"
    with pytest.raises(StoreError, match=rf"postgres at 127\.0\.0\.1:{port}/ratings"):
        Store(url.replace("postgresql://", "postgresql+psycopg://"))
    done = subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=_env(tmp_path, DATABASE_URL=url),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"Cannot start: Cannot reach the store (postgres at 127.0.0.1:{port}/ratings)" in done.stderr
    assert "s3cret-pw" not in done.stderr + done.stdout


def test_the_banner_names_the_store_and_warns_about_sqlite_on_a_space(pg_url, make_settings):
    settings = make_settings(SPACE_ID="someone/chat")
    backends = FeedbackBackends.from_settings(settings)
    try:
        line, warning = backends.store_lines(settings)
        assert line == f"store: sqlite at {settings.db_path}"
        assert "wiped whenever the Space restarts" in warning and "DATABASE_URL" in warning
    finally:
        backends.close()
    password_url = make_url(pg_url).set(password="pw-never-shown").render_as_string(hide_password=False)
    settings = make_settings(SPACE_ID="someone/chat", DATABASE_URL=password_url)
    backends = FeedbackBackends.from_settings(settings)
    try:
        u = make_url(pg_url)
        assert backends.store_lines(settings) == [f"store: postgres at 127.0.0.1:{u.port}/{u.database}"]
        assert "pw-never-shown" not in repr(settings) and "pw-never-shown" in settings.secrets()
    finally:
        backends.close()


# ----- several app processes on one Postgres ---------------------------------------------


class AppProcess:
    """`python app.py` with a fake model, its own DATA_DIR and port, and a shared DATABASE_URL."""

    def __init__(self, tmp_path: Path, name: str, **env: str) -> None:
        self.dir = tmp_path / name
        self.dir.mkdir()
        self.port = free_port()
        self.llm = FakeOpenAI().__enter__()
        full = _env(
            self.dir,
            MODEL_PROVIDER="openai",
            OPENAI_BASE_URL=self.llm.url,
            GRADIO_SERVER_PORT=str(self.port),
            **env,
        )
        self.proc = _start(full, self.dir)
        self.url = f"http://127.0.0.1:{self.port}/"
        _wait_ready(self.url, self.proc)

    @property
    def log(self) -> str:
        return (self.dir / "app.log").read_text()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=60)
        self.llm.__exit__(None, None, None)


def _langfuse_env(fake_langfuse, pg_url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": pg_url,
        "LANGFUSE_PUBLIC_KEY": "pk-lf-replicas",
        "LANGFUSE_SECRET_KEY": "sk-lf-replicas",
        "LANGFUSE_BASE_URL": fake_langfuse.url,
        "LANGFUSE_RETRY_MAX_S": "0.5",
        **extra,
    }


def _chat_and_vote(app: AppProcess, questions: list[str], liked: bool) -> None:
    browser = QueueClient(app.url)
    try:
        history: list = []
        for i, question in enumerate(questions):
            result = browser.chat(question, history)
            assert result.success, result.message
            history = result.output[1]
            assert browser.vote(answer_index(history, i), liked).success
    finally:
        browser.close()


def test_two_app_processes_share_one_postgres_and_langfuse_gets_each_score_once(
    tmp_path, fake_langfuse, pg_url
):
    env = _langfuse_env(fake_langfuse, pg_url)
    apps = [AppProcess(tmp_path, "a", **env), AppProcess(tmp_path, "b", **env)]
    try:
        browsers = [
            threading.Thread(
                target=_chat_and_vote, args=(app, [f"{app.dir.name}{k} q{i}" for i in range(3)], k == 0)
            )
            for app in apps
            for k in range(2)
        ]  # two browsers' sessions on each process, at the same time
        for t in browsers:
            t.start()
        for t in browsers:
            t.join(120)
        store = Store(pg_url)
        try:
            wait_for(
                lambda: len(store.scores()) == 12 and store.delivery_counts()["pending"] == 0, timeout=30
            )
            traces = {t["id"]: t["input"] for t in store.list_traces(100)}
            assert sorted(traces.values()) == sorted(
                f"{a}{k} q{i}" for a in "ab" for k in range(2) for i in range(3)
            )
            scores = {s.id: s for s in store.scores()}
            assert {s.trace_id for s in scores.values()} == set(traces)  # each vote on its own answer
            assert all(s.value == (1.0 if traces[s.trace_id][1] == "0" else 0.0) for s in scores.values())
        finally:
            store.close()
        time.sleep(2.5)  # an idle poll of both outboxes: nothing is sent again
        posts = Counter(item["id"] for item in fake_langfuse.state.score_posts)
        assert set(posts) == set(scores) and set(posts.values()) == {1}, posts
        for app in apps:
            assert "store: postgres at 127.0.0.1:" in app.log and "pk-lf" not in app.log.replace(
                "pk-lf-replicas", ""
            )
    finally:
        for app in apps:
            app.stop()


def test_sigkill_of_the_delivering_process_hands_its_work_to_the_other(tmp_path, fake_langfuse, pg_url):
    # Langfuse hangs longer than the send timeout allows: the delivering process is caught mid-send.
    fake_langfuse.state.mode = "hang"
    fake_langfuse.state.hang_s = 25
    env = _langfuse_env(fake_langfuse, pg_url, LANGFUSE_TIMEOUT_S="20")
    apps = {app.proc.pid: app for app in (AppProcess(tmp_path, "a", **env), AppProcess(tmp_path, "b", **env))}
    store = Store(pg_url)
    try:
        first = next(iter(apps.values()))
        _chat_and_vote(first, ["kill the deliverer"], True)
        (score,) = wait_for(lambda: [s for s in store.scores() if s.lease_owner], timeout=20)
        owner_pid = int(score.lease_owner.split(":")[1])
        deliverer = apps.pop(owner_pid)
        # Langfuse answers again, but the deliverer's request is already hanging there.
        fake_langfuse.state.mode = "ok"
        started = time.monotonic()
        deliverer.stop(signal.SIGKILL)  # mid-delivery
        (survivor,) = apps.values()
        wait_for(lambda: store.get_score(score.id).delivery == "delivered", timeout=20)
        assert time.monotonic() - started < 15  # well before the 60 s lease would have run out
        assert Counter(item["id"] for item in fake_langfuse.state.score_posts) == {score.id: 1}
        assert fake_langfuse.state.scores[score.id]["value"] == 1.0
        assert "Took over 1 rating(s) from outbox" in survivor.log
    finally:
        store.close()
        for app in apps.values():
            app.stop()
