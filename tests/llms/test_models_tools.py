"""Model and tool choice from the settings (no network: nothing is called)."""

from __future__ import annotations

from smolagents import InferenceClientModel, OpenAIModel

from agent.tools import build_tools
from config.settings import settings_from_env
from llms.local_llm import LocalLlamaModel
from llms.models import build_model


def test_provider_choice_builds_the_matching_model(tmp_path):
    model, choice = build_model(settings_from_env({"HF_TOKEN": "hf_x"}))
    assert isinstance(model, InferenceClientModel) and choice.model_id == "Qwen/Qwen2.5-Coder-32B-Instruct"
    assert "because HF_TOKEN is set" in choice.banner()
    model, choice = build_model(
        settings_from_env({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "MODEL_ID": "llama3"})
    )
    assert isinstance(model, OpenAIModel) and (choice.provider, choice.model_id) == ("openai", "llama3")
    model, choice = build_model(settings_from_env({}))
    assert isinstance(model, LocalLlamaModel) and choice.reason == "nothing else is configured"


def test_local_model_path_must_exist(tmp_path):
    import pytest

    from llms.local_llm import LocalModelError

    model, _ = build_model(settings_from_env({"LOCAL_MODEL_PATH": str(tmp_path / "missing.gguf")}))
    with pytest.raises(LocalModelError, match="missing.gguf"):
        model.load()


def test_web_search_only_when_asked():
    assert build_tools(()) == []
    names = [t.name for t in build_tools(("web_search", "visit_webpage"))]
    assert names == ["web_search", "visit_webpage"]
