"""Destinations besides Langfuse (feedback/deliveries.py, feedback/destination_outbox.py), on
SQLite and Postgres: the database records what each destination still needs, whoever wrote the
score; each destination is delivered on its own, and one that is down holds back nobody."""

from __future__ import annotations

import threading
import time

from feedback.deliveries import DeliveryLedger
from feedback.destination_outbox import DestinationOutbox
from feedback.langfuse_scores import ACCEPTED, REJECTED, RETRY, Delivery
from feedback.store import ScoreRow, Store
from feedback.votes import Vote, VoteRecorder
from tests.feedback.test_postgres import _trace
from tests.helpers import wait_for


class ScriptedDestination:
    """A destination that keeps what it was sent, by identifier (as an upsert would)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: dict[str, tuple[float | None, str | None]] = {}
        self.calls: list[tuple[str, str, int]] = []
        self.down = False
        self.refuse = False
        self.lock = threading.Lock()

    def send(self, score: ScoreRow) -> Delivery:
        with self.lock:
            self.calls.append(("send", score.id, score.version))
            if self.down:
                return Delivery(RETRY, "connection refused")
            if self.refuse:
                return Delivery(REJECTED, "400: invalid")
            self.rows[score.id] = (score.value, score.reason)
            return Delivery(ACCEPTED)

    def delete(self, score: ScoreRow) -> Delivery:
        with self.lock:
            self.calls.append(("delete", score.id, score.version))
            if self.down:
                return Delivery(RETRY, "connection refused")
            self.rows.pop(score.id, None)
            return Delivery(ACCEPTED)


def test_every_write_path_makes_a_score_due_for_each_registered_destination(store_url):
    store = Store(store_url)
    try:
        before = _trace(store, 1)
        votes = VoteRecorder(store)
        old = votes.record(trace_id=before, vote=Vote(1.0), session_id="s", user_id="u")
        time.sleep(0.01)  # `created` has microseconds: the registration is strictly later
        a, b = DeliveryLedger(store, "a"), DeliveryLedger(store, "b")
        a.register()
        b.register()
        a.register()  # twice: still registered once, since the first time
        tid = _trace(store, 2)
        vote = votes.record(trace_id=tid, vote=Vote(1.0), session_id="s", user_id="u")
        assert a.pending() == 1 and b.pending() == 1  # not the score written before registering
        votes.record(trace_id=tid, vote=Vote(0.0, "Incorrect"), session_id="s", user_id="u")
        votes.record(trace_id=before, vote=Vote(0.0), session_id="s", user_id="u")  # an old one, changed
        (due,) = [d for d in a.claim_due("me", 30) if d.score.id == vote.id]
        assert due.want_version == 2 and due.score.value == 0.0
        assert {d.score.id for d in b.claim_due("you", 30)} == {vote.id}
        assert old.id not in {d.score.id for d in a.claim_due("me", 30)}
        a.mark_delivered(due, "me", exists=True)
        assert a.pending() == 0 and b.pending() == 1  # each destination on its own
        store.delete_score(vote.id)  # the undo: due again, as a delete
        (due,) = a.claim_due("me", 30)
        assert due.score.deleted and due.remote_exists and due.want_version == 3
        a.mark_delivered(due, "someone-else", exists=False)  # a late report: ignored
        assert a.pending() == 1
    finally:
        store.close()


def test_outbox_sends_changes_undoes_and_a_dead_destination_holds_back_nobody(store_url):
    store = Store(store_url)
    up, down = ScriptedDestination("up"), ScriptedDestination("down")
    down.down = True
    outboxes = [DestinationOutbox(store, d, idle_poll_s=0.05, retry_max_s=0.2) for d in (up, down)]
    try:
        for outbox in outboxes:
            outbox.start()
        votes = VoteRecorder(store)
        tid = _trace(store, 3)
        score = votes.record(trace_id=tid, vote=Vote(1.0), session_id="s", user_id="u")
        for outbox in outboxes:
            outbox.notify()
        wait_for(lambda: up.rows.get(score.id) == (1.0, None), timeout=10)
        votes.record(trace_id=tid, vote=Vote(0.0, "Incorrect"), session_id="s", user_id="u")
        outboxes[0].notify()
        wait_for(lambda: up.rows.get(score.id) == (0.0, "Incorrect"), timeout=10)
        store.delete_score(score.id)
        outboxes[0].notify()
        wait_for(lambda: score.id not in up.rows and outboxes[0].ledger.pending() == 0, timeout=10)
        # The dead one kept trying (with backoff) and still owes the final state: an undo of a
        # create that may have arrived is a delete, nothing is lost.
        assert any(c[0] == "send" for c in down.calls)
        assert outboxes[1].ledger.pending() == 1
        down.down = False
        outboxes[1].notify()
        wait_for(lambda: outboxes[1].ledger.pending() == 0, timeout=10)
        assert down.calls[-1][0] == "delete" and score.id not in down.rows
    finally:
        for outbox in outboxes:
            outbox.stop(1)
        store.close()


def test_a_refused_score_is_not_retried_and_a_crashed_claim_is_sent_again(store_url):
    store = Store(store_url)
    dest = ScriptedDestination("d")
    outbox = DestinationOutbox(store, dest, lease_s=0.3)
    outbox.ledger.register()
    try:
        votes = VoteRecorder(store)
        tid = _trace(store, 4)
        score = votes.record(trace_id=tid, vote=Vote(1.0), session_id="s", user_id="u")
        # A process claims it and dies before sending or reporting.
        assert [d.score.id for d in outbox.ledger.claim_due("dead-process", 0.3)] == [score.id]
        assert outbox.deliver_due() == 0  # leased to the dead one
        time.sleep(0.35)
        assert outbox.deliver_due() == 1 and dest.rows[score.id] == (1.0, None)
        dest.refuse = True
        votes.record(trace_id=tid, vote=Vote(0.0), session_id="s", user_id="u")
        assert outbox.deliver_due() == 1
        assert outbox.deliver_due() == 0  # rejected: not sent again until the score changes
        assert outbox.ledger.counts() == {"delivered": 0, "rejected": 1, "pending": 0}
    finally:
        store.close()


class UnreachableDestination(ScriptedDestination):
    """Refuses connections while `down`, as a stopped server does."""

    def send(self, score: ScoreRow) -> Delivery:
        with self.lock:
            if self.down:
                self.calls.append(("send", score.id, score.version))
                return Delivery(RETRY, "ConnectError: connection refused", unreachable=True)
        return super().send(score)


def test_an_unreachable_destination_is_probed_once_per_wait_not_once_per_score(store_url):
    store = Store(store_url)
    dest = UnreachableDestination("gone")
    dest.down = True
    outbox = DestinationOutbox(store, dest, idle_poll_s=0.05, retry_max_s=0.4)
    outbox.ledger.register()
    try:
        votes = VoteRecorder(store)
        ids = [
            votes.record(trace_id=_trace(store, 100 + i), vote=Vote(1.0), session_id="s", user_id="u").id
            for i in range(12)
        ]
        assert outbox.deliver_due() == 1  # one refused connection stops the round
        assert outbox.deliver_due() == 0  # and nothing is tried until the wait is over
        rows = store.rows("SELECT attempts, lease_owner FROM score_deliveries WHERE destination = 'gone'", {})
        # The others were handed back untouched: no lease held, no attempt counted.
        assert sorted(r["attempts"] for r in rows) == [0] * 11 + [1]
        assert all(r["lease_owner"] is None for r in rows)
        time.sleep(0.6)
        assert outbox.deliver_due() == 1  # the next probe
        assert len(dest.calls) == 2
        dest.down = False
        time.sleep(1.1)  # the second wait (backoff doubles, up to retry_max_s)
        wait_for(lambda: outbox.deliver_due() >= 0 and outbox.ledger.pending() == 0, timeout=10)
        assert set(dest.rows) == set(ids)
        assert outbox.deliver_due() == 0  # reachable again: no wait left
    finally:
        store.close()
