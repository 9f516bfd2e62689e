"""Online evaluation end to end: the app's turns and votes, a scripted judge, the fake Langfuse.

Turn evaluators (an LLM judge, a code check, a judge that only runs on dislikes), a conversation
judge after an idle time and again after the user comes back, the hourly cap, failures and
retries, a restart without duplicates, no evaluation of evaluation traces, and the CLI
(run, logs, list, backfill with its dry run and resume, agreement).
"""

from __future__ import annotations

import io
import json
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from app import ChatHandlers
from evals.cli import main as evals_cli
from evals.jobs import JobQueue
from evals.judge import Judge
from feedback.votes import score_id_for
from tests.fakes import JudgeModel
from tests.helpers import answer_index, like, turn, wait_for

CHECKS = """
def ok(turn):
    return turn["status"] == "OK" and bool(turn["output"])

def broken(turn):
    raise RuntimeError("this check is broken")
"""


def evaluators_file(tmp_path: Path, *extra: str, cap_quality_only: bool = False) -> Path:
    (tmp_path / "checks.py").write_text(CHECKS)
    parts = [
        """
        [[evaluator]]
        name = "quality"
        kind = "llm"
        target = "turn"
        data_type = "NUMERIC"
        prompt = "QUALITY question: {input} answer: {output} steps: {steps}"
        """,
        """
        [[evaluator]]
        name = "ok-check"
        kind = "code"
        target = "turn"
        data_type = "BOOLEAN"
        function = "checks.py:ok"
        """,
    ]
    if not cap_quality_only:
        parts += [
            """
            [[evaluator]]
            name = "why-disliked"
            kind = "llm"
            target = "turn"
            data_type = "CATEGORICAL"
            categories = ["wrong", "other"]
            filter = { feedback = 0 }
            prompt = "WHY question: {input} answer: {output} reason: {reason}"
            """,
            """
            [[evaluator]]
            name = "goal"
            kind = "llm"
            target = "conversation"
            data_type = "BOOLEAN"
            idle_s = 1.0
            prompt = "GOAL {conversation}"
            """,
        ]
    path = tmp_path / "evaluators.toml"
    path.write_text("\n".join(textwrap.dedent(p) for p in [*parts, *extra]))
    return path


