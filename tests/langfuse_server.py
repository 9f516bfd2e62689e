"""A Langfuse stand-in that keeps the real server's rules, with both server generations as modes.

Every rule below comes from the server's source (github langfuse/langfuse, snapshot of
2026-08-22, v4.16.0) or, for the current generation, from the SDK 5.0.4 client that talks to it.
The file each rule follows is named where the rule is written. `generation` picks the form of
POST /api/public/scores:

- SINGLE (self-hosted servers, v4.x): web/src/pages/api/public/scores/index.ts validates ONE
  object (PostScoresBodyV1), answers 200 {"id"}, and 400 "Invalid request data" with zod's
  issues to anything else (a JSON array among them). Its schema has no `timestamp`
  (packages/shared/src/features/scores/interfaces/shared.ts), so zod drops it: the score is
  filed under the time the server received it.
- BATCH (the current server, SDK 5.0.4 `api.scores.create`): a list of scores, 202 when all
  were taken, 207 {accepted, rejected, errors} otherwise; `timestamp` is kept ("To update an
  existing score, send it again with the same id and timestamp"). A single object is answered
  400 here (the SDK types the body as a list; the source of that generation is not public in our
  snapshot, so this is the conservative reading).

Rules both generations share:

- Validation (packages/shared/src/features/scores/interfaces/api/shared.ts PostScoresBody,
  packages/shared/src/utils/scores.ts applyScoreValidation, domain/scores.ts): a non-empty
  name; exactly one of traceId / sessionId / datasetRunId (observationId only with traceId);
  BOOLEAN values 0 or 1, NUMERIC numbers, CATEGORICAL strings; source API or ANNOTATION only
  (EVAL is reserved), ANNOTATION needs a configId; unknown fields are dropped.
- Score configs (web/src/features/public-api/types/score-configs.ts, score-configs-api-service.ts;
  packages/shared/src/domain/score-configs.ts): POST /api/public/score-configs creates one (a
  new id every time: names are not unique), names of 1 to 35 letters, digits, '_', ' ', '.',
  '(', ')' or '-'; BOOLEAN configs get the categories True = 1 / False = 0; GET lists them a page
  at a time. A score with a configId is checked in the worker, after the 200/202
  (packages/shared/src/server/ingestion/validateAndInflateScore.ts): an unknown or archived
  config, another name, another data type, a value out of range or not one of the categories
  drop the score silently (`state.dropped` says why).
- A created score lands after a delay (processEventBatch.ts getDelay: 5 s; from 23:45 to 00:15
  UTC LANGFUSE_INGESTION_QUEUE_DELAY_MS, 15 s by default, env.ts); a DELETE is queued without
  delay (redis/scoreDelete.ts, scores-api-service.ts deleteScore) and always answered 202
  (scores/[scoreId].ts successStatusCode), whether or not the score exists.
- Scores are rows of a ReplacingMergeTree ordered by (project_id, toDate(timestamp), name, id)
  (clickhouse/migrations/unclustered/0003_scores.up.sql): a score sent again replaces its row
  only on the same day; otherwise FINAL reads show two rows. A delete removes the id's rows.
- OTLP (packages/shared/src/server/otel/): usage is read from `llm.token_count.*` and
  `gen_ai.usage.*` on ANY observation and a trace's usage is the sum over its observations
  (event-query-builder.ts); a trace root is an observation with no parent span id or with
  `langfuse.internal.is_app_root = true` (eventsTable.ts); an experiment item's cost and
  latency are taken over the observations that carry the experiment attributes.

`state.scores` is what a person sees once the server has caught up: every create and delete
replayed in the order the server applies them (a create at arrival + delay, a delete at arrival),
so a test needs no sleeping to see a create that lands after a delete. `scores_now()` is what
the server shows at this moment.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SINGLE = "single"
BATCH = "batch"
GENERATIONS = (SINGLE, BATCH)
VERSIONS = {SINGLE: "4.16.0", BATCH: "5.0.0"}

CREATE_DELAY_S = 5.0  # processEventBatch.ts getDelay, source "api"
MIDNIGHT_DELAY_S = 15.0  # LANGFUSE_INGESTION_QUEUE_DELAY_MS default (packages/shared/src/env.ts)

# PostScoreBodyFoundationSchema + PostScoresBody: every field the server keeps; zod drops the rest.
_SCORE_FIELDS = {
    "id",
    "name",
    "traceId",
    "sessionId",
    "datasetRunId",
    "observationId",
    "comment",
    "metadata",
    "environment",
    "queueId",
    "source",
    "value",
    "dataType",
    "configId",
}
USAGE_PREFIXES = ("llm.token_count.", "gen_ai.usage.")
IS_APP_ROOT = "langfuse.internal.is_app_root"


def create_delay_s(arrival: float) -> float:
    """processEventBatch.ts getDelay for an API call arriving at `arrival` (epoch seconds)."""
    moment = datetime.fromtimestamp(arrival, UTC)
    if (moment.hour == 23 and moment.minute >= 45) or (moment.hour == 0 and moment.minute <= 15):
        return MIDNIGHT_DELAY_S
    return CREATE_DELAY_S


def _issue(message: str, path: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"code": extra.pop("code", "custom"), "path": path or [], "message": message, **extra}


def validate_score(body: Any) -> list[dict[str, Any]]:
    """zod's issues for one score body (PostScoresBody); empty when it is valid."""
    if not isinstance(body, dict):
        received = "array" if isinstance(body, list) else type(body).__name__
        return [
            _issue(
                f"Invalid input: expected object, received {received}",
                code="invalid_type",
                expected="object",
            )
        ]
    issues = []
    if not isinstance(body.get("name"), str) or not body["name"]:
        issues.append(_issue("name must be a non-empty string", ["name"]))
    refs = [bool(body.get(k)) for k in ("traceId", "sessionId", "datasetRunId")]
    if sum(refs) != 1 or (body.get("observationId") and not body.get("traceId")):
        issues.append(
            _issue(
                "Provide exactly one of the following: traceId (with optional observationId), "
                "sessionId or datasetRunId. ObservationId requires traceId.",
                ["traceId", "sessionId", "datasetRunId", "observationId"],
            )
        )
    value, data_type = body.get("value"), body.get("dataType")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if data_type == "BOOLEAN" and not (number and value in (0, 1)):
        issues.append(
            _issue("Value must be a number equal to either 0 or 1 for data type BOOLEAN", ["value"])
        )
    elif data_type == "NUMERIC" and not number:
        issues.append(_issue("Invalid input: expected number", ["value"]))
    elif data_type == "CATEGORICAL" and not isinstance(value, str):
        issues.append(_issue("Invalid input: expected string", ["value"]))
    elif data_type is None and not (number or isinstance(value, str)):
        issues.append(_issue("Invalid input", ["value"]))
    source = body.get("source", "API")
    if source not in ("API", "ANNOTATION"):
        issues.append(_issue('Invalid option: expected one of "API"|"ANNOTATION"', ["source"]))
    elif source == "ANNOTATION" and not body.get("configId") and data_type != "CORRECTION":
        issues.append(_issue("configId is required when source is ANNOTATION", ["configId"]))
    if not isinstance(body.get("environment", "default"), str):
        issues.append(_issue("Invalid input: expected string", ["environment"]))
    return issues


