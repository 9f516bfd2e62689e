"""Offline evaluation: the app's agent over GSM8K or a file, graded, stored, resumable."""

from __future__ import annotations

import csv
import io
import json

import pytest

from evals.cli import main as evals_cli
from evals.dataset_run import SCORE_NAME, DatasetRun, score_id
from evals.datasets import load_dataset
from evals.gsm8k import expected_number
from tests.fakes import FakeOpenAI, ScriptedModel, code_reply, last_task

GSM8K_ITEMS = load_dataset("gsm8k")[1][:5]
ANSWERS = {item.input: expected_number(item.expected) for item in GSM8K_ITEMS}


def right_on_even_items(messages) -> str:
    """Right on items 0, 2 and 4 of GSM8K, one more than right on 1 and 3."""
    task = last_task(messages)
    index = next(i for i, item in enumerate(GSM8K_ITEMS) if item.input in task)
    number = ANSWERS[GSM8K_ITEMS[index].input] + (0 if index % 2 == 0 else 1)
    return code_reply(f"final_answer({str(number)!r})")


def test_a_gsm8k_run_grades_exactly_and_continues_where_it_stopped(make_settings, make_runtime):
    model = ScriptedModel(right_on_even_items)
    runtime = make_runtime(make_settings(), model=model)
    run = DatasetRun(runtime, "first", "gsm8k")
    run.run(GSM8K_ITEMS[:3])  # interrupted after three items
    assert model.calls == 3
    again = DatasetRun(runtime, "first", "gsm8k")
    again.run(GSM8K_ITEMS)
    assert model.calls == 5  # only the two items it did not have
    summary = again.summary()
    assert (summary["items"], summary["correct"], summary["accuracy"], summary["errors"]) == (5, 3, 0.6, 0)
    assert summary["no_number"] == 0.0 and summary["flexible_accuracy"] == 0.6

    runtime.feedback.telemetry.flush()
    store = runtime.feedback.store
    rows = {r["item_id"]: r for r in store.rows("SELECT * FROM dataset_results WHERE run = 'first'")}
    assert [rows[i.id]["strict"] for i in GSM8K_ITEMS] == [1, 0, 1, 0, 1]
    first = rows[GSM8K_ITEMS[0].id]
    trace = store.get_trace(first["trace_id"])
    tags = json.loads(trace["tags"])
    assert {"dataset", "run:first", f"item:{GSM8K_ITEMS[0].id}"} <= set(tags)
    assert json.loads(trace["metadata"])["dataset_run"] == "first"
    # Each item is a fresh session: no item saw another's question.
    sessions = {store.get_trace(r["trace_id"])["session_id"] for r in rows.values()}
    assert len(sessions) == 5
    score = store.get_score(score_id("first", GSM8K_ITEMS[0].id))
    assert (score.name, score.value, score.trace_id) == (SCORE_NAME, 1.0, first["trace_id"])


def test_a_csv_with_other_field_names_and_text_answers(make_settings, make_runtime, tmp_path):
    path = tmp_path / "capitals.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["question", "truth", "topic"])
        writer.writerow(["Capital of France?", "Paris", "geo"])
        writer.writerow(["Capital of Italy?", "Rome", "geo"])
    name, items = load_dataset(str(path), input_field="question", expected_field="truth")
    assert name == "capitals" and [i.expected for i in items] == ["Paris", "Rome"]
    assert items[0].metadata == {"topic": "geo"}
    assert load_dataset(str(path), input_field="question", expected_field="truth")[1][0].id == items[0].id

    def answer(messages) -> str:
        return code_reply(
            "final_answer('Paris.')" if "France" in last_task(messages) else "final_answer('Milan')"
        )

    runtime = make_runtime(make_settings(), model=ScriptedModel(answer))
    run = DatasetRun(runtime, "caps", name)
    run.run(items)
    assert (run.summary()["correct"], run.summary()["items"]) == (1, 2)


