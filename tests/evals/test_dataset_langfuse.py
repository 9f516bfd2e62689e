"""A dataset run in Langfuse (the stand-in server, in both of its generations): dataset, items, the
run linked to the agent's traces, whose spans carry the run's attributes as run_experiment's do."""

from __future__ import annotations

import io
import json
from argparse import Namespace
from types import SimpleNamespace

import pytest
from sqlalchemy import text

from evals import langfuse_datasets
from evals.dataset_run import SCORE_NAME, DatasetRun, score_id
from evals.datasets import load_dataset
from evals.gsm8k import expected_number
from evals.langfuse_datasets import (
    EXPERIMENT_EVERY_SPAN,
    EXPERIMENT_ROOTS_ONLY,
    RUN_ITEM_SPAN,
    cmd_dataset_publish,
    dataset_item_id,
    publish_run,
    run_item_span_id,
)
from feedback.langfuse_scores import REJECTED, RETRY, Delivery, ScoresEndpoint
from tests.fakes import RecordedSpan, ScriptedModel, code_reply, last_task
from tests.langfuse_server import BATCH, GENERATIONS, SINGLE

ITEMS = load_dataset("gsm8k")[1][:5]
ANSWERS = {item.input: expected_number(item.expected) for item in ITEMS}
# A price for the scripted model, so each item's trace has a cost (dollars per million tokens).
PRICES = '{"scripted-model": {"input": 1.5, "output": 4}}'
EXPERIMENT_KEYS = {*EXPERIMENT_EVERY_SPAN, *EXPERIMENT_ROOTS_ONLY}


@pytest.fixture(params=GENERATIONS)
def langfuse_generation(request: pytest.FixtureRequest) -> str:
    """Both server generations: run scores go one object a call to one, as a list to the other."""
    return request.param


def right_on_even_items(messages) -> str:
    """Right on items 0, 2 and 4, one more than right on 1 and 3: accuracy 0.6."""
    task = last_task(messages)
    index = next(i for i, item in enumerate(ITEMS) if item.input in task)
    return code_reply(f"final_answer({str(ANSWERS[ITEMS[index].input] + index % 2)!r})")


def _run(make_settings, make_runtime, langfuse=None, name="first", **env):
    settings = make_settings(langfuse, **env)
    runtime = make_runtime(settings, model=ScriptedModel(right_on_even_items))
    DatasetRun(runtime, name, "gsm8k").run(ITEMS)
    runtime.feedback.telemetry.flush()
    if runtime.feedback.outbox is not None:
        assert runtime.feedback.outbox.flush(10)
    store = runtime.feedback.store
    rows = {r["item_id"]: r for r in store.rows("SELECT * FROM dataset_results WHERE run = :r", {"r": name})}
    return settings, store, rows


def _counts(state) -> dict[str, int]:
    return {
        "datasets": len(state.datasets),
        "items": len(state.dataset_items),
        "run_items": len(state.experiment_items),
        "scores": len(state.scores),
    }


