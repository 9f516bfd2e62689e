"""A plain OTLP trace collector for tests: OTLP/HTTP (binary protobuf) and OTLP/gRPC on 127.0.0.1.

Written from the protocol, not from any backend's quirks:

- opentelemetry-proto `docs/specification.md` (the OTLP specification): OTLP/HTTP is a POST of a
  binary-protobuf `ExportTraceServiceRequest` (`Content-Type: application/x-protobuf`, optionally
  `Content-Encoding: gzip`) to the path `/v1/traces`; full success is `200 OK` with a protobuf
  `ExportTraceServiceResponse` in the same encoding; a body that does not decode is `400 Bad
  Request`; an unsupported media type `415`. OTLP/gRPC is the unary call
  `opentelemetry.proto.collector.trace.v1.TraceService/Export`; a server that is not there gives
  the client `UNAVAILABLE` (retryable).
- opentelemetry-proto `opentelemetry/proto/collector/trace/v1/trace_service.proto` and
  `opentelemetry/proto/trace/v1/trace.proto`: the request holds ResourceSpans -> ScopeSpans ->
  Span; trace and span ids are bytes (16 and 8), a root has an empty `parent_span_id`.
  Decoded with the generated classes of the installed `opentelemetry-proto` package, served over
  gRPC with `grpcio` and the generated `TraceServiceServicer`.

Every request is recorded with its transport, path and headers (HTTP headers or gRPC metadata,
names lowercased). `delay_s` makes it slow (each export answered that much later); `stop()` makes
it dead (the port refuses connections) and `start()` brings it back on the same port.
"""

from __future__ import annotations

import gzip
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PROTOBUF = "application/x-protobuf"


@dataclass
class CollectedSpan:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    status_code: int


@dataclass
class ExportRequest:
    transport: str  # "http" or "grpc"
    path: str  # the HTTP path, or the gRPC method
    headers: dict[str, str]
    spans: list[CollectedSpan] = field(default_factory=list)


def _value(value: Any) -> Any:
    """An OTLP AnyValue as a Python value (common/v1/common.proto)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def decode(request: ExportTraceServiceRequest) -> list[CollectedSpan]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    CollectedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        resource=resource,
                        scope=scope_spans.scope.name,
                        status_code=span.status.code,
                    )
                )
    return spans


class _Recorder:
    def __init__(self, paths: tuple[str, ...]) -> None:
        self.paths = paths
        self.delay_s = 0.0
        self.lock = threading.Lock()
        self.requests: list[ExportRequest] = []
        # Every HTTP request, also those answered 404/400/415: (method, path, status).
        self.seen: list[tuple[str, str, int]] = []

    def record(self, request: ExportRequest) -> None:
        with self.lock:
            self.requests.append(request)


class _HttpHandler(BaseHTTPRequestHandler):
    recorder: _Recorder
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        return None

    def _answer(self, status: int, body: bytes = b"", content_type: str = "text/plain") -> None:
        with self.recorder.lock:
            self.recorder.seen.append((self.command, self.path, status))
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the exporter gave up waiting (a slow collector) and closed the socket
            self.close_connection = True

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.split("?")[0] not in self.recorder.paths:
            self._answer(404, b"not found")
            return
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != PROTOBUF:
            self._answer(415, b"only application/x-protobuf")
            return
        try:
            if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
                raw = gzip.decompress(raw)
            request = ExportTraceServiceRequest()
            request.ParseFromString(raw)
        except Exception:  # noqa: BLE001 - the spec's answer to bad data
            self._answer(400, b"bad data")
            return
        if self.recorder.delay_s:
            time.sleep(self.recorder.delay_s)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.recorder.record(ExportRequest("http", self.path, headers, decode(request)))
        self._answer(200, ExportTraceServiceResponse().SerializeToString(), PROTOBUF)

    def do_GET(self) -> None:
        self._answer(405, b"POST only")


class _ReusableServer(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


class OtlpCollector:
    """An OTLP/HTTP or OTLP/gRPC trace receiver on a free port of 127.0.0.1.

    `url` is what OTEL_EXPORTER_OTLP_ENDPOINT would be set to (http://127.0.0.1:PORT).
    """

    def __init__(self, transport: str = "http", *, paths: tuple[str, ...] = ("/v1/traces",)) -> None:
        if transport not in ("http", "grpc"):
            raise ValueError(transport)
        self.transport = transport
        self.recorder = _Recorder(paths)
        self.port = 0
        self._http: ThreadingHTTPServer | None = None
        self._grpc: Any = None

    # --- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> OtlpCollector:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        if self.transport == "http":
            handler = type("Handler", (_HttpHandler,), {"recorder": self.recorder})
            self._http = _ReusableServer(("127.0.0.1", self.port), handler)
            self.port = self._http.server_address[1]
            threading.Thread(target=self._http.serve_forever, daemon=True).start()
        else:
            self._grpc = self._grpc_server()

    def stop(self) -> None:
        """Dead: the port refuses connections (what is recorded is kept)."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._grpc is not None:
            self._grpc.stop(grace=None)
            self._grpc = None

    def _grpc_server(self) -> Any:
        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        recorder = self.recorder

        class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: ExportTraceServiceRequest, context: Any) -> ExportTraceServiceResponse:  # noqa: N802
                if recorder.delay_s:
                    time.sleep(recorder.delay_s)
                metadata = {k.lower(): v for k, v in context.invocation_metadata()}
                recorder.record(
                    ExportRequest(
                        "grpc",
                        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                        metadata,
                        decode(request),
                    )
                )
                return ExportTraceServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        return server

    # --- what tests set and read ------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def delay_s(self) -> float:
        return self.recorder.delay_s

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        """Slow: every export is answered this many seconds late."""
        self.recorder.delay_s = value

    @property
    def requests(self) -> list[ExportRequest]:
        with self.recorder.lock:
            return list(self.recorder.requests)

    @property
    def seen(self) -> list[tuple[str, str, int]]:
        with self.recorder.lock:
            return list(self.recorder.seen)

    @property
    def spans(self) -> list[CollectedSpan]:
        return [span for request in self.requests for span in request.spans]

    def spans_of(self, trace_id: str) -> list[CollectedSpan]:
        return [span for span in self.spans if span.trace_id == trace_id]
