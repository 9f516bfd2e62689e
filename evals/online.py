"""Online evaluation for one app process, built from the settings.

The app calls `build_evaluation` once; the result runs in the background, and the app only
tells it when something happened (`wake`) and whether a chat turn is running (`busy`).

With the bundled 135M model as judge the LLM judges only run when asked (`demo_judge = true` in
the evaluators file): measured with `python -m bench.judge_agreement`, that model agrees with
hand labels at chance level and scored nearly every answer unsafe. When asked, their scores are
labelled as a demo judge's (scored_by = "demo-judge", metadata demo_judge = true). Code checks
always run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from config.settings import Settings, SettingsError
from evals.config import EvaluatorsError, EvaluatorsFile, load_evaluators_file
from evals.jobs import JobQueue
from evals.judge import Judge, judge_model
from evals.review_rules import ReviewRules
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


def is_demo_judge(settings: Settings) -> bool:
    """Whether the judge would be the bundled demo model: the local provider with no model file
    of one's own (LOCAL_MODEL_PATH), the judge's or, with no JUDGE_PROVIDER, the agent's."""
    provider = settings.judge_provider or settings.model_provider
    return provider == "local" and not settings.local_model_path


def demo_judge_asked(settings: Settings, file: EvaluatorsFile) -> bool:
    """Whether LLM judges were asked to run on the demo model: `demo_judge = true` in the
    evaluators file (or an EVAL_DEMO_JUDGE setting, once config/settings.py has one)."""
    return file.demo_judge or bool(getattr(settings, "eval_demo_judge", False))


def held_back(settings: Settings, file: EvaluatorsFile) -> list[str]:
    """The enabled LLM evaluators that do not run online: the judge is the demo model, unasked."""
    if not is_demo_judge(settings) or demo_judge_asked(settings, file):
        return []
    return [e.name for e in file.evaluators if e.enabled and e.kind == "llm"]


def _load(path: Path) -> EvaluatorsFile:
    try:
        return load_evaluators_file(path)
    except EvaluatorsError as exc:
        raise SettingsError(str(exc)) from None


def build_evaluation(
    settings: Settings,
    feedback: FeedbackBackends,
    *,
    busy: Callable[[], bool] = lambda: False,
    judge: Judge | None = None,
) -> Evaluation | None:
    """The evaluation of this app, or None when EVALUATORS_FILE is off or lists none enabled.

    A judge passed in (tests, embedders) is never the demo model; one built from the settings
    is when `is_demo_judge`: its LLM evaluators are then left out unless asked for, and labelled.
    """
    path = evaluators_path(settings)
    if path is None:
        return None
    file = _load(path)
    evaluators = [e for e in file.evaluators if e.enabled]
    demo = judge is None and is_demo_judge(settings)
    if demo and not demo_judge_asked(settings, file):
        skipped = [e.name for e in evaluators if e.kind == "llm"]
        if skipped:
            log.info(
                "LLM evaluators off with the bundled demo model as judge (%s); demo_judge = true in %s "
                "runs them anyway, labelled as a demo judge's",
                ", ".join(skipped),
                path,
            )
        evaluators = [e for e in evaluators if e.kind != "llm"]
    # The review queue's rules run in the evaluation's scheduler thread, also with no evaluator.
    review = ReviewRules(feedback.store, file.review) if file.review.enabled_rules else None
    if not evaluators and review is None:
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
        demo_judge=demo,
        review=review,
    )


def describe(evaluation: Evaluation | None, settings: Settings) -> str:
    """The start banner's evaluation line: what runs, which judge, and what the demo model skips."""
    path = settings.evaluators_file
    skipped = held_back(settings, _load(path)) if path is not None and path.is_file() else []
    hint = (
        f"; LLM judges off ({', '.join(skipped)}): the judge would be the bundled demo model. Set "
        f"JUDGE_PROVIDER / JUDGE_MODEL_ID for a capable judge, or demo_judge = true in {path} to run "
        "them anyway, labelled as a demo judge's"
        if skipped
        else ""
    )
    if evaluation is None:
        if skipped:
            return f"evaluation: off{hint}"
        return "evaluation: off (EVALUATORS_FILE=off or no enabled evaluator)"
    review = ""
    if evaluation.review is not None:
        rules = ", ".join(
            f"{r.name} ({r.rate:.0%})" if r.kind == "sample" else r.name for r in evaluation.review.rules
        )
        review = f"; review rules: {rules}"
    if not evaluation.evaluators:
        return f"evaluation: no evaluators{hint}{review}"
    judge = settings.judge_model_id or settings.model_id or settings.judge_provider or settings.model_provider
    names = ", ".join(e.name for e in evaluation.evaluators)
    if evaluation.demo_judge and any(e.kind == "llm" for e in evaluation.evaluators):
        judge += " (the bundled demo model: its scores are labelled demo judge, not verdicts to trust)"
    elif not any(e.kind == "llm" for e in evaluation.evaluators):
        judge = "none (code checks only)"
    return f"evaluation: {len(evaluation.evaluators)} evaluators ({names}); judge: {judge}{hint}{review}"