def test_the_cli_runs_lists_shows_and_gates(tmp_path, monkeypatch):
    with FakeOpenAI() as llm:  # it answers "Answer to: <question>": never right on GSM8K
        monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("MODEL_PROVIDER", "openai")
        monkeypatch.setenv("OPENAI_BASE_URL", llm.url)
        monkeypatch.setenv("EVALUATORS_FILE", "off")

        def cli(*args: str) -> tuple[int, str]:
            out = io.StringIO()
            return evals_cli(["--evaluators", "evaluators.toml", *args], out), out.getvalue()

        code, text = cli(
            "dataset", "run", "gsm8k", "--run-name", "gate", "--limit", "2", "--json", "--fail-under", "0.5"
        )
        assert code == 1
        summary = json.loads(text)
        assert {k: summary[k] for k in ("run_name", "dataset", "items", "correct", "accuracy", "errors")} == {
            "run_name": "gate",
            "dataset": "gsm8k",
            "items": 2,
            "correct": 0,
            "accuracy": 0.0,
            "errors": 0,
        }
        assert summary["no_number"] == 0.0  # "Answer to: ..." quotes the question's numbers
        code, text = cli("dataset", "list")
        assert code == 0 and "gate" in text and "items     2" in text
        code, text = cli("dataset", "show", "gate")
        assert code == 0 and "gsm8k-0000" in text and "WRONG" in text and "expected '18'" in text
        code, text = cli("dataset", "run", "missing.jsonl", "--run-name", "x")
        assert code == 2
        # A named evaluator (a code check: no judge model needed) scores each item's trace.
        code, text = cli(
            "dataset", "run", "gsm8k", "--run-name", "checked", "--limit", "2", "--json",
            "--evaluator", "answer-not-empty",
        )  # fmt: skip
        assert code == 0
        checked = json.loads(text)
        assert (
            checked["scores"]["answer-not-empty"] == 1.0 and checked["scored_items"]["answer-not-empty"] == 2
        )


def test_compare_two_runs_gives_the_flips_and_an_exact_mcnemar(
    make_settings, make_runtime, tmp_path, monkeypatch
):
    from statsmodels.stats.contingency_tables import mcnemar

    from evals.compare import compare

    items = load_dataset("gsm8k")[1][:12]
    answers = {item.input: expected_number(item.expected) for item in items}

    def answering(right: set[int]):
        def respond(messages) -> str:
            task = last_task(messages)
            index = next(i for i, item in enumerate(items) if item.input in task)
            number = answers[items[index].input] + (0 if index in right else 1)
            return code_reply(f"final_answer({str(number)!r})")

        return respond

    settings = make_settings()
    # A: right on 0-5. B: right on 0-3 and 6-11 (items 4, 5 regressed; 6 to 11 improved).
    a = make_runtime(settings, model=ScriptedModel(answering(set(range(6)))))
    DatasetRun(a, "A", "gsm8k").run(items)
    b = make_runtime(settings, model=ScriptedModel(answering({0, 1, 2, 3, *range(6, 12)})))
    DatasetRun(b, "B", "gsm8k").run(items[:10])  # B ran ten of the twelve
    result = compare(b.feedback.store, "A", "B")
    assert (result["a"]["items"], result["a"]["correct"], result["b"]["items"], result["b"]["correct"]) == (
        12,
        6,
        10,
        8,
    )
    low, high = result["a"]["accuracy_95ci"]
    assert low < 0.5 < high and 0.2 < low and high < 0.8  # Wilson interval of 6/12
    paired = result["paired"]
    assert paired["items"] == 10 and paired["table"] == [[4, 2], [4, 0]]
    assert paired["regressed"] == [items[4].id, items[5].id]
    assert paired["improved"] == [items[i].id for i in range(6, 10)]
    assert paired["mcnemar_p"] == mcnemar([[4, 2], [4, 0]], exact=True).pvalue  # 0.6875: not a real change
    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    out = io.StringIO()
    assert evals_cli(["compare", "A", "B"], out) == 0
    assert "4 improved, 2 regressed" in out.getvalue() and "not distinguishable from chance" in out.getvalue()
    assert evals_cli(["compare", "A", "nope"], io.StringIO()) == 1
    chart = tmp_path / "compare.png"
    assert evals_cli(["compare", "A", "B", "--plot", str(chart)], io.StringIO()) == 0
    png = chart.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 1200  # 10 in at 120 dpi
    assert evals_cli(["compare", "A", "B", "--plot", str(tmp_path / "no-dir" / "x.png")], io.StringIO()) == 1


