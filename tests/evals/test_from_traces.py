"""A dataset grown from real turns: exactly the disliked (or judged low) answers, run again."""

from __future__ import annotations

import io
import json

from app import ChatHandlers
from evals.cli import main as evals_cli
from evals.dataset_run import DatasetRun
from evals.datasets import load_dataset
from evals.from_traces import Selection, item_id, items_from, save_items, select_turns
from tests.fakes import ScriptedModel, code_reply, last_task
from tests.helpers import answer_index, like, turn

QUESTIONS = ["What is 2 + 2?", "Capital of Peru?", "Spell cat backwards", "What is 10 / 4?", "Say hi"]


def _chat(make_settings, make_runtime, monkeypatch, tmp_path):
    """Five turns in two chats: 0 and 3 disliked, 1 liked (then changed to a dislike and back),
    2 disliked then undone, 4 never rated."""
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    runtime = make_runtime(
        make_settings(), model=ScriptedModel(lambda m: code_reply("final_answer('dunno')"))
    )
    handlers = ChatHandlers(runtime)
    history, session, _ = turn(handlers, None, [], QUESTIONS[0])
    for q in QUESTIONS[1:3]:
        history, session, _ = turn(handlers, session, history, q)
    other_history, other, _ = turn(handlers, None, [], QUESTIONS[3])
    other_history, other, _ = turn(handlers, other, other_history, QUESTIONS[4])
    like(handlers, session, answer_index(history, 0), "Incorrect")
    like(handlers, session, answer_index(history, 1), False)
    like(handlers, session, answer_index(history, 1), True)
    like(handlers, session, answer_index(history, 2), False)
    like(handlers, session, answer_index(history, 2), "")
    like(handlers, other, answer_index(other_history, 0), False)
    runtime.feedback.telemetry.flush()
    store = runtime.feedback.store
    by_question = {t["input"]: t["id"] for t in store.list_traces(50)}
    return runtime, store, by_question


def test_from_traces_selects_exactly_the_disliked_answers(make_settings, make_runtime, monkeypatch, tmp_path):
    runtime, store, ids = _chat(make_settings, make_runtime, monkeypatch, tmp_path)
    turns = select_turns(store, Selection(feedback=0))
    assert [t["input"] for t in turns] == [QUESTIONS[0], QUESTIONS[3]]
    items = items_from(store, turns)
    assert [i.id for i in items] == [item_id(ids[QUESTIONS[0]]), item_id(ids[QUESTIONS[3]])]
    first = items[0].metadata
    assert (first["answer"], first["feedback"], first["source_trace"]) == ("dunno", 0.0, ids[QUESTIONS[0]])
    assert first["reason"] == "Incorrect" or first["comment"] == "Incorrect"
    liked = select_turns(store, Selection(feedback=1))
    assert [t["input"] for t in liked] == [QUESTIONS[1]]

    # Saved twice: the same two items, no duplicates.
    assert save_items(store, "regressions", items) == 2
    assert save_items(store, "regressions", items_from(store, turns)) == 0
    name, loaded = load_dataset("regressions", store=store)
    assert name == "regressions" and [i.input for i in loaded] == [QUESTIONS[0], QUESTIONS[3]]
    assert all(i.expected == "" for i in loaded)

    # Running them: judged-only items are not graded, so they are neither right nor wrong.
    run = DatasetRun(runtime, "regress-1", "regressions")
    run.run(loaded)
    summary = run.summary()
    assert (summary["items"], summary["graded"], summary["accuracy"], summary["errors"]) == (2, 0, None, 0)
    assert "dataset-correct" not in summary["scores"]


def test_from_traces_by_an_evaluator_score_below_a_threshold(
    make_settings, make_runtime, monkeypatch, tmp_path
):
    _, store, ids = _chat(make_settings, make_runtime, monkeypatch, tmp_path)
    for question, value in (
        (QUESTIONS[1], 0.2),
        (QUESTIONS[2], 0.9),
        (QUESTIONS[3], 0.1),
        (QUESTIONS[4], 0.49),
    ):
        store.upsert_score(
            score_id=f"h-{question}", trace_id=ids[question], name="helpfulness", value=value,
            data_type="NUMERIC", source="EVAL",
        )  # fmt: skip
    low = select_turns(store, Selection(evaluator="helpfulness", below=0.5))
    assert [t["input"] for t in low] == [QUESTIONS[1], QUESTIONS[3], QUESTIONS[4]]
    # Both conditions must hold: judged low AND disliked.
    assert [t["input"] for t in select_turns(store, Selection(feedback=0, evaluator="helpfulness"))] == [
        QUESTIONS[3]
    ]
    assert items_from(store, low)[0].metadata["scores"] == {"helpfulness": 0.2}


def test_the_from_traces_command(make_settings, make_runtime, monkeypatch, tmp_path):
    _chat(make_settings, make_runtime, monkeypatch, tmp_path)
    monkeypatch.setenv("EVALUATORS_FILE", "off")
    out = io.StringIO()
    target = tmp_path / "disliked.jsonl"
    code = evals_cli(
        ["dataset", "from-traces", "--name", "disliked", "--feedback", "0", "--output", str(target)], out
    )
    assert code == 0 and "2 new items in dataset 'disliked'" in out.getvalue()
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["input"] for r in rows] == [QUESTIONS[0], QUESTIONS[3]]
    assert all(r["expected_output"] == "" and r["answer"] == "dunno" for r in rows)
    out = io.StringIO()
    assert evals_cli(["dataset", "list"], out) == 0
    assert "disliked" in out.getvalue() and "items     2" in out.getvalue()
    assert evals_cli(["dataset", "from-traces", "--name", "x", "--below", "0.3"], io.StringIO()) == 2
    assert evals_cli(["dataset", "from-traces", "--name", "gsm8k", "--feedback", "0"], io.StringIO()) == 2

    # Filled in by a person, the file grades like any dataset.
    rows[0]["expected_output"] = "4"
    target.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    _, items = load_dataset(str(target))
    assert [bool(i.expected) for i in items] == [True, False]


def test_ungraded_items_stay_out_of_accuracy_and_compare(make_settings, make_runtime, tmp_path):
    from evals.compare import compare

    path = tmp_path / "mixed.jsonl"
    path.write_text(
        json.dumps({"input": "What is 2 + 2?", "expected_output": "4"})
        + "\n"
        + json.dumps({"input": "Was the last answer kind?", "expected_output": ""})
        + "\n"
    )
    name, items = load_dataset(str(path))
    answer = ScriptedModel(
        lambda m: code_reply("final_answer('4')" if "2 + 2" in last_task(m) else "final_answer('yes')")
    )
    runtime = make_runtime(make_settings(), model=answer)
    for run_name in ("m1", "m2"):
        DatasetRun(runtime, run_name, name).run(items)
    summary = DatasetRun(runtime, "m1", name).summary()
    assert (summary["items"], summary["graded"], summary["correct"], summary["accuracy"]) == (2, 1, 1, 1.0)
    result = compare(runtime.feedback.store, "m1", "m2")
    assert result["a"]["graded"] == 1 and result["a"]["accuracy"] == 1.0
    assert result["paired"]["items"] == 1
    assert result["a"]["cost_per_item"] is None and result["a"]["cost_unknown_items"] == 2
