"""Any OpenTelemetry backend (issue 24, item 1): the OTEL_* settings, and spans through the real app
to a plain OTLP collector stand-in (tests/otlp_collector.py) over HTTP and gRPC.

What a backend gets is what Langfuse gets (the same spans, attributes and parent links, from the
app and from an agent process, judges' traces too); headers and resource attributes arrive as the
spec means them; a backend that is dead or slow never slows a turn or a vote, and the app still
closes promptly; what is lost on the way is counted and logged at most once a minute.
"""

from __future__ import annotations

import logging
import os
import statistics
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from app import ChatHandlers
from config import settings as settings_module
from config.settings import SettingsError, load_settings, settings_from_env
from evals.judge import Judge
from feedback.otlp import OtlpSpanProcessor, describe
from feedback.store import Store
from feedback.tracing import Telemetry
from tests.fakes import FakeOpenAI, JudgeModel, ScriptedModel
from tests.helpers import answer_index, free_port, like, turn, wait_for
from tests.otlp_collector import CollectedSpan, OtlpCollector

PROTOCOL = {"http": "http/protobuf", "grpc": "grpc"}
SECRET = "hc-TOPSECRET value"


# --- settings ---------------------------------------------------------------------------------------


def test_no_endpoint_no_exporter_and_no_otlp_setting_is_read(tmp_path):
    s = settings_from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift", "OTEL_EXPORTER_OTLP_HEADERS": "oops"})
    assert not s.otlp_enabled and s.otlp_headers == ()
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    telemetry = Telemetry.from_settings(s, store)
    assert telemetry.otlp is None
    assert describe(s).startswith("OpenTelemetry (OTLP): off")
    telemetry.shutdown()
    store.close()


@pytest.mark.parametrize(
    "env, endpoint, insecure",
    [
        # http/protobuf (the default): the base URL gets v1/traces, the traces URL is used as it is.
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "http://c:4318/v1/traces", False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, "http://c:4318/v1/traces", False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c/mycollector"}, "https://c/mycollector/v1/traces", False),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/x/spans"}, "http://c:4318/x/spans", False),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318"}, "http://c:4318/", False),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:1",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:2/t",
            },
            "http://b:2/t",
            False,
        ),
        # grpc: as it is; http:// is plain text, https:// TLS, host:port TLS unless INSECURE.
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"},
            "http://c:4317",
            True,
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "https://c:4317"},
            "https://c:4317",
            False,
        ),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "c:4317"}, "c:4317", False),
        (
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "c:4317",
                "OTEL_EXPORTER_OTLP_INSECURE": "true",
            },
            "c:4317",
            True,
        ),
    ],
)
def test_endpoints_mean_what_the_spec_says(env, endpoint, insecure):
    s = settings_from_env(env)
    assert (s.otlp_endpoint, s.otlp_insecure) == (endpoint, insecure)
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    assert s.otlp_protocol == (protocol or "http/protobuf")


def test_headers_and_resource_attributes_are_percent_decoded():
    s = settings_from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
            "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20abc%3D%3D , X-Team = a%2Cb,x-plain=Basic abc==",
            "OTEL_RESOURCE_ATTRIBUTES": "team=chat%2Cbots, a%3Db = c%3Dd ,service.name=from-attributes",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "GZIP",
        }
    )
    assert dict(s.otlp_headers) == {
        "authorization": "Bearer abc==",
        "x-team": "a,b",
        "x-plain": "Basic abc==",
    }
    assert dict(s.resource_attributes) == {
        "team": "chat,bots",
        "a=b": "c=d",
        "service.name": "from-attributes",
    }
    # service.name from OTEL_RESOURCE_ATTRIBUTES when OTEL_SERVICE_NAME is not set; it wins when set.
    assert s.service_name == "from-attributes"
    assert (s.otlp_timeout_s, s.otlp_compression) == (2.5, "gzip")
    both = settings_from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
            "OTEL_SERVICE_NAME": "svc",
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=other",
            # The traces-specific headers replace the generic ones (as the Python SDK does).
            "OTEL_EXPORTER_OTLP_HEADERS": "a=1,b=2",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "c=3",
        }
    )
    assert both.service_name == "svc" and dict(both.otlp_headers) == {"c": "3"}


