"""Runs evaluation jobs in the background: the scheduler thread and a few worker threads.

Off the request path: a chat turn or a vote only writes to the store; the scheduler finds the
work there. At most EVAL_CONCURRENCY jobs run at once, judge calls stop at
EVAL_MAX_CALLS_PER_HOUR (jobs wait, they do not vanish), a failing judge is retried with backoff
(status delayed), and with the local model the judge waits while a chat turn runs: the chat has
the CPU first. Each job is its own trace, and its result a score delivered by the outbox.

Every score says who scored (`scored_by`: judge, demo-judge, check; also in its metadata, which
Langfuse gets): with the bundled 135M model as judge (`demo_judge`), an LLM judge's scores are a
demo of the machinery, never a verdict to trust, and are labelled so wherever they are shown.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from evals.config import Evaluator
from evals.context import conversation_data, prompt_variables, render_prompt, turn_data
from evals.jobs import Job, JobQueue, eval_score_id
from evals.judge import Judge, JudgeError
from evals.review_rules import ReviewRules
from evals.scheduler import CONVERSATION, Scheduler
from feedback.costs import Pricing
from feedback.store import BY_CHECK, BY_DEMO_JUDGE, BY_JUDGE, CauseWithdrawn
from feedback.tracing import Telemetry
from llms.local_llm import GaveWay

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
HOUR_S = 3600.0


def retry_delay_s(attempts: int, max_s: float = 300.0) -> float:
    """2 s, 4 s, 8 s ... up to max_s between tries of one job."""
    return min(max_s, 2.0 ** max(1, attempts))


@dataclass
class Outcome:
    """What one job produced (also what `python -m evals run` prints)."""

    scores: list[dict[str, Any]]
    reasoning: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    eval_trace_id: str | None = None
    latency_ms: float | None = None
    prompt: str | None = None
    # Dollars: 0 for a code check or the local judge, None when the judge's price is unknown.
    cost: float | None = 0.0

    def recorded(self, latency_ms: float) -> dict[str, Any]:
        """What the job log keeps of it (the first score stands for the job)."""
        first = self.scores[0] if self.scores else {}
        return {
            "latency_ms": latency_ms,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "score_id": first.get("id"),
            "eval_trace_id": self.eval_trace_id,
            "value": first.get("value"),
            "string_value": first.get("string_value"),
            "reasoning": self.reasoning,
            "cost": self.cost,
        }


class EvaluationError(RuntimeError):
    """A job cannot produce a result; `retryable` says whether trying later may help."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def named_values(evaluator: Evaluator, result: Any) -> list[tuple[str, float | None, str | None]]:
    """A code evaluator's return value as (score name, value, string value) triples."""
    items = result.items() if isinstance(result, dict) else [(None, result)]
    out = []
    for key, value in items:
        if value is None:
            continue
        name = evaluator.name if key is None else f"{evaluator.name}.{key}"
        out.append((name, *_typed(evaluator, name, value)))
    return out


def _typed(evaluator: Evaluator, name: str, value: Any) -> tuple[float | None, str | None]:
    if evaluator.data_type == "CATEGORICAL":
        text = str(value)
        if evaluator.categories and text not in evaluator.categories:
            raise EvaluationError(
                f"{name} returned {text!r}, which is not one of {list(evaluator.categories)}."
            )
        return None, text
    if evaluator.data_type == "BOOLEAN":
        if isinstance(value, bool) or value in (0, 1):
            return (1.0 if value else 0.0), None
        raise EvaluationError(f"{name} must return True or False, got {value!r}.")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EvaluationError(f"{name} must return a finite number, got {value!r}.")
    return float(value), None


