"""Arize Phoenix as a second home for traces and ratings, against the real server (arize-phoenix,
installed by .ci/run in its own virtualenv; tests/phoenix_server.py starts a throwaway one).

Through the live app (a Gradio server, votes clicked as the page does): each turn's spans in one
trace with the right parents and token counts, sessions and users; each vote's final state as a
`user-feedback` trace annotation (changed in place, undone), a judge's score as an LLM one;
Phoenix stopped mid-run and started again loses nothing; Langfuse is not held back meanwhile.
"""

from __future__ import annotations

import random
import time
from typing import Any

import httpx

from feedback.votes import score_id_for
from tests.gradio_queue import QueueClient
from tests.helpers import answer_index, serve, wait_for


def _live(make_settings, make_runtime, fake_langfuse, phoenix, **env: Any):
    project = phoenix.new_project_name("chat")
    settings = make_settings(
        fake_langfuse, PHOENIX_COLLECTOR_ENDPOINT=phoenix.base_url, PHOENIX_PROJECT_NAME=project, **env
    )
    runtime = make_runtime(settings)
    return runtime, project


def _turn(q: QueueClient, message: str, history: list | None = None) -> list:
    result = q.chat(message, history or [])
    assert result.success, result.message
    return result.output[1]


def _annotation(phoenix, project: str, trace_id: str) -> dict[str, Any] | None:
    try:
        rows = phoenix.trace_annotations(project, [trace_id], include_annotation_names=["user-feedback"])
    except httpx.HTTPStatusError as error:
        if error.response.status_code == 404:  # the trace (or project) has not landed yet
            return None
        raise
    return rows[0] if rows else None


def test_turns_and_votes_reach_phoenix(make_settings, make_runtime, fake_langfuse, phoenix):
    runtime, project = _live(make_settings, make_runtime, fake_langfuse, phoenix)
    with serve(runtime) as url:
        q = QueueClient(url)
        q.load()
        history = _turn(q, "What is 2+2?")
        history = _turn(q, "And 3+3?", history)
        runtime.feedback.telemetry.flush()
        store = runtime.feedback.store
        traces = wait_for(lambda: len(store.list_traces()) == 2 and store.list_traces())
        first, second = sorted(traces, key=lambda t: t["start_time"])
        # Spans: one trace per turn, the store's spans, the same parents, token counts on LLM spans.
        for trace in (first, second):
            ours = {s["span_id"]: s for s in store.spans_of(trace["id"])}
            theirs = phoenix.wait_for_spans(project, len(ours), trace_id=trace["id"])
            assert {s["context"]["span_id"] for s in theirs} == set(ours)
            for span in theirs:
                assert span["parent_id"] == ours[span["context"]["span_id"]]["parent_id"]
            roots = [s for s in theirs if s["parent_id"] is None]
            assert len(roots) == 1 and roots[0]["name"] == "Smolagent-Trace"
            # The turn shows as a CHAIN with its question and answer (it was "unknown", empty).
            assert roots[0]["span_kind"] == "CHAIN"
            assert roots[0]["attributes"].get("input.value") == trace["input"]
            assert roots[0]["attributes"].get("output.value") == trace["output"]
            llm = [s for s in theirs if s["span_kind"] == "LLM"]
            assert llm and all(s["attributes"].get("llm.token_count.prompt", 0) > 0 for s in llm)
        # Sessions: both turns in the chat's one session, with its user.
        sessions = phoenix.wait_for(
            lambda: [s for s in phoenix.sessions(project) if len(s["traces"]) == 2], what="the session"
        )
        assert sessions[0]["session_id"] == first["session_id"]
        roots = phoenix.spans(project, parent_id="null")
        assert {r["attributes"].get("user.id") for r in roots} == {first["user_id"]}

        # Votes: like the first answer, dislike the second with a reason, then change and undo.
        assert q.vote(answer_index(history, 0), True).success
        assert q.vote(answer_index(history, 1), "Incorrect").success  # a dislike with its reason
        one = phoenix.wait_for(lambda: _annotation(phoenix, project, first["id"]), what="the like")
        assert one["annotator_kind"] == "HUMAN" and one["identifier"] == score_id_for(first["id"])
        assert one["result"]["label"] == "like" and one["result"]["score"] == 1.0
        two = phoenix.wait_for(lambda: _annotation(phoenix, project, second["id"]), what="the dislike")
        assert two["result"]["label"] == "dislike" and two["result"]["score"] == 0.0
        assert "Incorrect" in (two["result"]["explanation"] or "")
        # The like becomes a dislike: the same row, changed in place.
        assert q.vote(answer_index(history, 0), False).success
        changed = phoenix.wait_for(
            lambda: (
                (a := _annotation(phoenix, project, first["id"])) and a["result"]["label"] == "dislike" and a
            ),
            what="the changed vote",
        )
        assert changed["id"] == one["id"]
        # Undo (the page sends an empty value for a thumb clicked again): gone from Phoenix.
        assert q.vote(answer_index(history, 0), "").success
        phoenix.wait_for(lambda: _annotation(phoenix, project, first["id"]) is None, what="the undo")
        assert len(phoenix.trace_annotations(project, [first["id"], second["id"]])) == 1
        # Langfuse got the same final state.
        runtime.feedback.outbox.flush(10)
        assert fake_langfuse.state.scores[score_id_for(second["id"])]["value"] == 0.0