@pytest.mark.parametrize(
    "env, message",
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "http/json is not supported"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}, "must be http/protobuf .* or grpc, got 'thrift'"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318"}, "must be an http:// or https:// URL"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://:4318"}, "must be an http:// or https:// URL"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:port"}, "must be an http:// or https:// URL"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "c"}, "or host:port"),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "5s"}, "whole number of milliseconds"),
        ({"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "0"}, "TRACES_TIMEOUT must be at least 1 millisecond"),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "brotli"}, "must be gzip or none"),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "api-key"}, "entry 1 is not key=value"),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "a=1,bad key=2"}, "'bad key', which is not a header name"),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "api-key=hc-TOPSECRET%zz"}, "value of 'api-key' has a '%'"),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "api-key=hc-TOPSECRET%0Aevil"}, "printable ASCII"),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "api-key=hc-TOPSECRET%FF"}, "not UTF-8"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "team"}, "OTEL_RESOURCE_ATTRIBUTES must be comma-separated"),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_HEADERS": "key-bin=x"},
            "cannot be gRPC metadata",
        ),
    ],
)
def test_bad_values_are_refused_with_a_sentence_that_never_shows_a_header_value(env, message):
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", **env}
    with pytest.raises(SettingsError, match=message) as caught:
        settings_from_env(env)
    assert "TOPSECRET" not in str(caught.value)


def test_header_values_and_an_endpoint_password_are_secrets():
    s = settings_from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:pw-TOPSECRET@c:4318",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-honeycomb-team=hc-TOPSECRET%20value",
        }
    )
    assert dict(s.otlp_headers) == {"x-honeycomb-team": SECRET}
    for text in (repr(s), str(s.describe()), describe(s)):
        assert "TOPSECRET" not in text
    assert s.describe()["otlp_headers"] == ("x-honeycomb-team=***",)
    assert describe(s).startswith(
        "OpenTelemetry (OTLP): traces also go to https://user:***@c:4318/v1/traces (http/protobuf) with "
        "headers x-honeycomb-team;"
    )
    assert {SECRET, "pw-TOPSECRET"} <= set(s.secrets())


def test_load_settings_keeps_the_headers_from_langfuse(tmp_path, monkeypatch):
    """The SDK's HTTP exporter adds OTEL_EXPORTER_OTLP_HEADERS from the environment to every
    exporter's requests, Langfuse's own included: load_settings takes them out of the environment."""
    monkeypatch.setattr(settings_module, "_otlp_header_variables", {})
    with (
        OtlpCollector() as backend,
        OtlpCollector(paths=("/api/public/otel/v1/traces",)) as langfuse,
    ):
        for name, value in {
            "OTEL_EXPORTER_OTLP_ENDPOINT": backend.url,
            "OTEL_EXPORTER_OTLP_HEADERS": "x-honeycomb-team=hc-TOPSECRET%20value",
            "LANGFUSE_PUBLIC_KEY": f"pk-lf-otlp-{uuid.uuid4().hex[:8]}",  # one SDK client per key
            "LANGFUSE_SECRET_KEY": "sk-lf-test",
            "LANGFUSE_BASE_URL": langfuse.url,
            "DATA_DIR": str(tmp_path / "data"),
        }.items():
            monkeypatch.setenv(name, value)
        settings = load_settings(tmp_path / "no.env")

        assert "OTEL_EXPORTER_OTLP_HEADERS" not in os.environ
        # A second read still has them (the app and the CLIs may read settings more than once).
        assert load_settings(tmp_path / "no.env").otlp_headers == settings.otlp_headers
        store = Store(settings.store_url)
        telemetry = Telemetry.from_settings(settings, store)
        with telemetry.turn(message="hi", user_id="u", session_id="s", metadata={}):
            pass
        telemetry.flush()
        wait_for(lambda: backend.requests and langfuse.requests)
        assert backend.requests[0].headers["x-honeycomb-team"] == SECRET
        assert all("x-honeycomb-team" not in r.headers for r in langfuse.requests)
        telemetry.shutdown()
        store.close()


