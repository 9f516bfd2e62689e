"""The outbox: a background worker that delivers scores from the local store to Langfuse.

A score is marked delivered only when Langfuse accepted it. Failures that may pass (5xx, 429,
timeouts, refused connections) are retried with backoff; a rejection is recorded and kept.
The store holds each score's latest state, so writes and deletes of one score stay in order
and a retry can never create a second score (the id is stable). Several app processes may share
one store (Postgres): each outbox claims the scores it delivers with a lease, so a score is sent
by one of them, and the scores of one that dies mid-delivery are taken over when its lease ends.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable

from feedback.delivery_thread import DeliveryThread
from feedback.langfuse_scores import (
    BATCH,
    RECHECK_AFTER_S,
    RETRY,
    SINGLE,
    filed_day,
    lands_by,
    same_server_day,
)
from feedback.langfuse_sink import ACCEPTED, REJECTED, Delivery, LangfuseSink
from feedback.store import ScoreRow, Store

log = logging.getLogger(__name__)


def backoff_s(attempts: int, max_s: float = 60.0) -> float:
    """0.5 s, 1 s, 2 s, ... up to max_s between tries of one score."""
    return min(max_s, 0.5 * (2 ** min(attempts, 16)))


class Outbox(DeliveryThread):
    """Delivers pending scores in a daemon thread; `notify()` wakes it after a vote."""

    thread_name = "feedback-outbox"
    what = "the Langfuse outbox"

    def __init__(
        self,
        store: Store,
        sink: LangfuseSink,
        *,
        idle_poll_s: float = 2.0,
        retry_max_s: float = 60.0,
        lease_s: float = 60.0,
        send_timeout_s: float = 5.0,
    ) -> None:
        self._store = store
        self._sink = sink
        # Unique per outbox, readable in the store: host, process id, the process-id namespace
        # and the process's start time (so a reused pid, or a container sharing the host name,
        # is never taken for this process), and a random part.
        namespace, started = _identity(os.getpid())
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{namespace}:{started}:{uuid.uuid4().hex[:8]}"
        # A lease must outlast one send (deliver_due gives back what it cannot finish in time).
        # (Up to three calls: a delete first, and a create that may be sent in both forms.)
        self._lease_s = max(lease_s, 3 * send_timeout_s + 5.0)
        if lease_s < self._lease_s:
            log.warning(
                "OUTBOX_LEASE_S=%g is shorter than one Langfuse call may take; using %g s",
                lease_s,
                self._lease_s,
            )
        self._send_timeout_s = send_timeout_s
        self._dead_checked_at = 0.0
        super().__init__(idle_poll_s=idle_poll_s, retry_max_s=retry_max_s)

    def due_now(self) -> bool:
        return bool(self._store.pending_scores(limit=1))

    def release_leases(self) -> None:
        # A clean stop hands what this outbox still holds to the next one at once.
        self._store.release_all(self.owner)

    def deliver_due(self, on_each: Callable[[ScoreRow, Delivery], None] | None = None) -> int:
        """Send the scores due now that this outbox could claim, once; return how many."""
        self.free_dead_leases()
        attempted = 0
        while True:
            claimed = self._store.claim_due(self.owner, self._lease_s)
            if not claimed:
                return attempted
            for i, score in enumerate(claimed):
                if time.time() + 3 * self._send_timeout_s + 1.0 > score.lease_until:
                    # Not enough lease left for one more try: give the rest back, claim anew.
                    self._store.release(self.owner, [s.id for s in claimed[i:]])
                    break
                result = self.deliver(score)
                attempted += 1
                if on_each is not None:
                    on_each(score, result)

    def free_dead_leases(self) -> None:
        """Take back at once the leases of outboxes on this host whose process has died.

        An app restarted after a crash (or a sibling process on the same machine) need not wait
        for the lease to expire; an outbox on another host is only known gone by its expiry.
        """
        if time.monotonic() - self._dead_checked_at < self._idle_poll_s:
            return  # at most once per idle poll: a vote's round need not pay for it
        self._dead_checked_at = time.monotonic()
        host = socket.gethostname()
        namespace, _ = _identity(os.getpid())
        for owner in self._store.lease_owners():
            parts = owner.split(":")
            if owner == self.owner or len(parts) != 5 or parts[0] != host or parts[2] != namespace:
                continue  # another machine, or another container's processes: only expiry tells
            if namespace == "?" or not parts[1].isdigit():
                continue
            pid = int(parts[1])
            if not _alive(pid) or _identity(pid)[1] != parts[3]:
                freed = self._store.release_all(owner)
                log.info("Took over %d rating(s) from outbox %s, whose process has ended", freed, owner)

    def deliver(self, score: ScoreRow) -> Delivery:
        now = time.time()
        if score.deleted and score.remote_recheck_at and score.delivered_version >= score.version:
            return self._recheck_delete(score, now)
        sent_at, day = 0.0, None
        if score.deleted:
            if not score.remote_exists:
                # Never sent, so there is nothing in Langfuse to delete.
                self._store.mark_delivered(score.id, score.version, exists_remotely=False, owner=self.owner)
                return Delivery(ACCEPTED, "never sent")
            result = self._sink.delete(score.id)
            exists_after = False
            sent = score.remote_sent_at
            if result.outcome == ACCEPTED and sent and now < lands_by(sent):
                # Langfuse ran the delete at once, but the last create may land after it and
                # bring the score back: delete once more when that create has surely landed.
                self._store.due_again_at(score.id, score.version, lands_by(sent), owner=self.owner)
                return Delivery(ACCEPTED, "deleted; deleting again once the last create has landed")
            if result.outcome == ACCEPTED and sent and now < sent + RECHECK_AFTER_S:
                # Done, with one late check should that create land later than it ought to.
                self._store.mark_delivered(
                    score.id,
                    score.version,
                    exists_remotely=False,
                    owner=self.owner,
                    recheck_at=sent + RECHECK_AFTER_S,
                )
                return result
        else:
            first = self._replace_from_earlier_day(score, now)
            if first is _LATER:
                return Delivery(RETRY, "waiting for the last create to land before replacing it")
            if isinstance(first, Delivery):
                result = first
            else:
                sent_at = time.time()
                result = self._sink.send(score)
                if result.outcome == ACCEPTED:
                    day = filed_day(result.generation, score.created, sent_at)
                    if first is None and score.remote_exists and score.remote_day not in (None, day):
                        # The server changed form meanwhile (an upgrade): this create is filed
                        # under another day than the last. The delete runs before it lands.
                        self._drop_old_row(score)
            exists_after = True
        if result.outcome == ACCEPTED:
            self._store.mark_delivered(
                score.id,
                score.version,
                exists_remotely=exists_after,
                owner=self.owner,
                sent_at=sent_at,
                day=day,
            )
        elif result.outcome == REJECTED:
            log.warning("Langfuse rejected score %s: %s", score.id, result.message)
            self._store.mark_rejected(score.id, score.version, result.message, owner=self.owner)
        else:
            delay = backoff_s(score.attempts, self._retry_max_s)
            log.info(
                "Langfuse is not reachable for score %s (%s); retrying in %.1fs",
                score.id,
                result.message,
                delay,
            )
            self._store.mark_retry(
                score.id, result.message, time.time() + delay, owner=self.owner, sent_at=sent_at
            )
        return result

    def _drop_old_row(self, score: ScoreRow) -> None:
        gone = self._sink.delete(score.id)
        if gone.outcome != ACCEPTED:
            log.warning("Score %s may show twice in Langfuse (an old row): %s", score.id, gone.message)

    def _recheck_delete(self, score: ScoreRow, now: float) -> Delivery:
        """The late second delete of an undone score (see RECHECK_AFTER_S); tried until taken."""
        result = self._sink.delete(score.id)
        recheck = 0.0 if result.outcome != RETRY else now + backoff_s(1, self._retry_max_s)
        self._store.mark_delivered(
            score.id, score.version, exists_remotely=False, owner=self.owner, recheck_at=recheck
        )
        return result

    def _replace_from_earlier_day(self, score: ScoreRow, now: float) -> Delivery | object | None:
        """Delete a score first when Langfuse would file its new state as a second row.

        Langfuse keeps one row per (day, name, id): the day of the score's `timestamp` where the
        server keeps it, else the day it received the call. When the next create would be filed
        under another day than the last one, the delete runs first (at once) and the create
        lands seconds later, so one row remains. If the last create may not have landed yet,
        the score waits until it has (a delete before it lands would find nothing).
        Returns None to go on with the create, _LATER when the score waits, or the failed
        delete's outcome.
        """
        if not score.remote_exists or not score.remote_sent_at:
            return None
        generation = self._sink.generation
        known = score.remote_day or filed_day(SINGLE, score.created, score.remote_sent_at)
        forms = [generation] if generation else [BATCH, SINGLE]
        predicted = {filed_day(form, score.created, now) for form in forms}
        # Clocks differ: a call within two minutes of midnight may be filed under either day.
        unsure = generation != BATCH and not same_server_day(now, now)
        if predicted == {known} and not unsure:
            return None
        if now < lands_by(score.remote_sent_at):
            self._store.due_again_at(
                score.id, score.version, lands_by(score.remote_sent_at), owner=self.owner
            )
            return _LATER
        result = self._sink.delete(score.id)
        return None if result.outcome == ACCEPTED else result


_LATER = object()


def _alive(pid: int) -> bool:
    """Whether a process of this machine still runs (a zombie, killed but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _identity(pid: int) -> tuple[str, str]:
    """(process-id namespace, start time in clock ticks) of a process; "?" where unknown."""
    try:
        namespace = os.readlink(f"/proc/{pid}/ns/pid").strip("pid:[]")
    except OSError:
        namespace = "?"
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            started = stat.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        started = "?"
    return namespace, started
