"""The Langfuse side of score delivery: one call per score, with an honest outcome.

The SDK's own score queue retries a few times and then drops scores; here each call's result
is returned to the outbox, which keeps the score on disk until Langfuse has accepted it. The
calls go through `ScoresEndpoint`, which speaks the form the server's generation takes.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from config.settings import Settings
from feedback.langfuse_score_configs import ScoreConfigs, fits_config_name
from feedback.langfuse_scores import ACCEPTED, REJECTED, RETRY, Delivery, ScoresEndpoint
from feedback.store import ScoreRow

# A reviewer's label (feedback.review_queue.ANNOTATION): an ANNOTATION score in Langfuse.
ANNOTATION = "ANNOTATION"

__all__ = ["ACCEPTED", "REJECTED", "RETRY", "Delivery", "LangfuseSink"]


class LangfuseSink:
    """Creates and deletes the store's scores in Langfuse."""

    def __init__(
        self, endpoint: ScoresEndpoint, environment: str | None = None, configs: ScoreConfigs | None = None
    ) -> None:
        self.endpoint = endpoint
        # Scores go to the traces' environment: Langfuse filters both by it.
        self.environment = environment
        # The project's score configs, which a reviewer's label needs to be an ANNOTATION score
        # (None: labels go as API scores, their metadata saying ANNOTATION).
        self.configs = configs

    @classmethod
    def from_settings(cls, settings: Settings) -> LangfuseSink:
        return cls(
            ScoresEndpoint(
                settings.langfuse_base_url,
                settings.langfuse_public_key,
                settings.langfuse_secret_key,
                settings.langfuse_timeout_s,
            ),
            environment=settings.environment,
            configs=ScoreConfigs(
                settings.langfuse_base_url,
                settings.langfuse_public_key,
                settings.langfuse_secret_key,
                settings.langfuse_timeout_s,
            ),
        )

    @property
    def keeps_timestamp(self) -> bool:
        return self.endpoint.keeps_timestamp

    @property
    def generation(self) -> str | None:
        """The form the server takes (langfuse_scores.BATCH or SINGLE); None until known."""
        return self.endpoint.generation

    def auth_check(self) -> tuple[bool, str]:
        """Ask Langfuse whether the keys work; never raises."""
        return self.endpoint.check_keys()

    @staticmethod
    def body(score: ScoreRow, environment: str | None = None) -> dict[str, Any]:
        metadata: dict[str, Any] = {"source": score.source, "session_id": score.session_id}
        if score.metadata:
            metadata.update(json.loads(score.metadata))
        body: dict[str, Any] = {
            "id": score.id,
            "name": score.name,
            "value": score.string_value if score.data_type == "CATEGORICAL" else score.value,
            "dataType": score.data_type,
            # The first vote's timestamp: a server that keeps it files a changed vote under the
            # same day (its dedupe key); one that drops it uses the day it received the call.
            "timestamp": datetime.fromisoformat(score.created).isoformat(),
            "metadata": metadata,
        }
        if environment:
            body["environment"] = environment
        if score.trace_id:
            body["traceId"] = score.trace_id
        else:
            # A conversation's score: on the Langfuse session, not on one of its traces.
            body["sessionId"] = score.session_id
        if score.comment:
            body["comment"] = score.comment
        return body

    def send(self, score: ScoreRow) -> Delivery:
        body = self.body(score, self.environment)
        if score.source == ANNOTATION and self.configs is not None:
            if fits_config_name(score.name):
                categories = json.loads(score.metadata).get("categories", []) if score.metadata else []
                config = self.configs.config_id(score.name, score.data_type, categories)
                if isinstance(config, Delivery):
                    return config
                body.update(source=ANNOTATION, configId=config)
            else:
                self.configs.warn_unfit(score.name)
        return self.endpoint.create(body)

    def delete(self, score_id: str) -> Delivery:
        return self.endpoint.delete(score_id)

    def close(self) -> None:
        self.endpoint.close()
        if self.configs is not None:
            self.configs.close()