# --- the processor: bounded, never blocking, losses counted and logged ---------------------------------


class GatedExporter(SpanExporter):
    """An exporter whose exports wait until `gate` opens (or it is shut down), then answer `result`."""

    def __init__(self, result: SpanExportResult = SpanExportResult.SUCCESS, *, wait_s: float = 60) -> None:
        self.gate = threading.Event()
        self.result = result
        self.wait_s = wait_s
        self.exported = 0
        self.was_shut_down = False

    def export(self, spans: Any) -> SpanExportResult:
        self.gate.wait(self.wait_s)
        self.exported += len(spans)
        return self.result

    def shutdown(self) -> None:
        self.was_shut_down = True
        self.gate.set()


def _tracer(processor: OtlpSpanProcessor) -> Any:
    provider = TracerProvider()
    provider.add_span_processor(processor)
    return provider.get_tracer("test")


def _otlp_warnings(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "feedback.otlp" and r.levelno == logging.WARNING
    ]


def test_a_full_queue_drops_never_blocks_and_is_logged_at_most_once_a_minute(caplog):
    caplog.set_level(logging.WARNING, logger="feedback.otlp")
    now = [1000.0]
    exporter = GatedExporter()
    processor = OtlpSpanProcessor(
        exporter,
        destination="the test backend",
        max_queue_size=10,
        max_batch_size=5,
        schedule_delay_s=0.02,
        accept=lambda span: True,
        clock=lambda: now[0],
    )
    tracer = _tracer(processor)
    slowest = 0.0
    for i in range(200):  # the backend holds the first batch: the queue fills, then spans drop
        span = tracer.start_span(f"s{i}")
        started = time.perf_counter()
        span.end()
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 0.05, slowest  # ending a span never waits for the backend
    stats = processor.stats()
    assert stats["queued"] == 10 and stats["dropped"] >= 185, stats
    exporter.gate.set()  # the backend answers again: the thread reports, once
    wait_for(lambda: _otlp_warnings(caplog))
    assert "dropped (queue full)" in _otlp_warnings(caplog)[0]
    assert "the test backend" in _otlp_warnings(caplog)[0]
    for i in range(50):  # more losses within the minute: not logged again...
        tracer.start_span(f"t{i}").end()
    processor.force_flush(2000)
    exporter.gate.clear()
    for i in range(30):
        tracer.start_span(f"u{i}").end()
    time.sleep(0.2)
    assert len(_otlp_warnings(caplog)) == 1
    now[0] += 61  # ...until a minute has passed
    exporter.gate.set()
    wait_for(lambda: len(_otlp_warnings(caplog)) == 2)
    processor.shutdown()
    total = processor.stats()
    assert total["exported"] + total["dropped"] + total["failed"] + total["unsent"] == 280


def test_flush_and_shutdown_never_wait_on_a_stuck_or_failing_backend(caplog):
    caplog.set_level(logging.WARNING, logger="feedback.otlp")
    exporter = GatedExporter()
    processor = OtlpSpanProcessor(exporter, schedule_delay_s=0.02, accept=lambda span: True)
    tracer = _tracer(processor)
    for i in range(20):
        tracer.start_span(f"s{i}").end()
    started = time.perf_counter()
    assert processor.force_flush(30_000) is False  # an export stuck past STALL_S: stop waiting
    flushed_s = time.perf_counter() - started
    for i in range(5):
        tracer.start_span(f"late{i}").end()
    started = time.perf_counter()
    processor.shutdown()
    shutdown_s = time.perf_counter() - started
    assert flushed_s < 1.5 and shutdown_s < 0.5, (flushed_s, shutdown_s)
    assert exporter.was_shut_down  # the SDK exporter stops retrying when told
    assert processor.stats()["unsent"] == 5
    assert any("5 unsent at shutdown" in m for m in _otlp_warnings(caplog))

    failing = GatedExporter(SpanExportResult.FAILURE)
    failing.gate.set()
    processor = OtlpSpanProcessor(failing, schedule_delay_s=0.02, accept=lambda span: True)
    tracer = _tracer(processor)
    tracer.start_span("x").end()
    wait_for(lambda: processor.stats()["failed"] == 1)
    tracer.start_span("y").end()
    started = time.perf_counter()
    assert processor.force_flush(30_000) is False  # the backend is failing: no waiting at all
    assert time.perf_counter() - started < 0.2
    processor.shutdown()


