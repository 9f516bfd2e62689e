"""With Langfuse keys: traces and scores reach a local Langfuse stand-in, on the right trace."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from app import ChatHandlers
from feedback.votes import score_id_for
from tests.helpers import answer_index, like, turn, wait_for
from tests.langfuse_server import BATCH, GENERATIONS, SINGLE, VERSIONS


@pytest.fixture(params=GENERATIONS)
def langfuse_generation(request: pytest.FixtureRequest) -> str:
    return request.param


def _handlers(make_settings, make_runtime, fake_langfuse, **env):
    runtime = make_runtime(make_settings(fake_langfuse, **env))
    return ChatHandlers(runtime)


def _flush(handlers):
    handlers.rt.feedback.telemetry.flush()
    assert handlers.rt.feedback.outbox.flush(10)


def _clicks(handlers, question, *clicks, answer=None):
    """Ask `question` (or rate `answer` again), click each vote, delivering each; the answer."""
    if answer is None:
        history, session, _ = turn(handlers, None, [], question)
        answer = (session, answer_index(history, 0))
    for liked in clicks:
        like(handlers, *answer, liked)
        _flush(handlers)
    return answer


def test_scores_reach_langfuse_on_the_rated_traces(make_settings, make_runtime, fake_langfuse):
    handlers = _handlers(make_settings, make_runtime, fake_langfuse)
    history, session, _ = turn(handlers, None, [], "alpha")
    history, session, _ = turn(handlers, session, history, "beta")
    like(handlers, session, answer_index(history, 0), True)
    like(handlers, session, answer_index(history, 1), "Unsafe")
    _flush(handlers)
    roots = {r.attributes["langfuse.observation.input"]: r for r in fake_langfuse.roots()}
    assert set(roots) == {"alpha", "beta"}
    alpha, beta = roots["alpha"].trace_id, roots["beta"].trace_id
    scores = fake_langfuse.state.scores
    assert scores[score_id_for(alpha)]["traceId"] == alpha
    assert scores[score_id_for(alpha)]["value"] == 1.0
    assert scores[score_id_for(alpha)]["dataType"] == "BOOLEAN"
    assert scores[score_id_for(alpha)]["name"] == "user-feedback"
    assert scores[score_id_for(beta)]["traceId"] == beta
    assert scores[score_id_for(beta)]["value"] == 0.0
    assert scores[score_id_for(beta)]["comment"] == "Unsafe"
    # The local store holds the same trace ids and scores.
    store = handlers.rt.feedback.store
    assert {t["id"] for t in store.list_traces()} == {alpha, beta}
    assert {s.id: s.trace_id for s in store.scores()} == {k: v["traceId"] for k, v in scores.items()}
    assert all(s.delivery == "delivered" for s in store.scores())


def test_changed_vote_keeps_one_score_id_and_first_timestamp(make_settings, make_runtime, fake_langfuse):
    handlers = _handlers(make_settings, make_runtime, fake_langfuse)
    history, session, _ = turn(handlers, None, [], "change me")
    index = answer_index(history, 0)
    like(handlers, session, index, True)
    _flush(handlers)
    like(handlers, session, index, False)
    _flush(handlers)
    posts = fake_langfuse.state.score_posts
    assert len(posts) == 2 and posts[0]["id"] == posts[1]["id"]
    if fake_langfuse.generation == BATCH:
        # Kept by this generation: the first vote's, so both land in one (day, name, id) row.
        assert posts[0]["timestamp"] == posts[1]["timestamp"]
    assert [p["value"] for p in posts] == [1.0, 0.0]
    (row,) = fake_langfuse.state.rows()
    assert row["value"] == 0.0


def test_undone_vote_is_deleted_in_langfuse(make_settings, make_runtime, fake_langfuse):
    handlers = _handlers(make_settings, make_runtime, fake_langfuse)
    answer = _clicks(handlers, "undo me", True)
    assert len(fake_langfuse.state.scores) == 1
    # Undone within a second of the like reaching the server:
    _clicks(handlers, None, "", answer=answer)
    # The server runs the delete at once but lands the create seconds after it arrived: the
    # outbox deletes again once that create has surely landed (within 30 s of the undo).
    wait_for(lambda: fake_langfuse.state.scores == {}, timeout=30, interval=0.5)
    assert len(fake_langfuse.state.deletes) == 2
    store = handlers.rt.feedback.store
    wait_for(lambda: store.delivery_counts()["pending"] == 0)
    # It stays gone: every create the server holds has landed.
    assert fake_langfuse.state.rows() == []


def test_vote_again_after_an_undo_is_kept(make_settings, make_runtime, fake_langfuse):
    handlers = _handlers(make_settings, make_runtime, fake_langfuse)
    _clicks(handlers, "make up your mind", True, "", False)
    store = handlers.rt.feedback.store
    wait_for(lambda: store.delivery_counts()["pending"] == 0, timeout=30, interval=0.5)
    (row,) = fake_langfuse.state.rows()
    assert row["value"] == 0.0


def test_vote_changed_on_a_later_day_leaves_one_row(make_settings, make_runtime, fake_langfuse):
    """The self-hosted server files a score under the day it received it: a change on a later
    UTC day must not leave yesterday's row next to today's."""
    offset = {"s": -86400.0}
    fake_langfuse.state.clock = lambda: time.time() + offset["s"]
    handlers = _handlers(make_settings, make_runtime, fake_langfuse)
    history, session, _ = turn(handlers, None, [], "yesterday")
    index = answer_index(history, 0)
    like(handlers, session, index, True)
    _flush(handlers)
    store = handlers.rt.feedback.store
    (score,) = store.scores()
    # The vote was sent yesterday, as far as both sides know (filed under yesterday's date in
    # either form: the batch form's timestamp is the first vote's, the single form's the arrival).
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    with store.transaction() as db:
        db.execute(
            text(
                "UPDATE scores SET remote_sent_at = remote_sent_at - 86400, remote_day = :day WHERE id = :id"
            ),
            {"id": score.id, "day": yesterday},
        )
    offset["s"] = 0.0
    like(handlers, session, index, False)
    _flush(handlers)
    wait_for(lambda: store.delivery_counts()["pending"] == 0, timeout=30, interval=0.5)
    assert fake_langfuse.state.upsert_violations == []
    (row,) = fake_langfuse.state.rows()
    assert row["value"] == 0.0


def test_server_generation_is_learnt_once(make_settings, make_runtime, fake_langfuse):
    handlers = _handlers(make_settings, make_runtime, fake_langfuse)
    history, session, _ = turn(handlers, None, [], "one")
    history, session, _ = turn(handlers, session, history, "two")
    like(handlers, session, answer_index(history, 0), True)
    _flush(handlers)
    like(handlers, session, answer_index(history, 1), False)
    _flush(handlers)
    state = fake_langfuse.state
    # At most the first call was in the wrong form; nothing was lost to it.
    assert len(state.score_refusals) == (1 if fake_langfuse.generation == SINGLE else 0)
    assert len(state.scores) == 2
    assert handlers.rt.feedback.sink.endpoint.generation == fake_langfuse.generation
    line = handlers.rt.feedback.check_langfuse()
    assert VERSIONS[fake_langfuse.generation] in line


def test_turn_spans_reach_langfuse_with_trace_attributes(make_settings, make_runtime, fake_langfuse):
    handlers = _handlers(make_settings, make_runtime, fake_langfuse, APP_TAGS="demo,test")
    history, session, _ = turn(handlers, None, [], "tell me")
    _flush(handlers)
    (root,) = fake_langfuse.roots()
    assert root.name == "Smolagent-Trace"
    attrs = root.attributes
    assert attrs["user.id"] == session.user_id and attrs["session.id"] == session.session_id
    assert attrs["langfuse.trace.tags"] == ["demo", "test"]
    assert attrs["langfuse.trace.metadata.provider"] == '"custom"'
    assert attrs["langfuse.trace.metadata.model_id"] == '"scripted-model"'
    assert attrs["langfuse.observation.output"] == "Answer to: tell me"
    spans = fake_langfuse.spans_of(root.trace_id)
    llm = [s for s in spans if s.attributes.get("openinference.span.kind") == "LLM"]
    assert llm and llm[0].attributes["llm.token_count.prompt"] == 11
    assert all(s.trace_id == root.trace_id for s in spans)


def test_wrong_langfuse_keys_warn_and_app_runs_on(make_settings, make_runtime, fake_langfuse):
    fake_langfuse.state.mode = "unauthorized"
    handlers = _handlers(make_settings, make_runtime, fake_langfuse)
    line = handlers.rt.feedback.check_langfuse()
    assert "NOT reachable or keys rejected" in line and "401" in line
    history, session, _ = turn(handlers, None, [], "still works?")
    assert history[-1]["content"] == "Answer to: still works?"
    like(handlers, session, answer_index(history, 0), True)
    store = handlers.rt.feedback.store
    (score,) = store.scores()
    assert score.delivery == "pending"
    fake_langfuse.state.mode = "ok"
    store.retry_now()
    handlers.rt.feedback.outbox.notify()
    wait_for(lambda: store.get_score(score.id).delivery == "delivered")
    assert fake_langfuse.state.scores[score.id]["value"] == 1.0


def test_unreachable_langfuse_keeps_ratings_locally(make_settings, make_runtime):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings(
        LANGFUSE_PUBLIC_KEY="pk-lf-unreachable",
        LANGFUSE_SECRET_KEY="sk-lf-x",
        LANGFUSE_BASE_URL=f"http://127.0.0.1:{port}",
    )
    handlers = ChatHandlers(make_runtime(settings))
    assert "NOT reachable" in handlers.rt.feedback.check_langfuse()
    history, session, _ = turn(handlers, None, [], "offline?")
    assert history[-1]["content"] == "Answer to: offline?"
    like(handlers, session, answer_index(history, 0), False)
    store = handlers.rt.feedback.store
    (score,) = store.scores()
    wait_for(lambda: store.get_score(score.id).attempts >= 1)
    assert store.get_score(score.id).delivery == "pending"
    assert "waiting for Langfuse" in handlers.rt.feedback.waiting_line()
