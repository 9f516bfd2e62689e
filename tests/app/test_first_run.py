"""The first run: compact prompt and bounded memory for the offline model, live streaming, the
give-up message, and traces that stay small (scripted models; the real one is in test_local_model)."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from gradio_client import Client
from smolagents import Tool

from agent.answer import GIVE_UP, is_usable
from agent.chat_agent import ChatAgent
from agent.steps import live_text
from llms.local_llm import _bounded, is_looping, packaged_gguf_path
from tests.fakes import (
    ScriptedLocalModel,
    ScriptedModel,
    StreamingScriptedModel,
    all_text,
    code_reply,
    last_task,
)
from tests.helpers import serve, text_of, turn, wait_for


class Weather(Tool):
    name = "weather"
    description = "Today's weather in a city.\nLonger details the compact prompt leaves out."
    inputs = {"city": {"type": "string", "description": "the city"}}
    output_type = "string"

    def forward(self, city: str) -> str:
        return f"Sunny in {city}"


def _system_prompt(runtime) -> str:
    agent = runtime.make_agent("probe")
    return all_text(agent.write_memory_to_messages()[:1])


def test_local_prompt_is_compact_and_still_lists_the_tools(make_settings, make_runtime):
    from llama_cpp import Llama

    prompt = _system_prompt(make_runtime(make_settings(), ScriptedLocalModel(), [Weather()]))
    assert "- weather(city): Today's weather in a city." in prompt
    assert "- final_answer(answer):" in prompt
    assert "Longer details" not in prompt and "notional tools" not in prompt
    vocab = Llama(model_path=str(packaged_gguf_path()), vocab_only=True, verbose=False)
    tokens = len(vocab.tokenize(prompt.encode()))
    assert tokens < 300, tokens
    assert prompt.count("Task: ") == 4  # four short examples


def test_hosted_models_keep_smolagents_prompt(make_settings, make_runtime):
    runtime = make_runtime(make_settings(), ScriptedModel())
    prompt = _system_prompt(runtime)
    assert "Here are a few examples using notional tools" in prompt
    agent = runtime.make_agent("probe")
    assert isinstance(agent, ChatAgent) and agent.memory_turns == 3  # no provider set: local defaults
    assert agent.planning_interval is None


def test_memory_keeps_the_last_turns_and_the_prompt_stops_growing(make_settings, make_runtime):
    model = ScriptedLocalModel()
    runtime = make_runtime(make_settings(MEMORY_TURNS="3"), model)
    from app import ChatHandlers

    handlers = ChatHandlers(runtime)
    session, history, sizes = None, [], []
    for n in range(1, 9):
        history, session, _ = turn(handlers, session, history, f"Question {n} of the chat?")
        assert text_of(history[-1]) == f"Answer to: Question {n} of the chat?"
        sizes.append(len(all_text(model.prompts[-1])))
    last_prompt = all_text(model.prompts[-1])
    # The earlier turns are a short dialogue of the last 3 questions and their answers.
    assert "User: Question 5 of the chat?" in last_prompt and "You: Answer to: Question 7" in last_prompt
    assert "Question 4 of" not in last_prompt and "Question 1 of" not in last_prompt
    assert last_task(model.prompts[-1]) == "Question 8 of the chat?"
    assert "Calling tools" not in last_prompt
    assert sizes[4] == sizes[7], sizes  # bounded: the same size once 3 turns are remembered
    tasks = [s for s in session.agent.memory.steps if type(s).__name__ == "TaskStep"]
    assert len(tasks) == 4  # three earlier turns and the current one; older ones are dropped


def test_hosted_default_remembers_every_turn(make_settings, make_runtime):
    from app import ChatHandlers

    model = ScriptedModel()
    runtime = make_runtime(make_settings(MODEL_PROVIDER="openai", OPENAI_BASE_URL="http://x"), model)
    assert runtime.settings.memory_turns == 0
    handlers = ChatHandlers(runtime)
    session, history = None, []
    for n in range(5):
        history, session, _ = turn(handlers, session, history, f"Q{n}")
    assert sum(type(s).__name__ == "TaskStep" for s in session.agent.memory.steps) == 5


def test_no_usable_answer_shows_the_give_up_sentence_and_the_trace_keeps_the_raw_output(
    make_settings, make_runtime
):
    from app import ChatHandlers

    broken = '{"thought": "hmm", "code": "final_answer(12 *"}'
    model = ScriptedLocalModel(lambda messages: broken)
    runtime = make_runtime(make_settings(MAX_STEPS="2"), model)
    handlers = ChatHandlers(runtime)
    history, session, _ = turn(handlers, None, [], "What is 12 times 3?")
    assert text_of(history[-1]) == GIVE_UP
    assert len(model.prompts) == 2  # two steps, no extra call for a summary nobody would see
    runtime.feedback.telemetry.flush()
    store = runtime.feedback.store
    (trace,) = wait_for(lambda: store.list_traces())
    # The trace shows what the user saw; the model's raw output is kept on the root span.
    assert trace["output"] == GIVE_UP and "No usable answer" in (trace["status_message"] or "")
    (root,) = store.rows(
        "SELECT attributes FROM spans WHERE trace_id = :t AND parent_id IS NULL", {"t": trace["id"]}
    )
    assert json.loads(root["attributes"])["app.raw_output"] == broken
    # A later turn in the same chat still works, and the answer is rated like any other.
    history, session, _ = turn(handlers, session, history, "Hello")
    assert text_of(history[-1]) == GIVE_UP


def test_protocol_debris_is_not_an_answer_but_a_trusted_fallback_is(make_settings, make_runtime):
    from app import ChatHandlers

    model = ScriptedModel()
    model.enqueue(code_reply('final_answer(\'{"thought": "x", "code": "y"}\')'))
    runtime = make_runtime(make_settings(MODEL_PROVIDER="openai", OPENAI_BASE_URL="http://x"), model)
    handlers = ChatHandlers(runtime)
    history, session, _ = turn(handlers, None, [], "first")
    assert text_of(history[-1]) == GIVE_UP
    # A hosted model out of steps writes a summary answer: shown, as smolagents intends.
    model.enqueue(*["Thought: thinking, no code"] * 6, "Paris is the capital of France.")
    history, session, _ = turn(handlers, session, history, "second")
    assert text_of(history[-1]) == "Paris is the capital of France."


@pytest.mark.parametrize(
    ("answer", "max_steps", "trust", "usable"),
    [
        ("36", False, False, True),
        ("", False, True, False),
        ('{ "thought": "12 times 3", "code": "final_answer(', False, True, False),
        ("Thought: I will\nCode:", False, True, False),
        ("Error in generating final LLM output: boom", True, True, False),
        ("Paris", True, False, False),
        ("Paris", True, True, True),
    ],
)
def test_is_usable(answer, max_steps, trust, usable):
    assert is_usable(answer, max_steps_reached=max_steps, trust_fallback=trust) is usable


def test_loops_are_detected_and_strings_are_bounded():
    assert is_looping('{"thought": "2^10 = ' + "2 * " * 20)
    assert is_looping('{"thought": "' + "2 to the power of 10 is 1024, " * 3)
    assert not is_looping(
        '{"thought": "The capital of France is Paris.", "code": "final_answer(\\"Paris\\")"}'
    )
    schema = {"type": "object", "properties": {"thought": {"type": "string"}, "code": {"type": "string"}}}
    bounded = _bounded(schema)["properties"]
    assert bounded["code"]["maxLength"] <= 400
    # The thought is one word: no room to "reason" wrongly and then code the mistake.
    thought = re.compile(bounded["thought"]["pattern"])
    assert thought.match("Multiply.") and thought.match("Power.")
    assert not thought.match("2^10 = 2 * 2 = 81") and not thought.match("I will multiply.")


def test_live_text_reads_partial_json_and_hosted_code():
    assert live_text('{"thought": "I add \\"them\\".", "code": "final_answer(1 +') == (
        'I add "them".\n\n```python\nfinal_answer(1 +\n```'
    )
    assert live_text('{"thou') == "…"
    assert (
        live_text("Thought: <b>bold</b>\n<code>\nx = 1\n")
        == "&lt;b&gt;bold&lt;/b&gt;\n\n```python\nx = 1\n```"
    )


def test_tokens_stream_into_the_chat_through_a_live_server(make_settings, make_runtime):
    model = StreamingScriptedModel(
        lambda messages: code_reply(
            f"final_answer({('Answer to: ' + last_task(messages))!r})", "I will " * 8
        ),
        chunk_chars=3,
        chunk_delay_s=0.03,
    )
    runtime = make_runtime(make_settings(), model)
    with serve(runtime) as url:
        job = Client(url, verbose=False).submit("stream please", [], "b", api_name="/respond")
        final = job.result(timeout=60)
        updates = [out[1] for out in job.outputs()]
    live = []
    for history in updates:
        last = history[-1]
        if (last.get("metadata") or {}).get("title", "").startswith("✍️ Step 1"):
            live.append(text_of(last))
    assert len(live) >= 4, live
    assert all(len(a) < len(b) for a, b in zip(live, live[1:], strict=False)), live
    history = final[1]
    assert (
        text_of(history[-1]) == "Answer to: stream please"
        and "metadata" not in history[-1]
        or not (history[-1].get("metadata") or {}).get("title")
    )
    # The steps collapsed: no message is left open once the answer is there.
    assert all((m.get("metadata") or {}).get("status") in (None, "done") for m in history)


def _stored(db_path, trace_id: str) -> int:
    db = sqlite3.connect(db_path)
    try:
        rows = db.execute(
            "SELECT attributes, name, status_message FROM spans WHERE trace_id = ?", (trace_id,)
        )
        spans = sum(len((a or "").encode()) + len(n or "") + len(m or "") for a, n, m in rows)
        row = db.execute("SELECT input, output, metadata FROM traces WHERE id = ?", (trace_id,)).fetchone()
        return spans + sum(len((v or "").encode()) for v in row)
    finally:
        db.close()


def test_traces_stay_small_and_the_agent_span_output_is_the_answer(
    make_settings, make_runtime, fake_langfuse
):
    from app import ChatHandlers

    runtime = make_runtime(make_settings(fake_langfuse), ScriptedLocalModel())
    handlers = ChatHandlers(runtime)
    session, history, traces = None, [], []
    for n in range(1, 13):
        history, session, _ = turn(handlers, session, history, f"Question number {n}?")
        traces.append(runtime.feedback.store and session.answer_traces[len(history) - 1])
    runtime.feedback.telemetry.flush()
    store = runtime.feedback.store
    wait_for(lambda: len(store.list_traces(limit=50)) == 12)
    sizes = [_stored(runtime.settings.db_path, t) for t in traces]
    assert max(sizes) < 20_000, sizes
    assert sizes[11] <= sizes[4] * 1.1, sizes  # bounded memory: no growth once 3 turns are kept
    for span in store.spans_of(traces[-1]):
        attributes = (
            json.loads(span["attributes"]) if isinstance(span["attributes"], str) else span["attributes"]
        )
        assert len(attributes) < 128, (span["name"], len(attributes))
        if span["name"].endswith(".run"):
            assert attributes["output.value"] == "Answer to: Question number 12?"
            assert "app.final_output" not in attributes
    # Langfuse gets the same shaped spans, and its LLM spans still carry messages and tokens.
    sent = wait_for(
        lambda: fake_langfuse.spans_of(traces[-1]) if len(fake_langfuse.spans_of(traces[-1])) > 3 else None
    )
    run = [s for s in sent if s.name.endswith(".run")]
    assert run and run[0].attributes["output.value"] == "Answer to: Question number 12?"
    llm = [s for s in sent if s.attributes.get("openinference.span.kind") == "LLM"]
    assert llm and all("Question number 12?" in str(s.attributes["input.value"]) for s in llm)
    assert all(s.attributes.get("llm.token_count.prompt") == 300 for s in llm)
    assert not any(k.startswith("llm.input_messages.") for s in sent for k in s.attributes)
