"""Shared fixtures: a temp data dir, settings from a plain dict, the fake Langfuse server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Never read a developer's real .env or keys during tests.
for _name in list(os.environ):
    if _name.startswith(("LANGFUSE_", "OPENAI_", "HF_TOKEN", "MODEL_", "OTEL_")):
        os.environ.pop(_name)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agent.settings import Settings, settings_from_env  # noqa: E402
from app import Runtime, create_runtime  # noqa: E402
from tests.fakes import FakeLangfuse, ScriptedModel  # noqa: E402


@pytest.fixture
def fake_langfuse() -> Iterator[FakeLangfuse]:
    with FakeLangfuse() as server:
        yield server


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def build(langfuse: FakeLangfuse | None = None, **env: Any) -> Settings:
        values = {"DATA_DIR": str(tmp_path / "data"), "LANGFUSE_TIMEOUT_S": "2"}
        if langfuse is not None:
            values.update(
                LANGFUSE_PUBLIC_KEY=f"pk-lf-test-{uuid.uuid4().hex[:8]}",
                LANGFUSE_SECRET_KEY="sk-lf-test-secret-value",
                LANGFUSE_BASE_URL=langfuse.url,
            )
        values.update({k: str(v) for k, v in env.items()})
        return settings_from_env(values)

    return build


@pytest.fixture
def make_runtime(fake_langfuse: FakeLangfuse) -> Iterator[Callable[..., Runtime]]:
    # Depends on fake_langfuse so the server outlives every runtime's final flush.
    made: list[Runtime] = []

    def build(settings: Settings, model: Any = None, extra_tools: list[Any] | None = None) -> Runtime:
        runtime = create_runtime(settings, model=model or ScriptedModel(), extra_tools=extra_tools)
        made.append(runtime)
        return runtime

    yield build
    for runtime in made:
        runtime.feedback.close()