def test_phoenix_down_mid_run_loses_nothing(make_settings, make_runtime, fake_langfuse, phoenix):
    runtime, project = _live(make_settings, make_runtime, fake_langfuse, phoenix, LANGFUSE_RETRY_MAX_S="1")
    with serve(runtime) as url:
        q = QueueClient(url)
        q.load()
        history = _turn(q, "Before the outage")
        runtime.feedback.telemetry.flush()
        phoenix.stop()
        try:
            history = _turn(q, "During the outage", history)  # its spans cannot reach Phoenix
            assert q.vote(answer_index(history, 0), True).success
            assert q.vote(answer_index(history, 1), "Not helpful").success
            runtime.feedback.telemetry.flush()
            # Langfuse is not held back by the dead destination.
            runtime.feedback.outbox.flush(10)
            assert len(fake_langfuse.state.scores) == 2
            time.sleep(1.0)
        finally:
            phoenix.start()
        store = runtime.feedback.store
        traces = sorted(store.list_traces(), key=lambda t: t["start_time"])
        assert len(traces) == 2
        outbox = runtime.feedback.destinations[0]
        outbox.notify()
        for trace, label in zip(traces, ("like", "dislike"), strict=True):
            row = phoenix.wait_for(
                lambda t=trace: _annotation(phoenix, project, t["id"]), timeout_s=60, what=f"the {label}"
            )
            assert row["result"]["label"] == label
            # The turn whose spans were lost was sent again from the store, whole.
            spans = phoenix.wait_for_spans(project, len(store.spans_of(trace["id"])), trace_id=trace["id"])
            assert len([s for s in spans if s["parent_id"] is None]) == 1
        # The outage's spans arrived after all: sent again by Phoenix's span processor (a batch
        # Phoenix did not take, retried after 5 s), or, had that given up, from the store.
        (spans_out,) = [
            p for p in runtime.feedback.telemetry.exports if "Phoenix" in getattr(p, "destination", "")
        ]
        assert outbox.destination.resent_traces >= 1 or spans_out.stats()["retried"] >= 1
        assert outbox.ledger.pending() == 0