def test_a_run_is_published_with_each_item_on_its_own_trace(
    make_settings, make_runtime, fake_langfuse, store_env
):
    settings, store, rows = _run(make_settings, make_runtime, fake_langfuse, **store_env)
    state = fake_langfuse.state
    agent_traces = {s.trace_id for s in state.spans}
    assert {r["trace_id"] for r in rows.values()} <= agent_traces  # the agent's spans got there first
    spans_before = len(state.spans)

    report = publish_run(settings, store, "first")

    assert report.ok and report.sent, report.message
    assert (report.items, report.linked, report.unlinked) == (5, 5, 0)
    assert report.message.startswith("Published run 'first' to Langfuse") and "60.0%" in report.message
    # The dataset, named as ours, and each item under its stable id.
    assert list(state.datasets) == ["gsm8k"]
    dataset = state.datasets["gsm8k"]
    assert set(state.dataset_items) == {dataset_item_id("gsm8k", item.id) for item in ITEMS}
    for item in ITEMS:
        sent = state.dataset_items[dataset_item_id("gsm8k", item.id)]
        assert (sent["datasetName"], sent["input"], sent["expectedOutput"]) == (
            "gsm8k",
            item.input,
            item.expected,
        )
        assert sent["metadata"]["item_id"] == item.id
    # One run item per result, in the item's own trace (no new trace), under the agent's root span.
    run_items = list(state.experiment_items.values())
    # ... and every span the app sent during the run, sent again with the run's attributes.
    assert report.resent == spans_before and report.without_spans == 0
    assert len(run_items) == 5 and len(state.spans) == 2 * spans_before + 5
    experiment = {s.attributes["langfuse.experiment.id"] for s in run_items}
    assert experiment == {report.experiment_id}
    by_item = {s.attributes["langfuse.experiment.item.id"]: s for s in run_items}
    for item in ITEMS:
        span = by_item[dataset_item_id("gsm8k", item.id)]
        trace_id = rows[item.id]["trace_id"]
        (root_id,) = {s.span_id for s in fake_langfuse.spans_of(trace_id) if s.parent_id is None}
        assert span.name == RUN_ITEM_SPAN
        assert span.trace_id == trace_id and span.parent_id == root_id
        assert span.attributes["langfuse.experiment.name"] == "first"
        assert span.attributes["langfuse.experiment.dataset.id"] == dataset["id"]
        assert span.attributes["langfuse.experiment.item.root_observation_id"] == span.span_id
        assert span.attributes["langfuse.observation.input"] == item.input
        # The item's score is on that same trace.
        assert state.scores[score_id("first", item.id)]["traceId"] == trace_id
        assert state.scores[score_id("first", item.id)]["name"] == SCORE_NAME
    # Run-level scores, on the run.
    run_scores = {s["name"]: s for s in state.scores.values() if s.get("datasetRunId")}
    assert set(run_scores) == {"accuracy", "flexible_accuracy"}
    assert run_scores["accuracy"]["value"] == 0.6
    assert run_scores["accuracy"]["datasetRunId"] == report.experiment_id
    assert "traceId" not in run_scores["accuracy"]
    assert report.scores == {"accuracy": 0.6, "flexible_accuracy": 0.6}


def test_publishing_again_adds_nothing(make_settings, make_runtime, fake_langfuse):
    settings, store, _rows = _run(make_settings, make_runtime, fake_langfuse)
    first = publish_run(settings, store, "first")
    state = fake_langfuse.state
    before = _counts(state)
    posts = (len(state.dataset_item_posts), len(state.score_posts))
    second = publish_run(settings, store, "first")
    assert second.ok and second.experiment_id == first.experiment_id
    assert (len(state.dataset_item_posts), len(state.score_posts)) == (
        posts[0] + 5,
        posts[1] + 2,
    )  # sent again
    assert _counts(state) == before  # ... and upserted: nothing new in Langfuse
    run_posts = [p for p in state.score_posts if p.get("datasetRunId")]
    # Same ids, same timestamps (a self-hosted server takes none: it files them by arrival).
    assert len({(p["id"], p.get("timestamp")) for p in run_posts}) == 2
    assert state.dataset_item_duplicates == []
    assert state.experiment_item_duplicates == []
    assert state.upsert_violations == []


def test_other_scores_of_the_run_get_a_run_level_mean(make_settings, make_runtime, fake_langfuse):
    settings, store, rows = _run(make_settings, make_runtime, fake_langfuse)
    for n, row in enumerate(sorted(rows.values(), key=lambda r: r["item_id"])):
        store.upsert_score(
            score_id=f"judge-{n}", trace_id=row["trace_id"], name="helpfulness", value=n / 4,
            data_type="NUMERIC", source="EVAL",
        )  # fmt: skip
    report = publish_run(settings, store, "first")
    assert report.ok, report.message
    assert report.scores["helpfulness_mean"] == pytest.approx(0.5)
    sent = {s["name"]: s["value"] for s in fake_langfuse.state.scores.values() if s.get("datasetRunId")}
    assert sent["helpfulness_mean"] == pytest.approx(0.5)


@pytest.mark.parametrize("how", ["refused", "error500", "unauthorized"])
def test_langfuse_down_or_refusing_gives_a_sentence_and_raises_nothing(
    make_settings, make_runtime, fake_langfuse, how
):
    settings, store, _rows = _run(make_settings, make_runtime, fake_langfuse)
    if how == "refused":
        fake_langfuse.refuse()
    else:
        fake_langfuse.state.mode = how
    report = publish_run(settings, store, "first")
    assert not report.ok
    expected = {
        "refused": "Langfuse is unreachable at",
        "error500": "Langfuse refused the dataset 'gsm8k' (HTTP 500",
        "unauthorized": "Langfuse rejected the keys (HTTP 401)",
    }[how]
    assert report.message.startswith(expected), report.message
    assert report.message.endswith("publish it later with python -m evals dataset publish first.") or (
        how == "unauthorized" and report.message.endswith("python -m evals dataset publish first.")
    )
    assert report.message.count(". ") == 0  # one sentence
    assert fake_langfuse.state.experiment_items == {}
    # Once Langfuse answers again, the same call publishes the run.
    fake_langfuse.accept()
    fake_langfuse.state.mode = "ok"
    assert publish_run(settings, store, "first").ok


