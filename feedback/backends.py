"""The feedback backends, picked from the settings: the local store always, Langfuse with keys."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from config.settings import Settings
from feedback.destination_outbox import DestinationOutbox
from feedback.langfuse_sink import LangfuseSink
from feedback.outbox import Outbox
from feedback.phoenix_annotations import score_destinations
from feedback.retention import DEFAULT_INTERVAL_S, RetentionLoop
from feedback.store import Store, StoreError
from feedback.tracing import Telemetry
from feedback.votes import VoteRecorder

log = logging.getLogger(__name__)


@dataclass
class FeedbackBackends:
    """Everything that records traces and scores for one app."""

    store: Store
    telemetry: Telemetry
    votes: VoteRecorder
    sink: LangfuseSink | None = None
    outbox: Outbox | None = None
    retention: RetentionLoop | None = None
    # Online evaluation (evals.worker.Evaluation), attached by the app when evaluators are on.
    evaluation: Any = None
    # Destinations besides Langfuse (Phoenix), each with its own outbox.
    destinations: list[DestinationOutbox] = field(default_factory=list)

    def wake_evaluation(self) -> None:
        """A turn ended or a rating changed: the evaluators look at the store now."""
        if self.evaluation is not None:
            self.evaluation.wake()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        export_delay_ms: int = 200,
        retention_interval_s: float = DEFAULT_INTERVAL_S,
        store: Store | None = None,
    ) -> FeedbackBackends:
        store = store or Store(settings.store_url)
        retention = None
        if settings.store_retention_days is not None:
            retention = RetentionLoop(store, settings.store_retention_days, interval_s=retention_interval_s)
        telemetry = Telemetry.from_settings(settings, store, export_delay_ms=export_delay_ms)
        destinations = [
            DestinationOutbox(
                store, d, retry_max_s=settings.langfuse_retry_max_s, lease_s=settings.outbox_lease_s
            )
            for d in score_destinations(settings, store)
        ]
        sink = outbox = None
        if settings.langfuse_enabled:
            sink = LangfuseSink.from_settings(settings)
            outbox = Outbox(
                store,
                sink,
                retry_max_s=settings.langfuse_retry_max_s,
                lease_s=settings.outbox_lease_s,
                send_timeout_s=settings.langfuse_timeout_s,
            )
        wake = [o.notify for o in ([outbox] if outbox is not None else []) + destinations]

        def notify() -> None:
            for each in wake:
                each()

        votes = VoteRecorder(store, notify=notify if wake else None, flush_spans=telemetry.flush_to_store)
        return cls(store, telemetry, votes, sink, outbox, retention, destinations=destinations)

    def start(self) -> None:
        """Point the agent instrumentation here, start delivering scores and pruning old spans."""
        self.telemetry.instrument()
        if self.outbox is not None:
            self.outbox.start()
        for destination in self.destinations:
            destination.start()
        if self.retention is not None:
            self.retention.start()

    def check_langfuse(self) -> str:
        """One line for the start banner; a failed check is a warning, never fatal."""
        if self.sink is None:
            return "Langfuse: off (no keys); traces and ratings are kept in the local store only."
        ok, detail = self.sink.auth_check()
        if ok:
            return f"Langfuse: connected ({detail})."
        log.warning(
            "Langfuse auth check failed (%s). The app runs on; ratings are kept locally and "
            "delivered when Langfuse answers.",
            detail,
        )
        return f"Langfuse: NOT reachable or keys rejected ({detail}); ratings are kept locally."

    def destination_lines(self) -> list[str]:
        """One banner line per destination besides Langfuse; a failed check is never fatal."""
        lines = []
        for outbox in self.destinations:
            check = getattr(outbox.destination, "check", None)
            if callable(check):
                ok, detail = check()
                lines.append(
                    f"{outbox.destination.name}: {'connected' if ok else 'NOT reachable'} ({detail})."
                )
        return lines

    def store_lines(self, settings: Settings) -> list[str]:
        """The start banner's store line, and on a Space with SQLite the warning it needs."""
        lines = [self.store.describe()]
        if settings.space_id and self.store.path is not None:
            lines.append(
                f"WARNING: this is a Hugging Face Space ({settings.space_id}) and the store is a SQLite "
                "file on its disk, which is wiped whenever the Space restarts, sleeps or changes its "
                "settings: every rating kept only there is lost then. Set DATABASE_URL to a Postgres "
                "database (a Space secret) to keep them; see the README, Deploy to a Space."
            )
        return lines

    def waiting_line(self) -> str:
        """The small status line shown when deliveries of people's ratings to Langfuse are behind
        (judges' scores are not the user's business: `python -m feedback status` shows them)."""
        if self.outbox is None:
            return ""
        try:
            counts = self.store.delivery_counts("ratings")
        except StoreError as exc:
            log.warning("Cannot count the ratings waiting for Langfuse: %s", exc)
            return "⚠️ The store cannot be reached right now; new ratings cannot be saved until it is back."
        parts = []
        if counts["pending"]:
            n = counts["pending"]
            parts.append(f"{n} rating{'s' if n != 1 else ''} waiting for Langfuse")
        if counts["rejected"]:
            n = counts["rejected"]
            parts.append(f"{n} rating{'s' if n != 1 else ''} rejected by Langfuse")
        return " · ".join(parts)

    def close(self) -> None:
        """Flush pending traffic (on SIGINT/SIGTERM and at exit)."""
        if self.evaluation is not None:
            self.evaluation.stop()
        if self.retention is not None:
            self.retention.stop()
        if self.outbox is not None:
            self.outbox.stop(flush_timeout_s=5.0)
        for destination in self.destinations:
            destination.stop(flush_timeout_s=5.0)
            destination.destination.close()
        if self.sink is not None:
            self.sink.close()
        self.telemetry.shutdown()
        self.store.close()
