"""Retention: span details live STORE_RETENTION_DAYS, trace summaries and ratings forever.

Spans (every step and LLM call with its full prompt) are most of the store; a trace summary
and its scores are small and are what the ratings need, so only spans are pruned. The app
prunes once at start and then every hour in a background thread that never raises.
"""

from __future__ import annotations

import logging
import threading
import time

from feedback.store import Store

log = logging.getLogger(__name__)

DAY_S = 86400.0
DEFAULT_INTERVAL_S = 3600.0


def cutoff_for(days: float, now: float | None = None) -> float:
    """The epoch second before which a trace's spans are too old to keep."""
    return (time.time() if now is None else now) - days * DAY_S


def prune(store: Store, days: float, *, now: float | None = None) -> int:
    """One retention pass (what the loop and `python -m feedback prune` run); returns spans deleted."""
    started = time.perf_counter()
    deleted = store.delete_spans_before(cutoff_for(days, now))
    log.info(
        "Retention: deleted %d spans of traces older than %g days in %.2f s (trace summaries and "
        "ratings kept)",
        deleted,
        days,
        time.perf_counter() - started,
    )
    return deleted


class RetentionLoop:
    """Prunes at start, then every `interval_s`, in a daemon thread; a failed pass is logged."""

    def __init__(self, store: Store, days: float, *, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self._store = store
        self.days = days
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="feedback-retention", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop waking up. A long first pass is not waited for past `timeout_s`: each batch is
        its own transaction, so closing the store under it only rolls back the current one."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                prune(self._store, self.days)
            except Exception:  # noqa: BLE001 - retention must never take the app down
                log.exception("Retention pass failed; it will try again in %.0f s", self._interval_s)
            self.passes += 1
            self._stop.wait(self._interval_s)
