"""A dataset run, published to Langfuse: the dataset and its items, the run with every item linked
to the agent's own trace of it, and the run's scores. Idempotent: publishing again changes nothing.

Why not `Langfuse.run_experiment`: it runs the task itself, each item inside a new
"experiment-item-run" observation of a new trace, with random observation and score ids. Our items
already ran, each as a trace of its own (the agent's spans, the `dataset-correct` score); a second
trace per item, or a second run item at every publish, is what this must not make. In the v5 SDK a
dataset run (an "experiment") has no API call of its own: run_experiment records it only through
the `langfuse.experiment.*` attributes of each item's observations (Langfuse derives the run and its
items from them) and through run-level scores sent with `dataset_run_id` = the experiment id.

This module does the same, on our traces. Each item gets one observation of its own, a child of
the item's root span, whose span id is derived from the run and the item: the item's root
observation (run_experiment's "experiment-item-task"), whose duration, the root's, is the item's
latency. The server sums an item's cost over the observations that carry the experiment
attributes, and run_experiment puts them on every span of the item; so the agent's own spans of
the item, exported during the run without them, are read back from the store and sent again with
them, under the same trace id, span id and start time: the server's events table is keyed on
those, so it replaces each row in place. What Langfuse reads from a span travels with it: its
attributes as stored (span kind, token counts, cost details), its instrumentation scope and the
resource. The run scores have stable ids and the run's first timestamp.

The calls are the SDK's REST client (`LangfuseAPI`, what `Langfuse.api` is) and the OTLP endpoint,
made synchronously so a failure is known and reported instead of logged and dropped; the scores go
through feedback.langfuse_scores, which speaks whichever form of the scores endpoint the server
takes. No `Langfuse` client is built (it is a per-key singleton: after the app's client shut down,
a new one with the same keys would silently drop what it is given). Only the SDK's public modules
are imported: the span attribute names are ours (LangfuseAttributes), and
tests/evals/test_langfuse_sdk_names.py fails when the SDK's own change.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import importlib.metadata
import json
import logging
import math
import shlex
import sys
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import httpx
from langfuse.api.client import LangfuseAPI
from langfuse.api.core.api_error import ApiError
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, Status, StatusCode

from config.settings import Settings
from evals.dataset_run import SCORE_NAME
from evals.datasets import GSM8K
from feedback.exporter import APP_TRACER_NAME
from feedback.langfuse_scores import BATCH, REJECTED, RETRY, ScoresEndpoint
from feedback.store import Store, StoreError
from feedback.stored_spans import is_attribute, readable_span, span_context
from feedback.tracing import service_resource

log = logging.getLogger(__name__)

_IDS = uuid.UUID("6f1d3c2a-8b4e-4f7a-9c21-5e0b7d9a3f64")
RUN_ITEM_SPAN = "dataset-run-item"
# Dataset items go in parallel calls of this many (the API takes one item a call).
ITEM_CALLS_AT_ONCE = 8
# One OTLP request holds at most this many spans, or about this many bytes of attributes (LLM
# spans carry whole prompts: tens of KB each).
SPANS_PER_EXPORT = 200
BYTES_PER_EXPORT = 4_000_000

LANGFUSE_VERSION = importlib.metadata.version("langfuse")
# The SDK's tracer name (langfuse._client.constants, private): the server reads a span's scope.
LANGFUSE_TRACER_NAME = "langfuse-sdk"
# The scope of OpenInference's smolagents spans (its module name, what it passes to get_tracer).
OPENINFERENCE_SCOPE = "openinference.instrumentation.smolagents"


class LangfuseAttributes:
    """The span attribute names the Langfuse SDK writes and the server reads, under the SDK's own
    names (langfuse._client.attributes.LangfuseOtelSpanAttributes is a private module)."""

    TRACE_USER_ID = "user.id"
    TRACE_SESSION_ID = "session.id"
    TRACE_TAGS = "langfuse.trace.tags"
    OBSERVATION_TYPE = "langfuse.observation.type"
    OBSERVATION_METADATA = "langfuse.observation.metadata"
    OBSERVATION_LEVEL = "langfuse.observation.level"
    OBSERVATION_STATUS_MESSAGE = "langfuse.observation.status_message"
    OBSERVATION_INPUT = "langfuse.observation.input"
    OBSERVATION_OUTPUT = "langfuse.observation.output"
    EXPERIMENT_ID = "langfuse.experiment.id"
    EXPERIMENT_NAME = "langfuse.experiment.name"
    EXPERIMENT_DESCRIPTION = "langfuse.experiment.description"
    EXPERIMENT_METADATA = "langfuse.experiment.metadata"
    EXPERIMENT_DATASET_ID = "langfuse.experiment.dataset.id"
    EXPERIMENT_ITEM_ID = "langfuse.experiment.item.id"
    EXPERIMENT_ITEM_EXPECTED_OUTPUT = "langfuse.experiment.item.expected_output"
    EXPERIMENT_ITEM_METADATA = "langfuse.experiment.item.metadata"
    EXPERIMENT_ITEM_ROOT_OBSERVATION_ID = "langfuse.experiment.item.root_observation_id"


A = LangfuseAttributes
# What run_experiment propagates to every span of an item (its "experiment_*" propagated keys).
EXPERIMENT_EVERY_SPAN = (
    A.EXPERIMENT_ID,
    A.EXPERIMENT_NAME,
    A.EXPERIMENT_METADATA,
    A.EXPERIMENT_DATASET_ID,
    A.EXPERIMENT_ITEM_ID,
    A.EXPERIMENT_ITEM_METADATA,
    A.EXPERIMENT_ITEM_ROOT_OBSERVATION_ID,
)
# What it sets only on the item's root observation and on that observation's parent, the trace root.
# (It also sets `langfuse.environment` = "sdk-experiment" on every span, and an item version when
# run on a pinned dataset version. Not here: the traces are the app's own, already filed with their
# scores under the app's environment, which a second environment would split from them.)
EXPERIMENT_ROOTS_ONLY = (A.EXPERIMENT_DESCRIPTION, A.EXPERIMENT_ITEM_EXPECTED_OUTPUT)


@dataclass(frozen=True)
class PublishReport:
    """What publishing a run did; `message` is one sentence for the person who asked."""

    run: str
    ok: bool  # nothing failed (also True when there was nothing to do)
    sent: bool  # Langfuse was written to
    message: str
    dataset: str | None = None
    items: int = 0  # dataset items upserted
    linked: int = 0  # run items linked to their trace
    unlinked: int = 0  # results without a trace (not in the run in Langfuse)
    resent: int = 0  # the agent's spans sent again with the run's attributes (its cost and latency)
    without_spans: int = 0  # linked items whose spans are no longer in the store (no cost in the run)
    scores: dict[str, float] = field(default_factory=dict)  # run-level scores sent
    experiment_id: str | None = None
    url: str | None = None
    pending_item_scores: int = 0  # item scores still waiting in the store's outbox

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def dataset_item_id(dataset: str, item_id: str) -> str:
    """The Langfuse id of one of our items: item ids are unique per project, so the dataset is in it."""
    return str(uuid.uuid5(_IDS, f"item|{dataset}|{item_id}"))


def experiment_id_for(project_id: str, dataset_id: str, run_name: str) -> str:
    """The run's id in Langfuse, derived as the SDK and the server derive it for a dataset run, so
    run_experiment(run_name=...) on the same dataset would record into the same run."""
    payload = json.dumps(
        ["langfuse-experiment-v1", project_id, dataset_id, run_name],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def run_item_span_id(experiment_id: str, langfuse_item_id: str) -> str:
    """The observation id of one run item: the same at every publish (Langfuse upserts it)."""
    digest = hashlib.sha256(f"run-item|{experiment_id}|{langfuse_item_id}".encode()).hexdigest()
    return digest[:16] if int(digest[:16], 16) else "0000000000000001"


def run_score_id(experiment_id: str, name: str) -> str:
    return str(uuid.uuid5(_IDS, f"run-score|{experiment_id}|{name}"))


def run_scores(results: Sequence[dict[str, Any]], other_means: dict[str, float]) -> dict[str, float]:
    """Accuracy, flexible accuracy, and the mean of every other numeric score on the run's traces."""
    n = len(results)
    scores = {
        "accuracy": sum(int(r["strict"]) for r in results) / n if n else 0.0,
        "flexible_accuracy": sum(int(r["flexible"]) for r in results) / n if n else 0.0,
    }
    for name, mean in sorted(other_means.items()):
        scores[f"{name}_mean"] = mean
    return scores