def normalize_environment(value: object) -> str:
    """packages/shared/src/server/ingestion/types.ts PublicEnvironmentName: lowercased, leading
    "langfuse" prefixes stripped, 40 characters; anything else is "default"."""
    text = re.sub(r"^(?:langfuse[-_]?)+", "", str(value).lower())[:40]
    return text if re.fullmatch(r"[a-z0-9_-]+", text) else "default"


@dataclass
class RecordedSpan:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    attributes: dict[str, Any]
    status_code: int
    start_time_unix_nano: int = 0
    end_time_unix_nano: int = 0
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""

    @property
    def is_root(self) -> bool:
        """eventsTable.ts: `parent_span_id = '' OR is_app_root`."""
        return self.parent_id is None or self.attributes.get(IS_APP_ROOT) is True

    @property
    def environment(self) -> str:
        """OtelIngestionProcessor.ts extractEnvironment: per key, the span's then the resource's."""
        for key in ("langfuse.environment", "deployment.environment.name", "deployment.environment"):
            for source in (self.attributes, self.resource):
                if source.get(key):
                    return normalize_environment(source[key])
        return "default"

    def usage(self) -> dict[str, int]:
        """The usage the server reads from this observation (any observation, not only LLMs)."""
        found: dict[str, int] = {}
        for key, value in self.attributes.items():
            for prefix in USAGE_PREFIXES:
                if key.startswith(prefix) and isinstance(value, (int, float)) and not isinstance(value, bool):
                    found[key.removeprefix(prefix)] = int(value)
        return found

    def cost(self) -> float:
        raw = self.attributes.get("langfuse.observation.cost_details")
        try:
            total = json.loads(raw).get("total") if isinstance(raw, str) else None
        except (ValueError, AttributeError):
            total = None
        return float(total) if isinstance(total, (int, float)) else 0.0


