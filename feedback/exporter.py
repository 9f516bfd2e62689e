"""An OpenTelemetry span exporter that writes finished spans into the local store.

It runs behind a BatchSpanProcessor, so a chat turn never waits for SQLite.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from langfuse.span_filter import is_default_export_span
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from feedback.span_shaping import int_or_none, span_cost
from feedback.store import SpanRecord, Store, TraceRecord

log = logging.getLogger(__name__)

TRACE_NAME = "langfuse.trace.name"
TRACE_TAGS = "langfuse.trace.tags"
TRACE_METADATA_PREFIX = "langfuse.trace.metadata."
OBS_INPUT = "langfuse.observation.input"
OBS_OUTPUT = "langfuse.observation.output"
OBS_LEVEL = "langfuse.observation.level"
OBS_STATUS_MESSAGE = "langfuse.observation.status_message"
APP_TRACER_NAME = "smolagents-chat"
# Kept with each stored span: its start in nanoseconds, exactly as exported (the float
# start_time column cannot hold it), so a span sent again (a dataset run's publish) lands on the
# same row of Langfuse, whose key holds the start.
START_NS_ATTRIBUTE = "app.start_time_unix_nano"


_TURN_SCOPES = (APP_TRACER_NAME, "langfuse-sdk", "openinference.instrumentation.smolagents")


def is_turn_span(span: ReadableSpan) -> bool:
    """Spans of chat turns: ours, Langfuse's and LLM instrumentors' (never web-server spans)."""
    scope = span.instrumentation_scope
    return (scope is not None and scope.name in _TURN_SCOPES) or is_default_export_span(span)


def _stored_attributes(attrs: dict[str, Any]) -> dict[str, Any]:
    """The span's attributes as stored: OpenInference repeats every input message, flattened,
    next to the same messages as JSON in `input.value`; the store keeps the JSON only."""
    duplicate = "input.value" in attrs
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in attrs.items()
        if not (duplicate and k.startswith("llm.input_messages."))
    }


def _hex_trace(trace_id: int) -> str:
    return format(trace_id, "032x")


def _hex_span(span_id: int) -> str:
    return format(span_id, "016x")


def _text(value: Any) -> str | None:
    """Langfuse stores input/output JSON-encoded; show plain strings as plain text."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, str) else value
    return str(value)


def _metadata_value(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# The root span's metadata keys that name a turn's A/B variant and its experiment (the
# `variant:<name>` tag goes with them); the store keeps them in columns of their own.
VARIANT_KEY = "variant"
EXPERIMENT_KEY = "experiment"
# A paused variant's users are served the control: `assigned` names the variant they belong to.
ASSIGNED_KEY = "assigned"


def _metadata_text(attrs: dict[str, Any], key: str) -> str | None:
    """A metadata value that must stay text, as written: without Langfuse the app JSON-encodes
    it ('"b"'), Langfuse's propagation keeps it raw ('b', or '123', which JSON would make a number)."""
    raw = attrs.get(TRACE_METADATA_PREFIX + key)
    if raw is None:
        return None
    raw = str(raw)
    try:
        decoded = json.loads(raw)
    except ValueError:
        return raw
    return decoded if isinstance(decoded, str) else raw


def span_record(span: ReadableSpan) -> SpanRecord:
    attrs = dict(span.attributes or {})
    status = span.status.status_code
    level = attrs.get(OBS_LEVEL)
    # WARNING: the turn ended without a usable answer (a give-up): not an error, not a success.
    status_name = (
        "ERROR"
        if status == StatusCode.ERROR or level == "ERROR"
        else "WARNING"
        if level == "WARNING"
        else "OK"
    )
    return SpanRecord(
        trace_id=_hex_trace(span.context.trace_id),
        span_id=_hex_span(span.context.span_id),
        parent_id=_hex_span(span.parent.span_id) if span.parent else None,
        name=span.name,
        kind=attrs.get("openinference.span.kind"),
        start_time=(span.start_time or 0) / 1e9,
        end_time=(span.end_time or 0) / 1e9,
        status=status_name,
        status_message=span.status.description or attrs.get(OBS_STATUS_MESSAGE),
        attributes={**_stored_attributes(attrs), START_NS_ATTRIBUTE: span.start_time or 0},
        prompt_tokens=int_or_none(attrs.get("llm.token_count.prompt")),
        completion_tokens=int_or_none(attrs.get("llm.token_count.completion")),
        total_tokens=int_or_none(attrs.get("llm.token_count.total")),
        cost=span_cost(attrs),
    )


def trace_record(span: ReadableSpan, record: SpanRecord) -> TraceRecord:
    """The trace summary of a root span (one with no parent)."""
    attrs = record.attributes
    metadata = {
        key[len(TRACE_METADATA_PREFIX) :]: _metadata_value(value)
        for key, value in attrs.items()
        if key.startswith(TRACE_METADATA_PREFIX)
    }
    variant, experiment = _metadata_text(attrs, VARIANT_KEY), _metadata_text(attrs, EXPERIMENT_KEY)
    for key in (VARIANT_KEY, EXPERIMENT_KEY, ASSIGNED_KEY):
        if (value := _metadata_text(attrs, key)) is not None:
            metadata[key] = value  # a name, never a number ("123") or a boolean ("true")
    return TraceRecord(
        id=record.trace_id,
        name=str(attrs.get(TRACE_NAME) or span.name),
        input=_text(attrs.get(OBS_INPUT, attrs.get("input.value"))),
        output=_text(attrs.get(OBS_OUTPUT, attrs.get("output.value"))),
        user_id=attrs.get("user.id"),
        session_id=attrs.get("session.id"),
        status=record.status,
        status_message=record.status_message,
        start_time=record.start_time,
        end_time=record.end_time,
        model=metadata.get("model_id"),
        tags=list(attrs.get(TRACE_TAGS) or []),
        metadata=metadata,
        variant=variant,
        experiment=experiment,
    )


class StoreSpanExporter(SpanExporter):
    """Writes each exported batch to the store; a failure is logged, never raised into the app."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        spans = [s for s in spans if is_turn_span(s)]
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            records = [span_record(s) for s in spans]
            roots = [trace_record(s, r) for s, r in zip(spans, records, strict=True) if s.parent is None]
            self._store.write_spans(records, roots)
        except Exception:  # noqa: BLE001 - telemetry must never break the app
            log.exception("Could not write %d spans to the local store", len(spans))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