def _serialized(value: Any) -> str | None:
    return value if value is None or isinstance(value, str) else json.dumps(value, default=str)


def observation_attributes(
    *,
    input: Any = None,
    output: Any = None,
    level: str | None = None,
    status_message: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A span observation's attributes as the SDK writes them (its private create_span_attributes):
    input and output JSON unless text, each metadata value JSON-encoded under its own key."""
    attributes = {
        A.OBSERVATION_TYPE: "span",
        A.OBSERVATION_LEVEL: level,
        A.OBSERVATION_STATUS_MESSAGE: status_message,
        A.OBSERVATION_INPUT: _serialized(input),
        A.OBSERVATION_OUTPUT: _serialized(output),
        **{
            f"{A.OBSERVATION_METADATA}.{key}": json.dumps(
                value, separators=(",", ":"), ensure_ascii=False, default=str
            )
            for key, value in (metadata or {}).items()
            if value is not None
        },
    }
    return {k: v for k, v in attributes.items() if v is not None}


@dataclass
class _Run:
    name: str
    dataset: str
    model: str | None
    created: float
    results: list[dict[str, Any]]
    traces: dict[str, dict[str, Any]]
    other_means: dict[str, float]
    pending_item_scores: int


def _read_run(store: Store, run_name: str) -> _Run | None:
    run = store.row("SELECT name, dataset, model, created FROM dataset_runs WHERE name = :r", {"r": run_name})
    if run is None:
        return None
    results = store.rows("SELECT * FROM dataset_results WHERE run = :r ORDER BY item_id", {"r": run_name})
    mine = "SELECT trace_id FROM dataset_results WHERE run = :r AND trace_id IS NOT NULL"
    traces = {
        t["id"]: t
        for t in store.rows(
            f"SELECT id, user_id, session_id, tags, start_time, end_time FROM traces WHERE id IN ({mine})",
            {"r": run_name},
        )
    }
    means = {
        s["name"]: float(s["mean"])
        for s in store.rows(
            f"""SELECT name, AVG(value) AS mean FROM scores
                WHERE trace_id IN ({mine}) AND deleted = 0 AND value IS NOT NULL
                  AND data_type IN ('NUMERIC', 'BOOLEAN') AND name <> :own
                GROUP BY name""",
            {"r": run_name, "own": SCORE_NAME},
        )
        if s["mean"] is not None
    }
    pending = store.row(
        f"""SELECT COUNT(*) AS n FROM scores WHERE trace_id IN ({mine}) AND name = :own
              AND delivered_version < version AND rejected_version < version""",
        {"r": run_name, "own": SCORE_NAME},
    )
    return _Run(
        run["name"], run["dataset"], run["model"], float(run["created"]), results, traces, means,
        int((pending or {}).get("n") or 0),
    )  # fmt: skip


class _Failed(Exception):
    """A Langfuse call failed; the message is the report's sentence."""


def _later(run_name: str) -> str:
    return f"the run is kept in the store; publish it later with python -m evals dataset publish {shlex.quote(run_name)}"


def _explain(exc: Exception, what: str, run_name: str, base_url: str) -> str:
    if isinstance(exc, ApiError):
        if exc.status_code in (401, 403):
            return (
                f"Langfuse rejected the keys (HTTP {exc.status_code}): the run is kept in the store; fix "
                f"LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY, then publish it with python -m evals dataset "
                f"publish {shlex.quote(run_name)}."
            )
        body = exc.body
        if isinstance(body, dict):
            body = body.get("message") or body.get("error") or body
        detail = f"HTTP {exc.status_code}: {str(body)[:200]}"
        return f"Langfuse refused {what} ({detail}): {_later(run_name)}."
    if isinstance(exc, (httpx.TransportError, OSError)):
        return f"Langfuse is unreachable at {base_url} ({type(exc).__name__}): {_later(run_name)}."
    return f"Sending {what} to Langfuse failed ({type(exc).__name__}: {str(exc)[:200]}): {_later(run_name)}."


def _ns(epoch_s: float) -> int:
    """Our own run item's times: the same at every publish (its start is in its upsert key)."""
    return int(epoch_s * 1e9)


def _size(span: ReadableSpan) -> int:
    return 200 + sum(len(k) + len(str(v)) for k, v in (span.attributes or {}).items())


def _resource(settings: Settings) -> Resource:
    """The resource the app's tracer provider gives its spans, which the store does not keep: the
    server reads service.name and .version, telemetry.sdk.*, the environment and the release from
    it. Without the random service.instance.id of this process, so a re-publish sends the same."""
    resource = service_resource(settings)
    return Resource({k: v for k, v in resource.attributes.items() if k != "service.instance.id"})


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


class _Publisher:
    def __init__(self, settings: Settings, run: _Run, store: Store) -> None:
        self.settings = settings
        self.run = run
        self.store = store
        self.base_url = settings.langfuse_base_url.rstrip("/")
        timeout = max(1, int(round(settings.langfuse_timeout_s)))
        self._http = httpx.Client(timeout=timeout)
        self.api = LangfuseAPI(
            base_url=self.base_url,
            username=settings.langfuse_public_key,
            password=settings.langfuse_secret_key,
            x_langfuse_sdk_name="python",
            x_langfuse_sdk_version=LANGFUSE_VERSION,
            x_langfuse_public_key=settings.langfuse_public_key,
            httpx_client=self._http,
            timeout=timeout,
        )
        # A 5xx or 429 is tried again twice (the SDK's backoff); a refused connection is not.
        self.options: Any = {"max_retries": 2, "timeout_in_seconds": timeout}
        self.timeout = timeout
        self.resource = _resource(settings)
        # The scopes a stored span can have been exported under (the store does not keep its scope).
        self.langfuse_scope = InstrumentationScope(
            LANGFUSE_TRACER_NAME, LANGFUSE_VERSION, attributes={"public_key": settings.langfuse_public_key}
        )
        self.openinference_scope = InstrumentationScope(
            OPENINFERENCE_SCOPE, _version("openinference-instrumentation-smolagents")
        )
        self.app_scope = InstrumentationScope(APP_TRACER_NAME)
        self.resent = 0
        self.without_spans = 0

    def close(self) -> None:
        self._http.close()

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, request_options=self.options, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the report's sentence
            raise _Failed(_explain(exc, what, self.run.name, self.base_url)) from exc

    def project_id(self) -> str:
        projects = self.call("the project lookup", self.api.projects.get)
        if not projects.data:
            raise _Failed(f"Langfuse found no project for these keys: {_later(self.run.name)}.")
        return str(projects.data[0].id)

    def dataset_id(self) -> str:
        run = self.run
        description = (
            "GSM8K test split (MIT licence), graded by the final number of the answer"
            if run.dataset == GSM8K
            else f"Dataset {run.dataset}, graded by python -m evals dataset run"
        )
        dataset = self.call(
            f"the dataset {run.dataset!r}",
            self.api.datasets.create,
            name=run.dataset,
            description=description,
            metadata={"source": "smolagents-chat offline evaluation"},
        )
        return str(dataset.id)

    def upsert_items(self) -> int:
        run = self.run

        def upsert(result: dict[str, Any]) -> None:
            self.call(
                f"the dataset item {result['item_id']!r}",
                self.api.dataset_items.create,
                dataset_name=run.dataset,
                id=dataset_item_id(run.dataset, result["item_id"]),
                input=result["input"],
                expected_output=result["expected"],
                metadata={"item_id": result["item_id"], "dataset": run.dataset},
            )

        with ThreadPoolExecutor(ITEM_CALLS_AT_ONCE, thread_name_prefix="langfuse-items") as pool:
            for _ in pool.map(upsert, run.results):
                pass
        return len(run.results)

    def scope_of(self, attributes: dict[str, Any]) -> InstrumentationScope:
        """The scope a stored span was first exported under, which the server reads (whether its
        attributes go to the metadata, how its input is found): OpenInference's spans have a span
        kind; the root the app opens without Langfuse sets `input.value`, which the Langfuse SDK,
        which opens the root otherwise, never does."""
        if "openinference.span.kind" in attributes:
            return self.openinference_scope
        if "input.value" in attributes:
            return self.app_scope
        return self.langfuse_scope

    def stored_span(self, row: dict[str, Any], extra: dict[str, Any]) -> ReadableSpan:
        """One of the agent's spans as it was exported during the run, plus `extra` attributes:
        same ids, same times, same attributes (the cost details and token counts where they were)."""
        attributes = {k: v for k, v in json.loads(row["attributes"] or "{}").items() if is_attribute(v)}
        return readable_span(row, self.resource, self.scope_of({**attributes, **extra}), extra)

    def stored_spans(self, trace_id: str) -> list[dict[str, Any]]:
        try:
            return self.store.spans_of(trace_id)
        except StoreError as exc:
            raise _Failed(
                f"Cannot read the spans of trace {trace_id} from the store ({exc}): {_later(self.run.name)}."
            ) from exc

    def item_spans(self, experiment_id: str, dataset_id: str, result: dict[str, Any]) -> list[ReadableSpan]:
        """One item's spans in its own trace: its root observation (RUN_ITEM_SPAN, under the agent's
        root span) and the agent's stored spans, each with the attributes run_experiment gives it."""
        run, r = self.run, result
        trace_id = r["trace_id"]
        item_id = dataset_item_id(run.dataset, r["item_id"])
        span_id = run_item_span_id(experiment_id, item_id)
        stored = self.stored_spans(trace_id)
        root = next((s for s in stored if s["parent_id"] is None), None)
        trace = run.traces.get(trace_id) or {}
        every_span = {
            A.EXPERIMENT_ID: experiment_id,
            A.EXPERIMENT_NAME: run.name,
            A.EXPERIMENT_METADATA: json.dumps({"dataset": run.dataset, "run": run.name, "model": run.model}),
            A.EXPERIMENT_DATASET_ID: dataset_id,
            A.EXPERIMENT_ITEM_ID: item_id,
            A.EXPERIMENT_ITEM_METADATA: json.dumps({"item_id": r["item_id"], "dataset": run.dataset}),
            A.EXPERIMENT_ITEM_ROOT_OBSERVATION_ID: span_id,
        }
        roots_only = {
            A.EXPERIMENT_DESCRIPTION: (
                f"python -m evals dataset run {run.dataset} --run-name {run.name} (model {run.model or '?'})"
            ),
            A.EXPERIMENT_ITEM_EXPECTED_OUTPUT: r["expected"] or "",
        }
        start = (root or trace).get("start_time") or r["created"] - (r["latency_ms"] or 0) / 1000
        end = (root or trace).get("end_time") or r["created"]
        attributes: dict[str, Any] = {
            **observation_attributes(
                input=r["input"],
                output=r["answer"],
                level="ERROR" if r["error"] else None,
                status_message=r["error"],
                metadata={
                    "experiment_name": run.dataset,
                    "experiment_run_name": run.name,
                    "dataset_id": dataset_id,
                    "dataset_item_id": item_id,
                    "item_id": r["item_id"],
                    "strict": bool(r["strict"]),
                    "flexible": bool(r["flexible"]),
                    "has_number": bool(r["has_number"]),
                    "latency_ms": r["latency_ms"],
                },
            ),
            **every_span,
            **roots_only,
        }
        # The trace's own attributes, as the app propagates them to every span of a turn.
        if trace.get("user_id"):
            attributes[A.TRACE_USER_ID] = trace["user_id"]
        if trace.get("session_id"):
            attributes[A.TRACE_SESSION_ID] = trace["session_id"]
        tags = json.loads(trace["tags"]) if trace.get("tags") else None
        if isinstance(tags, list) and tags:
            attributes[A.TRACE_TAGS] = [str(t) for t in tags]
        item = ReadableSpan(
            name=RUN_ITEM_SPAN,
            context=span_context(trace_id, span_id),
            # Spans pruned from the store: a root of the same trace, as before the spans were sent.
            parent=span_context(trace_id, root["span_id"]) if root is not None else None,
            resource=self.resource,
            attributes=attributes,
            kind=SpanKind.INTERNAL,
            status=Status(StatusCode.ERROR, r["error"]) if r["error"] else Status(StatusCode.UNSET),
            start_time=_ns(start),
            end_time=_ns(max(start, end)),
            instrumentation_scope=self.langfuse_scope,
        )
        if not stored:
            self.without_spans += 1
        self.resent += len(stored)
        return [item] + [
            self.stored_span(s, {**every_span, **(roots_only if s is root else {})}) for s in stored
        ]

    def publish_items(self, experiment_id: str, dataset_id: str) -> int:
        """Send every linked item's spans, a store read per item and a request per batch (a run's
        spans with their prompts do not all fit in memory or one request); the items linked."""
        batch: list[ReadableSpan] = []
        size = linked = 0
        with self.exporter() as export:
            for result in self.run.results:
                if not result["trace_id"]:
                    continue
                linked += 1
                for span in self.item_spans(experiment_id, dataset_id, result):
                    batch.append(span)
                    size += _size(span)
                    if len(batch) >= SPANS_PER_EXPORT or size >= BYTES_PER_EXPORT:
                        export(batch)
                        batch, size = [], 0
            if batch:
                export(batch)
        return linked

    @contextlib.contextmanager
    def exporter(self) -> Iterator[Any]:
        """A function that sends a batch of spans to the OTLP endpoint or raises _Failed."""
        auth = base64.b64encode(
            f"{self.settings.langfuse_public_key}:{self.settings.langfuse_secret_key}".encode()
        ).decode("ascii")
        exporter = OTLPSpanExporter(
            endpoint=f"{self.base_url}/api/public/otel/v1/traces",
            headers={
                "Authorization": f"Basic {auth}",
                "x-langfuse-sdk-name": "python",
                "x-langfuse-sdk-version": LANGFUSE_VERSION,
                "x-langfuse-public-key": self.settings.langfuse_public_key,
                "x-langfuse-ingestion-version": "4",
            },
            timeout=self.timeout,
            compression=Compression.Gzip,
        )

        def export(spans: list[ReadableSpan]) -> None:
            try:
                result = exporter.export(spans)
            except Exception as exc:  # noqa: BLE001 - reported, never raised
                raise _Failed(_explain(exc, "the run's items", self.run.name, self.base_url)) from exc
            if result is not SpanExportResult.SUCCESS:
                raise _Failed(
                    f"Langfuse did not take the run's items (the trace export to {self.base_url} failed): "
                    f"{_later(self.run.name)}."
                )

        try:
            yield export
        finally:
            exporter.shutdown()

    def send_scores(self, experiment_id: str, scores: dict[str, float]) -> None:
        """One call per run score, in whichever form this server takes (ScoresEndpoint): self-hosted
        servers take one score object a call and refuse a list, the current one takes a list."""
        run = self.run
        n = len(run.results)
        correct = sum(int(r["strict"]) for r in run.results)
        # Langfuse updates a score sent again only with the same id and timestamp: the run's first.
        timestamp = datetime.fromtimestamp(run.created, UTC).isoformat()
        comments = {
            "accuracy": f"{correct}/{n} right (the final number, exactly)",
            "flexible_accuracy": f"{sum(int(r['flexible']) for r in run.results)}/{n} right (the last number)",
        }
        bodies = [
            {
                "id": run_score_id(experiment_id, name),
                "datasetRunId": experiment_id,
                "name": name,
                "value": float(value),
                "dataType": "NUMERIC",
                "timestamp": timestamp,
                "comment": comments.get(name, f"mean over the run's {n} traces"),
                "metadata": {"run": run.name, "dataset": run.dataset, "items": n},
                # With the traces and the ratings: Langfuse filters everything by environment.
                "environment": self.settings.environment,
            }
            for name, value in scores.items()
            if math.isfinite(value)
        ]
        endpoint = ScoresEndpoint(
            self.base_url,
            self.settings.langfuse_public_key,
            self.settings.langfuse_secret_key,
            self.settings.langfuse_timeout_s,
        )
        rejected = []
        try:
            for body in bodies:
                if endpoint.generation != BATCH:
                    # A server that drops `timestamp` files a score under the day it received it:
                    # a publish on a later day would leave a second row. The delete runs at once,
                    # the create lands seconds after it, so one row remains.
                    gone = endpoint.delete(body["id"])
                    if gone.outcome == RETRY:
                        raise _Failed(
                            f"Langfuse could not take the run's scores now ({gone.message[:200]}), "
                            f"a later publish sends them: {_later(run.name)}."
                        )
                delivery = endpoint.create(body)
                if delivery.outcome == RETRY:
                    raise _Failed(
                        f"Langfuse could not take the run's scores now ({delivery.message[:200]}), "
                        f"a later publish sends them: {_later(run.name)}."
                    )
                if delivery.outcome == REJECTED:
                    rejected.append(f"{body['name']}: {delivery.message}")
        finally:
            endpoint.close()
        if rejected:
            reasons = "; ".join(rejected)
            raise _Failed(f"Langfuse rejected the run's scores ({reasons[:200]}): {_later(run.name)}.")


def publish_run(settings: Settings, store: Store, run_name: str) -> PublishReport:
    """Send one run of the store to Langfuse; never raises (the report says what happened)."""
    try:
        run = _read_run(store, run_name)
    except StoreError as exc:
        return PublishReport(
            run_name, False, False, f"Cannot read the run {run_name!r} from the store: {exc}"
        )
    if run is None:
        return PublishReport(
            run_name, False, False, f"No run named {run_name!r} in the store (python -m evals dataset list)."
        )
    if not settings.langfuse_enabled:
        return PublishReport(
            run_name, True, False,
            f"Langfuse is off (no LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY): the run {run_name!r} is kept in the store only.",
            dataset=run.dataset,
        )  # fmt: skip
    if not run.results:
        return PublishReport(
            run_name,
            True,
            False,
            f"The run {run_name!r} has no results yet: nothing to publish.",
            run.dataset,
        )
    publisher = _Publisher(settings, run, store)
    sent = False
    scores = run_scores(run.results, run.other_means)
    try:
        project_id = publisher.project_id()
        dataset_id = publisher.dataset_id()
        sent = True
        items = publisher.upsert_items()
        experiment_id = experiment_id_for(project_id, dataset_id, run.name)
        linked = publisher.publish_items(experiment_id, dataset_id)
        publisher.send_scores(experiment_id, scores)
    except _Failed as exc:
        return PublishReport(run_name, False, sent, str(exc), dataset=run.dataset)
    except Exception as exc:  # noqa: BLE001 - publishing must never break the caller
        log.exception("Publishing run %s to Langfuse failed", run_name)
        message = (
            f"Publishing to Langfuse failed ({type(exc).__name__}: {str(exc)[:200]}): {_later(run_name)}."
        )
        return PublishReport(run_name, False, sent, message, dataset=run.dataset)
    finally:
        publisher.close()
    url = (
        f"{publisher.base_url}/project/{urllib.parse.quote(project_id)}/experiments/results"
        f"?baseline={urllib.parse.quote(experiment_id, safe='')}"
    )
    unlinked = len(run.results) - linked
    missing = publisher.without_spans
    message = (
        f"Published run {run_name!r} to Langfuse: dataset {run.dataset!r}, {linked} items linked to their "
        f"traces, accuracy {scores['accuracy']:.1%}"
        + (f", {unlinked} items without a trace not linked" if unlinked else "")
        + (
            f", {missing} items whose spans are no longer in the store (their cost is not in the run)"
            if missing
            else ""
        )
        + (
            f", {run.pending_item_scores} item scores still waiting in the outbox (python -m feedback sync)"
            if run.pending_item_scores
            else ""
        )
        + f" ({url})."
    )
    return PublishReport(
        run_name, True, True, message, dataset=run.dataset, items=items, linked=linked, unlinked=unlinked,
        resent=publisher.resent, without_spans=missing, scores=scores, experiment_id=experiment_id, url=url,
        pending_item_scores=run.pending_item_scores,
    )  # fmt: skip


def cmd_dataset_publish(ctx: Any, args: argparse.Namespace, out: TextIO) -> int:
    """`python -m evals dataset publish RUN [--json]`: exit 0 published, 1 failed, 2 nothing to publish to."""
    report = publish_run(ctx.settings, ctx.store, args.run)
    if getattr(args, "json", False):
        out.write(json.dumps(report.as_dict()) + "\n")
    elif report.ok:
        out.write(report.message + "\n")
    else:
        print(report.message, file=sys.stderr)
    if not report.ok:
        return 1
    return 0 if report.sent or ctx.settings.langfuse_enabled else 2