def test_a_batch_a_deduplicating_backend_did_not_take_is_sent_again_then_given_up(caplog):
    """Phoenix's processor (retry_failed_s): a batch refused while the backend is busy is sent again
    after each wait and lands whole; one refused every time is counted lost once the waits are
    used up; others (no retry_failed_s, a backend that may keep duplicates) never re-send."""
    caplog.set_level(logging.WARNING, logger="feedback.otlp")
    exporter = GatedExporter(SpanExportResult.FAILURE)
    exporter.gate.set()
    processor = OtlpSpanProcessor(
        exporter, schedule_delay_s=0.02, accept=lambda span: True, retry_failed_s=(0.1, 0.1, 0.1)
    )
    tracer = _tracer(processor)
    for i in range(4):
        tracer.start_span(f"s{i}").end()
    wait_for(lambda: exporter.exported >= 8)  # the first try and one retry failed
    assert processor.stats()["failed"] == 0 and processor.stats()["retrying"] == 4
    exporter.result = SpanExportResult.SUCCESS  # the backend takes batches again
    wait_for(lambda: processor.stats()["exported"] == 4)
    assert processor.stats()["retrying"] == 0 and processor.stats()["retried"] == 4
    assert not _otlp_warnings(caplog)
    exporter.result = SpanExportResult.FAILURE
    exporter.exported = 0
    tracer.start_span("never").end()
    wait_for(lambda: processor.stats()["failed"] == 1)
    assert exporter.exported == 4  # one try and three retries, then given up
    processor.shutdown()
    assert any("1 in batches the backend did not take" in m for m in _otlp_warnings(caplog))

    plain = GatedExporter(SpanExportResult.FAILURE)
    plain.gate.set()
    processor = OtlpSpanProcessor(plain, schedule_delay_s=0.02, accept=lambda span: True)
    _tracer(processor).start_span("x").end()
    wait_for(lambda: processor.stats()["failed"] == 1)
    time.sleep(0.2)
    assert plain.exported == 1
    processor.shutdown()


def test_phoenix_spans_are_retried_and_other_backends_are_not(make_settings, fake_langfuse):
    from feedback.otlp import PHOENIX_RETRIES_S, phoenix_processor, processor_from_settings

    settings = make_settings(
        fake_langfuse,
        PHOENIX_COLLECTOR_ENDPOINT="http://127.0.0.1:9",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
    )
    phoenix, other = phoenix_processor(settings), processor_from_settings(settings)
    try:
        assert phoenix.retry_failed_s == PHOENIX_RETRIES_S and sum(PHOENIX_RETRIES_S) >= 60
        assert other.retry_failed_s == ()
    finally:
        phoenix.shutdown()
        other.shutdown()


# --- through the real app ---------------------------------------------------------------------------


@pytest.fixture(params=["http", "grpc"])
def collector(request) -> Iterator[OtlpCollector]:
    with OtlpCollector(request.param) as server:
        yield server


def otlp_env(collector: OtlpCollector, **extra: Any) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": PROTOCOL[collector.transport],
        "OTEL_EXPORTER_OTLP_HEADERS": "x-honeycomb-team=hc-TOPSECRET%20value,x-dataset=chat",
        "OTEL_SERVICE_NAME": "chat-under-test",
        "OTEL_RESOURCE_ATTRIBUTES": "team=chat%2Cbots,deployment.environment.name=ignored",
        "APP_ENVIRONMENT": "staging",
        **extra,
    }


def _reaches_root(spans: list[CollectedSpan]) -> bool:
    by_id = {s.span_id: s for s in spans}
    for span in spans:
        seen, current = set(), span
        while current.parent_id is not None:
            if current.parent_id not in by_id or current.span_id in seen:
                return False
            seen.add(current.span_id)
            current = by_id[current.parent_id]
    return True


def _complete(collector: OtlpCollector, trace_id: str, expected: int) -> list[CollectedSpan]:
    return wait_for(lambda: len(s := collector.spans_of(trace_id)) >= expected and s, timeout=20)


