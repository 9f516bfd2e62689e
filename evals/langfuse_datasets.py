"""A dataset run, published to Langfuse: the dataset and its items, the run with every item linked
to the agent's own trace of it, and the run's scores. Idempotent: publishing again changes nothing.

Why not `Langfuse.run_experiment`: it runs the task itself, each item inside a new
"experiment-item-run" observation of a new trace, with random observation and score ids. Our items
already ran, each as a trace of its own (the agent's spans, the `dataset-correct` score); a second
trace per item, or a second run item at every publish, is what this must not make. In the v5 SDK a
dataset run (an "experiment") has no API call of its own: run_experiment records it only through
the `langfuse.experiment.*` attributes of each item's observation (Langfuse derives the run and its
items from them) and through run-level scores sent with `dataset_run_id` = the experiment id. This
module does the same, on our traces: one observation per item, a child of the item's root span,
whose span id is derived from the run and the item (a re-publish sends the same observation again,
which Langfuse upserts), and run scores with stable ids and the run's first timestamp. The calls
are the SDK's own REST client (`LangfuseAPI`, what `Langfuse.api` is) and its span attributes and
OTLP endpoint, made synchronously so a failure is known and reported instead of logged and dropped;
no `Langfuse` client is built (it is a per-key singleton: after the app's client shut down, a new
one with the same keys would silently drop what it is given).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import math
import shlex
import sys
import urllib.parse
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import httpx
from langfuse._client.attributes import LangfuseOtelSpanAttributes as A
from langfuse._client.attributes import create_span_attributes
from langfuse._client.constants import LANGFUSE_TRACER_NAME
from langfuse._version import __version__ as langfuse_version
from langfuse.api.client import LangfuseAPI
from langfuse.api.core.api_error import ApiError
from langfuse.api.scores.types.create_score_batch_results import CreateScoreBatchResults
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from config.settings import Settings
from evals.dataset_run import SCORE_NAME
from evals.datasets import GSM8K
from feedback.store import Store, StoreError

log = logging.getLogger(__name__)

_IDS = uuid.UUID("6f1d3c2a-8b4e-4f7a-9c21-5e0b7d9a3f64")
RUN_ITEM_SPAN = "dataset-run-item"
# Dataset items and run items go in parallel calls of this many (the API takes one item a call).
ITEM_CALLS_AT_ONCE = 8
SPANS_PER_EXPORT = 200


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


@dataclass
class _Run:
    name: str
    dataset: str
    model: str | None
    created: float
    results: list[dict[str, Any]]
    roots: dict[str, dict[str, Any]]  # trace id -> its root span (from the store)
    traces: dict[str, dict[str, Any]]
    other_means: dict[str, float]
    pending_item_scores: int


def _read_run(store: Store, run_name: str) -> _Run | None:
    run = store.row("SELECT name, dataset, model, created FROM dataset_runs WHERE name = :r", {"r": run_name})
    if run is None:
        return None
    results = store.rows("SELECT * FROM dataset_results WHERE run = :r ORDER BY item_id", {"r": run_name})
    mine = "SELECT trace_id FROM dataset_results WHERE run = :r AND trace_id IS NOT NULL"
    roots = {
        s["trace_id"]: s
        for s in store.rows(
            f"""SELECT trace_id, span_id, start_time, end_time FROM spans
                WHERE parent_id IS NULL AND trace_id IN ({mine})""",
            {"r": run_name},
        )
    }
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
        run["name"], run["dataset"], run["model"], float(run["created"]), results, roots, traces, means,
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


class _GivenIds(IdGenerator):
    """Hands out the ids the caller chose for the next span (stable ids make a re-publish an upsert)."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id