def test_without_keys_nothing_is_sent(make_settings, make_runtime, fake_langfuse):
    settings, store, _rows = _run(make_settings, make_runtime)  # no Langfuse keys
    report = publish_run(settings, store, "first")
    assert report.ok and not report.sent
    assert report.message.startswith("Langfuse is off")
    state = fake_langfuse.state
    assert (state.dataset_posts, state.dataset_item_posts, state.spans, state.score_posts) == ([], [], [], [])


def test_the_command_prints_the_report(make_settings, make_runtime, fake_langfuse):
    settings, store, _rows = _run(make_settings, make_runtime, fake_langfuse)
    ctx = SimpleNamespace(settings=settings, store=store)
    out = io.StringIO()
    assert cmd_dataset_publish(ctx, Namespace(run="first", json=True), out) == 0
    assert json.loads(out.getvalue())["linked"] == 5
    out = io.StringIO()
    assert cmd_dataset_publish(ctx, Namespace(run="nope", json=False), out) == 1
    no_keys = SimpleNamespace(settings=make_settings(), store=store)
    assert cmd_dataset_publish(no_keys, Namespace(run="first", json=False), out) == 2


def test_a_run_made_without_keys_is_published_later(make_settings, make_runtime, fake_langfuse):
    _settings, store, rows = _run(make_settings, make_runtime)  # Langfuse off during the run
    later = make_settings(fake_langfuse)  # the same store, keys set afterwards
    report = publish_run(later, store, "first")
    assert report.ok and report.linked == 5, report.message
    # Its item scores were never delivered: the report says where they wait.
    assert report.pending_item_scores == 5
    assert "5 item scores still waiting in the outbox (python -m feedback sync)" in report.message
    linked = {s.trace_id for s in fake_langfuse.state.experiment_items.values()}
    assert linked == {r["trace_id"] for r in rows.values()}


@pytest.mark.parametrize("langfuse_generation", [BATCH])  # the SDK sends scores as a list
def test_the_fake_counts_run_experiment_items_and_its_duplicates(fake_langfuse):
    """The fake's check against the SDK's own experiment runner: run twice, run_experiment makes a
    second run item (new trace, new observation) and a second run score; publish_run must not."""
    import uuid

    from langfuse import Langfuse
    from opentelemetry.sdk.trace import TracerProvider

    # A provider of its own: without one, the client would register a process-wide provider.
    client = Langfuse(
        public_key=f"pk-lf-{uuid.uuid4().hex[:8]}",
        secret_key="sk",
        base_url=fake_langfuse.url,
        tracer_provider=TracerProvider(),
    )
    item = SimpleNamespace(id="item-1", dataset_id="ds-1", input="2+2?", expected_output="4", metadata={})
    try:
        for _ in range(2):
            client.run_experiment(
                name="gsm8k",
                run_name="first",
                data=[item],
                task=lambda *, item, **kwargs: "4",
                run_evaluators=[lambda *, item_results, **kwargs: {"name": "accuracy", "value": 1.0}],
            )
        client.flush()
    finally:
        client.shutdown()
    state = fake_langfuse.state
    assert len(state.experiment_items) == 1 and len(state.experiment_item_duplicates) == 1
    assert len({s.trace_id for s in state.spans}) == 2  # a new trace per item and per run
    assert len([s for s in state.scores.values() if s.get("datasetRunId")]) == 2


