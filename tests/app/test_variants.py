"""A/B variants in the running app: each user's sessions get their variant's agent (its prompt,
its model and temperature), here and in agent processes; every turn's trace says which variant
(store column, metadata, tag) in the store and in Langfuse; the assignment sticks across sessions,
a restart and two app processes sharing one Postgres."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent.agent_process import RemoteAgent
from agent.session import VariantAgents
from agent.turn import stream_turn
from app import ChatHandlers, isolation_line
from config.settings import settings_from_env
from feedback.store import Store
from tests.fakes import FakeOpenAI, ScriptedModel, all_text, code_reply, last_task
from tests.gradio_queue import QueueClient
from tests.helpers import answer_index, serve, text_of, wait_for

PROMPTS = """
[experiment]
name = "prompt-test"
salt = "t1"
control = "alpha"

[[variant]]
name = "alpha"
weight = 1
system_prompt = "You are agent ALPHA. {{ custom_instructions }}"

[[variant]]
name = "beta"
weight = 1
system_prompt = "You are agent BETA. {{ custom_instructions }}"
"""

MODELS = """
[experiment]
name = "model-test"
control = "small"

[[variant]]
name = "small"
weight = 1
model_id = "model-small"

[[variant]]
name = "large"
weight = 1
model_id = "model-large"
temperature = 0.7
"""


def who_answers(messages: list[Any]) -> str:
    """The scripted model says which system prompt it was given."""
    text = all_text(messages)
    who = "ALPHA" if "agent ALPHA" in text else "BETA" if "agent BETA" in text else "NOBODY"
    return code_reply(f"final_answer({(who + ' says: ' + last_task(messages))!r})")


def variants_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "variants.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def browsers(settings: Any, wanted: tuple[str, ...]) -> dict[str, str]:
    """A browser id (a UUID, as the page keeps one) whose user is assigned each wanted variant."""
    found: dict[str, str] = {}
    for n in range(1, 1000):
        browser = str(uuid.UUID(int=n))
        variant = settings.experiment.assign(f"anon-{browser}").assigned
        if variant in wanted and variant not in found:
            found[variant] = browser
        if len(found) == len(wanted):
            return found
    raise AssertionError("no browser ids for every variant")


def meta(span: Any, key: str) -> Any:
    """A trace metadata attribute as Langfuse reads it (the SDK sends each value JSON-encoded)."""
    raw = span.attributes.get(f"langfuse.trace.metadata.{key}")
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return raw


def _final(handlers: ChatHandlers, browser: str, message: str, session: Any = None) -> tuple[str, Any]:
    *_, (_, history, session, _) = handlers.respond(message, [], session, browser)
    return text_of(history[-1]), session


def _trace_of(store: Store, session: Any) -> dict[str, Any]:
    rows = store.rows(
        "SELECT * FROM traces WHERE session_id = :s ORDER BY start_time", {"s": session.session_id}
    )
    assert rows, "no trace"
    return rows[-1]


def test_each_user_gets_their_variants_agent_in_every_session_and_after_a_restart(
    tmp_path, make_settings, make_runtime
):
    settings = make_settings(VARIANTS_FILE=variants_file(tmp_path, PROMPTS))
    ids = browsers(settings, ("alpha", "beta"))
    runtime = make_runtime(settings, model=ScriptedModel(who_answers))
    assert isinstance(runtime.make_agent, VariantAgents)
    assert runtime.banner()[0].startswith("Experiment 'prompt-test'")
    handlers = ChatHandlers(runtime)
    store = runtime.feedback.store
    for variant, who in (("alpha", "ALPHA"), ("beta", "BETA")):
        answer, session = _final(handlers, ids[variant], "What is 2+2?")
        assert answer == f"{who} says: What is 2+2?"
        assert session.assignment.variant == variant
        runtime.feedback.telemetry.flush_to_store()
        trace = wait_for(lambda s=session: _trace_of(store, s))
        assert (trace["variant"], trace["experiment"]) == (variant, "prompt-test")
        assert f"variant:{variant}" in json.loads(trace["tags"])
        metadata = json.loads(trace["metadata"])
        assert (metadata["variant"], metadata["experiment"], metadata["model_id"]) == (
            variant,
            "prompt-test",
            "scripted-model",
        )
        assert "assigned" not in metadata
        # "New chat": a new session, the same variant.
        _, fresh, _, _ = handlers.on_new_chat(session, ids[variant])
        assert fresh.session_id != session.session_id
        assert fresh.assignment == session.assignment
        assert _final(handlers, ids[variant], "again", fresh)[0] == f"{who} says: again"
    # A restart: a new runtime on the same store assigns everyone as before.
    restarted = make_runtime(
        make_settings(VARIANTS_FILE=variants_file(tmp_path, PROMPTS)), model=ScriptedModel(who_answers)
    )
    handlers = ChatHandlers(restarted)
    assert _final(handlers, ids["alpha"], "after")[0] == "ALPHA says: after"
    assert _final(handlers, ids["beta"], "after")[0] == "BETA says: after"


def test_a_paused_variants_users_are_served_the_control_and_their_traces_say_so(
    tmp_path, make_settings, make_runtime
):
    settings = make_settings(
        VARIANTS_FILE=variants_file(
            tmp_path, PROMPTS.replace('name = "beta"\nweight = 1', 'name = "beta"\nweight = 1\npaused = true')
        )
    )
    ids = browsers(settings, ("alpha", "beta"))  # assigned (paused or not)
    runtime = make_runtime(settings, model=ScriptedModel(who_answers))
    handlers = ChatHandlers(runtime)
    answer, session = _final(handlers, ids["beta"], "Who?")
    assert answer == "ALPHA says: Who?"
    assert (session.assignment.assigned, session.assignment.variant) == ("beta", "alpha")
    runtime.feedback.telemetry.flush_to_store()
    trace = wait_for(lambda: _trace_of(runtime.feedback.store, session))
    assert trace["variant"] == "alpha" and "variant:alpha" in json.loads(trace["tags"])
    assert json.loads(trace["metadata"])["assigned"] == "beta"


def test_two_users_in_two_variants_through_the_live_app_store_and_langfuse(
    tmp_path, make_settings, make_runtime, fake_langfuse
):
    settings = make_settings(fake_langfuse, VARIANTS_FILE=variants_file(tmp_path, PROMPTS))
    ids = browsers(settings, ("alpha", "beta"))
    runtime = make_runtime(settings, model=ScriptedModel(who_answers))
    traces: dict[str, str] = {}
    with serve(runtime) as url:
        for variant, who, liked in (("alpha", "ALPHA", True), ("beta", "BETA", False)):
            page = QueueClient(url)
            try:
                result = page.chat("What is 2+2?", browser_id=ids[variant])
                assert result.success, result.message
                history = result.output[1]
                assert text_of(history[-1]) == f"{who} says: What is 2+2?"
                assert page.vote(answer_index(history, 0), liked).success
            finally:
                page.close()
            score = next(s for s in runtime.feedback.store.ratings() if s.user_id == f"anon-{ids[variant]}")
            traces[variant] = score.trace_id
    store = runtime.feedback.store
    runtime.feedback.telemetry.flush()
    for variant, trace_id in traces.items():
        row = wait_for(lambda t=trace_id: store.get_trace(t))
        assert (row["variant"], row["experiment"], row["user_id"]) == (
            variant,
            "prompt-test",
            f"anon-{ids[variant]}",
        )
        assert f"variant:{variant}" in json.loads(row["tags"])
        # Langfuse: the root's trace metadata and tags (every span of the turn carries them).
        root = wait_for(
            lambda t=trace_id: next(
                (s for s in fake_langfuse.state.spans if s.trace_id == t and s.parent_id is None), None
            )
        )
        assert meta(root, "variant") == variant
        assert meta(root, "experiment") == "prompt-test"
        assert f"variant:{variant}" in root.attributes["langfuse.trace.tags"]
        children = [
            s for s in fake_langfuse.state.spans if s.trace_id == trace_id and s.parent_id is not None
        ]
        assert children and all(meta(s, "variant") == variant for s in children)
    likes = {store.get_trace(s.trace_id)["variant"]: s.value for s in store.ratings()}
    assert likes == {"alpha": 1.0, "beta": 0.0}


@pytest.fixture
def llm():
    with FakeOpenAI() as server:
        yield server


def test_variants_of_hosted_models_run_in_agent_processes_with_their_model_and_temperature(
    tmp_path, make_settings, make_runtime, llm, fake_langfuse
):
    from app import create_runtime

    settings = make_settings(
        fake_langfuse,
        MODEL_PROVIDER="openai",
        OPENAI_BASE_URL=llm.url,
        AGENT_PROCESSES="1",
        VARIANTS_FILE=variants_file(tmp_path, MODELS),
    )
    ids = browsers(settings, ("small", "large"))
    runtime = create_runtime(settings)
    try:
        assert isinstance(runtime.make_agent, VariantAgents) and runtime.make_agent.pool is not None
        assert isolation_line(runtime).startswith("code isolation: process")
        assert {n: c.model_id for n, c in runtime.choices.items()} == {
            "small": "model-small",
            "large": "model-large",
        }
        for variant, expected in (
            ("small", "model=model-small temperature=None"),
            ("large", "model=model-large temperature=0.7"),
        ):
            session = runtime.new_session(f"anon-{ids[variant]}")
            assert isinstance(session.agent, RemoteAgent) and session.agent.variant == variant
            updates = list(
                stream_turn(session, "[whoami]", [], runtime.feedback.telemetry, runtime.metadata(session))
            )
            assert updates[-1].error is None and text_of(updates[-1].history[-1]) == expected
            trace_id = updates[-1].trace_id
            runtime.feedback.telemetry.flush()
            row = wait_for(lambda t=trace_id: runtime.feedback.store.get_trace(t))
            assert (row["variant"], json.loads(row["metadata"])["model_id"]) == (variant, f"model-{variant}")
            # The spans made in the agent process carry the turn's variant for Langfuse too.
            spans = wait_for(
                lambda t=trace_id: [
                    s for s in fake_langfuse.state.spans if s.trace_id == t and s.parent_id is not None
                ]
            )
            llm_spans = wait_for(
                lambda t=trace_id: [
                    s
                    for s in fake_langfuse.state.spans
                    if s.trace_id == t and "llm.model_name" in s.attributes
                ]
            )
            assert {s.attributes["llm.model_name"] for s in llm_spans} == {f"model-{variant}"}
            for span in spans:
                assert meta(span, "variant") == variant, span.name
                assert f"variant:{variant}" in span.attributes.get("langfuse.trace.tags", ()), span.name
    finally:
        runtime.close()


def test_two_app_processes_on_one_postgres_give_each_user_the_same_variant(tmp_path, pg_url):
    from tests.feedback.test_postgres import AppProcess

    file = variants_file(tmp_path, MODELS)
    ids = browsers(settings_from_env({"VARIANTS_FILE": file, "MODEL_PROVIDER": "openai"}), ("small", "large"))
    env = {"DATABASE_URL": pg_url, "VARIANTS_FILE": file, "AGENT_PROCESSES": "1"}
    apps = [AppProcess(tmp_path, "a", **env), AppProcess(tmp_path, "b", **env)]
    try:
        for app in apps:
            assert "Experiment 'model-test'" in app.log and "variant 'large'" in app.log
        answers: dict[tuple[str, str], str] = {}
        for app in apps:
            for variant, browser in ids.items():
                page = QueueClient(app.url)
                try:
                    result = page.chat("[whoami]", browser_id=browser)
                    assert result.success, result.message
                    answers[(app.dir.name, variant)] = text_of(result.output[1][-1])
                finally:
                    page.close()
        assert answers == {
            (a, v): f"model=model-{v} temperature={'0.7' if v == 'large' else 'None'}"
            for a in ("a", "b")
            for v in ("small", "large")
        }
        store = Store(pg_url)
        try:
            rows = wait_for(
                lambda: len(r := store.rows("SELECT user_id, variant, tags FROM traces")) == 4 and r,
                timeout=30,
            )
            by_user = {}
            for row in rows:
                by_user.setdefault(row["user_id"], set()).add(row["variant"])
            assert by_user == {f"anon-{ids[v]}": {v} for v in ids}
        finally:
            store.close()
    finally:
        for app in apps:
            app.stop()


def test_an_opentelemetry_backend_gets_the_variant_on_the_turns_root(tmp_path, make_settings, make_runtime):
    """Any OTLP destination (and Phoenix, the same spans) sees what Langfuse sees: the root's trace
    metadata and tags, here without Langfuse (the app writes them on the root itself)."""
    from tests.otlp_collector import OtlpCollector

    with OtlpCollector("http") as collector:
        settings = make_settings(
            VARIANTS_FILE=variants_file(tmp_path, PROMPTS), OTEL_EXPORTER_OTLP_ENDPOINT=collector.url
        )
        ids = browsers(settings, ("beta",))
        runtime = make_runtime(settings, model=ScriptedModel(who_answers))
        answer, session = _final(ChatHandlers(runtime), ids["beta"], "Hi")
        assert answer == "BETA says: Hi"
        runtime.feedback.telemetry.flush()
        trace_id = _trace_of(runtime.feedback.store, session)["id"]
        root = wait_for(
            lambda: next((s for s in collector.spans_of(trace_id) if s.parent_id is None), None), timeout=20
        )
        assert json.loads(root.attributes["langfuse.trace.metadata.variant"]) == "beta"
        assert json.loads(root.attributes["langfuse.trace.metadata.experiment"]) == "prompt-test"
        assert "variant:beta" in root.attributes["langfuse.trace.tags"]


def test_a_session_can_be_pinned_to_a_variant_and_dataset_tags_keep_it(tmp_path, make_settings, make_runtime):
    """A dataset replayed against each variant: the session names its variant (even a paused one),
    and the dataset run's tags go beside the variant's."""
    from evals.dataset_run import _Tagged

    text = PROMPTS.replace('name = "beta"\nweight = 1', 'name = "beta"\nweight = 1\npaused = true')
    runtime = make_runtime(
        make_settings(VARIANTS_FILE=variants_file(tmp_path, text)), model=ScriptedModel(who_answers)
    )
    session = runtime.new_session("dataset:run-1", variant="beta")
    tracer = _Tagged(runtime.feedback.telemetry, ("dataset", "run:run-1"))
    final = list(stream_turn(session, "Q", [], tracer, runtime.metadata(session)))[-1]
    assert text_of(final.history[-1]) == "BETA says: Q"
    runtime.feedback.telemetry.flush_to_store()
    row = wait_for(lambda: runtime.feedback.store.get_trace(final.trace_id))
    assert row["variant"] == "beta" and "assigned" not in json.loads(row["metadata"])
    assert set(json.loads(row["tags"])) >= {"variant:beta", "dataset", "run:run-1"}
    with pytest.raises(ValueError, match="No variant 'gamma'"):
        runtime.new_session("x", variant="gamma")