@dataclass
class _ScoreEvent:
    """One score change as the server applies it: a create lands late, a delete at once."""

    applies_at: float
    seq: int
    kind: str  # "create" | "delete"
    score_id: str
    row: dict[str, Any] | None = None


@dataclass
class FakeLangfuseState:
    """What the stand-in received; `mode` switches how it answers score and dataset calls."""

    generation: str = SINGLE
    # Read at each call (not bound once), so a test that moves time.time moves this clock too.
    clock: Callable[[], float] = lambda: time.time()  # noqa: E731
    spans: list[RecordedSpan] = field(default_factory=list)
    score_posts: list[dict[str, Any]] = field(default_factory=list)
    score_refusals: list[dict[str, Any]] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    events: list[_ScoreEvent] = field(default_factory=list)
    auth_calls: int = 0
    # Datasets: POST /api/public/v2/datasets upserts by name (the same id every time).
    dataset_posts: list[dict[str, Any]] = field(default_factory=list)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Dataset items: POST /api/public/dataset-items upserts by id; an item sent without an id
    # gets a new one, so a second item with the same input in one dataset is a duplicate there.
    dataset_item_posts: list[dict[str, Any]] = field(default_factory=list)
    dataset_items: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset_item_duplicates: list[dict[str, Any]] = field(default_factory=list)
    # Experiment (dataset run) items: derived from observations that carry langfuse.experiment.*
    # attributes and are their item's root observation. A span sent again replaces the stored one
    # only with the same trace id, span id and start time (its events table's sorting key);
    # anything else for the same experiment and item is a second run item.
    experiment_items: dict[tuple[str, str, int], RecordedSpan] = field(default_factory=dict)
    experiment_item_duplicates: list[RecordedSpan] = field(default_factory=list)
    # getDelay is a minimum: a busy worker takes longer to land a create.
    busy_worker_s: float = 0.0
    # Score configs by id (POST /api/public/score-configs), and the scores the worker dropped
    # after accepting them (a configId that does not fit the score), with the reason.
    score_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "ok"  # ok | error500 | hang | reject | unauthorized
    hang_s: float = 10.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def rows(self, at: float | None = None) -> list[dict[str, Any]]:
        """The score rows a FINAL read returns at `at` (None: once every create has landed)."""
        table: dict[tuple[str, str, str], dict[str, Any]] = {}
        with self.lock:
            events = sorted(self.events, key=lambda e: (e.applies_at, e.seq))
        for event in events:
            if at is not None and event.applies_at > at:
                break
            if event.kind == "delete":
                table = {k: v for k, v in table.items() if k[2] != event.score_id}
            else:
                assert event.row is not None
                row = event.row
                table[(row["timestamp"][:10], row["name"], row["id"])] = row
        return list(table.values())

    @property
    def scores(self) -> dict[str, dict[str, Any]]:
        """Score id -> its latest row, once the server has caught up."""
        return {row["id"]: row for row in self.rows()}

    def scores_now(self) -> dict[str, dict[str, Any]]:
        return {row["id"]: row for row in self.rows(self.clock())}

    @property
    def upsert_violations(self) -> list[dict[str, Any]]:
        """Rows beyond the first of one score id: what FINAL reads count twice."""
        seen: set[str] = set()
        extra = []
        for row in self.rows():
            if row["id"] in seen:
                extra.append(row)
            seen.add(row["id"])
        return extra

    def trace_usage(self, trace_id: str) -> dict[str, int]:
        """A trace's usage as the server shows it: summed over all its observations."""
        total: dict[str, int] = {}
        with self.lock:
            spans = [s for s in self.spans if s.trace_id == trace_id]
        for span in spans:
            for key, value in span.usage().items():
                total[key] = total.get(key, 0) + value
        return total

    def experiment_item(self, experiment_id: str, item_id: str) -> dict[str, float]:
        """An experiment item's cost and latency, over the observations carrying its attributes."""
        with self.lock:
            spans = [
                s
                for s in self.spans
                if s.attributes.get("langfuse.experiment.id") == experiment_id
                and s.attributes.get("langfuse.experiment.item.id") == item_id
            ]
        # repositories/experiments.ts getExperimentItemsFromEvents: the cost is summed over the
        # item's events; the latency is the duration of the item's root observation.
        if not spans:
            return {"observations": 0, "cost": 0.0, "latency_s": 0.0}
        root_id = spans[0].attributes.get("langfuse.experiment.item.root_observation_id")
        root = next((s for s in spans if s.span_id == root_id), None)
        latency = (root.end_time_unix_nano - root.start_time_unix_nano) / 1e9 if root else 0.0
        return {"observations": len(spans), "cost": sum(s.cost() for s in spans), "latency_s": latency}


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind is None:
        return None
    return getattr(value, kind)


