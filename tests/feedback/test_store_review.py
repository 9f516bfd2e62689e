"""Review of the SQLAlchemy store (SQLite and Postgres): each test here shows one defect found in
review, on a real database (tests/pg_server.py for Postgres), or checks a property found sound.

Every failing test names what goes wrong in its docstring; the fixes are in the review report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from app import ChatHandlers
from config.settings import settings_from_env
from feedback import cli, database
from feedback.backends import FeedbackBackends
from feedback.outbox import Outbox, _alive
from feedback.store import SpanRecord, Store, StoreError, TraceRecord
from feedback.store_copy import copy_store
from feedback.votes import Vote, VoteRecorder, score_id_for
from tests.helpers import answer_index, like, turn

ROOT = Path(__file__).resolve().parents[2]


def _trace(store: Store, n: int, output: str = "answer") -> str:
    tid = f"{n:032x}"
    root = SpanRecord(
        tid, f"{n:08x}00000000", None, "Smolagent-Trace", "CHAIN", 1.0e9, 1.0e9 + 2, "OK", None, {}
    )
    summary = TraceRecord(
        tid, "Smolagent-Trace", f"question {n}", output, "u", "s", "OK", None, 1.0e9, 1.0e9 + 2, "m", [], {}
    )
    store.write_spans([root], [summary])
    return tid


def _vote(store: Store, tid: str, value: float | None) -> None:
    VoteRecorder(store).record(trace_id=tid, vote=Vote(value), session_id="s", user_id="u")


# ----- the repository -------------------------------------------------------------------------


def test_the_store_written_by_0_1_that_the_upgrade_test_reads_is_in_git():
    """`.gitignore`'s `data/` also ignores tests/data/: the 0.1 store (and its README) that
    test_postgres.py's upgrade test opens exist only on the machine that made them, so that test
    fails on any fresh clone and in CI."""
    done = subprocess.run(
        ["git", "ls-files", "--error-unmatch", "tests/data/store-written-by-0.1.sqlite3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


# ----- secrets and what a page may show ---------------------------------------------------------


def test_a_password_with_an_at_sign_never_shows_in_the_banner_or_the_start_error(tmp_path):
    """SQLAlchemy splits `user:p@ss-W0rd@host` at the first `@`: the password becomes `p` and the
    host `ss-W0rd@host`, so the rest of the password is printed in the banner (`where`), in the
    "Cannot start" error and in the logs, and settings.secrets() does not know it."""
    secret_tail = "ss-W0rd-tail"
    settings = settings_from_env(
        {"DATA_DIR": str(tmp_path), "DATABASE_URL": f"postgresql://chat:p@{secret_tail}@127.0.0.1:9/ratings"}
    )
    assert secret_tail not in database.where(settings.store_url)
    with pytest.raises(StoreError) as failed:
        Store(settings.store_url)
    assert secret_tail not in str(failed.value)


def test_a_database_host_that_stops_resolving_is_not_shown_in_the_page(pg_url, make_settings, make_runtime):
    """A page only shows `StoreError.reason`, which must never say where the database is. A DNS
    failure mid-run ("failed to resolve host 'db.internal...'") is not recognised as a connection
    failure by Store._guard, so its text, with the host name, is shown to the visitor."""
    runtime = make_runtime(make_settings(DATABASE_URL=pg_url))
    handlers = ChatHandlers(runtime)
    history, session, _ = turn(handlers, None, [], "hello")
    runtime.feedback.telemetry.flush()
    # The database's name stops resolving (DNS outage, a deleted managed database): the same
    # store, now pointing at a host the resolver does not know.
    store = runtime.feedback.store
    store.engine.dispose()
    store.engine = database.create(
        make_url(pg_url).set(host="db-host-secret.invalid").render_as_string(False)
    )
    _, status = like(handlers, session, answer_index(history, 0), True)
    assert "could not be saved" in status
    assert "db-host-secret" not in status


# ----- text Postgres cannot hold --------------------------------------------------------------


def test_an_answer_with_a_nul_character_is_stored_with_the_rest_of_its_batch(store_url):
    """Postgres text cannot hold U+0000 (SQLite can): an answer the model ends with chr(0) (its
    code's final_answer, JSON-decoded by the exporter) makes write_spans fail, and with it every
    other trace of the same export batch, other visitors' included, is lost."""
    store = Store(store_url)
    try:
        root = SpanRecord("a" * 32, "1" * 16, None, "Smolagent-Trace", "CHAIN", 1.0, 2.0, "OK", None, {})
        other = SpanRecord("b" * 32, "2" * 16, None, "Smolagent-Trace", "CHAIN", 1.0, 2.0, "OK", None, {})
        traces = [
            TraceRecord("a" * 32, "T", "q", "NUL here: \x00", "u", "s", "OK", None, 1.0, 2.0, "m", [], {}),
            TraceRecord(
                "b" * 32, "T", "q", "someone else's answer", "v", "t", "OK", None, 1.0, 2.0, "m", [], {}
            ),
        ]
        store.write_spans([root, other], traces)
        assert store.has_trace("b" * 32) and store.has_trace("a" * 32)
    finally:
        store.close()


def test_copy_carries_an_answer_with_a_nul_character_into_postgres(tmp_path, pg_url):
    """The same through `copy --to`: a SQLite store holding one such answer can never be copied;
    each run stops at the batch holding it, with everything after it left behind."""
    source, target = Store(tmp_path / "local.sqlite3"), Store(pg_url)
    try:
        _trace(source, 1, output="binary \x00 answer")
        _vote(source, _trace(source, 2), 1.0)
        copy_store(source, target)
        assert target.has_trace(f"{2:032x}") and len(target.scores()) == 1
    finally:
        source.close()
        target.close()


# ----- leases and exactly-once ------------------------------------------------------------------


def test_a_late_report_of_an_older_version_leaves_the_current_one_to_deliver(store_url):
    """An outbox whose lease expired mid-send (a slow Langfuse: httpx's timeout is per read, not
    per call; a paused VM) reports after another outbox delivered the newer state. Its stale
    create reached Langfuse last, so Langfuse now holds the like the user undid, yet
    mark_delivered keeps delivered_version at the newer version: nothing sends the undo again."""
    store = Store(store_url)
    try:
        tid = _trace(store, 1)
        _vote(store, tid, 1.0)  # version 1: like
        (slow,) = store.claim_due("host-a:1:slow", 0.2)  # A sends the like... slowly
        time.sleep(0.3)
        _vote(store, tid, None)  # version 2: the user undoes it
        (fast,) = store.claim_due("host-b:2:fast", 60)  # A's lease is over: B takes version 2
        assert fast.deleted and fast.remote_exists
        store.mark_delivered(fast.id, fast.version, exists_remotely=False, owner="host-b:2:fast")  # deleted
        # A's create lands in Langfuse now (after B's delete) and A reports it.
        store.mark_delivered(slow.id, slow.version, exists_remotely=True, owner="host-a:1:slow")
        row = store.get_score(slow.id)
        assert row.delivery == "pending", "Langfuse holds the undone like; the store says delivered"
    finally:
        store.close()


def test_copy_run_again_keeps_what_the_target_knows_about_langfuse(tmp_path, pg_url):
    """`copy` is meant to be run again "after more ratings". A rating copied the first time was
    sent by the target's outbox (remote_exists=1). Undone locally afterwards, the second copy
    overwrites it with the source's remote_exists=0, so the target's outbox takes the undo for a
    score "never sent" and Langfuse keeps the like."""
    source, target = Store(tmp_path / "local.sqlite3"), Store(pg_url)
    try:
        tid = _trace(source, 1)
        _vote(source, tid, 1.0)
        copy_store(source, target)
        (sent,) = target.claim_due("deployed:1:x", 60)
        target.mark_delivered(sent.id, sent.version, exists_remotely=True, owner="deployed:1:x")
        _vote(source, tid, None)  # undone in the local app after the first copy
        copy_store(source, target)
        (undo,) = target.claim_due("deployed:1:x", 60)
        assert undo.deleted
        assert undo.remote_exists, "the target's outbox will skip the delete in Langfuse"
    finally:
        source.close()
        target.close()


def test_a_lease_shorter_than_the_langfuse_timeout_still_delivers(make_settings, fake_langfuse):
    """OUTBOX_LEASE_S is accepted down to any positive number, but Outbox.deliver_due gives a
    claimed score back when less than LANGFUSE_TIMEOUT_S + 1 s of its lease is left: with
    OUTBOX_LEASE_S=5 and the default LANGFUSE_TIMEOUT_S=5 it claims and releases for ever
    (a busy loop of write transactions) and never delivers a rating."""
    settings = make_settings(fake_langfuse, OUTBOX_LEASE_S="5", LANGFUSE_TIMEOUT_S="5")
    backends = FeedbackBackends.from_settings(settings)
    outbox = backends.outbox
    assert outbox is not None
    try:
        _vote(backends.store, _trace(backends.store, 1), 1.0)
        done = threading.Event()
        worker = threading.Thread(target=lambda: (outbox.deliver_due(), done.set()), daemon=True)
        worker.start()
        finished = done.wait(5)
        if not finished:
            outbox._lease_s = 3600.0  # let the stuck loop end before the store closes
            worker.join(20)
        assert finished, "deliver_due never returned"
        assert backends.store.delivery_counts()["delivered"] == 1
    finally:
        backends.close()


_OTHER_NAMESPACE_OUTBOX = """
import os, sys, time
sys.path.insert(0, {root!r})
from feedback.outbox import Outbox
from feedback.store import Store
store = Store({url!r})
outbox = Outbox(store, sink=None, lease_s=600)
(claimed,) = store.claim_due(outbox.owner, 600)
print(outbox.owner, flush=True)
sys.stdin.read()  # alive, delivering, until the test is done
"""


def test_a_live_outbox_in_another_pid_namespace_on_this_host_keeps_its_lease(tmp_path):
    """Containers that share the host's name (docker --network host, Kubernetes hostNetwork) each
    have their own PIDs. free_dead_leases reads `host:pid:...`, finds no such pid in its own
    namespace and takes the lease of an outbox that is alive and sending: both deliver."""
    if os.geteuid() != 0 or subprocess.run(["unshare", "--pid", "--fork", "true"], check=False).returncode:
        pytest.skip("needs unshare --pid (root)")
    url = database.sqlite_url(tmp_path / "shared.sqlite3")
    store = Store(url)
    _vote(store, _trace(store, 1), 1.0)
    script = _OTHER_NAMESPACE_OUTBOX.format(root=str(ROOT), url=url)
    # In the new namespace the shell is pid 1 and every /bin/true takes the next pid: python gets
    # one that no process of this namespace has.
    pid = next(
        p for p in range(40, 10_000) if not any(Path(f"/proc/{q}").exists() for q in range(p - 2, p + 3))
    )
    shell = f"i=2; while [ $i -lt {pid} ]; do /bin/true; i=$((i+1)); done; "
    shell += f"{sys.executable} -c {_shell_quote(script)}; true"
    other = subprocess.Popen(
        ["unshare", "--pid", "--fork", "sh", "-c", shell],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        owner = other.stdout.readline().strip()
        assert owner, "the other outbox did not start"
        pid = int(owner.split(":")[1])
        if _alive(pid):
            pytest.skip(f"pid {pid} of the other namespace happens to exist here too")
        mine = Outbox(store, sink=None, lease_s=600)  # type: ignore[arg-type]
        mine.free_dead_leases()
        assert store.claim_due(mine.owner, 600) == [], "took the score of a live outbox"
    finally:
        other.stdin.close()
        other.wait(20)
        store.close()


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def test_a_vote_behind_a_held_lock_fails_in_bounded_time_on_postgres(pg_url, pg_server):
    """SQLite gives a vote up after its 30 s busy timeout; on Postgres no lock_timeout or
    statement_timeout is set, so a vote behind a lock (`python -m feedback vacuum`'s VACUUM FULL,
    an admin's open transaction, a stuck server) waits for ever: the rating spins, and each such
    click holds a Gradio worker and a pooled connection until the lock goes."""
    store = Store(pg_url)
    tid = _trace(store, 1)
    locker = pg_server.connect(make_url(pg_url).database)
    try:
        locker.execute("LOCK TABLE scores IN ACCESS EXCLUSIVE MODE")  # held: the transaction stays open
        outcome: list[object] = []
        voter = threading.Thread(target=lambda: outcome.append(_try_vote(store, tid)), daemon=True)
        voter.start()
        voter.join(35)
        assert outcome, "the vote still waits after 35 s"
        assert isinstance(outcome[0], StoreError)
    finally:
        locker.rollback()
        locker.close()
        store.close()


def _try_vote(store: Store, tid: str) -> object:
    try:
        _vote(store, tid, 1.0)
    except StoreError as exc:
        return exc
    return "saved"


# ----- the CLI ------------------------------------------------------------------------------


def test_vacuum_on_postgres_rewrites_only_the_stores_tables(pg_url, pg_server):
    """`python -m feedback vacuum` runs a bare VACUUM FULL: on a Postgres database shared with
    anything else (a free managed database often is) it rewrites and locks every table of it,
    not only traces, spans and scores."""
    name = make_url(pg_url).database
    with pg_server.connect(name, autocommit=True) as db:
        db.execute("CREATE TABLE other_app (x int)")
        db.execute("INSERT INTO other_app SELECT generate_series(1, 1000)")
        before = db.execute("SELECT relfilenode FROM pg_class WHERE relname = 'other_app'").fetchone()
    store = Store(pg_url)
    try:
        store.vacuum()
    finally:
        store.close()
    with pg_server.connect(name, autocommit=True) as db:
        after = db.execute("SELECT relfilenode FROM pg_class WHERE relname = 'other_app'").fetchone()
    assert after == before, "another application's table was rewritten under an exclusive lock"


def test_the_cli_takes_a_postgres_url_spelt_as_database_url_takes_it(pg_url, capsys):
    """DATABASE_URL accepts postgres:// (what Heroku, Supabase and Render hand out); `--db` passes
    its text to Store unnormalised and crashes with NoSuchModuleError and a traceback."""
    u = make_url(pg_url)
    url = f"postgres://{u.username}@{u.host}:{u.port}/{u.database}"
    assert cli.main(["--db", url, "status"]) == 0
    assert "pending: 0" in capsys.readouterr().out


def test_copy_refuses_the_store_itself_under_another_spelling(tmp_path, monkeypatch, pg_url):
    """cmd_copy detects a copy into the source only when both URLs are the same text: the same
    SQLite file by its absolute path, or the same Postgres database by `localhost`, is copied
    into itself (its rows rewritten over the live ones) and reported as a successful copy."""
    monkeypatch.chdir(tmp_path)
    Store("feedback.sqlite3").close()
    same_file = cli.main(["--db", "feedback.sqlite3", "copy", "--to", str(tmp_path / "feedback.sqlite3")])
    u = make_url(pg_url)
    other_spelling = f"postgresql://{u.username}@localhost:{u.port}/{u.database}"
    same_database = cli.main(["--db", pg_url, "copy", "--to", other_spelling])
    assert (same_file, same_database) == (2, 2), "copied a store into itself"


# ----- checked and found sound (these pass) ----------------------------------------------------


def test_sound_many_app_processes_migrating_one_fresh_postgres_apply_each_migration_once(pg_url):
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            Store(pg_url).close()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    store = Store(pg_url)
    try:
        with store.read() as db:
            names = [r[0] for r in db.exec_driver_sql("SELECT name FROM _migrations ORDER BY name")]
        assert len(names) == len(set(names)) >= 4
    finally:
        store.close()


def test_sound_sqlite_votes_claims_and_exports_from_many_threads_never_hit_a_lock(tmp_path):
    store = Store(tmp_path / "feedback.sqlite3")
    try:
        traces = [_trace(store, n) for n in range(64)]
        errors: list[BaseException] = []
        stop = threading.Event()

        def voter(chunk: list[str]) -> None:
            try:
                for i, tid in enumerate(chunk * 3):
                    _vote(store, tid, None if i % 5 == 4 else float(i % 2))
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        def claimer(owner: str) -> None:
            try:
                while not stop.is_set():
                    for s in store.claim_due(owner, 60, limit=5):
                        store.mark_delivered(s.id, s.version, exists_remotely=not s.deleted, owner=owner)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        def exporter() -> None:
            try:
                n = 1000
                while not stop.is_set():
                    _trace(store, n)
                    n += 1
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        workers = [threading.Thread(target=voter, args=(traces[k::16],)) for k in range(16)]
        helpers = [threading.Thread(target=claimer, args=(f"h:{k}:x",)) for k in range(2)]
        helpers.append(threading.Thread(target=exporter))
        for t in workers + helpers:
            t.start()
        for t in workers:
            t.join(120)
        stop.set()
        for t in helpers:
            t.join(60)
        assert not errors, errors[:3]
        for s in store.claim_due("last", 60, limit=1000):
            store.mark_delivered(s.id, s.version, exists_remotely=not s.deleted, owner="last")
        assert store.delivery_counts()["pending"] == 0
    finally:
        store.close()


def test_sound_a_copy_interrupted_midway_and_run_again_duplicates_nothing(tmp_path, pg_url):
    source, target = Store(tmp_path / "local.sqlite3"), Store(pg_url)
    try:
        for n in range(1200):
            _trace(source, n)
        _vote(source, f"{5:032x}", 1.0)
        seen = 0

        def interrupt(_table: str, rows: int) -> None:
            nonlocal seen
            seen += rows
            if seen >= 1000:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            copy_store(source, target, on_rows=interrupt)
        copy_store(source, target)
        copy_store(source, target)
        with target.read() as db:
            counts = [
                db.exec_driver_sql(f"SELECT COUNT(*) FROM {t}").scalar_one() for t in ("traces", "spans")
            ]
        assert counts == [1200, 1200] and len(target.scores()) == 1
        assert target.get_score(score_id_for(f"{5:032x}")).version == 1
    finally:
        source.close()
        target.close()


def test_sound_a_changed_vote_while_its_old_version_is_leased_is_delivered_after_it(store_url):
    store = Store(store_url)
    try:
        tid = _trace(store, 1)
        _vote(store, tid, 1.0)
        (held,) = store.claim_due("a", 60)
        _vote(store, tid, 0.0)  # changed while version 1 is on its way
        assert store.claim_due("b", 60) == []  # still A's until it reports
        store.mark_delivered(held.id, held.version, exists_remotely=True, owner="a")
        (again,) = store.claim_due("a", 60)
        assert (again.version, again.value) == (2, 0.0)
    finally:
        store.close()


def test_sound_time_columns_keep_microseconds_on_postgres(pg_url):
    store = Store(pg_url)
    try:
        _trace(store, 1)
        with store.read() as db:
            types = dict(
                db.exec_driver_sql(
                    "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND data_type NOT IN ('text', 'integer')"
                ).all()
            )
        assert set(types.values()) == {"double precision"}, types
    finally:
        store.close()


def test_processes_opening_the_store_at_once_all_find_it_writable(tmp_path):
    # The app's agent processes open the store together at start; each checks that the data
    # folder is writable with a probe file, and one probe name for all made the others fail.
    from feedback.store import _check_writable

    path = tmp_path / "data" / "feedback.sqlite3"
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def check() -> None:
        barrier.wait()
        for _ in range(200):
            try:
                _check_writable(path)
            except StoreError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=check) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert list(path.parent.iterdir()) == []  # no probe left behind