def test_dataset_run_with_keys_publishes_the_run(fake_langfuse, tmp_path, monkeypatch):
    from evals.cli import main as evals_cli
    from tests.fakes import FakeOpenAI

    with FakeOpenAI() as llm:
        for key, value in {
            "DATA_DIR": str(tmp_path / "data"),
            "MODEL_PROVIDER": "openai",
            "OPENAI_BASE_URL": llm.url,
            "EVALUATORS_FILE": "off",
            "LANGFUSE_PUBLIC_KEY": "pk-lf-cli",
            "LANGFUSE_SECRET_KEY": "sk-lf-cli",
            "LANGFUSE_BASE_URL": fake_langfuse.url,
            "LANGFUSE_TIMEOUT_S": "2",
        }.items():
            monkeypatch.setenv(key, value)
        out = io.StringIO()
        code = evals_cli(["dataset", "run", "gsm8k", "--run-name", "cli-run", "--limit", "2", "--json"], out)
    assert code == 0
    summary = json.loads(out.getvalue())
    assert summary["items"] == 2 and summary["langfuse"]["ok"] and summary["langfuse"]["linked"] == 2
    assert len(fake_langfuse.state.experiment_items) == 2
    assert len(fake_langfuse.state.dataset_items) == 2


def _same_row(first: RecordedSpan, second: RecordedSpan) -> bool:
    """Whether the server files `second` in `first`'s row: its events table is keyed on trace id,
    span id and start time, which it reads to the millisecond. The store keeps times as floats (a
    few hundred ns off), so a start within 1 us of a millisecond's edge can land on either side of
    it: there only nearness is asked."""
    a, b = first.start_time_unix_nano, second.start_time_unix_nano
    if (first.trace_id, first.span_id) != (second.trace_id, second.span_id) or abs(a - b) >= 1000:
        return False
    near_edge = min(a % 1_000_000, 1_000_000 - a % 1_000_000) < 1000
    return near_edge or a // 1_000_000 == b // 1_000_000


def _sent(fake_langfuse, trace_id: str, span_id: str) -> tuple[RecordedSpan, list[RecordedSpan]]:
    """The span as the app sent it during the run, and every copy sent with the run's attributes."""
    copies = [s for s in fake_langfuse.spans_of(trace_id) if s.span_id == span_id]
    (original,) = [s for s in copies if "langfuse.experiment.id" not in s.attributes]
    return original, [s for s in copies if "langfuse.experiment.id" in s.attributes]


@pytest.mark.parametrize("langfuse_generation", [SINGLE])  # spans go the same way to both
def test_every_span_of_an_item_carries_the_run_so_its_cost_and_latency_are_the_traces(
    make_settings, make_runtime, fake_langfuse, store_env
):
    settings, store, rows = _run(make_settings, make_runtime, fake_langfuse, MODEL_PRICES=PRICES, **store_env)
    report = publish_run(settings, store, "first")
    assert report.ok, report.message
    for item in ITEMS:
        trace_id = rows[item.id]["trace_id"]
        item_id = dataset_item_id("gsm8k", item.id)
        stored = store.spans_of(trace_id)
        (root,) = [s for s in stored if s["parent_id"] is None]
        assert len(stored) >= 3 and any(s["kind"] == "LLM" for s in stored)
        for row in stored:
            original, (copy,) = _sent(fake_langfuse, trace_id, row["span_id"])
            # The server replaces the app's row with the copy, which carries the run and the item ...
            assert _same_row(original, copy), (
                row["name"],
                original.start_time_unix_nano,
                copy.start_time_unix_nano,
            )
            assert copy.attributes["langfuse.experiment.id"] == report.experiment_id
            assert copy.attributes["langfuse.experiment.item.id"] == item_id
            root_only = EXPERIMENT_ROOTS_ONLY if row is root else ()
            assert set(copy.attributes) - set(original.attributes) == {*EXPERIMENT_EVERY_SPAN, *root_only}
            # ... and keeps everything else the server read from the app's: attributes (span kind,
            # token counts and cost details where they were), scope, resource, parent, times.
            assert {
                k: v for k, v in copy.attributes.items() if k not in EXPERIMENT_KEYS
            } == original.attributes
            assert (copy.name, copy.parent_id, copy.scope) == (
                original.name,
                original.parent_id,
                original.scope,
            )
            instance = "service.instance.id"  # random per process: the server keeps it as metadata only
            assert {k: v for k, v in copy.resource.items() if k != instance} == {
                k: v for k, v in original.resource.items() if k != instance
            }
            assert abs(copy.end_time_unix_nano - original.end_time_unix_nano) < 1000
            assert (copy.status_code == 2) == (original.status_code == 2)  # StatusCode.ERROR
        # The item as the server sums it over the spans that carry its attributes: the trace's cost,
        # and the root's latency (its root observation lasts as long as the agent's root span).
        trace = store.get_trace(trace_id)
        assert trace["cost"] and trace["cost"] > 0
        measured = fake_langfuse.state.experiment_item(report.experiment_id, item_id)
        assert measured["observations"] == len(stored) + 1
        assert measured["cost"] == pytest.approx(trace["cost"], rel=1e-9)
        assert measured["latency_s"] == pytest.approx(root["end_time"] - root["start_time"], abs=2e-6)
        run_item = next(s for s in fake_langfuse.spans_of(trace_id) if s.name == RUN_ITEM_SPAN)
        assert run_item.span_id == run_item_span_id(report.experiment_id, item_id)
        assert (run_item.end_time_unix_nano - run_item.start_time_unix_nano) / 1e9 == pytest.approx(
            root["end_time"] - root["start_time"], abs=2e-6
        )


