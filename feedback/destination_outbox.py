"""Delivers scores to one destination besides Langfuse (Phoenix, ...), in its own thread.

Each destination has its own outbox, ledger rows and retry schedule, so a destination that is
down or slow never holds back another, nor Langfuse, nor a chat turn or a vote (a vote only
writes the store; the database records that each destination needs it: feedback/deliveries.py).
Sends are idempotent upserts keyed by the score's id (the destination's `identifier`), so a
crash between a send and its bookkeeping sends the same state again, never a second row.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from typing import Protocol

from feedback.deliveries import DeliveryLedger, Due
from feedback.delivery_thread import DeliveryThread
from feedback.langfuse_scores import ACCEPTED, REJECTED, Delivery
from feedback.outbox import backoff_s
from feedback.store import ScoreRow, Store

log = logging.getLogger(__name__)


class ScoreDestination(Protocol):
    """What a destination's client does with one score (feedback/phoenix_annotations.py)."""

    name: str

    def send(self, score: ScoreRow) -> Delivery: ...

    def delete(self, score: ScoreRow) -> Delivery: ...


class DestinationOutbox(DeliveryThread):
    def __init__(
        self,
        store: Store,
        destination: ScoreDestination,
        *,
        idle_poll_s: float = 2.0,
        retry_max_s: float = 60.0,
        lease_s: float = 60.0,
    ) -> None:
        super().__init__(idle_poll_s=idle_poll_s, retry_max_s=retry_max_s)
        self.destination = destination
        self.ledger = DeliveryLedger(store, destination.name)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{destination.name}:{uuid.uuid4().hex[:8]}"
        self.thread_name = f"outbox-{destination.name}"
        self.what = f"the {destination.name} outbox"
        self._lease_s = lease_s
        self.sent = 0
        # The destination as a whole is unreachable until then (monotonic): one probe per wait,
        # instead of every waiting score trying on its own schedule.
        self._down_until = 0.0
        self._down_rounds = 0
        self.attempts = 0

    def start(self) -> None:
        self.ledger.register()
        super().start()

    def due_now(self) -> bool:
        return self.ledger.due_now()

    def release_leases(self) -> None:
        self.ledger.release_all(self.owner)

    def deliver_due(self) -> int:
        done = 0
        while not self._stop.is_set():
            if time.monotonic() < self._down_until:
                return done
            claimed = self.ledger.claim_due(self.owner, self._lease_s)
            if not claimed:
                return done
            for i, due in enumerate(claimed):
                result = self.deliver(due)
                done += 1
                if result.unreachable:
                    self.ledger.release(claimed[i + 1 :], self.owner)
                    return done
        return done

    def _went_down(self, message: str) -> None:
        wait = backoff_s(self._down_rounds, self._retry_max_s)
        if self._down_rounds == 0:
            log.warning(
                "%s is not reachable (%s); trying again in %.1fs", self.destination.name, message, wait
            )
        self._down_rounds += 1
        self._down_until = time.monotonic() + wait

    def deliver(self, due: Due) -> Delivery:
        score = due.score
        name = self.destination.name
        if score.deleted and not due.remote_exists:
            self.ledger.mark_delivered(due, self.owner, exists=False)
            return Delivery(ACCEPTED, "never sent")
        try:
            result = self.destination.delete(score) if score.deleted else self.destination.send(score)
        except Exception as exc:  # noqa: BLE001 - a client bug is a retry, never a lost score
            log.exception("%s: sending score %s failed", name, score.id)
            result = Delivery("retry", f"{type(exc).__name__}: {exc}")
        self.attempts += 1
        if result.outcome == ACCEPTED:
            self.ledger.mark_delivered(due, self.owner, exists=not score.deleted)
            self.sent += 1
            if self._down_rounds:
                log.info("%s is reachable again", name)
            self._down_rounds = 0
        elif result.outcome == REJECTED:
            log.warning("%s rejected score %s: %s", name, score.id, result.message)
            self.ledger.mark_rejected(due, self.owner, result.message)
        else:
            if result.unreachable:
                self._went_down(result.message)
                delay = max(self._down_until - time.monotonic(), 0.0)
            elif result.retry_in_s is not None:
                delay = result.retry_in_s
            else:
                delay = backoff_s(due.attempts, self._retry_max_s)
            log.info("%s: score %s later (%s); retrying in %.1fs", name, score.id, result.message, delay)
            self.ledger.mark_retry(
                due, self.owner, result.message, time.time() + delay, maybe_exists=not score.deleted
            )
        return result