class _JSONHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        return None

    def _send(self, status: int, payload: Any = None, content_type: str = "application/json") -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Handler(_JSONHandler):
    state: FakeLangfuseState

    def _body(self) -> bytes:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        return raw

    def do_GET(self) -> None:
        if self.path == "/_control/state":
            rows = self.state.rows()
            with self.state.lock:
                posts, deletes = len(self.state.score_posts), len(self.state.deletes)
            self._send(
                200,
                {
                    "scores": {row["id"]: row for row in rows},
                    "posts": posts,
                    "deletes": deletes,
                    "upsert_violations": len(self.state.upsert_violations),
                },
            )
            return
        if self.path.startswith("/api/public/health"):
            # web/src/pages/api/public/health.ts: no auth, {status, version}.
            self._send(200, {"status": "OK", "version": VERSIONS[self.state.generation]})
            return
        if self.path.startswith("/api/public/score-configs"):
            self._list_score_configs()
            return
        if self.path.startswith("/api/public/projects"):
            with self.state.lock:
                self.state.auth_calls += 1
            if self.state.mode == "unauthorized":
                self._send(401, {"message": "Invalid credentials"})
                return
            self._send(
                200,
                {
                    "data": [
                        {
                            "id": "p1",
                            "name": "fake-project",
                            "organization": {"id": "o1", "name": "org"},
                            "metadata": {},
                        }
                    ]
                },
            )
            return
        self._send(404, {"message": "not found"})

    def do_POST(self) -> None:
        body = self._body()
        if self.path == "/_control/mode":
            # Lets a benchmark switch a stand-in running in another process.
            self.state.mode = json.loads(body)["mode"]
            self._send(200, {"mode": self.state.mode})
            return
        if self.path.startswith("/api/public/otel/v1/traces"):
            self._ingest_spans(body)
            return
        if self.path.rstrip("/") == "/api/public/scores":
            self._post_scores(json.loads(body))
            return
        if self.path.rstrip("/") == "/api/public/score-configs":
            if not self._refused_by_mode_scores():
                self._create_score_config(json.loads(body))
            return
        if self.path.rstrip("/") == "/api/public/v2/datasets":
            if not self._refused_by_mode():
                self._upsert_dataset(json.loads(body))
            return
        if self.path.rstrip("/") == "/api/public/dataset-items":
            if not self._refused_by_mode():
                self._upsert_dataset_item(json.loads(body))
            return
        self._send(404, {"message": "not found"})

    def _ingest_spans(self, body: bytes) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _any_value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        RecordedSpan(
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex() or None,
                            name=span.name,
                            attributes={a.key: _any_value(a.value) for a in span.attributes},
                            status_code=span.status.code,
                            start_time_unix_nano=span.start_time_unix_nano,
                            end_time_unix_nano=span.end_time_unix_nano,
                            resource=resource,
                            scope=scope_spans.scope.name,
                        )
                    )
        with self.state.lock:
            self.state.spans.extend(spans)
            for span in spans:
                self._record_experiment_item(span)
        self._send(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

    def _refused_by_mode_scores(self) -> bool:
        mode = self.state.mode
        if mode == "hang":
            time.sleep(self.state.hang_s)
            self._send(504, {"message": "timeout"})
        elif mode == "error500":
            self._send(500, {"message": "internal error"})
        elif mode == "unauthorized":
            self._send(401, {"message": "Invalid credentials"})
        else:
            return False
        return True

    def _post_scores(self, payload: Any) -> None:
        if self._refused_by_mode_scores():
            return
        state = self.state
        arrival = state.clock()
        if state.generation == SINGLE:
            issues = validate_score(payload)
            if not issues and state.mode == "reject":
                issues = [_issue("score rejected: invalid value", ["value"])]
            with state.lock:
                # score_posts: scores sent in the form this server takes, valid or not.
                if isinstance(payload, dict):
                    state.score_posts.append(payload)
                if issues:
                    state.score_refusals.append({"body": payload, "issues": issues})
            if issues:
                # withMiddlewares.ts: a ZodError is answered 400 with its issues.
                self._send(400, {"message": "Invalid request data", "error": issues})
                return
            row = self._queue_create(payload, arrival, keep_timestamp=False)
            self._send(200, {"id": row["id"]})
            return
        if not isinstance(payload, list):
            issues = [
                _issue(
                    "Invalid input: expected array, received object", code="invalid_type", expected="array"
                )
            ]
            with state.lock:
                state.score_refusals.append({"body": payload, "issues": issues})
            self._send(400, {"message": "Invalid request data", "error": issues})
            return
        errors = []
        for index, item in enumerate(payload):
            issues = validate_score(item)
            if not issues and state.mode == "reject":
                issues = [_issue("score rejected: invalid value", ["value"])]
            with state.lock:
                state.score_posts.append(item)
                if issues:
                    state.score_refusals.append({"body": item, "issues": issues})
            if issues:
                errors.append({"index": index, "message": "; ".join(i["message"] for i in issues)})
            else:
                self._queue_create(item, arrival, keep_timestamp=True)
        if errors:
            self._send(
                207, {"accepted": len(payload) - len(errors), "rejected": len(errors), "errors": errors}
            )
        else:
            self._send(202, {"message": "Accepted"})

    def _list_score_configs(self) -> None:
        # GET /api/public/score-configs?page=&limit= (packages/shared/src/server/repositories/score-configs.ts).
        query = dict(part.split("=", 1) for part in self.path.partition("?")[2].split("&") if "=" in part)
        page, limit = max(1, int(query.get("page", 1))), max(1, min(100, int(query.get("limit", 50))))
        with self.state.lock:
            configs = list(self.state.score_configs.values())
        chunk = configs[(page - 1) * limit : page * limit]
        pages = max(1, -(-len(configs) // limit))
        self._send(
            200,
            {
                "data": chunk,
                "meta": {"page": page, "limit": limit, "totalItems": len(configs), "totalPages": pages},
            },
        )

    def _create_score_config(self, body: Any) -> None:
        issues = []
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not re.fullmatch(r"[\w .()\-]{1,35}", name):
            issues.append(_issue("Name contains invalid characters or is not 1 to 35 characters", ["name"]))
        data_type = body.get("dataType") if isinstance(body, dict) else None
        if data_type not in ("NUMERIC", "CATEGORICAL", "BOOLEAN", "TEXT"):
            issues.append(_issue("Invalid discriminator value", ["dataType"]))
        categories = body.get("categories") if isinstance(body, dict) else None
        if data_type == "CATEGORICAL":
            labels = [c.get("label") for c in categories or [] if isinstance(c, dict)]
            values = [c.get("value") for c in categories or [] if isinstance(c, dict)]
            if not labels or len(set(labels)) != len(labels) or len(set(values)) != len(values):
                issues.append(
                    _issue("Category must be an array of objects with label value pairs", ["categories"])
                )
        elif categories is not None:
            issues.append(_issue("categories are for CATEGORICAL configs only", ["categories"]))
        if issues:
            self._send(400, {"message": "Invalid request data", "error": issues})
            return
        if data_type == "BOOLEAN":
            categories = [{"label": "True", "value": 1}, {"label": "False", "value": 0}]
        with self.state.lock:
            config = {
                "id": f"config-{len(self.state.score_configs) + 1}",
                "projectId": "p1",
                "name": name,
                "dataType": data_type,
                "categories": categories,
                "minValue": body.get("minValue"),
                "maxValue": body.get("maxValue"),
                "description": body.get("description"),
                "isArchived": False,
            }
            self.state.score_configs[config["id"]] = config
        self._send(200, config)

    def _config_problem(self, body: dict[str, Any]) -> str | None:
        """validateAndInflateScore.ts: why the worker drops a score with this configId (None: fits)."""
        config = self.state.score_configs.get(str(body.get("configId")))
        if config is None:
            return "The configId you provided does not match a valid config in this project"
        if body.get("dataType") and body["dataType"] != config["dataType"]:
            return (
                f"Data type mismatch based on config: expected {config['dataType']}, got {body['dataType']}"
            )
        if config["isArchived"]:
            return "Config is archived and cannot be used to create new scores."
        if config["name"] != body.get("name"):
            return f"Name mismatch based on config: expected {config['name']}, got {body.get('name')}"
        value = body.get("value")
        if config["dataType"] in ("CATEGORICAL",):
            if value not in [c["label"] for c in config["categories"] or []]:
                return "Ingested score body not valid against provided config: value not in categories"
        elif isinstance(value, (int, float)):
            low, high = config.get("minValue"), config.get("maxValue")
            if (low is not None and value < low) or (high is not None and value > high):
                return "Ingested score body not valid against provided config: value out of range"
        return None

    def _queue_create(self, body: dict[str, Any], arrival: float, *, keep_timestamp: bool) -> dict[str, Any]:
        if body.get("configId"):
            problem = self._config_problem(body)
            if problem is not None:
                # Accepted by the API, dropped by the worker: never lands.
                with self.state.lock:
                    self.state.dropped.append({"body": body, "reason": problem})
                return {"id": body.get("id")}
        row = {k: v for k, v in body.items() if k in _SCORE_FIELDS}
        row["id"] = row.get("id") or f"score-{len(self.state.events) + 1}"
        given = body.get("timestamp") if keep_timestamp else None
        if isinstance(given, str):
            row["timestamp"] = (
                datetime.fromisoformat(given.replace("Z", "+00:00")).astimezone(UTC).isoformat()
            )
        else:
            row["timestamp"] = datetime.fromtimestamp(arrival, UTC).isoformat()
        with self.state.lock:
            self.state.events.append(
                _ScoreEvent(
                    arrival + create_delay_s(arrival) + self.state.busy_worker_s,
                    len(self.state.events),
                    "create",
                    row["id"],
                    row,
                )
            )
        return row

    def _refused_by_mode(self) -> bool:
        """Answer a dataset call as the current mode says; True when it was refused."""
        if self._refused_by_mode_scores():
            return True
        if self.state.mode == "reject":
            self._send(400, {"message": "Invalid request data"})
            return True
        return False

    def _upsert_dataset(self, body: dict[str, Any]) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        with self.state.lock:
            self.state.dataset_posts.append(body)
            old = self.state.datasets.get(body["name"])
            dataset = {
                "id": old["id"] if old else f"ds-{len(self.state.datasets) + 1}",
                "name": body["name"],
                "description": body.get("description"),
                "metadata": body.get("metadata"),
                "projectId": "p1",
                "createdAt": old["createdAt"] if old else now,
                "updatedAt": now,
            }
            self.state.datasets[body["name"]] = dataset
        self._send(200, dataset)

    def _upsert_dataset_item(self, body: dict[str, Any]) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        with self.state.lock:
            self.state.dataset_item_posts.append(body)
            dataset = self.state.datasets.get(body.get("datasetName", ""))
            if dataset is None:
                self._send(404, {"message": f"Dataset {body.get('datasetName')} not found"})
                return
            item_id = body.get("id") or f"item-{len(self.state.dataset_item_posts)}"
            old = self.state.dataset_items.get(item_id)
            if old is not None and old["datasetId"] != dataset["id"]:
                self._send(409, {"message": f"Dataset item {item_id} belongs to another dataset"})
                return
            if old is None and any(
                other["datasetId"] == dataset["id"] and other["input"] == body.get("input")
                for other in self.state.dataset_items.values()
            ):
                self.state.dataset_item_duplicates.append(body)
            item = {
                "id": item_id,
                "status": body.get("status") or "ACTIVE",
                "input": body.get("input"),
                "expectedOutput": body.get("expectedOutput"),
                "metadata": body.get("metadata"),
                "sourceTraceId": body.get("sourceTraceId"),
                "sourceObservationId": body.get("sourceObservationId"),
                "datasetId": dataset["id"],
                "datasetName": dataset["name"],
                "createdAt": old["createdAt"] if old else now,
                "updatedAt": now,
                "mediaReferences": [],
            }
            self.state.dataset_items[item_id] = item
        self._send(200, item)

    def _record_experiment_item(self, span: RecordedSpan) -> None:
        experiment = span.attributes.get("langfuse.experiment.id")
        item = span.attributes.get("langfuse.experiment.item.id")
        if (
            not experiment
            or not item
            or span.attributes.get("langfuse.experiment.item.root_observation_id") != span.span_id
        ):
            return
        key = (span.trace_id, span.span_id, span.start_time_unix_nano)
        for other_key, other in self.state.experiment_items.items():
            if other_key != key and (
                other.attributes.get("langfuse.experiment.id"),
                other.attributes.get("langfuse.experiment.item.id"),
            ) == (experiment, item):
                self.state.experiment_item_duplicates.append(span)
                return
        self.state.experiment_items[key] = span

    def do_DELETE(self) -> None:
        match = re.fullmatch(r"/api/public/scores/([^/?]+)", self.path)
        if not match:
            self._send(404, {"message": "not found"})
            return
        if self._refused_by_mode_scores():
            return
        score_id = match.group(1)
        with self.state.lock:
            self.state.deletes.append(score_id)
            # Queued without delay; the worker deletes whatever rows of the id exist by then.
            self.state.events.append(
                _ScoreEvent(self.state.clock(), len(self.state.events), "delete", score_id)
            )
        # scores/[scoreId].ts: successStatusCode 202, whether or not the score exists.
        self._send(202, {"message": "Score deletion queued successfully"})


class _ReusableServer(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


class FakeLangfuse:
    """A real HTTP server on 127.0.0.1 that answers like Langfuse's public API.

    `refuse()` closes its port (connections are refused) and `accept()` opens it again on
    the same port, with everything it recorded kept.
    """

    def __init__(self, generation: str = SINGLE, *, clock: Callable[[], float] | None = None) -> None:
        if generation not in GENERATIONS:
            raise ValueError(f"unknown Langfuse generation {generation!r}")
        self.state = FakeLangfuseState(generation=generation)
        if clock is not None:
            self.state.clock = clock
        self._handler = type("Handler", (_Handler,), {"state": self.state})
        self.server: ThreadingHTTPServer | None = _ReusableServer(("127.0.0.1", 0), self._handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def generation(self) -> str:
        return self.state.generation

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeLangfuse:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.refuse()

    def refuse(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def accept(self) -> None:
        if self.server is None:
            self.server = _ReusableServer(("127.0.0.1", self.port), self._handler)
            self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
            self.thread.start()

    def spans_of(self, trace_id: str) -> list[RecordedSpan]:
        with self.state.lock:
            return [s for s in self.state.spans if s.trace_id == trace_id]

    def roots(self) -> list[RecordedSpan]:
        """Trace roots as the server finds them (eventsTable.ts: no parent, or is_app_root)."""
        with self.state.lock:
            return [s for s in self.state.spans if s.is_root]