class HTTPFailure(Exception):
    """What a provider's client raises for an HTTP error: the judge reads its status code."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status


def decide(prompt: str) -> dict[str, Any]:
    if prompt.startswith("QUALITY"):
        return {"reasoning": "It answers the question.", "score": 0.75}
    if prompt.startswith("WHY"):
        return {"reasoning": "The number is wrong.", "score": "wrong"}
    if prompt.startswith("GOAL"):
        return {"reasoning": "The user got answers.", "score": True}
    raise AssertionError(prompt)


def evaluated_app(make_settings, make_runtime, fake_langfuse, tmp_path, judge_model, *extra, **env):
    settings = make_settings(
        fake_langfuse,
        EVALUATORS_FILE=str(evaluators_file(tmp_path, *extra)),
        LANGFUSE_RETRY_MAX_S="0.3",
        **env,
    )
    runtime = make_runtime(settings, judge=Judge(judge_model, structured=False))
    runtime.feedback.evaluation.poll_s = 0.1
    return ChatHandlers(runtime)


def jobs_of(handlers, evaluator: str | None = None) -> list:
    return JobQueue(handlers.rt.feedback.store).log(evaluator=evaluator, limit=1000)


def settled(handlers) -> bool:
    return JobQueue(handlers.rt.feedback.store).backlog() == 0


def test_turns_ratings_and_conversations_are_judged_and_reach_langfuse(
    make_settings, make_runtime, fake_langfuse, tmp_path
):
    judge = JudgeModel(decide)
    handlers = evaluated_app(make_settings, make_runtime, fake_langfuse, tmp_path, judge)
    store = handlers.rt.feedback.store
    history, session, _ = turn(handlers, None, [], "What is 6 times 7?")
    history, session, _ = turn(handlers, session, history, "And 2 plus 2?")
    handlers.rt.feedback.telemetry.flush()
    traces = {t["input"]: t["id"] for t in store.list_traces(10) if t["name"] == "Smolagent-Trace"}
    first, second = traces["What is 6 times 7?"], traces["And 2 plus 2?"]

    # Every turn: the judge and the code check ran; the dislike judge was skipped (no rating yet).
    wait_for(
        lambda: len([j for j in jobs_of(handlers) if j.target_kind == "turn"]) == 6 and settled(handlers), 20
    )
    status = Counter((j.evaluator, j.status) for j in jobs_of(handlers) if j.target_kind == "turn")
    assert status == {
        ("quality", "completed"): 2,
        ("ok-check", "completed"): 2,
        ("why-disliked", "skipped-filter"): 2,
    }
    quality = {s.trace_id: s for s in store.scores() if s.name == "quality"}
    assert set(quality) == {first, second}
    row = quality[first]
    assert (row.value, row.data_type, row.source, row.comment) == (
        0.75,
        "NUMERIC",
        "EVAL",
        "It answers the question.",
    )
    meta = json.loads(row.metadata)
    assert meta["evaluator"] == "quality" and meta["target_id"] == first
    # The judge saw the question, the answer and the agent's code.
    prompt = next(p for p in judge.prompts if "6 times 7" in p)
    assert "Answer to: What is 6 times 7?" in prompt and "final_answer" in prompt

    # Each job is its own trace, tagged "evaluation", and is never itself evaluated.
    handlers.rt.feedback.telemetry.flush_to_store()
    eval_traces = [t for t in store.list_traces(50) if "evaluation" in json.loads(t["tags"])]
    turn_evals = Counter(t["name"] for t in eval_traces if t["name"] != "goal")  # goal: when idle
    assert turn_evals == {"quality": 2, "ok-check": 2}
    assert not {j.target_id for j in jobs_of(handlers)} & {t["id"] for t in eval_traces}
    assert row_trace(store, meta["eval_trace_id"]) and meta["eval_trace_id"] in {t["id"] for t in eval_traces}

    # A dislike that comes later runs the dislike judge on that turn; a like afterwards does not,
    # and withdraws the dislike judge's score (issue 22: it was caused by the dislike alone).
    like(handlers, session, answer_index(history, 0), False)
    wait_for(lambda: any(s.name == "why-disliked" for s in store.scores()), 20)
    (why,) = [s for s in store.scores() if s.name == "why-disliked"]
    assert (why.trace_id, why.value, why.string_value, why.data_type) == (first, None, "wrong", "CATEGORICAL")
    wait_for(lambda: why.id in fake_langfuse.state.scores, 20)
    assert fake_langfuse.state.scores[why.id]["value"] == "wrong"
    assert fake_langfuse.state.scores[why.id]["dataType"] == "CATEGORICAL"
    like(handlers, session, answer_index(history, 0), True)
    wait_for(lambda: len(jobs_of(handlers, "why-disliked")) == 4 and settled(handlers), 20)
    assert Counter(j.status for j in jobs_of(handlers, "why-disliked")) == {
        "skipped-filter": 3,
        "completed": 1,
    }
    assert [s.name for s in store.scores() if s.name == "why-disliked"] == []

    # The conversation falls idle: judged once; the user comes back: judged again, both kept.
    wait_for(lambda: len([s for s in store.scores() if s.name == "goal"]) == 1, 20)
    history, session, _ = turn(handlers, session, history, "Thanks, one more: 3 plus 3?")
    wait_for(lambda: len([s for s in store.scores() if s.name == "goal"]) == 2, 20)
    goals = [s for s in store.scores() if s.name == "goal"]
    assert {s.trace_id for s in goals} == {""} and {s.session_id for s in goals} == {session.session_id}
    goal_jobs = jobs_of(handlers, "goal")
    assert sorted(j.revision for j in goal_jobs) == ["turns-2", "turns-3"]

    # Langfuse gets every score once, on the right trace or session, with its data type.
    wait_for(lambda: store.delivery_counts()["pending"] == 0 and settled(handlers), 20)
    sent = fake_langfuse.state.scores
    assert sent[quality[first].id]["traceId"] == first and sent[quality[first].id]["value"] == 0.75
    assert why.id not in sent  # withdrawn with the dislike that caused it: deleted there too
    for goal in goals:
        assert sent[goal.id]["sessionId"] == session.session_id and "traceId" not in sent[goal.id]
        assert sent[goal.id]["dataType"] == "BOOLEAN" and sent[goal.id]["value"] == 1.0
    assert sent[score_id_for(first)]["value"] == 1.0  # the user's own rating, as before
    # No judge call ran twice: 3 turns, 1 dislike, 2 idle conversations.
    assert Counter(p.split()[0] for p in judge.prompts) == {"QUALITY": 3, "WHY": 1, "GOAL": 2}


def row_trace(store, trace_id: str) -> bool:
    return store.get_trace(trace_id) is not None


def test_the_hourly_cap_makes_jobs_wait_and_code_checks_go_on(
    make_settings, make_runtime, fake_langfuse, tmp_path
):
    judge = JudgeModel(decide)
    settings = make_settings(
        fake_langfuse,
        EVALUATORS_FILE=str(evaluators_file(tmp_path, cap_quality_only=True)),
        EVAL_MAX_CALLS_PER_HOUR="2",
    )
    runtime = make_runtime(settings, judge=Judge(judge, structured=False))
    runtime.feedback.evaluation.poll_s = 0.1
    handlers = ChatHandlers(runtime)
    history, session = [], None
    for i in range(4):
        history, session, _ = turn(handlers, session, history, f"question {i}")
    wait_for(lambda: Counter(j.status for j in jobs_of(handlers, "ok-check")) == {"completed": 4}, 20)
    wait_for(lambda: Counter(j.status for j in jobs_of(handlers, "quality"))["completed"] == 2, 20)
    time.sleep(1.0)  # more polls: still capped
    assert Counter(j.status for j in jobs_of(handlers, "quality")) == {"completed": 2, "pending": 2}
    assert len(judge.prompts) == 2
    # The cap is per hour: once the calls are older than that, the waiting jobs run.
    store = handlers.rt.feedback.store
    with store.transaction() as db:
        db.exec_driver_sql("UPDATE eval_jobs SET called_at = called_at - 3601")
    handlers.rt.feedback.wake_evaluation()
    wait_for(lambda: Counter(j.status for j in jobs_of(handlers, "quality")) == {"completed": 4}, 20)
    assert len(judge.prompts) == 4


def test_judge_failures_are_retried_or_logged_and_the_chat_goes_on(
    make_settings, make_runtime, fake_langfuse, tmp_path, caplog
):
    calls: Counter[str] = Counter()

    def flaky(prompt: str) -> Any:
        calls[prompt] += 1
        if "rate" in prompt and calls[prompt] == 1:
            return HTTPFailure(429)
        if "config" in prompt:
            return HTTPFailure(401)
        return decide(prompt)

    broken = """
    [[evaluator]]
    name = "broken-check"
    kind = "code"
    target = "turn"
    data_type = "BOOLEAN"
    function = "checks.py:broken"
    """
    handlers = evaluated_app(
        make_settings, make_runtime, fake_langfuse, tmp_path, JudgeModel(flaky), broken, EVAL_CONCURRENCY="1"
    )
    from evals import worker

    worker.retry_delay_s = lambda attempts, max_s=300.0: 0.2  # noqa: ARG005 - fast retries here
    history, session, _ = turn(handlers, None, [], "rate limited once")
    history, session, _ = turn(handlers, session, history, "config is wrong")
    assert history[-1]["content"] == "Answer to: config is wrong"  # the chat never waited on the judge
    wait_for(lambda: settled(handlers) and len(jobs_of(handlers, "quality")) == 2, 20)
    by_input = {
        handlers.rt.feedback.store.get_trace(j.target_id)["input"]: j for j in jobs_of(handlers, "quality")
    }
    retried, failed = by_input["rate limited once"], by_input["config is wrong"]
    assert (retried.status, retried.attempts, retried.value) == ("completed", 2, 0.75)
    assert failed.status == "error" and "JUDGE_API_KEY" in failed.error and failed.attempts == 1
    broken_jobs = jobs_of(handlers, "broken-check")
    assert {j.status for j in broken_jobs} == {"error"} and "this check is broken" in broken_jobs[0].error
    assert "Evaluator broken-check failed" in caplog.text

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATA_DIR", str(handlers.rt.settings.data_dir))
        assert (
            evals_cli(["--evaluators", str(tmp_path / "evaluators.toml"), "logs", "--status", "error"], out)
            == 0
        )
    assert "broken-check" in out.getvalue() and "JUDGE_API_KEY" in out.getvalue()


def test_a_restart_runs_waiting_jobs_once_and_never_repeats_done_ones(
    store_env, make_settings, make_runtime, fake_langfuse, tmp_path
):
    down = JudgeModel(lambda _p: HTTPFailure(503))
    first = evaluated_app(make_settings, make_runtime, fake_langfuse, tmp_path, down, **store_env)
    history, session, _ = turn(first, None, [], "asked before the restart")
    wait_for(lambda: any(j.status == "delayed" for j in jobs_of(first, "quality")), 20)
    wait_for(lambda: any(j.status == "completed" for j in jobs_of(first, "ok-check")), 20)
    first.rt.feedback.close()  # the app stops: the judge job is still waiting

    up = JudgeModel(decide)
    second = evaluated_app(
        make_settings, make_runtime, fake_langfuse, tmp_path, up, **store_env
    )  # same store
    with second.rt.feedback.store.transaction() as db:
        db.exec_driver_sql("UPDATE eval_jobs SET next_attempt_at = 0")  # its retry is due now
    second.rt.feedback.wake_evaluation()
    wait_for(lambda: [j.status for j in jobs_of(second, "quality")] == ["completed"], 20)
    time.sleep(0.5)
    assert Counter(p.split()[0] for p in up.prompts)["QUALITY"] == 1  # (and the idle conversation's GOAL)
    assert Counter(j.status for j in jobs_of(second, "ok-check")) == {"completed": 1}  # not run again
    assert len([s for s in second.rt.feedback.store.scores() if s.name == "quality"]) == 1


def test_cli_run_backfill_with_dry_run_and_resume_and_agreement(
    make_settings, make_runtime, fake_langfuse, tmp_path, monkeypatch
):
    # Traces made while evaluation was off: only a backfill judges them.
    runtime = make_runtime(make_settings())
    handlers = ChatHandlers(runtime)
    history, session = [], None
    for i in range(6):
        history, session, _ = turn(handlers, session, history, f"past question {i}")
    for i in range(4):  # users liked two, disliked two
        like(handlers, session, answer_index(history, i), i % 2 == 0)
    runtime.feedback.telemetry.flush()
    store = runtime.feedback.store
    traces = sorted(t["id"] for t in store.list_traces(10))
    path = evaluators_file(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(runtime.settings.data_dir))
    monkeypatch.setenv("EVALUATORS_FILE", str(path))
    monkeypatch.setenv("MODEL_PROVIDER", "openai")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")

    def cli(*args: str) -> tuple[int, str]:
        out = io.StringIO()
        return evals_cli(list(args), out), out.getvalue()

    # run without --save: a result, nothing stored.
    before = (len(store.list_traces(100)), len(store.scores(include_deleted=True)))
    code, text = cli("run", "--evaluator", "ok-check", "--trace", traces[0])
    assert code == 0 and "ok-check = 1.0" in text and "nothing stored" in text
    assert (len(store.list_traces(100)), len(store.scores(include_deleted=True))) == before

    # Dry run: counts and an estimate, nothing queued.
    code, text = cli("backfill", "--evaluator", "quality", "--since", "2020-01-01", "--dry-run")
    assert (
        code == 0 and "6 traces since" in text and "6 selected" in text and "estimated judge tokens" in text
    )
    tokens = int(text.split("estimated judge tokens: ")[1].split()[0].replace(",", ""))
    assert 6 * 200 < tokens < 6 * 2000 and JobQueue(store).log() == []

    # The real run is interrupted after two judge calls, then resumed: each trace judged once.
    judged: list[str] = []

    def interrupting(prompt: str) -> Any:
        if len(judged) == 2:
            raise KeyboardInterrupt
        judged.append(prompt)
        return {
            "reasoning": "fine",
            "score": 1.0 if "question 0" in prompt or "question 2" in prompt else 0.0,
        }

    import evals.cli as cli_module

    monkeypatch.setattr(cli_module, "judge_model", lambda _settings: JudgeModel(interrupting))
    monkeypatch.setattr(cli_module, "Judge", lambda model: Judge(model, structured=False))
    code, text = cli("backfill", "--evaluator", "quality", "--since", "2020-01-01")
    assert code == 130 and "run the same command again" in text
    judged.append("the interrupted one")
    code, text = cli("backfill", "--evaluator", "quality", "--since", "2020-01-01")
    assert code == 0 and "completed 6" in text, text
    assert len(judged) == 7  # 2 + the interrupted call + 4: no trace judged twice after it finished
    assert len([s for s in store.scores() if s.name == "quality"]) == 6

    # Agreement with the users on the four rated turns: the judge liked 0 and 2 (users too).
    code, text = cli("agreement", "--evaluator", "quality", "--json")
    (result,) = json.loads(text)
    assert result["pairs"] == 4 and result["agreement"] == 1.0 and result["kappa"] == pytest.approx(1.0)
    # evals.trust: the thumbs as a figure of their own, reviewers' labels apart, and the verdict
    # (from reviewers only: none has labelled a turn, so the judge is unverified).
    thumbs = result["thumbs"]["overall"]
    assert thumbs["n"] == 4 and thumbs["value"] == pytest.approx(1.0)
    assert result["reviewers"]["n"] == 0
    assert result["verdict"]["status"] == "unverified"
    assert result["verdict"]["reason"].startswith("No reviewer labels yet")
    code, text = cli("agreement", "--evaluator", "quality")
    assert code == 0 and "quality (llm, NUMERIC, version" in text and "): UNVERIFIED" in text
    assert "4 turns, agreement 100%, Cohen's kappa 1.00" in text
    code, text = cli("list")
    assert "quality" in text and "completed 6" in text


def test_a_job_left_by_a_killed_worker_is_taken_over_once_its_lease_ends(store_url, tmp_path):
    from evals.cli import NoTelemetry
    from evals.config import load_evaluators
    from evals.worker import Evaluation
    from feedback.store import Store
    from tests.feedback.test_postgres import _trace

    store = Store(store_url)
    try:
        queue = JobQueue(store)
        evaluators = [e for e in load_evaluators(evaluators_file(tmp_path)) if e.name == "quality"]
        trace_id = _trace(store, 1)
        from evals.scheduler import Scheduler

        assert Scheduler(queue, evaluators).run_once() == 1
        # A worker claims the job and is SIGKILLed mid-call: its lease (0.3 s here) runs out.
        assert queue.claim("dead-host:1:x", 0.3) is not None
        judge = JudgeModel(decide)

        live = Evaluation(queue, evaluators, NoTelemetry(), judge=Judge(judge, structured=False))
        assert live.work_once() is False  # still leased by the dead worker
        time.sleep(0.4)
        assert live.work_once() is True and live.work_once() is False  # taken over, run once
        (job,) = queue.log()
        assert (job.status, job.attempts, job.value) == ("completed", 2, 0.75) and len(judge.prompts) == 1
        (score,) = [s for s in store.scores() if s.name == "quality"]
        assert score.trace_id == trace_id
    finally:
        store.close()


def test_judge_calls_are_priced_and_an_unknown_price_stays_unknown(tmp_path):
    from genai_prices import Usage, calc_price

    from evals.cli import NoTelemetry
    from evals.config import load_evaluators
    from evals.scheduler import Scheduler
    from evals.worker import Evaluation
    from feedback.costs import Pricing
    from feedback.store import Store
    from tests.feedback.test_postgres import _trace

    assert Pricing().cost("SmolLM2-135M-Instruct.Q4_1.gguf", 300, 40, provider="local") == 0.0
    assert Pricing().cost("my-own-finetune", 300, 40, provider="openai") is None  # unknown, never zero
    store = Store(tmp_path / "store.sqlite3")
    try:
        queue = JobQueue(store)
        evaluators = [
            e for e in load_evaluators(evaluators_file(tmp_path)) if e.name in ("quality", "ok-check")
        ]
        _trace(store, 1)
        Scheduler(queue, evaluators).run_once()
        model = JudgeModel(decide)
        model.model_id = "gpt-4o-mini"
        priced = Evaluation(
            queue, evaluators, NoTelemetry(), judge=Judge(model, structured=False), judge_provider="openai"
        )
        while priced.work_once():
            pass
        jobs = {j.evaluator: j for j in queue.log()}
        expected = float(
            calc_price(Usage(input_tokens=100, output_tokens=20), model_ref="gpt-4o-mini").total_price
        )
        assert jobs["quality"].cost == pytest.approx(expected) and expected > 0
        assert jobs["ok-check"].cost == 0.0  # a code check calls no model
    finally:
        store.close()
