"""Ratings in Langfuse across the server's delays and UTC midnight, with one clock for the app
and the stand-in (as two hosts with synchronised clocks): `time.time` is moved forward by the
test, so minutes pass in seconds. Both server generations."""

from __future__ import annotations

import time

import pytest

from app import ChatHandlers
from feedback.migrations import resend_refused_lists
from feedback.votes import score_id_for
from tests.helpers import answer_index, like, turn, wait_for
from tests.langfuse_server import BATCH, GENERATIONS, SINGLE


@pytest.fixture(params=GENERATIONS)
def langfuse_generation(request: pytest.FixtureRequest) -> str:
    return request.param


class Clock:
    """time.time() for the whole process, moved forward on demand."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, start: float) -> None:
        self._real = time.time
        self.offset = start - self._real()
        monkeypatch.setattr(time, "time", lambda: self._real() + self.offset)

    def to(self, epoch_s: float) -> None:
        self.offset = epoch_s - self._real()

    def forward(self, seconds: float) -> None:
        self.offset += seconds


def _midnight() -> float:
    """The next UTC midnight after now (epoch seconds)."""
    return (int(time.time()) // 86400 + 1) * 86400.0


def _rated(make_settings, make_runtime, fake_langfuse, question: str):
    handlers = ChatHandlers(make_runtime(make_settings(fake_langfuse)))
    history, session, _ = turn(handlers, None, [], question)
    return handlers, session, answer_index(history, 0)


def _settled(handlers) -> None:
    store = handlers.rt.feedback.store
    handlers.rt.feedback.outbox.notify()
    wait_for(lambda: store.delivery_counts()["pending"] == 0, timeout=30, interval=0.2)


def test_a_vote_changed_across_midnight_before_its_create_landed_leaves_one_row(
    monkeypatch, make_settings, make_runtime, fake_langfuse
):
    midnight = _midnight()
    clock = Clock(monkeypatch, midnight - 8)  # 23:59:52 UTC
    handlers, session, index = _rated(make_settings, make_runtime, fake_langfuse, "late night")
    like(handlers, session, index, True)
    assert handlers.rt.feedback.outbox.flush(10)
    clock.to(midnight + 1)  # 00:00:01: the like has not landed yet (15 s around midnight)
    like(handlers, session, index, False)
    store = handlers.rt.feedback.store
    wait_for(lambda: store.get_score(score_id_for(store.list_traces()[0]["id"])).attempts >= 0)
    for _ in range(4):  # let the outbox act, then time pass
        time.sleep(1.0)
        clock.forward(8)
    _settled(handlers)
    assert fake_langfuse.state.upsert_violations == []
    (row,) = fake_langfuse.state.rows()
    assert row["value"] == 0.0


def test_an_undo_outlives_a_busy_server(monkeypatch, make_settings, make_runtime, fake_langfuse):
    """The server's delay is a minimum: a create that lands a minute late is deleted after all."""
    clock = Clock(monkeypatch, _midnight() + 6 * 3600)  # 06:00 UTC
    fake_langfuse.state.busy_worker_s = 60.0
    handlers, session, index = _rated(make_settings, make_runtime, fake_langfuse, "busy")
    like(handlers, session, index, True)
    assert handlers.rt.feedback.outbox.flush(10)
    like(handlers, session, index, "")
    for _ in range(3):
        time.sleep(1.0)
        clock.forward(10)
    _settled(handlers)  # the undo is delivered: the store says it is gone
    store = handlers.rt.feedback.store
    (score,) = store.scores(include_deleted=True)
    assert score.deleted and score.delivery == "delivered"
    clock.forward(100)  # the create has landed by now, a minute late
    handlers.rt.feedback.outbox.notify()
    wait_for(lambda: fake_langfuse.state.rows() == [], timeout=15, interval=0.2)
    wait_for(lambda: store.get_score(score.id).remote_recheck_at == 0, timeout=15)


@pytest.mark.parametrize("langfuse_generation", [SINGLE])  # upgraded to the list server mid-way
def test_a_server_upgraded_while_the_app_runs_leaves_one_row(
    monkeypatch, make_settings, make_runtime, fake_langfuse
):
    clock = Clock(monkeypatch, _midnight() + 10 * 3600)  # day T, 10:00 UTC
    handlers, session, index = _rated(make_settings, make_runtime, fake_langfuse, "upgrade")
    like(handlers, session, index, True)
    _settled(handlers)
    clock.forward(86400)  # day T+1: changed on the one-object server (filed T+1)
    like(handlers, session, index, False)
    _settled(handlers)
    clock.forward(60)
    fake_langfuse.state.generation = BATCH  # upgraded; the app still sends one object at first
    like(handlers, session, index, "Unsafe")
    _settled(handlers)
    clock.forward(60)
    assert fake_langfuse.state.upsert_violations == []
    (row,) = fake_langfuse.state.rows()
    assert (row["value"], row.get("comment")) == (0.0, "Unsafe")
    assert handlers.rt.feedback.sink.generation == BATCH


@pytest.mark.parametrize("langfuse_generation", [SINGLE])  # only a one-object server refused lists
def test_ratings_refused_as_lists_before_are_sent_again(make_settings, make_runtime, fake_langfuse):
    handlers, session, index = _rated(make_settings, make_runtime, fake_langfuse, "refused before")
    store = handlers.rt.feedback.store
    handlers.rt.feedback.outbox.stop(flush_timeout_s=0.1)
    like(handlers, session, index, True)
    (score,) = store.scores()
    store.mark_rejected(score.id, score.version, "HTTP 400: Invalid request data")
    assert store.get_score(score.id).delivery == "rejected"
    with store.transaction() as db:
        resend_refused_lists(db)
    assert store.get_score(score.id).delivery == "pending"
    handlers.rt.feedback.outbox.deliver_due()
    assert store.get_score(score.id).delivery == "delivered"
    assert set(fake_langfuse.state.scores) == {score.id}
