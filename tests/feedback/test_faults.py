"""No rating lost or misfiled when Langfuse refuses, fails, hangs, rejects, then recovers."""

from __future__ import annotations

import time

from app import ChatHandlers
from feedback.votes import score_id_for
from tests.helpers import answer_index, like, turn, wait_for


def _app(make_settings, make_runtime, fake, **env):
    settings = make_settings(fake, LANGFUSE_TIMEOUT_S="1", LANGFUSE_RETRY_MAX_S="0.3", **env)
    return ChatHandlers(make_runtime(settings))


def _answers(handlers, n):
    history, session = [], None
    for i in range(n):
        history, session, _ = turn(handlers, session, history, f"question {i}")
    handlers.rt.feedback.telemetry.flush()
    traces = {t["input"]: t["id"] for t in handlers.rt.feedback.store.list_traces(100)}
    return session, [answer_index(history, i) for i in range(n)], [traces[f"question {i}"] for i in range(n)]


def _vote(handlers, session, index, liked):
    start = time.perf_counter()
    like(handlers, session, index, liked)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, f"a vote waited {elapsed:.2f}s on Langfuse"


def _attempted(store, score_id, at_least=1):
    wait_for(lambda: store.get_score(score_id).attempts >= at_least, timeout=20)


def test_outage_modes_then_recovery_keep_every_last_vote_once(
    store_env, make_settings, make_runtime, fake_langfuse
):
    fake = fake_langfuse
    handlers = _app(make_settings, make_runtime, fake, **store_env)
    store = handlers.rt.feedback.store
    session, idx, traces = _answers(handlers, 5)
    a, b, c, d, e = (score_id_for(t) for t in traces)

    fake.refuse()  # connections refused
    _vote(handlers, session, idx[0], True)
    _vote(handlers, session, idx[1], False)
    _attempted(store, a)
    fake.accept()
    fake.state.mode = "error500"
    _vote(handlers, session, idx[0], False)  # a changed vote
    _vote(handlers, session, idx[2], True)
    _attempted(store, c)
    fake.state.mode = "hang"
    fake.state.hang_s = 3
    _vote(handlers, session, idx[1], "")  # an undone vote
    _vote(handlers, session, idx[3], "Incorrect")
    _attempted(store, d)
    assert store.delivery_counts()["pending"] == 4
    assert "waiting for Langfuse" in handlers.rt.feedback.waiting_line()

    fake.state.mode = "ok"  # recovery
    wait_for(lambda: store.delivery_counts()["pending"] == 0, timeout=30)
    scores = fake.state.scores
    assert set(scores) == {a, c, d}
    assert (scores[a]["value"], scores[c]["value"], scores[d]["value"]) == (0.0, 1.0, 0.0)
    assert scores[d]["comment"] == "Incorrect"
    assert {k: v["traceId"] for k, v in scores.items()} == {a: traces[0], c: traces[2], d: traces[3]}
    assert fake.state.upsert_violations == []
    assert b not in scores

    fake.state.mode = "reject"  # 207: recorded with Langfuse's message, never retried
    _vote(handlers, session, idx[4], True)
    wait_for(lambda: store.get_score(e).delivery == "rejected", timeout=20)
    rejected = store.get_score(e)
    assert "rejected: invalid value" in rejected.delivery_error
    posts = len(fake.state.score_posts)
    fake.state.mode = "ok"
    time.sleep(1.0)
    assert len(fake.state.score_posts) == posts  # not retried
    counts = store.delivery_counts()
    assert (counts["pending"], counts["rejected"]) == (0, 1)
    assert "1 rating rejected by Langfuse" in handlers.rt.feedback.waiting_line()


def test_writes_and_deletes_of_one_score_stay_in_order(store_env, make_settings, make_runtime, fake_langfuse):
    handlers = _app(make_settings, make_runtime, fake_langfuse, **store_env)
    store = handlers.rt.feedback.store
    session, idx, traces = _answers(handlers, 1)
    sid = score_id_for(traces[0])
    for liked in [True, False, "", True, "Unsafe", "", False]:
        _vote(handlers, session, idx[0], liked)
    wait_for(lambda: store.delivery_counts()["pending"] == 0, timeout=20)
    assert fake_langfuse.state.scores[sid]["value"] == 0.0
    assert "comment" not in fake_langfuse.state.scores[sid]
    _vote(handlers, session, idx[0], "")
    wait_for(lambda: store.delivery_counts()["pending"] == 0, timeout=20)
    assert sid not in fake_langfuse.state.scores


def test_pending_votes_resume_after_a_restart(store_env, make_settings, make_runtime, fake_langfuse):
    fake_langfuse.refuse()
    settings = make_settings(fake_langfuse, LANGFUSE_TIMEOUT_S="1", LANGFUSE_RETRY_MAX_S="0.3", **store_env)
    first = make_runtime(settings)
    handlers = ChatHandlers(first)
    session, idx, traces = _answers(handlers, 2)
    _vote(handlers, session, idx[0], True)
    _vote(handlers, session, idx[1], "Too slow")
    _attempted(first.feedback.store, score_id_for(traces[0]))
    first.feedback.close()  # the app stops with both votes undelivered

    fake_langfuse.accept()
    second = make_runtime(settings)  # same DATA_DIR
    wait_for(lambda: second.feedback.store.delivery_counts()["pending"] == 0, timeout=20)
    scores = fake_langfuse.state.scores
    assert scores[score_id_for(traces[0])]["value"] == 1.0
    assert scores[score_id_for(traces[1])]["comment"] == "Too slow"
