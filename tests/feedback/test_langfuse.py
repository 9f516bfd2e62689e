"""With Langfuse keys: traces and scores reach a local Langfuse stand-in, on the right trace."""

from __future__ import annotations

from app import ChatHandlers
from feedback.votes import score_id_for
from tests.helpers import answer_index, like, turn, wait_for


def _handlers(make_settings, make_runtime, fake_langfuse, **env):
    runtime = make_runtime(make_settings(fake_langfuse, **env))
    return ChatHandlers(runtime)


def _flush(handlers):
    handlers.rt.feedback.telemetry.flush()
    assert handlers.rt.feedback.outbox.flush(10)


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
    assert posts[0]["timestamp"] == posts[1]["timestamp"]
    assert [p["value"] for p in posts] == [1.0, 0.0]
    assert len(fake_langfuse.state.scores) == 1


def test_undone_vote_is_deleted_in_langfuse(make_settings, make_runtime, fake_langfuse):
    handlers = _handlers(make_settings, make_runtime, fake_langfuse)
    history, session, _ = turn(handlers, None, [], "undo me")
    index = answer_index(history, 0)
    like(handlers, session, index, True)
    _flush(handlers)
    assert len(fake_langfuse.state.scores) == 1
    like(handlers, session, index, "")
    _flush(handlers)
    assert fake_langfuse.state.scores == {}
    assert len(fake_langfuse.state.deletes) == 1


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
