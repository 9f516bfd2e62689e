"""The thread every outbox runs in: woken by a vote, polling otherwise, flushed and stopped the
same way (the Langfuse outbox, feedback/outbox.py; each other destination's, feedback/
destination_outbox.py). A subclass says how to deliver a round, what is due, and how to give its
leases back."""

from __future__ import annotations

import logging
import threading
import time

from feedback.store import StoreError

log = logging.getLogger(__name__)


class DeliveryThread:
    """Delivers in a daemon thread; `notify()` wakes it after a vote."""

    thread_name = "outbox"
    what = "the outbox"

    def __init__(self, *, idle_poll_s: float, retry_max_s: float) -> None:
        self._idle_poll_s = idle_poll_s
        self._retry_max_s = retry_max_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None

    # --- what a subclass provides

    def deliver_due(self) -> int:
        """Deliver what is due now, once; how many were attempted."""
        raise NotImplementedError

    def due_now(self) -> bool:
        """Something is due now (a store read)."""
        raise NotImplementedError

    def release_leases(self) -> None:
        """Hand what this outbox still holds to the next one at once."""
        raise NotImplementedError

    # --- the thread

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()

    def notify(self) -> None:
        self._idle.clear()
        self._wake.set()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until nothing is due; True if the store has nothing due any more."""
        self.notify()
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if self._idle.wait(timeout=0.05) and not self.due_now():
                    return True
            return not self.due_now()
        except StoreError as exc:
            # The store is away: what is in it stays there for the next start to deliver.
            log.warning("Cannot flush %s: %s", self.what, exc)
            return False

    def stop(self, flush_timeout_s: float = 5.0) -> None:
        """Deliver what can be delivered within the timeout, then stop the worker."""
        if self._thread is None:
            return
        self.flush(flush_timeout_s)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=flush_timeout_s)
        self._thread = None
        try:
            self.release_leases()
        except Exception:  # noqa: BLE001 - the leases then expire on their own
            log.warning("Could not release the leases of %s; they expire on their own", self.what)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                worked = self.deliver_due()
            except Exception:  # noqa: BLE001 - the worker must survive anything
                log.exception("%s failed a round; it will try again", self.what)
                worked = 0
            if not worked:
                self._idle.set()
                # Sleep until a vote wakes us; poll at least as often as the longest retry wait.
                self._wake.wait(timeout=min(self._idle_poll_s, self._retry_max_s))