def test_named_evaluators_score_every_item_once_even_across_a_resume(make_settings, make_runtime):
    from evals.config import load_evaluators
    from evals.jobs import JobQueue
    from evals.judge import Judge
    from evals.worker import Evaluation
    from tests.fakes import JudgeModel

    def verdict(prompt: str) -> dict | BaseException:
        if GSM8K_ITEMS[3].input[:40] in prompt:
            return RuntimeError("the judge is down for this one")
        if "disliked" in prompt:
            return {"reasoning": "checked", "score": "wrong-answer"}
        # The judge sees the item: full marks when the answer is right, none otherwise.
        right = any(str(n) in prompt for n in (ANSWERS[GSM8K_ITEMS[i].input] for i in (0, 2, 4)))
        return {"reasoning": "checked", "score": 1.0 if right else 0.0}

    judge = JudgeModel(verdict)
    # "dislike-reason" has a feedback filter that no dataset item meets: naming it still runs it.
    evaluators = [
        e
        for e in load_evaluators("evaluators.toml")
        if e.name in ("helpfulness", "answer-not-empty", "dislike-reason")
    ]
    assert len(evaluators) == 3
    runtime = make_runtime(make_settings(), model=ScriptedModel(right_on_even_items))
    store = runtime.feedback.store

    def evaluation() -> Evaluation:
        return Evaluation(
            JobQueue(store), evaluators, runtime.feedback.telemetry, judge=Judge(judge, structured=False)
        )

    first = DatasetRun(runtime, "judged", "gsm8k", evaluation=evaluation())
    first.run(GSM8K_ITEMS[:2])
    judged_before = len(judge.prompts)
    assert judged_before == 4  # two LLM evaluators on two items
    again = DatasetRun(runtime, "judged", "gsm8k", evaluation=evaluation())
    again.run(GSM8K_ITEMS)
    # Only the three new items were judged; the done ones were not asked again.
    assert len(judge.prompts) == judged_before + 6
    summary = again.summary()
    # Items 0, 2, 4 right (1.0); item 1 wrong (0.0); item 3's judge failed: no score, kept as an error.
    assert summary["scores"]["helpfulness"] == pytest.approx(3 / 4)
    assert summary["scored_items"]["helpfulness"] == 4
    assert summary["scores"]["answer-not-empty"] == 1.0 and summary["scored_items"]["answer-not-empty"] == 5
    assert summary["accuracy"] == 0.6  # the judges do not change the grading
    errors = store.rows("SELECT target_id, error FROM eval_jobs WHERE status = 'error'")
    trace_3 = store.row(
        "SELECT trace_id FROM dataset_results WHERE run = 'judged' AND item_id = :i", {"i": GSM8K_ITEMS[3].id}
    )["trace_id"]
    assert {e["target_id"] for e in errors} == {trace_3} and all(
        "judge is down" in e["error"] for e in errors
    )


def test_dataset_traces_are_not_judged_by_the_online_evaluators(make_settings, make_runtime, tmp_path):
    from evals.config import load_evaluators
    from evals.jobs import JobQueue
    from evals.scheduler import Scheduler

    runtime = make_runtime(make_settings(), model=ScriptedModel(right_on_even_items))
    DatasetRun(runtime, "quiet", "gsm8k").run(GSM8K_ITEMS[:2])
    runtime.feedback.telemetry.flush()
    queue = JobQueue(runtime.feedback.store)
    assert Scheduler(queue, load_evaluators("evaluators.toml")).run_once() == 0
    assert runtime.feedback.store.rows("SELECT id FROM eval_jobs") == []


def test_the_chart_draws_run_names_literally(tmp_path):
    from evals.compare_plot import write_plot

    figures = {
        "items": 2, "graded": 2, "correct": 1, "accuracy": 0.5, "accuracy_95ci": [0.1, 0.9],
        "latency_ms_p50": 10.0, "latency_ms_p95": 20.0,
    }  # fmt: skip
    result = {
        "run_a": "${{{x$",
        "run_b": "$$",
        "a": figures,
        "b": figures,
        "paired": {"items": 2, "improved": [], "regressed": [], "mcnemar_p": 1.0},
    }
    chart = write_plot(result, tmp_path / "names.png")
    assert chart.read_bytes()[:4] == b"\x89PNG"