def test_judges_and_checks_become_annotations_of_their_kind(
    make_settings, make_runtime, fake_langfuse, phoenix, tmp_path
):
    from tests.evals.test_evaluation import decide, evaluated_app, settled
    from tests.fakes import JudgeModel
    from tests.helpers import turn

    project = phoenix.new_project_name("judged")
    handlers = evaluated_app(
        make_settings,
        make_runtime,
        fake_langfuse,
        tmp_path,
        JudgeModel(decide),
        PHOENIX_COLLECTOR_ENDPOINT=phoenix.base_url,
        PHOENIX_PROJECT_NAME=project,
    )
    history, session, _ = turn(handlers, None, [], "What is 6 times 7?")
    turn(handlers, session, history, "And 2 plus 2?")
    handlers.rt.feedback.telemetry.flush()
    store = handlers.rt.feedback.store
    wait_for(lambda: settled(handlers) and len(store.scores()) >= 5, 30)
    traces = [t["id"] for t in store.list_traces(10) if t["name"] == "Smolagent-Trace"]
    assert len(traces) == 2

    def annotations() -> list[dict[str, Any]] | None:
        try:
            rows = phoenix.trace_annotations(project, traces)
        except httpx.HTTPStatusError:
            return None
        return rows if len(rows) == 4 else None

    rows = phoenix.wait_for(annotations, timeout_s=60, what="two judge and two check annotations")
    by_name: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_name.setdefault(row["name"], []).append(row)
    assert {r["annotator_kind"] for r in by_name["quality"]} == {"LLM"}
    assert {r["result"]["score"] for r in by_name["quality"]} == {0.75}
    assert all("answers the question" in (r["result"]["explanation"] or "") for r in by_name["quality"])
    assert {(r["annotator_kind"], r["result"]["label"]) for r in by_name["ok-check"]} == {("CODE", "true")}
    # The conversation's judge scores the session.
    sessions = phoenix.wait_for(
        lambda: phoenix.session_annotations(project, [session.session_id]) or None,
        timeout_s=60,
        what="the conversation judge's session annotation",
    )
    assert [(s["name"], s["annotator_kind"], s["result"]["label"]) for s in sessions] == [
        ("goal", "LLM", "true")
    ]


def test_a_trace_on_its_way_is_waited_for_and_a_lost_one_sent_again_once(phoenix, tmp_path, monkeypatch):
    """A vote clicked before Phoenix has ingested its trace: the first 404 waits for the spans on
    their way (no resend: Phoenix would ingest the trace twice); a trace still missing after the
    wait is sent again from the store, once, and the annotation then lands."""
    from feedback import phoenix_annotations
    from feedback.phoenix_annotations import PhoenixAnnotations
    from feedback.store import Store
    from feedback.votes import Vote, VoteRecorder
    from tests.feedback.test_postgres import _trace

    store = Store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    project = phoenix.new_project_name("late")
    sink = PhoenixAnnotations(phoenix.base_url, project, store=store)
    try:
        tid = _trace(store, random.randrange(1, 2**32))  # in the store only: Phoenix never got it
        score = VoteRecorder(store).record(trace_id=tid, vote=Vote(1.0), session_id="s", user_id="u")
        first = sink.send(score)
        assert first.outcome == "retry" and first.message.startswith("HTTP 404")
        assert first.retry_in_s is not None and 0 < first.retry_in_s <= phoenix_annotations.SPANS_ON_THE_WAY_S
        assert sink.resent_traces == 0 and not first.unreachable
        monkeypatch.setattr(phoenix_annotations, "SPANS_ON_THE_WAY_S", 0.0)
        second = sink.send(score)
        assert second.outcome == "retry" and sink.resent_traces == 1
        result = phoenix.wait_for(
            lambda: (r := sink.send(score)).outcome == "accepted" and r, timeout_s=60, what="the annotation"
        )
        assert result.outcome == "accepted"
        assert sink.resent_traces == 1  # sent again once, not on every 404 while Phoenix ingested it
        assert _annotation(phoenix, project, tid)["result"]["label"] == "like"
    finally:
        sink.close()
        store.close()


def test_a_dead_phoenix_is_unreachable_as_a_whole(tmp_path):
    """Refused connections mark the destination unreachable: the outbox waits for it, not score by score."""
    from feedback.phoenix_annotations import PhoenixAnnotations
    from feedback.store import Store
    from feedback.votes import Vote, VoteRecorder
    from tests.feedback.test_postgres import _trace
    from tests.helpers import free_port

    store = Store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    sink = PhoenixAnnotations(f"http://127.0.0.1:{free_port()}", "p", timeout_s=1, store=store)
    try:
        score = VoteRecorder(store).record(
            trace_id=_trace(store, 5), vote=Vote(0.0), session_id="s", user_id="u"
        )
        result = sink.send(score)
        assert result.outcome == "retry" and result.unreachable
    finally:
        sink.close()
        store.close()
