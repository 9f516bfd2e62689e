"""What a turn's spans look like when they leave the process: small, complete, deliberate.

Every exporter (the local store and Langfuse) sits behind one span processor that reshapes
each finished span first:

- the agent's run span gets the final answer as its output. When the agent streams,
  OpenInference sets that output to the repr of every step it yielded, each step's model
  input included: tens of KB per turn, growing with the square of the chat's length. The
  turn marks the answer on the span (`app.final_output`) and the shaper puts it in place.
- an LLM call's input becomes the chat it was: OpenInference writes `input.value` as JSON of
  the call's arguments with every smolagents ChatMessage as its Python repr, which Langfuse
  shows as a string, not as messages. The same messages also come flattened
  (`llm.input_messages.N.message.role/content/...`); the shaper rebuilds them into a JSON list
  of {role, content, tool_calls} (what Langfuse's chat view renders) and drops the flattened
  copies, so LLM spans stay far below the attribute limit (raised on purpose anyway).
- token counts stay on LLM spans only. OpenInference also puts the run's totals on the agent
  and step spans, and Langfuse sums usage over every observation of a trace
  (packages/shared/src/server/otel/OtelIngestionProcessor.ts): a turn would count twice or more.
- a span with a parent is never marked a root. Langfuse's SDK marks the first span it exports in
  an agent process (whose parent, the turn's root, lives in the app's process) with
  `langfuse.internal.is_app_root`, and the server takes that as a second root of the trace
  (packages/shared/src/eventsTable.ts).
- each LLM call gets its cost (`langfuse.observation.cost_details`, which Langfuse shows as
  the observation's cost and the store reads back), and the trace's root its total as trace
  metadata (`cost_usd`: dollars, or "unknown" when any call's price is unknown).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SynchronousMultiSpanProcessor

from feedback.costs import Pricing

# Set by the agent (agent.events) on its run span: the final answer, which replaces the
# OpenInference dump of every streamed step as the span's output when the span ends.
FINAL_OUTPUT_ATTRIBUTE = "app.final_output"

SPAN_KIND = "openinference.span.kind"
INPUT_VALUE = "input.value"
INPUT_MIME_TYPE = "input.mime_type"
INPUT_MESSAGES = "llm.input_messages."
USAGE_PREFIXES = ("llm.token_count.", "gen_ai.usage.")
IS_APP_ROOT = "langfuse.internal.is_app_root"
OUTPUT_VALUE = "output.value"
OUTPUT_MIME_TYPE = "output.mime_type"
COST_DETAILS = "langfuse.observation.cost_details"
TRACE_COST = "langfuse.trace.metadata.cost_usd"
UNKNOWN = "unknown"
# OpenTelemetry's default is 128 and drops the oldest attributes silently past it.
# An LLM call's flattened messages grow with the chat (about three attributes per message, the
# agent keeps the session's memory): the SDK would drop the oldest ones (the system prompt first)
# before the shaper sees them, so the limit is far above any chat; the shaper then folds them.
SPAN_LIMITS = SpanLimits(max_span_attributes=100_000, max_event_attributes=256, max_link_attributes=128)
# Traces whose root has not ended yet, with their running cost (bounded: a root always ends,
# but a leak must not grow without limit).
_OPEN_TRACES = 10_000


def span_cost(attributes: dict[str, object]) -> float | None:
    """The cost the shaper put on an LLM span, or None (unknown, or not an LLM span)."""
    raw = attributes.get(COST_DETAILS)
    if not isinstance(raw, str):
        return None
    try:
        total = json.loads(raw).get("total")
    except (ValueError, AttributeError):
        return None
    return float(total) if isinstance(total, (int, float)) else None


def int_or_none(value: object) -> int | None:
    """A token count from span attributes: a number, or None for anything else."""
    return int(value) if isinstance(value, (int, float)) else None


def _needs_shaping(span: ReadableSpan, attributes: Mapping[str, Any]) -> bool:
    if FINAL_OUTPUT_ATTRIBUTE in attributes:
        return True
    if span.parent is not None and IS_APP_ROOT in attributes:
        return True
    is_llm = attributes.get(SPAN_KIND) == "LLM"
    return any(
        (is_llm and key.startswith(INPUT_MESSAGES)) or (not is_llm and key.startswith(USAGE_PREFIXES))
        for key in attributes
    )


def chat_messages(attributes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The call's messages, rebuilt from OpenInference's flattened `llm.input_messages.*`.

    Keys look like `llm.input_messages.0.message.role`, `...message.content` (a string) or
    `...message.contents.1.message_content.text` (parts), and
    `...message.tool_calls.0.tool_call.function.name` / `.arguments`.
    """
    messages: dict[int, dict[str, Any]] = {}
    for key, value in attributes.items():
        if not key.startswith(INPUT_MESSAGES):
            continue
        index, _, rest = key[len(INPUT_MESSAGES) :].partition(".")
        if not index.isdigit() or not rest.startswith("message."):
            continue
        message = messages.setdefault(int(index), {"parts": {}, "tool_calls": {}})
        field_path = rest[len("message.") :]
        if field_path in ("role", "content", "name", "tool_call_id"):
            message[field_path] = value
        elif field_path.startswith("contents."):
            part, _, leaf = field_path[len("contents.") :].partition(".")
            if part.isdigit():
                message["parts"].setdefault(int(part), {})[leaf.removeprefix("message_content.")] = value
        elif field_path.startswith("tool_calls."):
            call, _, leaf = field_path[len("tool_calls.") :].partition(".")
            if call.isdigit():
                message["tool_calls"].setdefault(int(call), {})[leaf.removeprefix("tool_call.")] = value
    rebuilt = []
    for _, message in sorted(messages.items()):
        content = message.get("content")
        if content is None and message["parts"]:
            texts = []
            for _, part in sorted(message["parts"].items()):
                if part.get("type", "text") == "text" or "text" in part:
                    texts.append(str(part.get("text", "")))
                else:
                    texts.append(f"[{part.get('type')}]")
            content = "\n".join(texts)
        entry: dict[str, Any] = {"role": message.get("role") or "user", "content": content or ""}
        calls = [
            {
                "id": call.get("id"),
                "type": "function",
                "function": {"name": call.get("function.name"), "arguments": call.get("function.arguments")},
            }
            for _, call in sorted(message["tool_calls"].items())
        ]
        if calls:
            entry["tool_calls"] = calls
        for extra_key in ("name", "tool_call_id"):
            if message.get(extra_key):
                entry[extra_key] = message[extra_key]
        rebuilt.append(entry)
    return rebuilt


