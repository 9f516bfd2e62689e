"""What a vote caused goes with it, and the bundled demo judge is honest about itself (issue 22).

Undoing or changing a vote withdraws the evaluation jobs and the judge scores that vote alone
caused (pending jobs cancelled, a judge still running writes nothing, scores deleted here and in
Langfuse); scores the turn caused stay. With the bundled 135M model as judge, LLM judges run only
when asked (`demo_judge = true`), and their scores say they came from a demo judge.
"""

from __future__ import annotations

import io
import json
import threading
from collections import Counter
from typing import Any

from evals.cli import main as evals_cli
from evals.jobs import JobQueue
from evals.judge import Judge
from evals.online import build_evaluation, describe
from feedback.backends import FeedbackBackends
from feedback.cli import main as feedback_cli
from feedback.store import SpanRecord, TraceRecord
from feedback.votes import score_id_for
from tests.evals.test_evaluation import decide, evaluated_app, evaluators_file, jobs_of, settled
from tests.fakes import JudgeModel
from tests.helpers import answer_index, like, turn, wait_for


def _live(store, name: str) -> dict[str, Any]:
    return {s.trace_id: s for s in store.scores() if s.name == name}


def test_undoing_or_changing_a_dislike_withdraws_the_judge_scores_it_caused(
    make_settings, make_runtime, fake_langfuse, tmp_path
):
    handlers = evaluated_app(make_settings, make_runtime, fake_langfuse, tmp_path, JudgeModel(decide))
    store = handlers.rt.feedback.store
    history, session, _ = turn(handlers, None, [], "What is the capital of France?")
    wait_for(lambda: len(_live(store, "quality")) == 1 and settled(handlers), 20)
    (paris,) = _live(store, "quality")
    index = answer_index(history, 0)

    # A dislike: the dislike judge runs on it and its score reaches Langfuse.
    like(handlers, session, index, False)
    why = wait_for(lambda: _live(store, "why-disliked").get(paris), 20)
    assert (why.string_value, why.cause_score_id) == ("wrong", score_id_for(paris))
    wait_for(lambda: why.id in fake_langfuse.state.scores, 20)

    # Undone: the rating and what it alone caused are deleted at once (no scheduler pass needed);
    # what the turn caused (the quality judge, the code check) stays.
    like(handlers, session, index, "")
    assert _live(store, "why-disliked") == {} and store.get_score(why.id).deleted
    assert set(_live(store, "quality")) == {paris} and set(_live(store, "ok-check")) == {paris}
    wait_for(lambda: store.delivery_counts()["pending"] == 0 and settled(handlers), 30)
    assert why.id not in fake_langfuse.state.scores  # deleted in Langfuse too, through the outbox
    assert _live(store, "quality")[paris].id in fake_langfuse.state.scores

    # Disliked again, then changed to a like: the judge's new score goes with the change.
    like(handlers, session, index, False)
    wait_for(lambda: paris in _live(store, "why-disliked") and settled(handlers), 20)
    like(handlers, session, index, True)
    assert _live(store, "why-disliked") == {}
    wait_for(lambda: store.delivery_counts()["pending"] == 0 and settled(handlers), 30)
    assert why.id not in fake_langfuse.state.scores
    # The judge ran once per dislike; the undo and the like ran nothing (filtered out).
    assert Counter(j.status for j in jobs_of(handlers, "why-disliked")) == {
        "completed": 2,
        "skipped-filter": 3,
    }
    out = io.StringIO()
    assert feedback_cli(["--db", store.url, "list", "--scores"], out) == 0
    assert "why-disliked" not in out.getvalue() and "quality = 0.75" in out.getvalue()


