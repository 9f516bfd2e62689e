"""Per-destination delivery state of scores, for destinations besides Langfuse (Phoenix, ...).

The database records what each registered destination still needs (migration 014: a trigger
on `scores` writes `score_deliveries.want_version` whenever a score's version changes), so
every writer (the app, a judge worker, the CLI, another replica) is covered. Each destination's
outbox claims its own due rows with a lease, as the Langfuse outbox does with `scores`: two
processes never send the same score, and one that dies hands its rows over when the lease ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from feedback.store import ScoreRow, Store, _q, _score, utc_now


@dataclass(frozen=True)
class Due:
    """A score a destination still needs, with that destination's state of it."""

    score: ScoreRow
    want_version: int
    remote_exists: bool
    attempts: int
    lease_until: float


class DeliveryLedger:
    """One destination's rows of `score_deliveries`."""

    def __init__(self, store: Store, destination: str) -> None:
        self.store = store
        self.destination = destination

    def register(self) -> None:
        """From now on every new or changed score is due here (earlier ones are not sent)."""
        with self.store.transaction() as db:
            db.execute(
                _q(
                    "INSERT INTO destinations (name, since) VALUES (:n, :since) ON CONFLICT (name) DO NOTHING"
                ),
                {"n": self.destination, "since": utc_now()},
            )

    _DUE = """d.destination = :dest AND d.delivered_version < d.want_version
              AND d.rejected_version < d.want_version AND d.next_attempt_at <= :now"""

    def claim_due(
        self, owner: str, lease_s: float, *, now: float | None = None, limit: int = 20
    ) -> list[Due]:
        now = time.time() if now is None else now
        params: dict[str, Any] = {"dest": self.destination, "now": now}
        probe = (
            f"SELECT d.score_id FROM score_deliveries d WHERE {self._DUE} AND d.lease_until <= :now LIMIT 1"
        )
        if self.store.row(probe, params) is None:
            return []
        skip_locked = " FOR UPDATE SKIP LOCKED" if self.store.dialect == "postgresql" else ""
        with self.store.transaction() as db:
            ids = [
                r.score_id
                for r in db.execute(
                    _q(
                        f"""SELECT d.score_id FROM score_deliveries d
                            WHERE {self._DUE} AND d.lease_until <= :now
                            ORDER BY d.next_attempt_at LIMIT :n{skip_locked}"""
                    ),
                    {**params, "n": limit},
                )
            ]
            if not ids:
                return []
            db.execute(
                _q(
                    """UPDATE score_deliveries SET lease_owner = :owner, lease_until = :until
                       WHERE score_id = :id AND destination = :dest"""
                ),
                [{"owner": owner, "until": now + lease_s, "id": i, "dest": self.destination} for i in ids],
            )
            out = []
            for i in ids:
                row = (
                    db.execute(
                        _q(
                            """SELECT s.*, d.want_version AS d_want, d.remote_exists AS d_exists,
                                   d.attempts AS d_attempts, d.lease_until AS d_lease
                               FROM scores s JOIN score_deliveries d ON d.score_id = s.id
                               WHERE s.id = :id AND d.destination = :dest"""
                        ),
                        {"id": i, "dest": self.destination},
                    )
                    .mappings()
                    .one()
                )
                fields = {k: v for k, v in row.items() if not k.startswith("d_")}
                out.append(
                    Due(
                        _score(fields),
                        int(row["d_want"]),
                        bool(row["d_exists"]),
                        int(row["d_attempts"]),
                        float(row["d_lease"]),
                    )
                )
        return out

    # Only the holder of the lease reports; a late report (its lease ended and another outbox
    # took the row) is dropped: that outbox sends the current version itself.
    _MINE = "score_id = :id AND destination = :dest AND lease_owner = :owner"

    def mark_delivered(self, due: Due, owner: str, *, exists: bool) -> None:
        with self.store.transaction() as db:
            db.execute(
                _q(
                    f"""UPDATE score_deliveries SET delivered_version = :v, remote_exists = :exists,
                           attempts = 0, delivery_error = NULL, lease_owner = NULL, lease_until = 0
                       WHERE {self._MINE}"""
                ),
                {"v": due.score.version, "exists": int(exists), **self._key(due, owner)},
            )

    def mark_rejected(self, due: Due, owner: str, message: str) -> None:
        with self.store.transaction() as db:
            db.execute(
                _q(
                    f"""UPDATE score_deliveries SET rejected_version = :v, delivery_error = :m,
                           lease_owner = NULL, lease_until = 0
                       WHERE {self._MINE}"""
                ),
                {"v": due.score.version, "m": message[:2000], **self._key(due, owner)},
            )

    def mark_retry(self, due: Due, owner: str, message: str, at: float, *, maybe_exists: bool) -> None:
        """Try again at `at`; a create that may have arrived counts as existing (an undo deletes it)."""
        with self.store.transaction() as db:
            db.execute(
                _q(
                    f"""UPDATE score_deliveries SET attempts = attempts + 1, delivery_error = :m,
                           next_attempt_at = :at, lease_owner = NULL, lease_until = 0,
                           remote_exists = CASE WHEN :maybe = 1 THEN 1 ELSE remote_exists END
                       WHERE {self._MINE}"""
                ),
                {"m": message[:2000], "at": at, "maybe": int(maybe_exists), **self._key(due, owner)},
            )

    def release(self, dues: list[Due], owner: str) -> None:
        """Hand back rows claimed but not attempted (their destination went away meanwhile)."""
        if not dues:
            return
        with self.store.transaction() as db:
            db.execute(
                _q(f"UPDATE score_deliveries SET lease_owner = NULL, lease_until = 0 WHERE {self._MINE}"),
                [self._key(due, owner) for due in dues],
            )

    def release_all(self, owner: str) -> int:
        with self.store.transaction() as db:
            return db.execute(
                _q(
                    """UPDATE score_deliveries SET lease_owner = NULL, lease_until = 0
                       WHERE destination = :dest AND lease_owner = :owner"""
                ),
                {"dest": self.destination, "owner": owner},
            ).rowcount

    def due_now(self, now: float | None = None) -> bool:
        """Something this destination should be sent now (leased or not)."""
        now = time.time() if now is None else now
        probe = f"SELECT d.score_id FROM score_deliveries d WHERE {self._DUE} LIMIT 1"
        return self.store.row(probe, {"dest": self.destination, "now": now}) is not None

    def pending(self) -> int:
        """Rows due now or waiting for a retry (for flush and the status line)."""
        row = self.store.row(
            """SELECT COUNT(*) AS n FROM score_deliveries d WHERE d.destination = :dest
               AND d.delivered_version < d.want_version AND d.rejected_version < d.want_version""",
            {"dest": self.destination},
        )
        return int(row["n"]) if row else 0

    def counts(self) -> dict[str, int]:
        rows = self.store.rows(
            """SELECT
                 SUM(CASE WHEN delivered_version >= want_version THEN 1 ELSE 0 END) AS delivered,
                 SUM(CASE WHEN rejected_version >= want_version AND delivered_version < want_version
                     THEN 1 ELSE 0 END) AS rejected,
                 SUM(CASE WHEN delivered_version < want_version AND rejected_version < want_version
                     THEN 1 ELSE 0 END) AS pending
               FROM score_deliveries WHERE destination = :dest""",
            {"dest": self.destination},
        )
        r = rows[0] if rows else {}
        return {k: int(r.get(k) or 0) for k in ("delivered", "rejected", "pending")}

    def _key(self, due: Due, owner: str) -> dict[str, Any]:
        return {"id": due.score.id, "dest": self.destination, "owner": owner}
