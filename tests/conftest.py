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
    if _name.startswith(("LANGFUSE_", "OPENAI_", "HF_TOKEN", "MODEL_", "OTEL_", "DATABASE_URL", "SPACE_ID")):
        os.environ.pop(_name)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app import Runtime, create_runtime  # noqa: E402
from config.settings import Settings, settings_from_env  # noqa: E402
from feedback.database import sqlite_url  # noqa: E402
from tests.fakes import FakeLangfuse, ScriptedModel  # noqa: E402
from tests.langfuse_server import SINGLE  # noqa: E402
from tests.pg_server import PostgresServer, require_pg_bin  # noqa: E402
from tests.phoenix_server import phoenix, phoenix_server  # noqa: E402, F401  (the run's throwaway Phoenix)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One throwaway Postgres cluster for the whole run (about 0.6 s to start)."""
    with PostgresServer(require_pg_bin(), settings={"max_connections": 300}) as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    """A new empty database on the test cluster, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = pg_server.create_database(name)
    yield url
    if not pg_server.running:
        pg_server.start()
    pg_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store's URL on each backend: the store's tests run on both."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "data" / "feedback.sqlite3")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store_env(store_url: str) -> dict[str, str]:
    """Settings that put the app's store on each backend (SQLite: the default, nothing set)."""
    return {} if store_url.startswith("sqlite") else {"DATABASE_URL": store_url}


@pytest.fixture
def langfuse_generation() -> str:
    """Which Langfuse server generation the stand-in plays (tests/langfuse_server.py).

    Self-hosted (one score object per call) unless a test module asks for both: the Langfuse
    tests override this fixture with `params=GENERATIONS`.
    """
    return SINGLE


@pytest.fixture
def fake_langfuse(langfuse_generation: str) -> Iterator[FakeLangfuse]:
    with FakeLangfuse(langfuse_generation) as server:
        yield server


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def build(langfuse: FakeLangfuse | None = None, **env: Any) -> Settings:
        # Evaluation is off unless a test turns it on (its judge would answer through the
        # test's scripted model and add scores the test does not expect).
        values = {"DATA_DIR": str(tmp_path / "data"), "LANGFUSE_TIMEOUT_S": "2", "EVALUATORS_FILE": "off"}
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

    def build(
        settings: Settings, model: Any = None, extra_tools: list[Any] | None = None, judge: Any = None
    ) -> Runtime:
        runtime = create_runtime(
            settings, model=model or ScriptedModel(), extra_tools=extra_tools, judge=judge
        )
        made.append(runtime)
        return runtime

    yield build
    for runtime in made:
        runtime.feedback.close()
