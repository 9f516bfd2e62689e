"""Cost per call and per trace: MODEL_PRICES, genai-prices, local at zero, unknown never zero."""

from __future__ import annotations

import io
import json

import pytest

from app import ChatHandlers
from config.settings import SettingsError
from feedback import cli as feedback_cli
from feedback.costs import Pricing
from feedback.store import SpanRecord, Store, TraceRecord
from tests.fakes import ScriptedModel
from tests.helpers import turn

PRICES = json.dumps({"house-model": {"input": 2.0, "output": 10.0}})
# The scripted model reports 11 prompt and 7 completion tokens per call.
ONE_CALL = (11 * 2.0 + 7 * 10.0) / 1_000_000


def _one_turn(make_settings, make_runtime, langfuse=None, model_id="house-model", **env):
    runtime = make_runtime(make_settings(langfuse, **env), model=ScriptedModel(model_id=model_id))
    handlers = ChatHandlers(runtime)
    _, session, _ = turn(handlers, None, [], "What is 6 times 7?")
    runtime.feedback.telemetry.flush()
    store = runtime.feedback.store
    (trace,) = store.list_traces()
    return runtime, store, trace


def test_model_prices_override_prices_each_call_and_the_trace(make_settings, make_runtime):
    _, store, trace = _one_turn(make_settings, make_runtime, MODEL_PRICES=PRICES)
    llm = [s for s in store.spans_of(trace["id"]) if s["kind"] == "LLM"]
    assert llm and all(s["cost"] == pytest.approx(ONE_CALL) for s in llm)
    assert trace["cost"] == pytest.approx(ONE_CALL * len(llm))
    # On the trace as metadata too (what Langfuse shows).
    assert json.loads(trace["metadata"])["cost_usd"] == pytest.approx(ONE_CALL * len(llm))


def test_unknown_price_is_unknown_not_zero(make_settings, make_runtime):
    _, store, trace = _one_turn(make_settings, make_runtime, model_id="nobody-prices-this-model")
    assert trace["cost"] is None
    assert json.loads(trace["metadata"])["cost_usd"] == "unknown"
    out = io.StringIO()
    feedback_cli.cmd_traces(store, type("A", (), {"n": 5, "json": False, "all": False})(), out)
    assert "cost ?" in out.getvalue() and "$0" not in out.getvalue()


def test_local_gguf_model_costs_zero(make_settings, make_runtime):
    _, _, trace = _one_turn(make_settings, make_runtime, model_id="SmolLM2-135M-Instruct.Q4_1.gguf")
    assert trace["cost"] == 0.0


def test_cost_reaches_langfuse_on_the_call_and_the_trace(make_settings, make_runtime, fake_langfuse):
    runtime, _, trace = _one_turn(make_settings, make_runtime, fake_langfuse, MODEL_PRICES=PRICES)
    assert runtime.feedback.outbox is not None
    runtime.feedback.telemetry.flush()
    spans = fake_langfuse.spans_of(trace["id"])
    llm = [s for s in spans if s.attributes.get("openinference.span.kind") == "LLM"]
    assert llm and all(
        json.loads(s.attributes["langfuse.observation.cost_details"])["total"] == pytest.approx(ONE_CALL)
        for s in llm
    )
    (root,) = [s for s in spans if s.parent_id is None]
    assert float(root.attributes["langfuse.trace.metadata.cost_usd"]) == pytest.approx(ONE_CALL * len(llm))


def test_export_carries_the_cost(make_settings, make_runtime, tmp_path):
    runtime, store, trace = _one_turn(make_settings, make_runtime, MODEL_PRICES=PRICES)
    store.upsert_score(
        score_id="s1",
        trace_id=trace["id"],
        name="user-feedback",
        value=1.0,
        data_type="BOOLEAN",
        source="USER",
    )
    out = io.StringIO()
    feedback_cli.cmd_export(store, type("A", (), {"output": None, "format": "jsonl"})(), out)
    (row,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert row["cost_usd"] == pytest.approx(trace["cost"])


def _span(trace_id: str, span_id: str, parent: str | None, kind: str, cost: float | None) -> SpanRecord:
    return SpanRecord(
        trace_id, span_id, parent, kind.lower(), kind, 1.0, 2.0, "OK", None, {}, 10, 5, 15, cost
    )


def _root(trace_id: str) -> TraceRecord:
    return TraceRecord(trace_id, "t", "q", "a", "u", "s", "OK", None, 1.0, 2.0, "m", [], {})


def test_a_trace_with_one_unknown_call_has_an_unknown_cost(store_url):
    store = Store(store_url)
    try:
        known, mixed = "a" * 32, "b" * 32
        store.write_spans(
            [_span(known, "1" * 16, None, "AGENT", None), _span(known, "2" * 16, "1" * 16, "LLM", 0.25)],
            [_root(known)],
        )
        store.write_spans([_span(known, "3" * 16, "1" * 16, "LLM", 0.5)], [])
        store.write_spans(
            [_span(mixed, "1" * 16, None, "AGENT", None), _span(mixed, "2" * 16, "1" * 16, "LLM", 0.25)],
            [_root(mixed)],
        )
        store.write_spans([_span(mixed, "3" * 16, "1" * 16, "LLM", None)], [])
        assert store.get_trace(known)["cost"] == pytest.approx(0.75)
        assert store.get_trace(mixed)["cost"] is None
    finally:
        store.close()


def test_pricing_rules():
    pricing = Pricing({"house-model": (2.0, 10.0)})
    assert pricing.cost("house-model", 1_000_000, 0) == pytest.approx(2.0)
    assert pricing.cost("any.gguf", 10**6, 10**6) == 0.0
    assert pricing.cost("nobody-prices-this-model", 10, 10) is None
    assert pricing.cost("house-model", None, None) is None
    # A hosted model genai-prices knows: a positive price, not a hand-written table.
    assert Pricing().cost("gpt-4o-mini", 1000, 100, provider="openai") > 0
    # MODEL_PRICES overrides what genai-prices says.
    overridden = Pricing({"gpt-4o-mini": (1.0, 1.0)})
    assert overridden.cost("gpt-4o-mini", 10**6, 0, provider="openai") == pytest.approx(1.0)


@pytest.mark.parametrize(
    "raw",
    ['["x"]', "not json", '{"m": {"input": 1}}', '{"m": [1, -2]}', '{"m": ["1", 2]}', '{"m": [1, true]}'],
)
def test_bad_model_prices_are_refused_with_a_sentence(make_settings, raw):
    with pytest.raises(SettingsError, match="MODEL_PRICES"):
        make_settings(MODEL_PRICES=raw)


def test_model_prices_accept_pairs_and_objects(make_settings):
    settings = make_settings(MODEL_PRICES='{"a": [0.5, 1.5], "b": {"input": 0, "output": 3}}')
    assert settings.model_prices == (("a", 0.5, 1.5), ("b", 0.0, 3.0))
