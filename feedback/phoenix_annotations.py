"""Arize Phoenix as a second home for ratings: each score becomes an annotation, in place.

Follows Phoenix's REST API as its server implements it (arize-phoenix 20.26.1; notes with file and
line citations in the issue notes): src/phoenix/server/api/routers/v1/annotations.py,
traces.py (POST /v1/trace_annotations), sessions.py (POST /v1/session_annotations).

- A vote on a turn is a *trace* annotation `user-feedback` (annotator HUMAN, label like/dislike,
  score 1/0, the dislike reason and comment as explanation); a judge or a code check is one too
  (LLM / CODE); a conversation's score (no trace) is a *session* annotation.
- The row key is (name, target, identifier), and a re-post replaces the whole row: the
  identifier is the store's score id, so a changed vote is changed in place and a retry after a
  crash writes the same row again.
- `?sync=true`: a 200 means written; a 404 means the trace has not landed in Phoenix yet (its
  spans are ingested asynchronously): retried, never dropped. The default async mode answers 200
  before writing and loses its queue on a restart.
- An undo is a DELETE filtered by name and identifier in the project (there is no delete by id;
  `delete_all=true` is the server's guard against unbounded deletes, the identifier bounds it).
  It answers 204 whether or not a row matched, so it is idempotent.

Plain httpx: the maintained arize-phoenix-client (3.5.0) writes annotations but has no delete
and no read-back of trace or session annotations, which the outbox needs anyway.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from config.settings import Settings
from feedback.langfuse_scores import ACCEPTED, REJECTED, RETRY, Delivery
from feedback.store import (
    BY_CHECK,
    BY_DATASET,
    BY_REVIEWER,
    BY_USER,
    RATING_NAME,
    ScoreRow,
    Store,
    StoreError,
)
from feedback.stored_spans import readable_span
from feedback.tracing import service_resource

log = logging.getLogger(__name__)

NAME = "phoenix"
# Statuses worth another try: Phoenix busy (503 span queue full, 507 storage), auth being set up.
# A trace sent again is given this long to be ingested before it is sent once more.
RESEND_S = 10.0
# A trace Phoenix lacks at the first try is usually on its way: the OTLP processors send a batch a
# second and Phoenix ingests it asynchronously. Ask again after this long before sending it again
# from the store (a vote clicked at once otherwise made Phoenix ingest a quarter of traces twice).
SPANS_ON_THE_WAY_S = 3.0
UNREACHABLE_STATUSES = {502, 503, 504}
SCOPE = InstrumentationScope("smolagents-chat.resend")
RETRY_STATUSES = {401, 403, 404, 408, 409, 425, 429, 500, 502, 503, 504, 507}


def annotator_kind(score: ScoreRow) -> str:
    """HUMAN for people (votes, reviewers), CODE for checks and dataset grades, LLM for judges."""
    by = score.scored_by or ""
    if by in (BY_USER, BY_REVIEWER) or score.source == "user":
        return "HUMAN"
    if by in (BY_CHECK, BY_DATASET):
        return "CODE"
    return "LLM"


def annotation(score: ScoreRow) -> dict[str, Any]:
    """The annotation body of one score (one item of the request's `data` list)."""
    result: dict[str, Any] = {}
    if score.name == RATING_NAME and score.value is not None:
        result["label"] = "like" if score.value >= 0.5 else "dislike"
        result["score"] = float(score.value)
    elif score.data_type == "CATEGORICAL":
        result["label"] = score.string_value
    elif score.value is not None:
        result["score"] = float(score.value)
        if score.data_type == "BOOLEAN":
            result["label"] = "true" if score.value >= 0.5 else "false"
    explanation = "; ".join(p for p in (score.reason, score.note) if p)
    if explanation:
        result["explanation"] = explanation
    metadata: dict[str, Any] = {"source": score.source, "scored_by": score.scored_by}
    if score.session_id:
        metadata["session_id"] = score.session_id
    if score.user_id:
        metadata["user_id"] = score.user_id
    if score.metadata:
        try:
            metadata.update(json.loads(score.metadata))
        except ValueError:
            pass
    body: dict[str, Any] = {
        "name": score.name,
        "annotator_kind": annotator_kind(score),
        "result": result,
        "metadata": metadata,
        "identifier": score.id,
    }
    if score.trace_id:
        body["trace_id"] = score.trace_id
    else:
        body["session_id"] = score.session_id
    return body


class PhoenixAnnotations:
    """The Phoenix destination of the outbox (feedback/destination_outbox.py)."""

    name = NAME

    def __init__(
        self,
        base_url: str,
        project: str,
        api_key: str = "",
        timeout_s: float = 5.0,
        *,
        store: Store | None = None,
        resource: Resource | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.project = project
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)
        # A trace Phoenix never got (it was down, or the trace is older than this destination)
        # is sent again from the store before it is annotated: Phoenix keeps one row per span id.
        self._store = store
        self._resource = resource or Resource.create({})
        self._spans = OTLPSpanExporter(
            endpoint=f"{self.base_url}/v1/traces",
            headers={**headers, "x-project-name": project},
            timeout=timeout_s,
        )
        self._resent: dict[str, float] = {}
        self._missing: dict[str, float] = {}  # trace id -> when Phoenix first said it lacks it
        self.resent_traces = 0

    def send(self, score: ScoreRow) -> Delivery:
        if not score.trace_id and not score.session_id:
            return Delivery(REJECTED, "a score with neither a trace nor a session has nowhere to go")
        kind = "trace" if score.trace_id else "session"
        result = self._call(
            "POST", f"/v1/{kind}_annotations", params={"sync": "true"}, json={"data": [annotation(score)]}
        )
        if result.outcome == RETRY and result.message.startswith("HTTP 404") and score.trace_id:
            return self._trace_missing(score.trace_id, result)
        if score.trace_id:
            self._missing.pop(score.trace_id, None)
        return result

    def _trace_missing(self, trace_id: str, result: Delivery) -> Delivery:
        """Wait once for spans on their way; a trace still missing after that is sent again."""
        now = time.monotonic()
        first = self._missing.setdefault(trace_id, now)
        if now - first < SPANS_ON_THE_WAY_S:
            if len(self._missing) > 10_000:
                self._missing.clear()
            return Delivery(RETRY, result.message, retry_in_s=SPANS_ON_THE_WAY_S - (now - first))
        return self._resend_trace(trace_id, result)

    def _resend_trace(self, trace_id: str, result: Delivery) -> Delivery:
        """Phoenix does not have the trace yet: send its stored spans (at most every RESEND_S)."""
        if self._store is None:
            return result
        now = time.monotonic()
        if now - self._resent.get(trace_id, -RESEND_S) < RESEND_S:
            return result  # sent a moment ago: Phoenix ingests spans asynchronously
        try:
            rows = self._store.spans_of(trace_id)
        except StoreError as exc:
            return Delivery(RETRY, f"the trace is not in Phoenix and the store cannot be read: {exc}")
        if not rows:
            return Delivery(REJECTED, "its trace is neither in Phoenix nor in the local store (retention?)")
        if len(self._resent) > 10_000:
            self._resent.clear()
        self._resent[trace_id] = now
        spans = [readable_span(row, self._resource, SCOPE) for row in rows]
        if self._spans.export(spans) != SpanExportResult.SUCCESS:
            return Delivery(RETRY, "the trace is not in Phoenix yet and sending it failed")
        self.resent_traces += 1
        log.info("Sent trace %s to Phoenix again (%d spans) before annotating it", trace_id, len(spans))
        return Delivery(RETRY, "the trace was not in Phoenix: sent again from the store")

    def delete(self, score: ScoreRow) -> Delivery:
        kind = "trace" if score.trace_id else "session"
        return self._call(
            "DELETE",
            f"/v1/projects/{self.project}/{kind}_annotations",
            params={"name": score.name, "identifier": score.id, "delete_all": "true"},
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Delivery:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            return Delivery(RETRY, f"{type(exc).__name__}: {exc}", unreachable=True)
        status = response.status_code
        if status in UNREACHABLE_STATUSES:
            return Delivery(RETRY, f"HTTP {status}: {response.text[:300]}", unreachable=True)
        if status in (200, 204):
            return Delivery(ACCEPTED)
        text = response.text[:300]
        if status == 404 and method == "DELETE" and "Project" in text:
            # No project yet: nothing of ours was ever written there, so nothing to delete.
            return Delivery(ACCEPTED, "no such project: nothing to delete")
        if status in RETRY_STATUSES:
            return Delivery(RETRY, f"HTTP {status}: {text}")
        return Delivery(REJECTED, f"HTTP {status}: {text}")

    def check(self) -> tuple[bool, str]:
        """For the start banner: is Phoenix there, and which version."""
        try:
            response = self._http.get("/arize_phoenix_version")
        except httpx.HTTPError as exc:
            return (
                False,
                f"Phoenix is not reachable at {self.base_url} ({type(exc).__name__}); ratings wait for it",
            )
        if response.status_code != 200:
            return (
                False,
                f"Phoenix at {self.base_url} answered HTTP {response.status_code}; ratings wait for it",
            )
        return True, f"Phoenix {response.text.strip()[:40]} at {self.base_url}, project {self.project!r}"

    def close(self) -> None:
        self._http.close()
        self._spans.shutdown()


def score_destinations(settings: Settings, store: Store) -> list[PhoenixAnnotations]:
    """The destinations besides Langfuse the settings turn on (Phoenix with PHOENIX_COLLECTOR_ENDPOINT)."""
    if not settings.phoenix_endpoint:
        return []
    return [
        PhoenixAnnotations(
            settings.phoenix_endpoint,
            settings.phoenix_project,
            settings.phoenix_api_key,
            settings.langfuse_timeout_s,
            store=store,
            resource=service_resource(settings),
        )
    ]
