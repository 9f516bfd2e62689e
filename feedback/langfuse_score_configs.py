"""Langfuse score configs, which a reviewer's label needs to arrive as an ANNOTATION score.

Langfuse takes `source: "ANNOTATION"` on POST /api/public/scores only with a `configId`
(packages/shared/src/domain/scores.ts isAnnotationScoreMissingConfigId, checked by the API's zod
schema and again in the worker, validateAndInflateScore.ts), and the worker then requires the
config's name to be the score's name, its data type the score's, the value within its range or
among its categories; a score that does not fit is dropped after the 202. So before the first
label of a name is sent, the project's configs are listed (GET /api/public/score-configs) and a
fitting one is reused, or one is made (POST): NUMERIC 0 to 1, BOOLEAN, CATEGORICAL with the
judge's categories. Config names are 1 to 35 letters, digits, '_', ' ', '.', '(', ')' or '-':
a label whose score name does not fit is sent as an API score (its metadata still says
ANNOTATION and "reviewer"), with a warning once per name.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from typing import Any

import httpx

from feedback.langfuse_scores import REJECTED, RETRY, Delivery

log = logging.getLogger(__name__)

__all__ = ["ScoreConfigs", "fits_config_name"]

_NAME = re.compile(r"^[\w .()\-]{1,35}$")
_PAGE = 100
_MAX_PAGES = 50


def fits_config_name(name: str) -> bool:
    """Whether Langfuse takes this as a score config's name (ScoreConfigNameSchema)."""
    return bool(_NAME.match(name))


def _retryable(status: int) -> bool:
    return status >= 500 or status in (401, 403, 408, 409, 429)


def _fits(config: dict[str, Any], name: str, data_type: str, categories: Sequence[str]) -> bool:
    if config.get("name") != name or config.get("dataType") != data_type or config.get("isArchived"):
        return False
    if data_type == "CATEGORICAL":
        labels = {c.get("label") for c in config.get("categories") or [] if isinstance(c, dict)}
        return set(categories) <= labels
    if data_type == "NUMERIC":
        low, high = config.get("minValue"), config.get("maxValue")
        return (low is None or low <= 0) and (high is None or high >= 1)
    return True


class ScoreConfigs:
    """The configs of one Langfuse project, found or made once per (name, type, categories)."""

    def __init__(
        self,
        base_url: str,
        public_key: str,
        secret_key: str,
        timeout_s: float = 5.0,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            auth=(public_key, secret_key),
            timeout=max(0.5, timeout_s),
            transport=transport,
        )
        self._lock = threading.Lock()
        self._ids: dict[tuple[str, str, tuple[str, ...]], str] = {}
        self._warned: set[str] = set()

    def close(self) -> None:
        self._http.close()

    def warn_unfit(self, name: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            log.warning(
                "Reviewer labels of %r go to Langfuse as API scores: a score config (needed for ANNOTATION) "
                "takes names of 1 to 35 letters, digits, '_', ' ', '.', '(', ')' or '-'",
                name,
            )

    def config_id(self, name: str, data_type: str, categories: Sequence[str] = ()) -> str | Delivery:
        """The id of a config that fits labels of this name and type; a Delivery (retry or
        rejected) when Langfuse cannot be asked or refuses to make one."""
        key = (name, data_type, tuple(categories))
        with self._lock:
            if key in self._ids:
                return self._ids[key]
            try:
                found = self._find(name, data_type, categories)
                if isinstance(found, Delivery) or found is not None:
                    if isinstance(found, str):
                        self._ids[key] = found
                    return found
                made = self._create(name, data_type, categories)
            except (httpx.HTTPError, ValueError) as exc:  # unreachable, or an answer that is not JSON
                return Delivery(RETRY, f"score configs: {type(exc).__name__}: {exc}"[:500])
            if isinstance(made, str):
                self._ids[key] = made
            return made

    def _find(self, name: str, data_type: str, categories: Sequence[str]) -> str | Delivery | None:
        for page in range(1, _MAX_PAGES + 1):
            response = self._http.get("/api/public/score-configs", params={"page": page, "limit": _PAGE})
            if response.status_code != 200:
                return self._failed(response, "listing score configs")
            body = response.json()
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                return Delivery(RETRY, "score configs: an answer without data")
            for config in data:
                if isinstance(config, dict) and _fits(config, name, data_type, categories):
                    return str(config["id"])
            meta = body.get("meta") or {}
            if not data or page >= int(meta.get("totalPages") or page):
                return None
        return None

    def _create(self, name: str, data_type: str, categories: Sequence[str]) -> str | Delivery:
        body: dict[str, Any] = {
            "name": name,
            "dataType": data_type,
            "description": "A reviewer's label of the judge of the same name (smolagent-chat review queue).",
        }
        if data_type == "NUMERIC":
            body.update(minValue=0, maxValue=1)
        elif data_type == "CATEGORICAL":
            body["categories"] = [{"label": c, "value": n} for n, c in enumerate(categories)]
        response = self._http.post("/api/public/score-configs", json=body)
        if 200 <= response.status_code < 300:
            made = response.json()
            if isinstance(made, dict) and made.get("id"):
                log.info("Made the Langfuse score config %r (%s) for reviewer labels", name, data_type)
                return str(made["id"])
            return Delivery(RETRY, "score configs: a created config without an id")
        return self._failed(response, f"making the score config {name!r}")

    @staticmethod
    def _failed(response: httpx.Response, what: str) -> Delivery:
        text = f"{what}: HTTP {response.status_code}: {response.text[:300]}"
        return Delivery(RETRY if _retryable(response.status_code) else REJECTED, text[:500])
