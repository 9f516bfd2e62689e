"""Any OpenTelemetry backend: an OTLP exporter beside Langfuse and the store.

Built from the typed settings (OTEL_EXPORTER_OTLP_* read once in config/settings.py, every value
passed explicitly to the SDK's exporter) and added to the Telemetry's provider behind the span
shaper (feedback/span_shaping.py): the backend gets the very spans Langfuse gets, the turn's root,
the agent, its steps and every LLM call with its messages and token counts, and the judges' traces,
from the app and from each agent process (each builds its Telemetry from the same settings).

Never on the request path. Ending a span only appends it to a bounded queue under a lock; a full
queue drops the span and counts it. One thread sends batches; a failed batch is counted, never
retried beyond what the SDK's exporter does within its timeout. Drops are logged at most once a
minute. A flush waits a bounded time, and not at all while the backend is failing or an export
is stuck; shutdown gives up on what is left after a couple of seconds.

Why not the SDK's BatchSpanProcessor: in opentelemetry-sdk 1.45 its force_flush ignores its
timeout and waits for the export in flight (sdk/_shared_internal BatchProcessor.force_flush, the
TODO for opentelemetry-python #4568), so a flush at close waits out a dead backend's retries, and
it counts dropped spans only as an opt-in internal metric.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from config.settings import Settings
from feedback.exporter import is_turn_span
from feedback.span_shaping import with_attributes

log = logging.getLogger(__name__)

WORKER_THREAD_NAME = "otlp-export"
# About a few hundred turns of spans: what waits while the backend is slow, then new spans are
# dropped (an LLM span carries its chat, so this bounds the memory held too).
MAX_QUEUE_SIZE = 1024
MAX_BATCH_SIZE = 256
SCHEDULE_DELAY_S = 1.0
# A flush stops waiting once an export has run this long: a backend that answers in time answers
# a batch in milliseconds.
STALL_S = 1.0
# Shutdown waits at most this long for the queue to drain (not at all for a failing backend).
CLOSE_TIMEOUT_S = 2.0
# Waits before a batch Phoenix did not take is sent again (about a minute in all).
PHOENIX_RETRIES_S = (5.0, 15.0, 45.0)
LOG_INTERVAL_S = 60.0


def exporter_from_settings(settings: Settings) -> SpanExporter:
    """The SDK's OTLP span exporter for the settings' protocol, every option passed explicitly."""
    headers = dict(settings.otlp_headers)
    gzip = settings.otlp_compression == "gzip"
    if settings.otlp_protocol == "grpc":
        # Imported only when used: grpcio is a large extension module.
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter(
            endpoint=settings.otlp_endpoint,
            insecure=settings.otlp_insecure,
            headers=tuple(headers.items()),
            timeout=settings.otlp_timeout_s,
            compression=grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression,
        )
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(
        endpoint=settings.otlp_endpoint,
        headers=headers,
        timeout=settings.otlp_timeout_s,
        compression=Compression.Gzip if gzip else Compression.NoCompression,
    )


def processor_from_settings(settings: Settings) -> OtlpSpanProcessor | None:
    """The OTLP processor, or None when no endpoint is set (then no exporter exists at all)."""
    if not settings.otlp_enabled:
        return None
    return OtlpSpanProcessor(exporter_from_settings(settings), destination=destination(settings))


def phoenix_processor(settings: Settings) -> OtlpSpanProcessor | None:
    """Phoenix takes OTLP over HTTP (protobuf only) at /v1/traces; its project is chosen by the
    `x-project-name` header (src/phoenix/server/api/routers/v1/traces.py), its auth by a bearer key."""
    if not settings.phoenix_endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    headers = {"x-project-name": settings.phoenix_project}
    if settings.phoenix_api_key:
        headers["Authorization"] = f"Bearer {settings.phoenix_api_key}"
    exporter = OTLPSpanExporter(
        endpoint=f"{settings.phoenix_endpoint}/v1/traces", headers=headers, timeout=settings.otlp_timeout_s
    )
    # Phoenix keeps one row per span id (ON CONFLICT DO NOTHING), so a batch it did not take (busy,
    # restarting) is sent again for about a minute: traces stay whole instead of partial.
    return OtlpSpanProcessor(
        exporter, destination=f"Phoenix at {settings.phoenix_endpoint}", retry_failed_s=PHOENIX_RETRIES_S
    )


# A root the app opens (feedback/tracing.py) -> its OpenInference span kind. A turn is a CHAIN: the
# AGENT is the smolagents span under it.
_ROOT_KINDS = {"agent": "CHAIN", "evaluator": "EVALUATOR"}
_TRACE_METADATA = "langfuse.trace.metadata."


def openinference_root(span: ReadableSpan) -> ReadableSpan:
    """A turn's or a judge's root as OpenInference backends read it (Phoenix showed "unknown"):
    its span kind, input and output, the trace's metadata (the variant of an experiment, ...) and
    tags under OpenInference's names. Only what these exporters send: Langfuse and the store keep
    the span as it was (Langfuse reads its own langfuse.* names, and the re-sent copies of a
    dataset run find a span's scope by these attributes)."""
    attrs = dict(span.attributes or {})
    if (
        span.parent is not None
        or "openinference.span.kind" in attrs
        or "langfuse.observation.type" not in attrs
    ):
        return span
    attrs["openinference.span.kind"] = _ROOT_KINDS.get(str(attrs["langfuse.observation.type"]), "CHAIN")
    for ours, theirs in (
        ("langfuse.observation.input", "input.value"),
        ("langfuse.observation.output", "output.value"),
    ):
        if theirs not in attrs and isinstance(attrs.get(ours), str):
            attrs[theirs] = attrs[ours]
    metadata = {}
    for key, value in attrs.items():
        if key.startswith(_TRACE_METADATA):
            try:  # the Langfuse SDK (v5) and the app JSON-encode each value
                metadata[key[len(_TRACE_METADATA) :]] = json.loads(value) if isinstance(value, str) else value
            except ValueError:
                metadata[key[len(_TRACE_METADATA) :]] = value
    if metadata and "metadata" not in attrs:
        attrs["metadata"] = json.dumps(metadata, default=str)
    tags = attrs.get("langfuse.trace.tags")
    if tags and "tag.tags" not in attrs:
        attrs["tag.tags"] = tuple(str(t) for t in tags)
    return with_attributes(span, attrs)


def destination(settings: Settings) -> str:
    """Where spans go, fit for logs: the URL (a password masked) and the protocol."""
    return f"{settings.describe()['otlp_endpoint']} ({settings.otlp_protocol})"


def describe(settings: Settings) -> str:
    """One line for the start banner (header names, never their values)."""
    if not settings.otlp_enabled:
        return "OpenTelemetry (OTLP): off (no OTEL_EXPORTER_OTLP_ENDPOINT)."
    headers = ", ".join(name for name, _ in settings.otlp_headers)
    return (
        f"OpenTelemetry (OTLP): traces also go to {destination(settings)}"
        + (f" with headers {headers}" if headers else "")
        + "; a backend that is down never slows the chat."
    )


class _OncePerMinute(logging.Filter):
    """Lets through one record a minute from our export thread (the SDK's exporters log every
    retry and every failed batch: a backend that is down would fill the log). Records from other
    threads pass: Langfuse's exporter logs to the same SDK loggers."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last = float("-inf")
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.threadName or not record.threadName.startswith(WORKER_THREAD_NAME):
            return True
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.interval_s:
                return False
            self._last = now
            return True


_SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
)
_filter_lock = threading.Lock()
_filter_installed = False


def _quiet_sdk_export_logs() -> None:
    global _filter_installed
    with _filter_lock:
        if _filter_installed:
            return
        for name in _SDK_LOGGERS:
            logging.getLogger(name).addFilter(_OncePerMinute())
        _filter_installed = True


class OtlpSpanProcessor(SpanProcessor):
    """A bounded, never-blocking batch processor that counts and logs what it loses."""

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        destination: str = "the OTLP backend",
        max_queue_size: int = MAX_QUEUE_SIZE,
        max_batch_size: int = MAX_BATCH_SIZE,
        schedule_delay_s: float = SCHEDULE_DELAY_S,
        stall_s: float = STALL_S,
        close_timeout_s: float = CLOSE_TIMEOUT_S,
        log_interval_s: float = LOG_INTERVAL_S,
        accept: Callable[[ReadableSpan], bool] = is_turn_span,
        clock: Callable[[], float] = time.monotonic,
        retry_failed_s: tuple[float, ...] = (),
    ) -> None:
        self.exporter = exporter
        self.destination = destination
        self.max_queue_size = max_queue_size
        self.max_batch_size = max_batch_size
        self.schedule_delay_s = schedule_delay_s
        self.stall_s = stall_s
        self.close_timeout_s = close_timeout_s
        self.log_interval_s = log_interval_s
        self._accept = accept
        self._clock = clock
        self._queue: deque[ReadableSpan] = deque()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._closed = False
        # Counts (under the lock): spans queued, sent, lost to a full queue, to a failed export,
        # and left unsent at shutdown; what was last logged.
        self._queued = 0
        self._exported = 0
        self._dropped = 0
        self._failed = 0
        self._unsent = 0
        self._logged = (0, 0, 0)
        self._last_log = float("-inf")
        self._export_started: float | None = None
        self._sending = 0
        self._failing = False
        # Batches the backend did not take, sent again after each wait of retry_failed_s (only for
        # a backend that keeps one row per span id, as Phoenix does: a batch that half-landed then
        # lands whole, never twice). Bounded by max_queue_size spans like the queue.
        self.retry_failed_s = retry_failed_s
        self._retries: deque[tuple[float, int, list[ReadableSpan]]] = deque()
        self._retrying = 0
        self._retried = 0  # spans that landed on a retry
        _quiet_sdk_export_logs()
        self._thread = threading.Thread(target=self._run, name=WORKER_THREAD_NAME, daemon=True)
        self._thread.start()

    # --- the request path: never blocks -------------------------------------------------------
    def on_start(self, span: Span, parent_context: Any = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled) or not self._accept(span):
            return
        if span.parent is None:
            span = openinference_root(span)
        with self._lock:
            if self._closed:
                return
            if len(self._queue) >= self.max_queue_size:
                self._dropped += 1
                return
            self._queue.append(span)
            self._queued += 1
            full_batch = len(self._queue) >= self.max_batch_size
        if full_batch:
            self._wake.set()

    # --- the export thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(self.schedule_delay_s)
            self._wake.clear()
            with self._lock:
                if self._closed:
                    return
            self._export_queued()
            self._export_retries()
            self._report()

    def _export_queued(self) -> None:
        while True:
            with self._lock:
                if self._closed or not self._queue:
                    return
                count = min(self.max_batch_size, len(self._queue))
                batch = [self._queue.popleft() for _ in range(count)]
            self._export(batch, tries=0)

    def _export_retries(self) -> None:
        """Send again the failed batches whose wait is over, oldest first."""
        while True:
            with self._lock:
                if self._closed or not self._retries or self._retries[0][0] > self._clock():
                    return
                _, tries, batch = self._retries.popleft()
                self._retrying -= len(batch)
            self._export(batch, tries=tries)

    def _export(self, batch: list[ReadableSpan], *, tries: int) -> None:
        count = len(batch)
        with self._lock:
            self._export_started = self._clock()
            self._sending = count
        # The export's own HTTP / gRPC calls are never traced (instrumented clients check this).
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            ok = self.exporter.export(batch) is SpanExportResult.SUCCESS
        except Exception:  # noqa: BLE001 - counted and logged below; the thread goes on
            log.debug("The OTLP exporter raised", exc_info=True)
            ok = False
        finally:
            detach(token)
        with self._lock:
            self._export_started = None
            self._sending = 0
            self._failing = not ok
            if ok:
                self._exported += count
                if tries:
                    self._retried += count
            elif (
                tries < len(self.retry_failed_s)
                and not self._closed
                and self._retrying + count <= self.max_queue_size
            ):
                self._retries.append((self._clock() + self.retry_failed_s[tries], tries + 1, batch))
                self._retrying += count
            else:
                self._failed += count
            self._changed.notify_all()

    def _report(self, *, final: bool = False) -> None:
        """Log what was lost since the last report, at most once a minute (and at shutdown)."""
        with self._lock:
            now = self._clock()
            counts = (self._dropped, self._failed, self._unsent)
            if counts == self._logged or (not final and now - self._last_log < self.log_interval_s):
                return
            dropped, failed, unsent = (a - b for a, b in zip(counts, self._logged, strict=True))
            self._logged, self._last_log = counts, now
        parts = [
            f"{n} {what}"
            for n, what in (
                (dropped, "dropped (queue full)"),
                (failed, "in batches the backend did not take"),
                (unsent, "unsent at shutdown"),
            )
            if n
        ]
        log.warning(
            "Spans lost on their way to %s: %s. Chat turns are not slowed; these spans are missing from "
            "that backend only (Langfuse and the local store have them).",
            self.destination,
            ", ".join(parts),
        )

    # --- flush and shutdown: bounded ---------------------------------------------------------------
    def _stalled_locked(self) -> bool:
        started = self._export_started
        return self._failing or (started is not None and self._clock() - started > self.stall_s)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send what is queued now; wait at most `timeout_millis`, and not while the backend fails.

        True once every span queued before the call was sent (or given up on)."""
        deadline = time.monotonic() + max(0, timeout_millis) / 1000
        with self._lock:
            if self._closed:
                return False
            target = self._queued
        self._wake.set()
        with self._changed:
            # A batch waiting for its retry is not flushed: the backend did not take it just now.
            while self._exported + self._failed + self._unsent + self._retrying < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stalled_locked():
                    return False
                self._changed.wait(min(remaining, 0.05))
            return True

    def shutdown(self) -> None:
        """Drain for at most close_timeout_s (skipped for a failing backend), then stop: what is
        left is counted and logged, and an export still retrying is told to give up."""
        with self._lock:
            if self._closed:
                return
        self.force_flush(int(self.close_timeout_s * 1000))
        with self._lock:
            self._closed = True
            self._unsent += len(self._queue) + self._retrying
            self._queue.clear()
            self._retries.clear()
            self._retrying = 0
            self._changed.notify_all()
        self._wake.set()
        try:
            # Both SDK exporters stop retrying at once (an event their backoff waits on).
            self.exporter.shutdown()
        except Exception:  # noqa: BLE001 - shutting down: nothing else to do about it
            log.debug("The OTLP exporter failed to shut down", exc_info=True)
        # A request to a backend that does not answer may still be in flight: its thread is a
        # daemon and ends with the process, or with the request's own timeout.
        self._thread.join(0.2)
        self._report(final=True)
        with self._lock:
            sending = self._sending
        if sending:
            log.warning(
                "%d spans were still on their way to %s when the app stopped; they may not arrive.",
                sending,
                self.destination,
            )

    def stats(self) -> dict[str, int]:
        """Spans queued now, being sent, sent, dropped (queue full), failed (batch not taken) and
        unsent at shutdown."""
        with self._lock:
            return {
                "queued": len(self._queue),
                "retrying": self._retrying,
                "retried": self._retried,
                "sending": self._sending,
                "exported": self._exported,
                "dropped": self._dropped,
                "failed": self._failed,
                "unsent": self._unsent,
            }