def _check_turn_trace(spans: list[CollectedSpan], trace_name: str) -> None:
    """The root turn span, the agent, its step and the LLM call, linked into one tree."""
    kinds = {s.attributes.get("openinference.span.kind") for s in spans}
    assert {"AGENT", "CHAIN", "LLM"} <= kinds, kinds
    (root,) = [s for s in spans if s.parent_id is None]
    assert root.name == trace_name
    assert _reaches_root(spans)
    # The root is the turn, a CHAIN (a judge's trace: EVALUATOR); the agent is the span under it.
    assert root.attributes.get("openinference.span.kind") in {"CHAIN", "EVALUATOR"}
    agent = next(s for s in spans if s.attributes.get("openinference.span.kind") == "AGENT" and s is not root)
    assert agent.parent_id == root.span_id
    step = next(s for s in spans if s.attributes.get("openinference.span.kind") == "CHAIN" and s is not root)
    llm = next(s for s in spans if s.attributes.get("openinference.span.kind") == "LLM")
    assert step.parent_id == agent.span_id and llm.parent_id in {step.span_id, agent.span_id}
    for key in ("llm.token_count.prompt", "llm.token_count.completion", "llm.token_count.total"):
        assert isinstance(llm.attributes[key], int) and llm.attributes[key] > 0, key
    assert '"role": "user"' in llm.attributes["input.value"]  # the chat, as Langfuse shows it


def test_one_turn_reaches_the_backend_as_it_reaches_langfuse(
    collector, make_settings, make_runtime, fake_langfuse
):
    runtime = make_runtime(make_settings(fake_langfuse, **otlp_env(collector)))
    handlers = ChatHandlers(runtime)
    history, session, _ = turn(handlers, None, [], "What is 2+2?")
    trace_id = session.trace_for(answer_index(history, 0))
    runtime.feedback.telemetry.flush()
    stored = runtime.feedback.store.rows("SELECT span_id FROM spans WHERE trace_id = :t", {"t": trace_id})
    spans = _complete(collector, trace_id, len(stored))
    _check_turn_trace(spans, runtime.settings.trace_name)

    # Langfuse got the very same spans: same ids, parents, names and attributes; the root, as
    # OpenInference backends read it, has in addition its kind, input, output and the trace's
    # metadata and tags under OpenInference's names (feedback.otlp.openinference_root).
    langfuse = wait_for(lambda: len(s := fake_langfuse.spans_of(trace_id)) >= len(spans) and s, timeout=20)
    ours = {s.span_id: (s.parent_id, s.name, dict(s.attributes)) for s in spans}
    theirs = {s.span_id: (s.parent_id, s.name, dict(s.attributes)) for s in langfuse}
    (root_id,) = [i for i, (parent, _, _) in ours.items() if parent is None]
    root, langfuse_root = ours[root_id][2], theirs[root_id][2]
    added = {"openinference.span.kind", "input.value", "output.value", "metadata", "tag.tags"}
    assert root["openinference.span.kind"] == "CHAIN" and "openinference.span.kind" not in langfuse_root
    assert root["input.value"] == "What is 2+2?" == langfuse_root["langfuse.observation.input"]
    assert root["output.value"] == langfuse_root["langfuse.observation.output"]
    assert set(root) - set(langfuse_root) <= added
    for key in set(root) - added:
        assert root[key] == langfuse_root[key], key
    ours[root_id] = (None, ours[root_id][1], {k: v for k, v in root.items() if k in langfuse_root})
    assert ours == theirs
    assert {s["span_id"] for s in stored} == set(ours)

    # Who sent them: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (the app's own keys win).
    resource = spans[0].resource
    assert resource["service.name"] == "chat-under-test" and resource["team"] == "chat,bots"
    assert resource["deployment.environment.name"] == "staging"
    assert all(s.resource == resource for s in spans)
    assert fake_langfuse.spans_of(trace_id)[0].resource["team"] == "chat,bots"

    # The headers arrived, percent-decoded (HTTP headers or gRPC metadata), on every request.
    for request in collector.requests:
        assert request.headers["x-honeycomb-team"] == SECRET and request.headers["x-dataset"] == "chat"
    if collector.transport == "http":
        assert {r.path for r in collector.requests} == {"/v1/traces"}  # appended to the base URL
        assert {r.headers["content-type"] for r in collector.requests} == {"application/x-protobuf"}

    # A vote never touches the backend (it files a score on the trace: the store, then Langfuse).
    before = len(collector.requests)
    like(handlers, session, answer_index(history, 0), True)
    runtime.feedback.telemetry.flush()
    assert sum(len(r.spans) for r in collector.requests[before:]) == 0