@pytest.mark.parametrize("langfuse_generation", [SINGLE])  # spans go the same way to both
def test_publishing_again_sends_the_same_spans_into_the_same_rows(make_settings, make_runtime, fake_langfuse):
    settings, store, rows = _run(make_settings, make_runtime, fake_langfuse, MODEL_PRICES=PRICES)
    first = publish_run(settings, store, "first")
    second = publish_run(settings, store, "first")
    assert first.ok and second.ok, (first.message, second.message)
    for row in rows.values():
        for span in store.spans_of(row["trace_id"]):
            original, copies = _sent(fake_langfuse, row["trace_id"], span["span_id"])
            assert len(copies) == 2 and all(_same_row(original, c) for c in copies)
            assert copies[0].start_time_unix_nano == copies[1].start_time_unix_nano
            assert copies[0].attributes == copies[1].attributes
    assert second.resent == first.resent > 0
    assert len(fake_langfuse.state.experiment_items) == 5
    assert fake_langfuse.state.experiment_item_duplicates == []


@pytest.mark.parametrize("langfuse_generation", [SINGLE])  # spans go the same way to both
def test_an_item_whose_spans_were_pruned_is_still_linked_as_before(
    make_settings, make_runtime, fake_langfuse
):
    settings, store, rows = _run(make_settings, make_runtime, fake_langfuse, MODEL_PRICES=PRICES)
    pruned = rows[ITEMS[0].id]["trace_id"]
    with store.transaction() as db:
        db.execute(text("DELETE FROM spans WHERE trace_id = :t"), {"t": pruned})
    spans_before = len(fake_langfuse.state.spans)
    report = publish_run(settings, store, "first")
    assert report.ok and report.linked == 5 and report.without_spans == 1, report.message
    assert "1 items whose spans are no longer in the store" in report.message
    # Its run item alone, a root of the item's trace (nothing else of it is left to send).
    new = fake_langfuse.state.spans[spans_before:]
    (run_item,) = [s for s in new if s.trace_id == pruned]
    assert run_item.name == RUN_ITEM_SPAN and run_item.parent_id is None
    assert run_item.attributes["langfuse.experiment.item.id"] == dataset_item_id("gsm8k", ITEMS[0].id)
    assert len(fake_langfuse.state.experiment_items) == 5


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (RETRY, "Langfuse could not take the run's scores now (HTTP 503: busy), a later publish sends them:"),
        (
            REJECTED,
            "Langfuse rejected the run's scores (accuracy: HTTP 400: no; flexible_accuracy: HTTP 400: no):",
        ),
    ],
)
@pytest.mark.parametrize("langfuse_generation", [SINGLE])
def test_a_run_score_put_off_or_refused_is_said(
    make_settings, make_runtime, fake_langfuse, monkeypatch, outcome, expected
):
    """Each run score is one call of the scores endpoint, whose outcome the report says."""
    sent = []

    class Endpoint(ScoresEndpoint):
        def create(self, body: dict) -> Delivery:
            sent.append(body["name"])
            return Delivery(outcome, "HTTP 503: busy" if outcome == RETRY else "HTTP 400: no")

    monkeypatch.setattr(langfuse_datasets, "ScoresEndpoint", Endpoint)
    settings, store, _rows = _run(make_settings, make_runtime, fake_langfuse)
    report = publish_run(settings, store, "first")
    assert not report.ok and report.sent
    assert report.message.startswith(expected), report.message
    assert report.message.endswith("publish it later with python -m evals dataset publish first.")
    # Put off: the rest waits for the next publish; refused: the others are still sent.
    assert sent == (["accuracy"] if outcome == RETRY else ["accuracy", "flexible_accuracy"])
