"""Tracing: one tracer provider per app, OpenInference spans for the agent, one trace per turn.

Every span goes to the local store (always), to Langfuse (when keys are set) and to any
OpenTelemetry backend (when OTEL_EXPORTER_OTLP_ENDPOINT is set, feedback/otlp.py). Each turn
starts from an empty OpenTelemetry context, so its root never becomes the child of a Gradio
or FastAPI request span: that is how every vote finds its own trace.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import smolagents
from langfuse import Langfuse, propagate_attributes
from openinference.instrumentation import TraceConfig
from openinference.instrumentation.smolagents import SmolagentsInstrumentor
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from config import __version__
from config.settings import Settings
from feedback.costs import Pricing
from feedback.exporter import APP_TRACER_NAME, StoreSpanExporter
from feedback.otlp import OtlpSpanProcessor, phoenix_processor, processor_from_settings
from feedback.span_shaping import SPAN_LIMITS, ShapingSpanProcessor
from feedback.store import Store

log = logging.getLogger(__name__)

# The tag of every evaluation job's trace (evaluators never select such a trace).
EVALUATION_TAG = "evaluation"

_instrument_lock = threading.Lock()


def service_resource(settings: Settings | None = None) -> Resource:
    """Who sends these spans: the service, its version, environment and release.

    OpenTelemetry backends read `service.*` and `deployment.environment.name`; Langfuse reads its
    environment from `langfuse.environment` (then the deployment keys) and its release from
    `langfuse.release`, on the span or the resource (OtelIngestionProcessor.ts extractEnvironment).
    OTEL_RESOURCE_ATTRIBUTES adds its own; where they name one of these keys, the app's value wins
    (the spec merges them as the secondary resource), so every backend sees one environment.
    """
    settings = settings or Settings()
    release = settings.release or __version__
    return Resource.create(
        {
            **dict(settings.resource_attributes),
            "service.name": settings.service_name,
            "service.version": __version__,
            "deployment.environment.name": settings.environment,
            "langfuse.environment": settings.environment,
            "langfuse.release": release,
        }
    )


def register_model_class(cls: type) -> None:
    """Make OpenInference wrap `generate` of a Model class smolagents does not export.

    The instrumentor only wraps the Model classes found in the `smolagents` namespace when
    `instrument()` runs; our own classes (the local GGUF model) are added there first, so
    they get LLM spans with token counts like every built-in model.
    """
    if getattr(smolagents, cls.__name__, None) is not cls:
        setattr(smolagents, cls.__name__, cls)


def instrument(provider: TracerProvider) -> None:
    """Point the process-wide smolagents instrumentation at this provider.

    Each LLM call's input messages are recorded flattened (`llm.input_messages.*`): the span
    shaper rebuilds them into the chat Langfuse shows (see feedback/span_shaping.py).
    """
    with _instrument_lock:
        instrumentor = SmolagentsInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        instrumentor.instrument(tracer_provider=provider, config=TraceConfig(hide_input_messages=False))


@dataclass
class TurnTrace:
    """The root observation of one chat turn; its trace id is what votes are filed on."""

    trace_id: str
    _span: Any
    _otel_span: Any
    _is_langfuse: bool
    output: str | None = field(default=None)
    # Adds the cost of LLM calls made in another process (an agent process) to this trace's.
    _add_cost: Callable[[dict[str, Any]], None] | None = field(default=None, repr=False)

    @property
    def span_id(self) -> str:
        return format(self._otel_span.get_span_context().span_id, "016x")

    def add_cost(self, cost: dict[str, Any]) -> None:
        """{"total": dollars, "unknown": bool} of calls whose spans this process never saw."""
        if self._add_cost is not None:
            self._add_cost(cost)

    def set_output(self, answer: str) -> None:
        self.output = answer
        if self._is_langfuse:
            self._span.update(output=answer)
        else:
            self._otel_span.set_attribute("langfuse.observation.output", answer)
            self._otel_span.set_attribute("output.value", answer)

    def _set_level(self, level: str, reason: str) -> None:
        if self._is_langfuse:
            self._span.update(level=level, status_message=reason)
        else:
            self._otel_span.set_attribute("langfuse.observation.level", level)
            self._otel_span.set_attribute("langfuse.observation.status_message", reason)

    def set_warning(self, reason: str) -> None:
        """The turn ended without a usable answer: not an error, but worth finding."""
        self._set_level("WARNING", reason)

    def set_error(self, reason: str) -> None:
        self._set_level("ERROR", reason)
        self._otel_span.set_status(Status(StatusCode.ERROR, reason))


class Telemetry:
    """Owns the tracer provider, the store's span exporter and the Langfuse client."""

    def __init__(
        self,
        store: Store,
        *,
        trace_name: str,
        tags: tuple[str, ...] = (),
        langfuse: Langfuse | None = None,
        export_delay_ms: int = 200,
        pricing: Pricing | None = None,
        resource: Resource | None = None,
    ) -> None:
        self.trace_name = trace_name
        self.tags = list(tags)
        # Every exporter added to this provider (ours, Langfuse's) sees shaped spans, with costs.
        self.shaper = ShapingSpanProcessor(pricing)
        self.provider = TracerProvider(
            active_span_processor=self.shaper,
            span_limits=SPAN_LIMITS,
            resource=resource or service_resource(),
        )
        self.store_processor = BatchSpanProcessor(
            StoreSpanExporter(store), schedule_delay_millis=export_delay_ms
        )
        self.provider.add_span_processor(self.store_processor)
        self.langfuse = langfuse
        # Any OpenTelemetry backend (feedback/otlp.py), added last by from_settings.
        self.otlp: OtlpSpanProcessor | None = None
        # Every OTLP backend's processor (the OTEL_* one, Phoenix's).
        self.exports: list[OtlpSpanProcessor] = []
        self._tracer = self.provider.get_tracer(APP_TRACER_NAME)

    @classmethod
    def with_langfuse(
        cls,
        store: Store,
        *,
        public_key: str,
        secret_key: str,
        base_url: str,
        timeout_s: float,
        trace_name: str,
        tags: tuple[str, ...] = (),
        environment: str | None = None,
        release: str | None = None,
        **kwargs: Any,
    ) -> Telemetry:
        telemetry = cls(store, trace_name=trace_name, tags=tags, **kwargs)
        # Langfuse adds its span processor to our provider instead of setting a global one.
        telemetry.langfuse = Langfuse(
            public_key=public_key,
            secret_key=secret_key,
            base_url=base_url,
            timeout=max(1, int(round(timeout_s))),
            tracer_provider=telemetry.provider,
            environment=environment,
            release=release,
        )
        return telemetry

    @classmethod
    def from_settings(cls, settings: Settings, store: Store, *, export_delay_ms: int = 200) -> Telemetry:
        """The app's telemetry, and each agent process's: the same names, tags, prices, Langfuse."""
        common: dict[str, Any] = {
            "trace_name": settings.trace_name,
            "tags": settings.app_tags,
            "export_delay_ms": export_delay_ms,
            "pricing": Pricing.from_settings(settings),
            "resource": service_resource(settings),
        }
        if not settings.langfuse_enabled:
            telemetry = cls(store, **common)
        else:
            telemetry = cls.with_langfuse(
                store,
                public_key=settings.langfuse_public_key,
                secret_key=settings.langfuse_secret_key,
                base_url=settings.langfuse_base_url,
                timeout_s=settings.langfuse_timeout_s,
                environment=settings.environment,
                release=settings.release or __version__,
                **common,
            )
        telemetry.add_otlp(processor_from_settings(settings))
        telemetry.add_otlp(phoenix_processor(settings))
        return telemetry

    def add_otlp(self, processor: OtlpSpanProcessor | None) -> None:
        """Send the shaped spans to an OpenTelemetry backend too. Added after Langfuse's processor:
        a flush runs the processors in order within one deadline, and a slow backend's share must
        not come out of Langfuse's."""
        if processor is not None:
            self.otlp = self.otlp or processor
            self.exports.append(processor)
            self.provider.add_span_processor(processor)

    def instrument(self) -> None:
        instrument(self.provider)

    @contextmanager
    def continue_turn(
        self,
        *,
        parent: tuple[str, str] | None,
        user_id: str,
        session_id: str,
        metadata: dict[str, str],
        extra_tags: tuple[str, ...] = (),
    ) -> Iterator[None]:
        """In an agent process: spans made in this block are children of the app's root span
        (trace id, span id), with the turn's user, session, tags (the app's and `extra_tags`, as
        on the root) and metadata for Langfuse."""
        context = otel_context.Context()
        if parent is not None:
            try:
                span_context = SpanContext(
                    trace_id=int(parent[0], 16),
                    span_id=int(parent[1], 16),
                    is_remote=True,
                    trace_flags=TraceFlags(TraceFlags.SAMPLED),
                )
                context = otel_trace.set_span_in_context(NonRecordingSpan(span_context), context)
            except ValueError:
                log.warning("A turn came with an unreadable trace context; its spans start a trace")
        token = otel_context.attach(context)
        try:
            if self.langfuse is None:
                yield
                return
            tags = [*self.tags, *extra_tags]
            with propagate_attributes(
                user_id=user_id,
                session_id=session_id or None,
                tags=tags or None,
                metadata=metadata,
                trace_name=self.trace_name,
            ):
                yield
        finally:
            otel_context.detach(token)

    @contextmanager
    def turn(
        self,
        *,
        message: str,
        user_id: str,
        session_id: str,
        metadata: dict[str, str],
        extra_tags: tuple[str, ...] = (),
    ) -> Iterator[TurnTrace]:
        """Open one turn's root observation in a fresh trace and make it current."""
        with self._root(
            name=self.trace_name,
            kind="agent",
            message=message,
            user_id=user_id,
            session_id=session_id,
            tags=[*self.tags, *extra_tags],
            metadata=metadata,
        ) as root:
            yield root

    @contextmanager
    def evaluation(self, *, evaluator: str, message: str, metadata: dict[str, str]) -> Iterator[TurnTrace]:
        """One evaluation job's own trace: named after the evaluator and tagged "evaluation",
        so it is found in Langfuse and never selected by any evaluator itself."""
        with self._root(
            name=evaluator,
            kind="evaluator",
            message=message,
            user_id="evaluator",
            session_id=None,
            tags=[*self.tags, EVALUATION_TAG],
            metadata=metadata,
        ) as root:
            yield root

    @contextmanager
    def _root(
        self,
        *,
        name: str,
        kind: str,
        message: str,
        user_id: str,
        session_id: str | None,
        tags: list[str],
        metadata: dict[str, str],
    ) -> Iterator[TurnTrace]:
        token = otel_context.attach(otel_context.Context())
        try:
            if self.langfuse is not None:
                root_cm: Any = self.langfuse.start_as_current_observation(
                    name=name, as_type=kind, input=message
                )
            else:
                root_cm = self._tracer.start_as_current_span(name)
            with root_cm as root:
                otel_span = otel_trace.get_current_span()
                trace_int = otel_span.get_span_context().trace_id
                trace_id = format(trace_int, "032x")

                def add_cost(cost: dict[str, Any]) -> None:
                    self.shaper.add_cost(trace_int, cost)

                if self.langfuse is None:
                    # No Langfuse: nothing propagates attributes to child spans, so the trace
                    # attributes go on the root only, under the names Langfuse itself uses.
                    otel_span.set_attributes(
                        {
                            "langfuse.observation.type": kind,
                            "langfuse.observation.input": message,
                            "input.value": message,
                            "langfuse.trace.name": name,
                            "user.id": user_id,
                            **({"session.id": session_id} if session_id else {}),
                            **({"langfuse.trace.tags": tags} if tags else {}),
                            **{f"langfuse.trace.metadata.{k}": json.dumps(v) for k, v in metadata.items()},
                        }
                    )
                    yield TurnTrace(trace_id, root, otel_span, False, _add_cost=add_cost)
                    return
                with propagate_attributes(
                    user_id=user_id,
                    session_id=session_id,
                    tags=tags or None,
                    metadata=metadata,
                    trace_name=name,
                ):
                    yield TurnTrace(trace_id, root, otel_span, True, _add_cost=add_cost)
        finally:
            otel_context.detach(token)

    def flush_to_store(self, timeout_ms: int = 1000) -> None:
        """Write finished spans to the local store now (never waits on Langfuse)."""
        self.store_processor.force_flush(timeout_ms)

    def flush(self, timeout_ms: int = 5000) -> None:
        self.provider.force_flush(timeout_ms)
        if self.langfuse is not None:
            try:
                self.langfuse.flush()
            except Exception:  # noqa: BLE001
                log.exception("Could not flush Langfuse")

    def shutdown(self) -> None:
        self.flush()
        if self.langfuse is not None:
            try:
                self.langfuse.shutdown()
            except Exception:  # noqa: BLE001
                log.exception("Could not shut Langfuse down")
        self.provider.shutdown()