def test_the_traces_url_is_used_as_it_is_and_gzip_is_sent(make_settings, tmp_path):
    with OtlpCollector(paths=("/custom/traces",)) as collector:
        settings = make_settings(
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{collector.url}/custom/traces",
            OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9/ignored",
            OTEL_EXPORTER_OTLP_COMPRESSION="gzip",
        )
        store = Store(settings.store_url)
        telemetry = Telemetry.from_settings(settings, store)
        with telemetry.turn(message="hi", user_id="u", session_id="s", metadata={}) as root:
            pass
        telemetry.flush()
        (request,) = wait_for(lambda: collector.requests)
        assert request.path == "/custom/traces" and request.headers["content-encoding"] == "gzip"
        assert [s.trace_id for s in request.spans] == [root.trace_id]
        telemetry.shutdown()
        store.close()


@pytest.fixture
def llm() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def test_an_agent_process_exports_its_spans_too(collector, make_settings, make_runtime, fake_langfuse, llm):
    settings = make_settings(
        fake_langfuse,
        MODEL_PROVIDER="openai",
        OPENAI_BASE_URL=llm.url,
        MODEL_ID="gpt-4o-mini",
        AGENT_PROCESSES="1",
        **otlp_env(collector),
    )
    from runtime.runtime import create_runtime

    runtime = create_runtime(settings)
    try:
        handlers = ChatHandlers(runtime)
        history, session, _ = turn(handlers, None, [], "What is 2+2?")
        trace_id = session.trace_for(answer_index(history, 0))
        runtime.feedback.telemetry.flush()
        stored = wait_for(
            lambda: (
                (
                    rows := runtime.feedback.store.rows(
                        "SELECT kind FROM spans WHERE trace_id = :t", {"t": trace_id}
                    )
                )
                and any(r["kind"] == "LLM" for r in rows)
                and rows
            ),
            timeout=20,
        )
        spans = _complete(collector, trace_id, len(stored))
        _check_turn_trace(spans, settings.trace_name)
        # The root came from the app, the agent's spans from the agent process: two senders.
        (root,) = [s for s in spans if s.parent_id is None]
        agent_side = [s for s in spans if s.parent_id is not None]
        assert {s.resource["service.instance.id"] for s in agent_side} != {
            root.resource["service.instance.id"]
        }
        assert all(s.resource["service.name"] == "chat-under-test" for s in spans)
        assert all(r.headers["x-honeycomb-team"] == SECRET for r in collector.requests)
    finally:
        runtime.close()


JUDGE_FILE = """
[[evaluator]]
name = "quality"
kind = "llm"
target = "turn"
data_type = "NUMERIC"
prompt = "QUALITY question: {input} answer: {output}"
"""


def test_judge_traces_reach_the_backend(make_settings, make_runtime, fake_langfuse, tmp_path):
    (tmp_path / "evaluators.toml").write_text(textwrap.dedent(JUDGE_FILE))
    judge = JudgeModel(lambda prompt: {"reasoning": "Fine.", "score": 0.5})
    with OtlpCollector() as collector:
        settings = make_settings(
            fake_langfuse, EVALUATORS_FILE=str(tmp_path / "evaluators.toml"), **otlp_env(collector)
        )
        runtime = make_runtime(settings, judge=Judge(judge, structured=False))
        runtime.feedback.evaluation.poll_s = 0.1
        turn(ChatHandlers(runtime), None, [], "What is 2+2?")
        store = runtime.feedback.store
        wait_for(lambda: any(s.name == "quality" for s in store.scores()), 20)
        runtime.feedback.telemetry.flush()
        roots = wait_for(
            lambda: [s for s in collector.spans if s.name == "quality" and s.parent_id is None], 20
        )
        judged = roots[0].trace_id
        stored = {
            r["span_id"] for r in store.rows("SELECT span_id FROM spans WHERE trace_id = :t", {"t": judged})
        }
        wait_for(lambda: {s.span_id for s in collector.spans_of(judged)} == stored, 20)
        assert "evaluation" in roots[0].attributes["langfuse.trace.tags"]


