"""A user's vote does not queue behind background writers of a SQLite store."""

from __future__ import annotations

import threading
import time

from feedback.store import Store, WriterLock


def test_an_urgent_writer_goes_before_background_writers_already_waiting():
    lock = WriterLock()
    order: list[str] = []
    holding = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with lock.hold():
            holding.set()
            release.wait(5)

    def writer(name: str, urgent: bool) -> None:
        with lock.hold(urgent):
            order.append(name)

    first = threading.Thread(target=holder)
    first.start()
    assert holding.wait(5)
    background = [threading.Thread(target=writer, args=(f"bg{i}", False)) for i in range(3)]
    for t in background:
        t.start()
    time.sleep(0.05)  # the background writers are queued first
    vote = threading.Thread(target=writer, args=("vote", True))
    vote.start()
    time.sleep(0.05)
    release.set()
    for t in (first, *background, vote):
        t.join(5)
    assert order[0] == "vote" and sorted(order[1:]) == ["bg0", "bg1", "bg2"]


def test_votes_write_urgently_and_everything_else_does_not(tmp_path, monkeypatch):
    from feedback.votes import Vote, VoteRecorder

    store = Store(tmp_path / "s.sqlite3")
    try:
        seen: list[bool] = []
        hold = store._writer.hold

        def spy(urgent: bool = False):
            seen.append(urgent)
            return hold(urgent)

        monkeypatch.setattr(store._writer, "hold", spy)
        store.upsert_score(
            score_id="bg", trace_id="t0", name="x", value=1.0, data_type="NUMERIC", source="EVAL"
        )
        VoteRecorder(store).record(trace_id="t1", vote=Vote(1.0), session_id="s", user_id="u")
        assert seen[0] is False and seen[1:] and all(seen[1:])
    finally:
        store.close()