def test_a_vote_undone_while_its_judge_runs_or_waits_leaves_no_score(
    make_settings, make_runtime, fake_langfuse, tmp_path
):
    release = threading.Event()
    calls: list[str] = []

    def slow_why(prompt: str) -> Any:
        if prompt.startswith("WHY"):
            calls.append(prompt)
            release.wait(20)
        return decide(prompt)

    handlers = evaluated_app(
        make_settings, make_runtime, fake_langfuse, tmp_path, JudgeModel(slow_why), EVAL_CONCURRENCY="1"
    )
    store = handlers.rt.feedback.store
    history, session, _ = turn(handlers, None, [], "first question")
    history, session, _ = turn(handlers, session, history, "second question")
    wait_for(lambda: len(_live(store, "quality")) == 2 and settled(handlers), 20)
    like(handlers, session, answer_index(history, 0), False)
    like(handlers, session, answer_index(history, 1), False)
    wait_for(lambda: calls, 20)  # one dislike's judge call is running, the other one waits
    wait_for(lambda: Counter(j.status for j in jobs_of(handlers, "why-disliked"))["pending"] == 1, 20)
    like(handlers, session, answer_index(history, 0), "")
    like(handlers, session, answer_index(history, 1), True)
    jobs = [j for j in jobs_of(handlers, "why-disliked") if j.trigger == "rating" and j.cause_version == 1]
    assert [j.status for j in jobs] == ["cancelled", "cancelled"]  # at once, the running one too
    release.set()
    # The undo and the like are scheduled too (filtered out: no dislike any more).
    wait_for(
        lambda: (
            Counter(j.status for j in jobs_of(handlers, "why-disliked"))
            == {"cancelled": 2, "skipped-filter": 4}
            and settled(handlers)
        ),
        20,
    )
    assert [s for s in store.scores(include_deleted=True) if s.name == "why-disliked"] == []
    assert len(calls) == 1  # the waiting job never called the judge


# ----- the bundled demo judge --------------------------------------------------------------------


def _turn(store, tid: str) -> str:
    root = SpanRecord(tid, tid[:16], None, "Smolagent-Trace", "CHAIN", 1.0e9, 1.0e9 + 1, "OK", None, {})
    store.write_spans(
        [root],
        [TraceRecord(tid, "Smolagent-Trace", "Capital of France?", "Paris", "u1", "s1", "OK", None,
                     1.0e9, 1.0e9 + 1, "m", [], {})],
    )  # fmt: skip
    return tid


def test_with_the_bundled_model_llm_judges_run_only_when_asked(make_settings, tmp_path, monkeypatch):
    path = evaluators_file(tmp_path)
    settings = make_settings(EVALUATORS_FILE=str(path))  # nothing configured: the bundled model
    backends = FeedbackBackends.from_settings(settings)
    try:
        evaluation = build_evaluation(settings, backends)
        assert [e.name for e in evaluation.evaluators] == ["ok-check"]  # code checks still run
        line = describe(evaluation, settings)
        assert "LLM judges off (quality, why-disliked, goal)" in line and "demo_judge = true" in line
        assert "JUDGE_PROVIDER" in line
        monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
        out = io.StringIO()
        assert evals_cli(["--evaluators", str(path), "list"], out) == 0
        assert "LLM evaluators (quality, why-disliked, goal) do not run" in out.getvalue()

        hosted = make_settings(
            EVALUATORS_FILE=str(path), JUDGE_PROVIDER="openai", JUDGE_BASE_URL="http://127.0.0.1:9/v1"
        )
        evaluation = build_evaluation(hosted, backends)
        assert len(evaluation.evaluators) == 4 and not evaluation.demo_judge
        assert "off" not in describe(evaluation, hosted)
        own_file = make_settings(EVALUATORS_FILE=str(path), LOCAL_MODEL_PATH=str(tmp_path / "bigger.gguf"))
        assert len(build_evaluation(own_file, backends).evaluators) == 4  # a model of one's own
    finally:
        backends.close()


def test_asked_for_the_demo_judges_scores_say_so(make_settings, tmp_path, monkeypatch):
    path = evaluators_file(tmp_path)
    path.write_text("demo_judge = true\n" + path.read_text())
    settings = make_settings(EVALUATORS_FILE=str(path))
    backends = FeedbackBackends.from_settings(settings)
    try:
        evaluation = build_evaluation(settings, backends)
        assert len(evaluation.evaluators) == 4 and evaluation.demo_judge
        assert "the bundled demo model" in describe(evaluation, settings)
        evaluation._judge = Judge(JudgeModel(decide), structured=False)  # stands in for the 135M model
        store = backends.store
        paris = _turn(store, "a" * 32)
        evaluation.scheduler.run_once()
        while evaluation.work_once():
            pass
        quality, check = _live(store, "quality")[paris], _live(store, "ok-check")[paris]
        assert (quality.by, check.by) == ("demo-judge", "check")
        meta = json.loads(quality.metadata)
        assert meta["demo_judge"] is True and meta["scored_by"] == "demo-judge"
        assert meta["judge_model"] == "scripted-judge"
        assert "demo_judge" not in json.loads(check.metadata)
        out = io.StringIO()
        assert feedback_cli(["--db", store.url, "list", "--scores"], out) == 0
        assert (
            "quality = 0.75  by demo judge" in out.getvalue()
            and "ok-check = 1  by code check" in out.getvalue()
        )
        assert JobQueue(store).backlog() == 0
    finally:
        backends.close()
