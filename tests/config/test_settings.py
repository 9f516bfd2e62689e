"""Settings: one typed object from the environment; provider choice explained; no secret leaks."""

from __future__ import annotations

import pytest

from config.settings import DEFAULT_HF_MODEL, SettingsError, load_settings, settings_from_env


def test_defaults_pick_the_local_model_with_no_keys():
    s = settings_from_env({})
    assert (s.model_provider, s.provider_reason) == ("local", "nothing else is configured")
    assert s.trace_name == "Smolagent-Trace" and s.max_concurrent_turns == 4
    assert s.max_input_chars == 8000 and not s.langfuse_enabled
    assert str(s.data_dir) == "data" and s.server_port == 7860


def test_hf_token_makes_hf_the_default_provider():
    s = settings_from_env({"HF_TOKEN": "hf_secret"})
    assert (s.model_provider, s.model_id) == ("hf", DEFAULT_HF_MODEL)
    assert s.provider_reason == "HF_TOKEN is set"


def test_explicit_provider_wins_and_openai_settings_are_read():
    s = settings_from_env(
        {
            "HF_TOKEN": "x",
            "MODEL_PROVIDER": "openai",
            "OPENAI_BASE_URL": "http://127.0.0.1:1/v1",
            "MODEL_ID": "m",
        }
    )
    assert (s.model_provider, s.model_id, s.openai_base_url) == ("openai", "m", "http://127.0.0.1:1/v1")


def test_langfuse_host_is_accepted_as_base_url():
    s = settings_from_env(
        {"LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk", "LANGFUSE_HOST": "http://h/"}
    )
    assert s.langfuse_enabled and s.langfuse_base_url == "http://h"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"MODEL_PROVIDER": "gpt"}, "MODEL_PROVIDER must be one of"),
        ({"MAX_CONCURRENT_TURNS": "many"}, "MAX_CONCURRENT_TURNS must be a whole number"),
        ({"SESSION_TTL_S": "0"}, "SESSION_TTL_S must be greater than 0"),
        ({"MAX_INPUT_CHARS": "0"}, "MAX_INPUT_CHARS must be at least 1"),
    ],
)
def test_bad_values_are_refused_with_a_clear_sentence(env, message):
    with pytest.raises(SettingsError, match=message):
        settings_from_env(env)


def test_secrets_never_appear_in_repr_or_describe():
    s = settings_from_env(
        {
            "HF_TOKEN": "hf_TOPSECRET",
            "OPENAI_API_KEY": "sk-TOPSECRET2",
            "LANGFUSE_SECRET_KEY": "sk-lf-TOPSECRET3",
        }
    )
    for text in (repr(s), str(s.describe())):
        for secret in ("hf_TOPSECRET", "sk-TOPSECRET2", "sk-lf-TOPSECRET3"):
            assert secret not in text
    assert set(s.secrets()) == {"hf_TOPSECRET", "sk-TOPSECRET2", "sk-lf-TOPSECRET3"}


def test_dotenv_is_read_without_overriding_the_environment(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("TRACE_NAME=FromDotenv\nMAX_STEPS=5\n")
    monkeypatch.setenv("MAX_STEPS", "2")
    monkeypatch.delenv("TRACE_NAME", raising=False)
    s = load_settings(env_file)
    assert s.trace_name == "FromDotenv" and s.max_steps == 2
    monkeypatch.delenv("TRACE_NAME", raising=False)


def test_every_setting_is_documented_in_env_example_and_readme():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    source = (root / "config" / "settings.py").read_text()
    import re

    names = set(re.findall(r'env(?:, |\.get\()"([A-Z_]+)"', source)) | set(
        re.findall(r'_(?:int|float|flag)\(env, "([A-Z_]+)"', source)
    )
    assert {"MODEL_PROVIDER", "LANGFUSE_SECRET_KEY", "SESSION_TTL_S", "DATA_DIR"} <= names
    example = (root / ".env.example").read_text()
    readme = (root / "README.md").read_text()
    for name in names:
        assert f"{name}=" in example, f"{name} missing from .env.example"
        assert f"`{name}`" in readme, f"{name} missing from the README settings table"