def shape(span: ReadableSpan, extra: dict[str, object] | None = None) -> ReadableSpan:
    """The span as it is exported; the same object when nothing needs to change."""
    attributes = span.attributes or {}
    if not extra and not _needs_shaping(span, attributes):
        return span
    is_llm = attributes.get(SPAN_KIND) == "LLM"
    shaped = {
        k: v
        for k, v in attributes.items()
        if k != FINAL_OUTPUT_ATTRIBUTE
        and not (is_llm and k.startswith(INPUT_MESSAGES))
        and not (not is_llm and k.startswith(USAGE_PREFIXES))
        and not (span.parent is not None and k == IS_APP_ROOT)
    }
    if FINAL_OUTPUT_ATTRIBUTE in attributes:
        shaped[OUTPUT_VALUE] = attributes[FINAL_OUTPUT_ATTRIBUTE]
        shaped[OUTPUT_MIME_TYPE] = "text/plain"
    if is_llm:
        messages = chat_messages(attributes)
        # Only a complete chat replaces OpenInference's input (message 0 is the system prompt).
        if messages and f"{INPUT_MESSAGES}0.message.role" in attributes:
            shaped[INPUT_VALUE] = json.dumps(messages, ensure_ascii=False, default=str)
            shaped[INPUT_MIME_TYPE] = "application/json"
    shaped.update(extra or {})
    return with_attributes(span, shaped)


def with_attributes(span: ReadableSpan, attributes: dict[str, Any]) -> ReadableSpan:
    """The same span with these attributes instead (a finished span's own cannot change)."""
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
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

    def __init__(self, pricing: Pricing | None = None) -> None:
        super().__init__()
        self.pricing = pricing or Pricing()
        self._costs: OrderedDict[int, list[float | bool]] = OrderedDict()
        self._lock = threading.Lock()

    def add_cost(self, trace_id: int, cost: dict[str, object]) -> None:
        """Count calls priced elsewhere (an agent process) in this trace's total."""
        total = cost.get("total")
        with self._lock:
            running = self._costs.setdefault(trace_id, [0.0, False])
            if cost.get("unknown") or not isinstance(total, (int, float)):
                running[1] = True
            if isinstance(total, (int, float)):
                running[0] = float(running[0]) + float(total)

    def pop_cost(self, trace_id: int) -> dict[str, object]:
        """The running cost of a trace whose root lives in another process, and forget it."""
        with self._lock:
            cost_sum, unknown = self._costs.pop(trace_id, (0.0, False))
        return {"total": round(float(cost_sum), 10), "unknown": bool(unknown)}

    def on_end(self, span: ReadableSpan) -> None:
        super().on_end(shape(span, self._cost_attributes(span)))

    def _cost_attributes(self, span: ReadableSpan) -> dict[str, object]:
        attributes = span.attributes or {}
        trace_id = span.context.trace_id if span.context is not None else 0
        extra: dict[str, object] = {}
        if attributes.get("openinference.span.kind") == "LLM":
            cost = self.pricing.cost(
                str(attributes.get("llm.model_name") or ""),
                int_or_none(attributes.get("llm.token_count.prompt")),
                int_or_none(attributes.get("llm.token_count.completion")),
            )
            if cost is not None:
                extra[COST_DETAILS] = json.dumps({"total": cost})
            with self._lock:
                total = self._costs.setdefault(trace_id, [0.0, False])
                self._costs.move_to_end(trace_id)
                if cost is None:
                    total[1] = True
                else:
                    total[0] = float(total[0]) + cost
                while len(self._costs) > _OPEN_TRACES:
                    self._costs.popitem(last=False)
        if span.parent is None:
            with self._lock:
                cost_sum, unknown = self._costs.pop(trace_id, (0.0, False))
            extra[TRACE_COST] = UNKNOWN if unknown else json.dumps(round(float(cost_sum), 10))
        return extra
