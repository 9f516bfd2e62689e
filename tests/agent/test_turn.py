"""One chat turn as the page's handler runs it (agent.turn.stream_turn): what the chat shows,
and that the trace, the store, Langfuse and the code checks say the same."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from agent.answer import GIVE_UP
from agent.events import run_events
from agent.steps import HOW_TITLE
from agent.turn import RAW_OUTPUT_ATTRIBUTE, stream_turn
from evals.context import turn_data
from tests.fakes import ScriptedLocalModel, ScriptedModel, code_reply
from tests.helpers import text_of, wait_for

ROOT = Path(__file__).resolve().parents[2]
BROKEN = '{"thought": "Theresanadonk.", "code": "final_answer(12 *"}'


def _checks() -> Any:
    """evaluators/checks.py, loaded by path as the evaluators' config loads it."""
    spec = importlib.util.spec_from_file_location("shipped_checks", ROOT / "evaluators" / "checks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(runtime: Any, message: str, session: Any = None, history: list | None = None) -> tuple[Any, Any]:
    session = session or runtime.new_session("person-1")
    updates = list(
        stream_turn(session, message, history or [], runtime.feedback.telemetry, runtime.metadata())
    )
    assert updates[-1].done
    return session, updates


def _groups(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in history if str((m.get("metadata") or {}).get("title", "")).startswith(HOW_TITLE)]


def _root(runtime: Any, trace_id: str) -> dict[str, Any]:
    runtime.feedback.telemetry.flush()
    spans = wait_for(lambda: runtime.feedback.store.spans_of(trace_id))
    (root,) = [s for s in spans if s["parent_id"] is None]
    return json.loads(root["attributes"])


@pytest.mark.parametrize("with_langfuse", [False, True], ids=["store-only", "langfuse"])
def test_a_give_up_is_stored_traced_and_checked_as_what_the_user_saw(
    with_langfuse, make_settings, make_runtime, fake_langfuse
):
    settings = make_settings(fake_langfuse if with_langfuse else None, MAX_STEPS="2")
    runtime = make_runtime(settings, ScriptedLocalModel(lambda messages: BROKEN))
    _, updates = _run(runtime, "What is 12 times 3?")
    final = updates[-1]
    assert text_of(final.history[-1]) == GIVE_UP
    store = runtime.feedback.store
    attributes = _root(runtime, final.trace_id)
    trace = wait_for(lambda: store.get_trace(final.trace_id))
    # The store (feedback list, Worst answers, the trace viewer) shows the sentence the user saw.
    assert trace["output"] == GIVE_UP
    assert "No usable answer" in (trace["status_message"] or "")
    assert attributes["langfuse.observation.level"] == "WARNING"
    assert attributes[RAW_OUTPUT_ATTRIBUTE] == BROKEN  # what the model really ended with
    # The shipped check reads the stored turn: a give-up is not an answer.
    turn = turn_data(store, final.trace_id)
    assert turn is not None and turn.output == GIVE_UP
    assert _checks().answer_not_empty(turn.as_dict()) is False
    # Not an error, not a success: its own status, which the no-error check does not pass.
    assert trace["status"] == "WARNING" and turn.status == "WARNING"
    assert _checks().no_error(turn.as_dict()) is False
    if with_langfuse:
        spans = wait_for(lambda: fake_langfuse.spans_of(final.trace_id))
        (root,) = [s for s in spans if s.parent_id is None]
        assert root.attributes["langfuse.observation.level"] == "WARNING"
        assert "No usable answer" in root.attributes["langfuse.observation.status_message"]
        assert GIVE_UP in str(root.attributes["langfuse.observation.output"])
        assert "Theresanadonk" not in str(root.attributes["langfuse.observation.output"])
        assert root.attributes[RAW_OUTPUT_ATTRIBUTE] == BROKEN


def test_an_answer_is_traced_as_it_is_with_no_warning(make_settings, make_runtime):
    runtime = make_runtime(make_settings(), ScriptedLocalModel())
    _, updates = _run(runtime, "Hello")
    final = updates[-1]
    attributes = _root(runtime, final.trace_id)
    assert runtime.feedback.store.get_trace(final.trace_id)["output"] == "Answer to: Hello"
    assert RAW_OUTPUT_ATTRIBUTE not in attributes and "langfuse.observation.level" not in attributes


def test_an_answer_has_one_collapsed_how_i_got_this_group(make_settings, make_runtime):
    model = ScriptedModel()
    model.enqueue(
        code_reply("print('adding')\nresult = 2 + 2", thought="I add the numbers."),
        code_reply("final_answer(f'The sum is {result}')", thought="I give the sum."),
    )
    runtime = make_runtime(make_settings(), model)
    session, updates = _run(runtime, "What is 2 + 2?")
    final = updates[-1]
    assert [m["role"] for m in final.history] == ["user", "assistant", "assistant"]
    (group,) = _groups(final.history)
    assert group is final.history[1] and text_of(final.history[-1]) == "The sum is 4"
    assert group["metadata"] == {"title": f"{HOW_TITLE} (2 steps)", "status": "done"}
    content = text_of(group)
    for shown in (
        "I add the numbers.",
        "result = 2 + 2",
        "adding",
        "→ 4",
        "final_answer(f'The sum is {result}')",
    ):
        assert shown in content, shown
    assert "The sum is 4" not in content  # the last step's output is the answer, shown below it
    assert "Execution logs" not in content and "Last output from code snippet" not in content
    # While it ran: never more than one group, and every message of the answer is rated as one.
    assert all(len(_groups(u.history)) <= 1 for u in updates)
    assert session.trace_for(1) == session.trace_for(2) == final.trace_id


def test_hello_is_one_group_and_its_answer_is_not_repeated(make_settings, make_runtime):
    runtime = make_runtime(make_settings(), ScriptedLocalModel())
    _, updates = _run(runtime, "Hello")
    history = updates[-1].history
    (group,) = _groups(history)
    assert len(history) == 3 and text_of(history[-1]) == "Answer to: Hello"
    content = text_of(group)
    assert "I answer." in content
    # Once, in the code that returned it; no observation panel repeating it.
    assert content.count("Answer to: Hello") == 1


def test_a_failed_step_is_named_in_the_group_with_its_error(make_settings, make_runtime):
    model = ScriptedModel()
    model.enqueue(code_reply("x = 1 / 0"), code_reply("final_answer('no division today')"))
    runtime = make_runtime(make_settings(), model)
    _, updates = _run(runtime, "Divide 1 by 0")
    (group,) = _groups(updates[-1].history)
    assert group["metadata"]["title"] == f"{HOW_TITLE} (2 steps, 1 error)"
    assert "division by zero" in text_of(group)


def test_step_events_cross_processes_as_small_json(make_settings, make_runtime):
    runtime = make_runtime(make_settings(), ScriptedLocalModel())
    session = runtime.new_session("person-1")
    events = list(run_events(session.agent, "Hello"))
    steps = [e for e in events if e["ev"] == "step"]
    assert steps and all(set(e) == {"ev", "step"} for e in steps)
    assert json.loads(json.dumps(events)) == events
