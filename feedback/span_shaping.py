"""What a turn's spans look like when they leave the process: small, complete, deliberate.

Every exporter (the local store and Langfuse) sits behind one span processor that reshapes
each finished span first:

- the agent's run span gets the final answer as its output. When the agent streams,
  OpenInference sets that output to the repr of every step it yielded, each step's model
  input included: tens of KB per turn, growing with the square of the chat's length. The
  turn marks the answer on the span (`app.final_output`) and the shaper puts it in place.
- OpenInference's flattened copies of the input messages (`llm.input_messages.*`) are not
  recorded at all (`TraceConfig(hide_input_messages=True)`): the same messages are in
  `input.value`. That keeps LLM spans far below the attribute limit, which is raised on
  purpose anyway, so no attribute is ever dropped by chance.
"""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SynchronousMultiSpanProcessor

from agent.turn import FINAL_OUTPUT_ATTRIBUTE

OUTPUT_VALUE = "output.value"
OUTPUT_MIME_TYPE = "output.mime_type"
# OpenTelemetry's default is 128 and drops the oldest attributes silently past it.
SPAN_LIMITS = SpanLimits(max_span_attributes=1024, max_event_attributes=256, max_link_attributes=128)


def shape(span: ReadableSpan) -> ReadableSpan:
    """The span as it is exported; the same object when nothing needs to change."""
    attributes = span.attributes or {}
    if FINAL_OUTPUT_ATTRIBUTE not in attributes:
        return span
    shaped = {k: v for k, v in attributes.items() if k != FINAL_OUTPUT_ATTRIBUTE}
    shaped[OUTPUT_VALUE] = attributes[FINAL_OUTPUT_ATTRIBUTE]
    shaped[OUTPUT_MIME_TYPE] = "text/plain"
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=shaped,
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class ShapingSpanProcessor(SynchronousMultiSpanProcessor):
    """The provider's processor list; every processor added to it sees shaped spans only."""

    def on_end(self, span: ReadableSpan) -> None:
        super().on_end(shape(span))