class Evaluation:
    """Everything online evaluation runs in one app process."""

    def __init__(
        self,
        queue: JobQueue,
        evaluators: Sequence[Evaluator],
        telemetry: Telemetry,
        *,
        judge: Judge | Callable[[], Judge] | None = None,
        notify_scores: Callable[[], None] = lambda: None,
        concurrency: int = 2,
        max_calls_per_hour: int = 600,
        busy: Callable[[], bool] = lambda: False,
        judge_provider: str = "custom",
        pricing: Pricing | None = None,
        poll_s: float = 2.0,
        lease_s: float = 600.0,
        demo_judge: bool = False,
        review: ReviewRules | None = None,
    ) -> None:
        self.queue = queue
        self.store = queue.store
        self.evaluators = list(evaluators)
        self.by_version = {(e.name, e.version): e for e in self.evaluators}
        self.scheduler = Scheduler(queue, self.evaluators)
        self.telemetry = telemetry
        self._judge = judge
        self._judge_lock = threading.Lock()
        self.notify_scores = notify_scores
        self.concurrency = concurrency
        self.max_calls_per_hour = max_calls_per_hour
        self.busy = busy
        self.judge_provider = judge_provider
        self.pricing = pricing or Pricing()
        self.poll_s = poll_s
        self.settle_s = min(0.3, poll_s)
        self.lease_s = lease_s
        # The judge is the bundled demo model: its LLM scores are labelled as a demo judge's.
        self.demo_judge = demo_judge
        # The review queue's rules (evals.review_rules): swept after each scheduler pass.
        self.review = review
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ----- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self._threads or not (self.evaluators or self.review):
            return
        self._stop.clear()
        self._threads = [threading.Thread(target=self._schedule_loop, name="eval-scheduler", daemon=True)]
        self._threads += [
            threading.Thread(target=self._work_loop, name=f"eval-worker-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for t in self._threads:
            t.start()

    def wake(self) -> None:
        """Something happened (a turn, a vote): look for work now instead of at the next poll."""
        with self._wake:
            self._wake.notify_all()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self.wake()
        for t in self._threads:
            t.join(timeout=timeout_s)
        self._threads = []

    def _sleep(self, seconds: float) -> None:
        with self._wake:
            if not self._stop.is_set():
                self._wake.wait(timeout=seconds)

    def _schedule_loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.scheduler.run_once():
                    self.wake()
            except Exception:  # noqa: BLE001 - evaluation never takes the app down
                log.exception("The evaluation scheduler failed a pass; it will try again")
            if self.review is not None:
                try:
                    self.review.sweep()
                except Exception:  # noqa: BLE001 - the review rules never take the app down either
                    log.exception("The review rules failed a pass; they will try again")
            self._sleep(self.poll_s)
            # Woken by a turn or a vote: let that request finish first (and the turn's spans,
            # exported about 0.2 s later, arrive), so the pass neither competes with it for the
            # CPU nor finds nothing yet.
            self._stop.wait(self.settle_s)

    def _work_loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.work_once()
            except Exception:  # noqa: BLE001
                log.exception("An evaluation worker failed a round; it will try again")
                worked = False
            if not worked:
                self._sleep(self.poll_s)

    # ----- one job ------------------------------------------------------------------------

    def calls_left(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return self.max_calls_per_hour - self.queue.calls_since(now - HOUR_S)

    def work_once(self) -> bool:
        """Claim and run one due job; False when there was nothing this worker may run now."""
        if self.busy():
            return False  # a chat turn is running: it gets the model and the CPU first
        # No LLM evaluator here (held back with the demo judge): LLM jobs queued earlier wait for
        # one, instead of failing as "removed".
        llm = any(e.kind == "llm" for e in self.evaluators) and self.calls_left() > 0
        job = self.queue.claim(self.owner, self.lease_s, llm=llm)
        if job is None:
            return False
        self.run(job)
        return True

    def run(self, job: Job) -> None:
        started = time.perf_counter()
        if not self.queue.cause_current(job):
            # The vote it would read changed after it was queued: no judge call for a stale vote.
            self.queue.cancel(job.id, self.owner, _WITHDRAWN)
            return
        try:
            outcome = self.evaluate(job)
        except CauseWithdrawn:
            # The vote changed while the judge ran: its score was not written.
            self.queue.cancel(job.id, self.owner, _WITHDRAWN)
            return
        except JudgeError as exc:
            if isinstance(exc.__cause__, GaveWay):
                # Not a failure: the chat needed the model. The job waits for the next quiet moment.
                self.queue.release(job.id, self.owner)
                return
            self._failed(job, exc, started)
            return
        except EvaluationError as exc:
            self._failed(job, exc, started)
            return
        except Exception as exc:  # noqa: BLE001 - a broken evaluator is its own problem, logged
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            log.exception("Evaluator %s failed on %s %s", job.evaluator, job.target_kind, job.target_id)
            self.queue.fail(job.id, self.owner, detail, retry_at=None, latency_ms=_ms(started))
            return
        self.queue.finish(job.id, self.owner, **outcome.recorded(_ms(started)))
        if outcome.scores:
            self.notify_scores()

    def _failed(self, job: Job, exc: Exception, started: float) -> None:
        retry_at = None
        if getattr(exc, "retryable", False) and job.attempts < MAX_ATTEMPTS:
            retry_at = time.time() + retry_delay_s(job.attempts)
        level = logging.INFO if retry_at else logging.WARNING
        log.log(level, "Evaluator %s on %s %s: %s", job.evaluator, job.target_kind, job.target_id, exc)
        self.queue.fail(job.id, self.owner, str(exc), retry_at=retry_at, latency_ms=_ms(started))

    def evaluate(self, job: Job, *, save: bool = True) -> Outcome:
        """Run the job's evaluator on its target; with save, write its scores to the store."""
        evaluator = self.by_version.get((job.evaluator, job.version))
        if evaluator is None:
            raise EvaluationError(
                f"The evaluator {job.evaluator!r} changed or was removed since this job was queued "
                f"(version {job.version})."
            )
        if job.target_kind == CONVERSATION:
            data: Any = conversation_data(self.store, job.target_id)
        else:
            data = turn_data(self.store, job.target_id)
        if data is None:
            raise EvaluationError(f"The {job.target_kind} {job.target_id} is not in the store (any more).")
        metadata = {
            "evaluator": evaluator.name,
            "evaluator_version": evaluator.version,
            "target_kind": job.target_kind,
            "target_id": job.target_id,
            "job_id": job.id,
        }
        outcome = Outcome(scores=[])
        by = BY_CHECK if evaluator.kind == "code" else BY_DEMO_JUDGE if self.demo_judge else BY_JUDGE
        labels: dict[str, Any] = {"scored_by": by}
        with self.telemetry.evaluation(
            evaluator=evaluator.name, message=f"{job.target_kind} {job.target_id}", metadata=metadata
        ) as root:
            outcome.eval_trace_id = root.trace_id
            if evaluator.kind == "code":
                values = named_values(evaluator, evaluator.function_callable()(data.as_dict()))
            else:
                variables = prompt_variables(data, messages=evaluator.messages)
                outcome.prompt = render_prompt(evaluator.prompt or "", variables)
                judge = self.judge()
                labels["judge_model"] = judge.model_id
                if by == BY_DEMO_JUDGE:
                    labels["demo_judge"] = True
                if save:
                    self.queue.mark_called(job.id)
                verdict = judge.judge(outcome.prompt, evaluator.data_type, evaluator.categories)
                outcome.reasoning = verdict.reasoning
                outcome.prompt_tokens = verdict.prompt_tokens
                outcome.completion_tokens = verdict.completion_tokens
                outcome.cost = self.pricing.cost(
                    judge.model_id,
                    verdict.prompt_tokens,
                    verdict.completion_tokens,
                    provider=self.judge_provider,
                )
                if isinstance(verdict.value, str):
                    values = [(evaluator.name, None, verdict.value)]
                else:
                    values = [(evaluator.name, float(verdict.value), None)]
            root.set_output(
                "; ".join(f"{name} = {v if s is None else s}" for name, v, s in values) or "no score"
            )
        for name, value, string_value in values:
            score = {
                "id": eval_score_id(name, evaluator.version, job.target_kind, job.target_id, job.revision),
                "name": name,
                "value": value,
                "string_value": string_value,
            }
            outcome.scores.append(score)
            if save:
                self.store.upsert_score(
                    score_id=score["id"],
                    trace_id="" if job.target_kind == CONVERSATION else job.target_id,
                    name=name,
                    value=value,
                    string_value=string_value,
                    data_type=evaluator.data_type,
                    source="EVAL",
                    session_id=data.session_id,
                    user_id=data.user_id,
                    note=(outcome.reasoning or None),
                    keep_note=False,
                    metadata={**metadata, **labels, "eval_trace_id": outcome.eval_trace_id},
                    scored_by=by,
                    cause=job.cause,
                )
        return outcome

    def judge(self) -> Judge:
        with self._judge_lock:
            if self._judge is None:
                raise EvaluationError("No judge model is configured for LLM evaluators.")
            if not isinstance(self._judge, Judge):
                self._judge = self._judge()  # built on the first LLM job, not at start
            return self._judge


_WITHDRAWN = "withdrawn: the rating it read changed or was undone before it finished"


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
