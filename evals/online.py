"""Online evaluation for one app process, built from the settings.

The app calls `build_evaluation` once; the result runs in the background, and the app only
tells it when something happened (`wake`) and whether a chat turn is running (`busy`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from config.settings import Settings, SettingsError
from evals.config import EvaluatorsError, load_evaluators
from evals.jobs import JobQueue
from evals.judge import Judge, judge_model
from evals.worker import Evaluation
from feedback.backends import FeedbackBackends
from feedback.costs import Pricing

log = logging.getLogger(__name__)


def evaluators_path(settings: Settings) -> Path | None:
    path = settings.evaluators_file
    if path is None:
        return None
    if not path.is_file():
        raise SettingsError(
            f"EVALUATORS_FILE {path} does not exist (set EVALUATORS_FILE=off to run without evaluation)."
        )
    return path


def build_evaluation(
    settings: Settings,
    feedback: FeedbackBackends,
    *,
    busy: Callable[[], bool] = lambda: False,
    judge: Judge | None = None,
) -> Evaluation | None:
    """The evaluation of this app, or None when EVALUATORS_FILE is off or lists none enabled."""
    path = evaluators_path(settings)
    if path is None:
        return None
    try:
        evaluators = [e for e in load_evaluators(path) if e.enabled]
    except EvaluatorsError as exc:
        raise SettingsError(str(exc)) from None
    if not evaluators:
        return None
    notify = feedback.outbox.notify if feedback.outbox is not None else (lambda: None)
    # Only local judges need to wait for the chat: a hosted judge does not use this machine's CPU.
    local_judge = (settings.judge_provider or settings.model_provider) == "local"
    return Evaluation(
        JobQueue(feedback.store),
        evaluators,
        feedback.telemetry,
        judge=judge or (lambda: Judge(judge_model(settings))),
        notify_scores=notify,
        concurrency=1 if local_judge else settings.eval_concurrency,
        max_calls_per_hour=settings.eval_max_calls_per_hour,
        busy=busy if local_judge else (lambda: False),
        # A judge passed in (tests, embedders) has no known provider: its price is unknown.
        judge_provider="custom"
        if judge is not None
        else (settings.judge_provider or settings.model_provider),
        pricing=Pricing.from_settings(settings),
    )


def describe(evaluation: Evaluation | None, settings: Settings) -> str:
    """The start banner's evaluation line."""
    if evaluation is None:
        return "evaluation: off (EVALUATORS_FILE=off or no enabled evaluator)"
    judge = settings.judge_model_id or settings.model_id or settings.judge_provider or settings.model_provider
    names = ", ".join(e.name for e in evaluation.evaluators)
    return f"evaluation: {len(evaluation.evaluators)} evaluators ({names}); judge: {judge}"