class _Collect(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def _ns(epoch_s: float) -> int:
    return int(epoch_s * 1e9)


class _Publisher:
    def __init__(self, settings: Settings, run: _Run) -> None:
        self.settings = settings
        self.run = run
        self.base_url = settings.langfuse_base_url.rstrip("/")
        timeout = max(1, int(round(settings.langfuse_timeout_s)))
        self._http = httpx.Client(timeout=timeout)
        self.api = LangfuseAPI(
            base_url=self.base_url,
            username=settings.langfuse_public_key,
            password=settings.langfuse_secret_key,
            x_langfuse_sdk_name="python",
            x_langfuse_sdk_version=langfuse_version,
            x_langfuse_public_key=settings.langfuse_public_key,
            httpx_client=self._http,
            timeout=timeout,
        )
        # A 5xx or 429 is tried again twice (the SDK's backoff); a refused connection is not.
        self.options: Any = {"max_retries": 2, "timeout_in_seconds": timeout}
        self.timeout = timeout

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

    def run_item_spans(self, experiment_id: str, dataset_id: str) -> list[ReadableSpan]:
        """One observation per item in the item's own trace, carrying what run_experiment puts on
        its item observations (the experiment, dataset, item and root-observation ids)."""
        run = self.run
        ids, collect = _GivenIds(), _Collect()
        provider = TracerProvider(id_generator=ids, shutdown_on_exit=False)
        provider.add_span_processor(collect)
        tracer = provider.get_tracer(
            LANGFUSE_TRACER_NAME,
            langfuse_version,
            attributes={"public_key": self.settings.langfuse_public_key},
        )
        description = (
            f"python -m evals dataset run {run.dataset} --run-name {run.name} (model {run.model or '?'})"
        )
        experiment_metadata = json.dumps({"dataset": run.dataset, "run": run.name, "model": run.model})
        for r in run.results:
            trace_id = r["trace_id"]
            if not trace_id:
                continue
            item_id = dataset_item_id(run.dataset, r["item_id"])
            span_id = run_item_span_id(experiment_id, item_id)
            ids.trace_id, ids.span_id = int(trace_id, 16), int(span_id, 16)
            root = run.roots.get(trace_id)
            trace = run.traces.get(trace_id) or {}
            if root is not None:
                parent = SpanContext(
                    int(trace_id, 16), int(root["span_id"], 16), is_remote=True, trace_flags=TraceFlags(1)
                )
                ctx = otel_trace.set_span_in_context(NonRecordingSpan(parent))
            else:
                ctx = otel_context.Context()  # spans pruned from the store: a root of the same trace
            start = (root or trace).get("start_time") or r["created"] - (r["latency_ms"] or 0) / 1000
            end = (root or trace).get("end_time") or r["created"]
            attributes: dict[str, Any] = {
                **create_span_attributes(
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
                A.EXPERIMENT_ID: experiment_id,
                A.EXPERIMENT_NAME: run.name,
                A.EXPERIMENT_DESCRIPTION: description,
                A.EXPERIMENT_METADATA: experiment_metadata,
                A.EXPERIMENT_DATASET_ID: dataset_id,
                A.EXPERIMENT_ITEM_ID: item_id,
                A.EXPERIMENT_ITEM_EXPECTED_OUTPUT: r["expected"] or "",
                A.EXPERIMENT_ITEM_METADATA: json.dumps({"item_id": r["item_id"], "dataset": run.dataset}),
                A.EXPERIMENT_ITEM_ROOT_OBSERVATION_ID: span_id,
            }
            # The trace's own attributes, as the app propagates them to every span of a turn.
            if trace.get("user_id"):
                attributes[A.TRACE_USER_ID] = trace["user_id"]
            if trace.get("session_id"):
                attributes[A.TRACE_SESSION_ID] = trace["session_id"]
            tags = json.loads(trace["tags"]) if trace.get("tags") else None
            if isinstance(tags, list) and tags:
                attributes[A.TRACE_TAGS] = [str(t) for t in tags]
            span = tracer.start_span(RUN_ITEM_SPAN, context=ctx, attributes=attributes, start_time=_ns(start))
            if r["error"]:
                span.set_status(Status(StatusCode.ERROR, r["error"]))
            span.end(end_time=_ns(max(start, end)))
        provider.shutdown()
        return collect.spans

    def export(self, spans: list[ReadableSpan]) -> None:
        auth = base64.b64encode(
            f"{self.settings.langfuse_public_key}:{self.settings.langfuse_secret_key}".encode()
        ).decode("ascii")
        exporter = OTLPSpanExporter(
            endpoint=f"{self.base_url}/api/public/otel/v1/traces",
            headers={
                "Authorization": f"Basic {auth}",
                "x-langfuse-sdk-name": "python",
                "x-langfuse-sdk-version": langfuse_version,
                "x-langfuse-public-key": self.settings.langfuse_public_key,
                "x-langfuse-ingestion-version": "4",
            },
            timeout=self.timeout,
            compression=Compression.Gzip,
        )
        try:
            for start in range(0, len(spans), SPANS_PER_EXPORT):
                try:
                    result = exporter.export(spans[start : start + SPANS_PER_EXPORT])
                except Exception as exc:  # noqa: BLE001 - reported, never raised
                    raise _Failed(_explain(exc, "the run's items", self.run.name, self.base_url)) from exc
                if result is not SpanExportResult.SUCCESS:
                    raise _Failed(
                        f"Langfuse did not take the run's items (the trace export to {self.base_url} failed): "
                        f"{_later(self.run.name)}."
                    )
        finally:
            exporter.shutdown()

    def send_scores(self, experiment_id: str, scores: dict[str, float]) -> None:
        run = self.run
        n = len(run.results)
        correct = sum(int(r["strict"]) for r in run.results)
        # Langfuse updates a score sent again only with the same id and timestamp: the run's first.
        timestamp = datetime.fromtimestamp(run.created, UTC).isoformat()
        comments = {
            "accuracy": f"{correct}/{n} right (the final number, exactly)",
            "flexible_accuracy": f"{sum(int(r['flexible']) for r in run.results)}/{n} right (the last number)",
        }
        body = [
            {
                "id": run_score_id(experiment_id, name),
                "datasetRunId": experiment_id,
                "name": name,
                "value": float(value),
                "dataType": "NUMERIC",
                "timestamp": timestamp,
                "comment": comments.get(name, f"mean over the run's {n} traces"),
                "metadata": {"run": run.name, "dataset": run.dataset, "items": n},
            }
            for name, value in scores.items()
            if math.isfinite(value)
        ]
        result = self.call("the run's scores", self.api.scores.create, request=body)
        if isinstance(result, CreateScoreBatchResults) and result.rejected:
            reasons = "; ".join(error.message for error in result.errors) or "rejected"
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
    publisher = _Publisher(settings, run)
    sent = False
    scores = run_scores(run.results, run.other_means)
    try:
        project_id = publisher.project_id()
        dataset_id = publisher.dataset_id()
        sent = True
        items = publisher.upsert_items()
        experiment_id = experiment_id_for(project_id, dataset_id, run.name)
        spans = publisher.run_item_spans(experiment_id, dataset_id)
        publisher.export(spans)
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
    unlinked = len(run.results) - len(spans)
    message = (
        f"Published run {run_name!r} to Langfuse: dataset {run.dataset!r}, {len(spans)} items linked to their "
        f"traces, accuracy {scores['accuracy']:.1%}"
        + (f", {unlinked} items without a trace not linked" if unlinked else "")
        + (
            f", {run.pending_item_scores} item scores still waiting in the outbox (python -m feedback sync)"
            if run.pending_item_scores
            else ""
        )
        + f" ({url})."
    )
    return PublishReport(
        run_name, True, True, message, dataset=run.dataset, items=items, linked=len(spans), unlinked=unlinked,
        scores=scores, experiment_id=experiment_id, url=url, pending_item_scores=run.pending_item_scores,
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
