"""The outbox: a background worker that delivers scores from the local store to Langfuse.

A score is marked delivered only when Langfuse accepted it. Failures that may pass (5xx, 429,
timeouts, refused connections) are retried with backoff; a rejection is recorded and kept.
The store holds each score's latest state, so writes and deletes of one score stay in order
and a retry can never create a second score (the id is stable).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from feedback.langfuse_sink import ACCEPTED, REJECTED, Delivery, LangfuseSink
from feedback.store import ScoreRow, Store

log = logging.getLogger(__name__)


def backoff_s(attempts: int, max_s: float = 60.0) -> float:
    """0.5 s, 1 s, 2 s, ... up to max_s between tries of one score."""
    return min(max_s, 0.5 * (2 ** min(attempts, 16)))


class Outbox:
    """Delivers pending scores in a daemon thread; `notify()` wakes it after a vote."""

    def __init__(
        self, store: Store, sink: LangfuseSink, *, idle_poll_s: float = 2.0, retry_max_s: float = 60.0
    ) -> None:
        self._store = store
        self._sink = sink
        self._retry_max_s = retry_max_s
        self._idle_poll_s = idle_poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="feedback-outbox", daemon=True)
            self._thread.start()

    def notify(self) -> None:
        self._idle.clear()
        self._wake.set()

    def stop(self, flush_timeout_s: float = 5.0) -> None:
        """Deliver what can be delivered within the timeout, then stop the worker."""
        if self._thread is None:
            return
        self.flush(flush_timeout_s)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=flush_timeout_s)
        self._thread = None

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until nothing is due; True if the store has nothing due any more."""
        self.notify()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._idle.wait(timeout=0.05) and not self._store.pending_scores(limit=1):
                return True
        return not self._store.pending_scores(limit=1)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                worked = self.deliver_due()
            except Exception:  # noqa: BLE001 - the worker must survive anything
                log.exception("The feedback outbox failed a round; it will try again")
                worked = 0
            if not worked:
                self._idle.set()
                # Sleep until a vote wakes us; poll at least as often as the longest retry wait.
                self._wake.wait(timeout=min(self._idle_poll_s, self._retry_max_s))

    def deliver_due(self, on_each: Callable[[ScoreRow, Delivery], None] | None = None) -> int:
        """Send every score that is due now, once; return how many were attempted."""
        due = self._store.pending_scores()
        for score in due:
            result = self.deliver(score)
            if on_each is not None:
                on_each(score, result)
        return len(due)

    def deliver(self, score: ScoreRow) -> Delivery:
        if score.deleted:
            if not score.remote_exists:
                # Never sent, so there is nothing in Langfuse to delete.
                self._store.mark_delivered(score.id, score.version, exists_remotely=False)
                return Delivery(ACCEPTED, "never sent")
            result = self._sink.delete(score.id)
            exists_after = False
        else:
            self._store.mark_sent(score.id)
            result = self._sink.send(score)
            exists_after = True
        if result.outcome == ACCEPTED:
            self._store.mark_delivered(score.id, score.version, exists_remotely=exists_after)
        elif result.outcome == REJECTED:
            log.warning("Langfuse rejected score %s: %s", score.id, result.message)
            self._store.mark_rejected(score.id, score.version, result.message)
        else:
            delay = backoff_s(score.attempts, self._retry_max_s)
            log.info(
                "Langfuse is not reachable for score %s (%s); retrying in %.1fs",
                score.id,
                result.message,
                delay,
            )
            self._store.mark_retry(score.id, result.message, time.time() + delay)
        return result
