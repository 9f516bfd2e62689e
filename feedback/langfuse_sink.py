"""The Langfuse side of score delivery: one call per score, with an honest outcome.

The SDK's own score queue retries a few times and then drops scores; here each call's result
is returned to the outbox, which keeps the score on disk until Langfuse has accepted it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
from langfuse.api.core.api_error import ApiError
from langfuse.api.scores.types.create_score_batch_results import CreateScoreBatchResults

from feedback.store import ScoreRow

if TYPE_CHECKING:
    from langfuse import Langfuse

log = logging.getLogger(__name__)

ACCEPTED = "accepted"
REJECTED = "rejected"
RETRY = "retry"


@dataclass(frozen=True)
class Delivery:
    """What Langfuse said to one call: accepted, rejected (never retried) or retry later."""

    outcome: str
    message: str = ""


def _retryable_status(status: int | None) -> bool:
    # Wrong keys (401/403) are kept and retried too: fixing the keys must not lose ratings.
    return status is None or status >= 500 or status in (401, 403, 408, 409, 429)


def _error_text(exc: ApiError) -> str:
    body = exc.body
    if isinstance(body, dict):
        body = body.get("message") or body.get("error") or body
    return f"HTTP {exc.status_code}: {body}"[:500]


def _failed(exc: Exception, score_id: str) -> Delivery:
    """What a failed call means: an API error is rejected unless retryable; a transport
    failure (refused, timeout) or anything unexpected (an unreadable answer) is retried."""
    if isinstance(exc, ApiError):
        if _retryable_status(exc.status_code):
            return Delivery(RETRY, _error_text(exc))
        return Delivery(REJECTED, _error_text(exc))
    if not isinstance(exc, (httpx.TransportError, OSError)):
        log.warning("Unexpected answer from Langfuse for score %s: %s", score_id, exc)
    return Delivery(RETRY, f"{type(exc).__name__}: {exc}"[:500])


class LangfuseSink:
    """Creates and deletes scores through the Langfuse public API (SDK v5 `api.scores`)."""

    def __init__(self, client: Langfuse, timeout_s: float = 5.0) -> None:
        self._client = client
        self._options: Any = {
            "max_retries": 0,
            "timeout_in_seconds": max(1, int(round(timeout_s))),
        }

    def auth_check(self) -> tuple[bool, str]:
        """Ask Langfuse whether the keys work; never raises."""
        try:
            projects = self._client.api.projects.get(request_options=self._options)
        except ApiError as exc:
            return False, _error_text(exc)
        except Exception as exc:  # noqa: BLE001 - any transport failure is a warning only
            return False, f"{type(exc).__name__}: {exc}"
        if not projects.data:
            return False, "no project found for these keys"
        return True, f"project {projects.data[0].name!r}"

    @staticmethod
    def body(score: ScoreRow) -> dict[str, Any]:
        metadata: dict[str, Any] = {"source": score.source, "session_id": score.session_id}
        if score.metadata:
            metadata.update(json.loads(score.metadata))
        body: dict[str, Any] = {
            "id": score.id,
            "name": score.name,
            "value": score.string_value if score.data_type == "CATEGORICAL" else score.value,
            "dataType": score.data_type,
            # The first vote's timestamp: Langfuse upserts a resent id only on the same date.
            "timestamp": datetime.fromisoformat(score.created).isoformat(),
            "metadata": metadata,
        }
        if score.trace_id:
            body["traceId"] = score.trace_id
        else:
            # A conversation's score: on the Langfuse session, not on one of its traces.
            body["sessionId"] = score.session_id
        if score.comment:
            body["comment"] = score.comment
        return body

    def send(self, score: ScoreRow) -> Delivery:
        try:
            result = self._client.api.scores.create(
                request=[self.body(score)],  # type: ignore[list-item]
                request_options=self._options,
            )
        except Exception as exc:  # noqa: BLE001 - classified: nothing here may stop the outbox
            return _failed(exc, score.id)
        if isinstance(result, CreateScoreBatchResults) and result.rejected:
            reasons = "; ".join(error.message for error in result.errors) or "rejected"
            return Delivery(REJECTED, reasons[:500])
        return Delivery(ACCEPTED)

    def delete(self, score_id: str) -> Delivery:
        try:
            self._client.api.scores.delete(score_id, request_options=self._options)
        except ApiError as exc:
            if exc.status_code == 404:
                return Delivery(ACCEPTED, "already absent")
            return _failed(exc, score_id)
        except Exception as exc:  # noqa: BLE001 - classified: nothing here may stop the outbox
            return _failed(exc, score_id)
        return Delivery(ACCEPTED)
