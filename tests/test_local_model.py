"""The real packaged GGUF (SmolLM2-135M via llama.cpp) answers through the app: no fakes."""

from __future__ import annotations

import pytest

from agent.local_llm import LocalLlamaModel, packaged_gguf_path
from agent.models import build_model
from app import ChatHandlers, create_runtime
from feedback.votes import score_id_for
from tests.helpers import answer_index, like, turn, wait_for

pytestmark = pytest.mark.slow


def test_packaged_gguf_is_found_without_a_hub():
    path = packaged_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000


def test_local_model_answers_through_the_app_and_is_traced(make_settings):
    settings = make_settings(MODEL_PROVIDER="local", MAX_STEPS="1", LOCAL_MAX_TOKENS="96")
    model, choice = build_model(settings)
    assert isinstance(model, LocalLlamaModel) and choice.provider == "local"
    runtime = create_runtime(settings)  # the app's own wiring, the real model
    try:
        handlers = ChatHandlers(runtime)
        assert runtime.choice.model_id == "SmolLM2-135M-Instruct.Q4_1.gguf"
        history, session, _ = turn(handlers, None, [], "What is 2 plus 3?")
        answer = history[-1]
        assert answer["role"] == "assistant" and "metadata" not in answer
        assert answer["content"].strip() and not answer["content"].startswith("⚠️")
        like(handlers, session, answer_index(history, 0), True)
        runtime.feedback.telemetry.flush()
        store = runtime.feedback.store
        (trace,) = wait_for(lambda: store.list_traces())
        assert trace["status"] == "OK" and trace["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
        assert trace["prompt_tokens"] > 500 and trace["completion_tokens"] > 0
        llm = [s for s in store.spans_of(trace["id"]) if s["kind"] == "LLM"]
        assert llm, "the local model must produce OpenInference LLM spans"
        assert store.get_score(score_id_for(trace["id"])).value == 1.0
    finally:
        runtime.feedback.close()
