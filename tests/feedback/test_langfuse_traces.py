"""What a person sees of a turn in Langfuse equals what the app's own store says.

Checked against the stand-in's copy of the server's rules (tests/langfuse_server.py): usage is
summed over every observation of a trace, a root is a span without parent or one marked
`langfuse.internal.is_app_root`, and an LLM call's `input.value` is shown as it is. Each check
runs for a turn in the web server's process and for one in an agent process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from agent.turn import stream_turn
from config import __version__
from feedback.votes import Vote
from runtime.runtime import Runtime, create_runtime
from tests.fakes import FakeOpenAI, ScriptedModel
from tests.helpers import wait_for


@pytest.fixture
def llm() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(params=["in-process", "agent-process"])
def runtime(request, make_settings, llm, fake_langfuse) -> Iterator[Runtime]:
    env: dict[str, Any] = {"APP_ENVIRONMENT": "staging", "APP_RELEASE": "rc-7"}
    if request.param == "agent-process":
        env.update(
            MODEL_PROVIDER="openai", OPENAI_BASE_URL=llm.url, MODEL_ID="gpt-4o-mini", AGENT_PROCESSES="1"
        )
        built = create_runtime(make_settings(fake_langfuse, **env))
    else:
        built = create_runtime(make_settings(fake_langfuse, **env), model=ScriptedModel())
    yield built
    built.close()


def _turn(runtime: Runtime, message: str) -> tuple[Any, str]:
    session = runtime.new_session("person-1")
    updates = list(stream_turn(session, message, [], runtime.feedback.telemetry, runtime.metadata()))
    assert updates[-1].done
    runtime.feedback.telemetry.flush()
    return session, updates[-1].trace_id


def _langfuse_spans(fake_langfuse, runtime: Runtime, trace_id: str) -> list[Any]:
    """The turn's spans as Langfuse got them, once it has all those the store has, the LLM call
    and the root among them (an agent process exports its spans on its own schedule)."""

    def stored() -> set[str] | None:
        rows = runtime.feedback.store.rows(
            "SELECT name, kind, parent_id FROM spans WHERE trace_id = :t", {"t": trace_id}
        )
        complete = any(r["kind"] == "LLM" for r in rows) and any(r["parent_id"] is None for r in rows)
        return {r["name"] for r in rows} if complete else None

    names = wait_for(stored, timeout=20)
    return wait_for(
        lambda: (spans := fake_langfuse.spans_of(trace_id)) and {s.name for s in spans} >= names and spans,
        timeout=20,
    )


def test_one_root_per_turn(runtime, fake_langfuse):
    _, trace_id = _turn(runtime, "What is 2+2?")
    spans = _langfuse_spans(fake_langfuse, runtime, trace_id)
    roots = [s for s in spans if s.is_root]
    assert [r.name for r in roots] == [runtime.settings.trace_name]


def test_usage_is_counted_once_per_llm_call(runtime, fake_langfuse):
    _, trace_id = _turn(runtime, "What is 2+2?")
    spans = _langfuse_spans(fake_langfuse, runtime, trace_id)
    llm_calls = [s for s in spans if s.attributes.get("openinference.span.kind") == "LLM"]
    assert llm_calls
    used = sum(int(s.attributes["llm.token_count.prompt"]) for s in llm_calls)
    assert fake_langfuse.state.trace_usage(trace_id)["prompt"] == used
    trace = runtime.feedback.store.get_trace(trace_id)
    assert trace["prompt_tokens"] == used
    # Only LLM calls carry usage (the agent and step spans held the run's totals again).
    carriers = {s.name for s in spans if s.usage()}
    assert carriers == {s.name for s in llm_calls}


def test_llm_calls_show_the_chat_messages(runtime, fake_langfuse):
    _, trace_id = _turn(runtime, "What is 2+2?")
    spans = _langfuse_spans(fake_langfuse, runtime, trace_id)
    call = next(s for s in spans if s.attributes.get("openinference.span.kind") == "LLM")
    raw = call.attributes["input.value"]
    assert "ChatMessage(" not in raw and "MessageRole" not in raw
    messages = json.loads(raw)
    assert isinstance(messages, list) and all(isinstance(m, dict) for m in messages)
    assert messages[0]["role"] == "system" and isinstance(messages[0]["content"], str)
    assert any(m["role"] == "user" and "What is 2+2?" in m["content"] for m in messages)
    assert call.attributes["input.mime_type"] == "application/json"
    assert not any(k.startswith("llm.input_messages.") for k in call.attributes)
    # The store keeps the same readable input.
    stored = runtime.feedback.store.rows(
        "SELECT attributes FROM spans WHERE trace_id = :t AND kind = 'LLM'", {"t": trace_id}
    )
    assert json.loads(json.loads(stored[0]["attributes"])["input.value"]) == messages


def test_service_version_environment_and_release(runtime, fake_langfuse):
    session, trace_id = _turn(runtime, "What is 2+2?")
    spans = _langfuse_spans(fake_langfuse, runtime, trace_id)
    for span in spans:
        assert span.resource["service.name"] == "smolagents-chat"
        assert span.resource["service.version"] == __version__
        assert span.environment == "staging"  # as the server reads it
        assert span.resource["langfuse.release"] == "rc-7"
    # A rating lands in the traces' environment (Langfuse filters both by it).
    runtime.feedback.votes.record(
        trace_id=trace_id, vote=Vote(1.0), session_id=session.session_id, user_id="person-1"
    )
    assert runtime.feedback.outbox.flush(10)
    (row,) = fake_langfuse.state.rows()
    assert row["environment"] == "staging"


def test_a_long_chat_keeps_every_message_of_an_llm_call(tmp_path):
    """Three attributes per message: past the SDK's attribute limit the oldest (the system
    prompt first) would be dropped before the shaper folds them into one input."""
    from feedback.store import Store
    from feedback.tracing import Telemetry

    store = Store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    telemetry = Telemetry(store, trace_name="t")
    tracer = telemetry.provider.get_tracer("openinference.instrumentation.smolagents")
    flattened: dict[str, Any] = {
        "openinference.span.kind": "LLM",
        "input.value": "{'messages': ['ChatMessage(...)']}",
    }
    for i in range(600):
        prefix = f"llm.input_messages.{i}.message"
        flattened[f"{prefix}.role"] = "system" if i == 0 else ("user" if i % 2 else "assistant")
        flattened[f"{prefix}.contents.0.message_content.type"] = "text"
        flattened[f"{prefix}.contents.0.message_content.text"] = f"m{i}"
    with tracer.start_as_current_span("Model.generate", attributes=flattened) as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
    telemetry.flush_to_store()
    (row,) = store.rows("SELECT attributes FROM spans WHERE trace_id = :t", {"t": trace_id})
    messages = json.loads(json.loads(row["attributes"])["input.value"])
    assert len(messages) == 600
    assert messages[0] == {"role": "system", "content": "m0"} and messages[-1]["content"] == "m599"
    telemetry.shutdown()
    store.close()