# --- a dead or slow backend ---------------------------------------------------------------------------


def _timed(handlers: ChatHandlers) -> tuple[float, float]:
    """One turn and one like through the real handlers: their seconds."""
    started = time.perf_counter()
    history, session, _ = turn(handlers, None, [], "What is 2+2?")
    turn_s = time.perf_counter() - started
    started = time.perf_counter()
    like(handlers, session, answer_index(history, 0), True)
    return turn_s, time.perf_counter() - started


@pytest.mark.parametrize("backend", ["dead-http", "dead-grpc", "slow-http", "slow-grpc"])
def test_a_dead_or_slow_backend_never_slows_a_turn_or_a_vote(
    backend, make_settings, fake_langfuse, tmp_path, capsys
):
    """Turns and votes timed against the same app without OTLP, interleaved in one run; then the
    app with the bad backend closes about as fast as the one without."""
    state, transport = backend.split("-")
    from runtime.runtime import create_runtime

    with OtlpCollector(transport) as collector:
        if state == "dead":
            collector.stop()  # connections refused
        else:
            collector.delay_s = 30.0  # answers long after the exporter's timeout
        endpoint = collector.url if state == "slow" else f"http://127.0.0.1:{free_port()}"
        apps: dict[str, ChatHandlers] = {}
        for name, env in (
            ("without", {}),
            (
                "with",
                {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": PROTOCOL[transport]},
            ),
        ):
            settings = make_settings(fake_langfuse, DATA_DIR=tmp_path / name, **env)
            apps[name] = ChatHandlers(create_runtime(settings, model=ScriptedModel()))
        closing: dict[str, float] = {}
        try:
            times: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
            for name in ("without", "with"):  # warm both up
                _timed(apps[name])
            # Time them while the exporter is busy with that backend (retrying, or waiting for an
            # answer), with a queue so small that spans are dropped on the way: the worst case.
            otlp = apps["with"].rt.feedback.telemetry.otlp
            otlp.max_queue_size = 5
            wait_for(lambda: otlp.stats()["sending"])
            for round_ in range(20):  # each goes first every other round
                for name in ("without", "with") if round_ % 2 else ("with", "without"):
                    times[name].append(_timed(apps[name]))
            assert otlp.stats()["dropped"], otlp.stats()
        finally:
            for name in ("without", "with"):
                started = time.perf_counter()
                apps[name].rt.close()
                closing[name] = time.perf_counter() - started

    def p50(which: int, name: str) -> float:
        return statistics.median(sample[which] for sample in times[name])

    turn_ratio, vote_ratio = (p50(i, "with") / p50(i, "without") for i in (0, 1))
    stats = apps["with"].rt.feedback.telemetry.otlp.stats()
    with capsys.disabled():
        print(
            f"\n{backend}: turn p50 {p50(0, 'with') * 1000:.0f} ms vs {p50(0, 'without') * 1000:.0f} ms "
            f"({turn_ratio:.2f}x), vote p50 {p50(1, 'with') * 1000:.1f} ms vs {p50(1, 'without') * 1000:.1f} ms "
            f"({vote_ratio:.2f}x), close {closing['with']:.2f} s vs {closing['without']:.2f} s, spans {stats}"
        )
    # Loose: 1.5x, plus a millisecond or two of scheduling noise on steps this short.
    assert p50(0, "with") <= 1.5 * p50(0, "without") + 0.003, (turn_ratio, vote_ratio)
    assert p50(1, "with") <= 1.5 * p50(1, "without") + 0.002, (turn_ratio, vote_ratio)
    assert closing["with"] <= closing["without"] + 2.5, closing
    assert stats["exported"] == 0
