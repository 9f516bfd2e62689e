"""The scores endpoint of a Langfuse server, spoken in whichever form that server takes.

Two generations of the server are in use, and nothing in their answers to a key check tells
them apart:

- Self-hosted servers (v4.x; 4.16.0 of 2026-08 is the one read) validate ONE score object on
  POST /api/public/scores (web/src/pages/api/public/scores/index.ts, `PostScoresBodyV1`),
  answer 200 {"id"} and 400 "Invalid request data" to a JSON array. Their schema has no
  `timestamp` (packages/shared/src/features/scores/interfaces/shared.ts), so zod drops it and
  the score is filed under the day the server received it.
- The current server (SDK 5.0.4's `api.scores.create`) takes a list, answers 202, or 207 with
  the refused scores' errors, and keeps a given `timestamp`.

The SDK's client speaks only the list form, so this module makes the calls itself (httpx, with
the same basic auth the SDK uses). It sends the list form first; a 400 that says the body should
have been an object switches this endpoint to the single form, for good, and the same score is
sent again at once: a rating is never lost to the server's generation.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

log = logging.getLogger(__name__)

ACCEPTED = "accepted"
REJECTED = "rejected"
RETRY = "retry"

BATCH = "batch"  # a JSON list per call; 202 / 207; keeps `timestamp`
SINGLE = "single"  # one JSON object per call; 200 {"id"}; drops `timestamp`


# The server lands a created score after a delay, but runs a delete at once and answers 202
# (packages/shared/src/server/ingestion/processEventBatch.ts getDelay; redis/scoreDelete.ts):
# 5 s, or LANGFUSE_INGESTION_QUEUE_DELAY_MS (15 s by default) from 23:45 to 00:15 UTC.
CREATE_DELAY_S = 5.0
MIDNIGHT_DELAY_S = 15.0
# Clocks differ and queues run late: a delete is sent again this long after the create landed,
LANDING_MARGIN_S = 3.0
# and once more this long after the create was sent (a busy worker, a self-hoster's longer
# LANGFUSE_INGESTION_QUEUE_DELAY_MS, hosts whose clocks differ by seconds).
RECHECK_AFTER_S = 90.0
_MIDNIGHT_MINUTES = 16  # the server's 15 minutes either side of midnight, and one for skew


def _near_midnight(epoch_s: float, minutes: float) -> bool:
    seconds_of_day = epoch_s % 86400
    return seconds_of_day >= 86400 - minutes * 60 or seconds_of_day <= minutes * 60


def lands_by(sent_at: float, midnight_delay_s: float = MIDNIGHT_DELAY_S) -> float:
    """When a score created by a call sent at `sent_at` has surely landed (epoch seconds)."""
    delay = midnight_delay_s if _near_midnight(sent_at, _MIDNIGHT_MINUTES) else CREATE_DELAY_S
    return sent_at + delay + LANDING_MARGIN_S


def same_server_day(first: float, second: float) -> bool:
    """Whether a server filing scores by the day it received them files both on one day
    (with two minutes either side of midnight taken as unsure: clocks differ)."""
    if int(first // 86400) != int(second // 86400):
        return False
    return not (_near_midnight(first, 2) or _near_midnight(second, 2))


def filed_day(generation: str | None, created: str, sent_at: float) -> str:
    """The UTC day Langfuse files a create under: the score's `timestamp` where the server keeps
    it (the first vote's, `created`), else the day it received the call."""
    if generation == BATCH:
        return datetime.fromisoformat(created).astimezone(UTC).date().isoformat()
    return datetime.fromtimestamp(sent_at, UTC).date().isoformat()


@dataclass(frozen=True)
class Delivery:
    """What Langfuse said to one call: accepted, rejected (never retried) or retry later."""

    outcome: str
    message: str = ""
    generation: str | None = None  # the form an accepted create was sent in
    # A retry because the destination as a whole cannot be reached (refused, timed out, 502-504):
    # the outbox then waits for the destination, not score by score.
    unreachable: bool = False
    # A retry the destination knows the right moment for (the trace's spans are on their way).
    retry_in_s: float | None = None


def _retryable_status(status: int | None) -> bool:
    # Wrong keys (401/403) are kept and retried too: fixing the keys must not lose ratings.
    return status is None or status >= 500 or status in (401, 403, 408, 409, 429)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _error_text(response: httpx.Response) -> str:
    body = _json(response)
    if isinstance(body, dict):
        message = body.get("message") or body.get("error") or body
        issues = body.get("error")
        if isinstance(issues, list) and issues:
            details = "; ".join(str(i.get("message", i)) if isinstance(i, dict) else str(i) for i in issues)
            message = f"{message} ({details})"
        body = message
    return f"HTTP {response.status_code}: {body}"[:500]


def _wants(response: httpx.Response) -> str | None:
    """The form a 400 says the body should have had ("object" or "array"), if it says so.

    zod answers a body of the wrong shape with an `invalid_type` issue at the root, e.g.
    {"expected": "object", "path": [], "message": "Invalid input: expected object, received array"}.
    """
    if response.status_code != 400:
        return None
    body = _json(response)
    issues = body.get("error") if isinstance(body, dict) else None
    if isinstance(issues, list):
        for issue in issues:
            if (
                isinstance(issue, dict)
                and not issue.get("path")
                and issue.get("expected") in ("object", "array")
            ):
                return str(issue["expected"])
    text = str(body).lower()
    for expected in ("object", "array"):
        if f"expected {expected}" in text and "received" in text:
            return expected
    return None


class ScoresEndpoint:
    """Create and delete scores on one Langfuse server; remembers which form it takes."""

    def __init__(
        self,
        base_url: str,
        public_key: str,
        secret_key: str,
        timeout_s: float = 5.0,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=(public_key, secret_key),
            timeout=max(0.5, timeout_s),
            headers={"x-langfuse-public-key": public_key},
            transport=transport,
        )
        self._lock = threading.Lock()
        # None until the server's first answer to a create says which form it takes.
        self.generation: str | None = None

    def close(self) -> None:
        self._http.close()

    @property
    def keeps_timestamp(self) -> bool:
        """Whether a score's `timestamp` (its day, in the server's dedupe key) is kept."""
        return self.generation == BATCH

    def check_keys(self) -> tuple[bool, str]:
        """Ask the server whether the keys work (GET /api/public/projects); never raises."""
        try:
            response = self._http.get("/api/public/projects")
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}"
        if response.status_code != 200:
            return False, _error_text(response)
        data = _json(response)
        projects = data.get("data") if isinstance(data, dict) else None
        if not projects:
            return False, "no project found for these keys"
        version = self.server_version()
        name = projects[0].get("name") if isinstance(projects[0], dict) else None
        return True, f"project {name!r}" + (f", Langfuse {version}" if version else "")

    def server_version(self) -> str | None:
        """The version GET /api/public/health reports (web/src/pages/api/public/health.ts)."""
        try:
            response = self._http.get("/api/public/health")
            version = _json(response).get("version")
        except (httpx.HTTPError, AttributeError):
            return None
        return str(version) if version else None

    def create(self, body: dict[str, Any]) -> Delivery:
        """Send one score; the outcome says whether to keep it for a retry."""
        generation = self.generation or BATCH
        for _ in range(2):  # the second pass only after the server said which form it takes
            try:
                if generation == BATCH:
                    response = self._http.post("/api/public/scores", json=[body])
                else:
                    single = {k: v for k, v in body.items() if k != "timestamp"}
                    response = self._http.post("/api/public/scores", json=single)
            except Exception as exc:  # noqa: BLE001 - transport or anything unexpected: kept, retried
                return Delivery(RETRY, f"{type(exc).__name__}: {exc}"[:500])
            wanted = _wants(response)
            other = SINGLE if wanted == "object" else BATCH if wanted == "array" else None
            if other is not None and other != generation:
                with self._lock:
                    if self.generation != other:
                        log.info(
                            "Langfuse at %s takes %s scores; sending them that way from now on",
                            self.base_url,
                            "one object per call for" if other == SINGLE else "lists of",
                        )
                    self.generation = other
                generation = other
                continue
            return self._outcome(response, generation)
        return Delivery(RETRY, "the server refused both forms of the scores call")

    def _outcome(self, response: httpx.Response, generation: str) -> Delivery:
        status = response.status_code
        if 200 <= status < 300 and status != 207:
            with self._lock:
                self.generation = self.generation or generation
            return Delivery(ACCEPTED, generation=generation)
        if status == 207:
            body = _json(response)
            errors = body.get("errors") if isinstance(body, dict) else None
            reasons = "; ".join(
                str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors or []
            )
            with self._lock:
                self.generation = self.generation or generation
            if isinstance(body, dict) and not body.get("rejected"):
                return Delivery(ACCEPTED, generation=generation)
            return Delivery(REJECTED, (reasons or "rejected")[:500])
        if _retryable_status(status):
            return Delivery(RETRY, _error_text(response))
        return Delivery(REJECTED, _error_text(response))

    def delete(self, score_id: str) -> Delivery:
        """Delete one score (DELETE /api/public/scores/{id}); a 404 means already absent."""
        try:
            response = self._http.delete(f"/api/public/scores/{quote(score_id, safe='')}")
        except Exception as exc:  # noqa: BLE001 - transport or anything unexpected: kept, retried
            return Delivery(RETRY, f"{type(exc).__name__}: {exc}"[:500])
        if response.status_code == 404:
            return Delivery(ACCEPTED, "already absent")
        if 200 <= response.status_code < 300:
            return Delivery(ACCEPTED)
        if _retryable_status(response.status_code):
            return Delivery(RETRY, _error_text(response))
        return Delivery(REJECTED, _error_text(response))
