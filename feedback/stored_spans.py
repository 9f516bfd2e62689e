"""A stored span back as an OpenTelemetry span, to be exported again to a backend that missed it.

Same trace and span ids, parent, times (the exact start in ns where the store kept it: backends
key a span on its start) and attributes as first exported. Used to re-send a run's spans to
Langfuse with dataset attributes (evals/langfuse_datasets.py) and a trace Phoenix never got
(feedback/phoenix_annotations.py); both backends keep one row per span id.
"""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from feedback.exporter import START_NS_ATTRIBUTE


def stored_ns(epoch_s: float) -> int:
    """A stored span's time back in nanoseconds, as near its first export as the store's float
    keeps it (a few hundred ns): the server keys a span on its start to the millisecond."""
    return round(Fraction(epoch_s) * 1_000_000_000)


def is_attribute(value: Any) -> bool:
    """Whether a stored value can be a span attribute again (a primitive, or a list of one kind)."""
    if isinstance(value, (str, bool, int, float)):
        return True
    return (
        isinstance(value, list)
        and all(isinstance(v, (str, bool, int, float)) for v in value)
        and len({type(v) for v in value}) <= 1
    )


def span_context(trace_id: str, span_id: str) -> SpanContext:
    return SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=False, trace_flags=TraceFlags(1))


def readable_span(
    row: dict[str, Any],
    resource: Resource,
    scope: InstrumentationScope | None = None,
    extra: dict[str, Any] | None = None,
) -> ReadableSpan:
    """One stored span (a row of Store.spans_of) as it was exported, plus `extra` attributes."""
    attributes = {k: v for k, v in json.loads(row["attributes"] or "{}").items() if is_attribute(v)}
    exact_start = attributes.pop(START_NS_ATTRIBUTE, None)
    attributes.update(extra or {})
    error = row["status"] == "ERROR"
    return ReadableSpan(
        name=row["name"],
        context=span_context(row["trace_id"], row["span_id"]),
        parent=span_context(row["trace_id"], row["parent_id"]) if row["parent_id"] else None,
        resource=resource,
        attributes=attributes,
        kind=SpanKind.INTERNAL,
        status=Status(StatusCode.ERROR, row["status_message"]) if error else Status(StatusCode.UNSET),
        start_time=exact_start if isinstance(exact_start, int) else stored_ns(row["start_time"]),
        end_time=stored_ns(row["end_time"]),
        instrumentation_scope=scope,
    )
