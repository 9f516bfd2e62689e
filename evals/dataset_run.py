"""Run the app's agent over a dataset: one fresh session and one trace per item, graded, stored.

The agent is the app's own (create_runtime: same provider, tools, isolated code execution,
prompts); each item starts a new session, so nothing is remembered between items. A run name is
a durable record in the store: running it again skips the items it already has, so an
interrupted run continues where it stopped. Results are graded as GSM8K answers when the
expected output holds a number, by normalised text otherwise.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from agent.session import close_session
from agent.turn import stream_turn
from evals.datasets import Item
from evals.gsm8k import expected_number, grade
from evals.scheduler import DATASET_TAG, job_on_trace
from feedback.store import BY_DATASET

if TYPE_CHECKING:
    from evals.worker import Evaluation

log = logging.getLogger(__name__)

_IDS = uuid.UUID("2b0c52f4-9a8e-4a55-b1c6-7d2f0e4a9c13")
SCORE_NAME = "dataset-correct"


@dataclass(frozen=True)
class ItemResult:
    item_id: str
    input: str
    expected: str
    answer: str | None
    trace_id: str | None
    strict: bool
    flexible: bool
    has_number: bool
    error: str | None
    latency_ms: float
    # False when the item has no expected output (a real turn kept by from-traces): run and
    # judged, but neither right nor wrong.
    graded: bool = True


def _words(value: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", value.casefold()).split())


def grade_item(answer: str | None, expected: str) -> tuple[bool, bool, bool]:
    """(strict, flexible, has a number): numbers as GSM8K grades them, else normalised text."""
    if expected_number(expected) is not None:
        g = grade(answer, expected)
        return g.strict, g.flexible, g.has_number
    said, wanted = _words(answer or ""), _words(expected)
    return said == wanted, bool(wanted) and wanted in said, bool(re.search(r"\d", answer or ""))


def list_runs(store: Any, limit: int | None = None) -> list[dict[str, Any]]:
    """Every run with its counts, newest first: items, graded items, right answers among them,
    errors (what `dataset list` prints and the dashboard charts)."""
    return store.rows(
        """SELECT r.name, r.dataset, r.model, r.updated, COUNT(x.item_id) AS items,
                  COALESCE(SUM(x.graded), 0) AS graded,
                  COALESCE(SUM(CASE WHEN x.graded = 1 THEN x.strict ELSE 0 END), 0) AS correct,
                  SUM(CASE WHEN x.error IS NULL THEN 0 ELSE 1 END) AS errors
           FROM dataset_runs r LEFT JOIN dataset_results x ON x.run = r.name
           GROUP BY r.name, r.dataset, r.model, r.updated ORDER BY r.updated DESC, r.name"""
        + (" LIMIT :n" if limit is not None else ""),
        {"n": limit},
    )


class _Tagged:
    """The app's tracer, with the run's and the item's tags on the turn's trace."""

    def __init__(self, telemetry: Any, tags: tuple[str, ...]) -> None:
        self.telemetry = telemetry
        self.tags = tags

    @contextmanager
    def turn(self, **kwargs: Any) -> Iterator[Any]:
        # The turn's own tags (an A/B variant's) stay, the run's are added.
        tags = (*kwargs.pop("extra_tags", ()), *self.tags)
        with self.telemetry.turn(**kwargs, extra_tags=tags) as root:
            yield root


def score_id(run_name: str, item_id: str) -> str:
    return str(uuid.uuid5(_IDS, f"{run_name}|{item_id}"))


class DatasetRun:
    """One named run of one dataset, against the store of `runtime`."""

    def __init__(
        self,
        runtime: Any,
        run_name: str,
        dataset: str,
        *,
        evaluation: Evaluation | None = None,
    ) -> None:
        self.runtime = runtime
        self.store = runtime.feedback.store
        self.name = run_name
        self.dataset = dataset
        # Online evaluators asked for by name (--evaluator) score every item's trace, whatever
        # their filter and sampling say: naming them is the choice.
        self.evaluation = evaluation
        now = time.time()
        with self.store.transaction() as db:
            existing = db.execute(
                text("SELECT dataset FROM dataset_runs WHERE name = :n"), {"n": run_name}
            ).first()
            if existing is not None and existing.dataset != dataset:
                raise ValueError(
                    f"The run {run_name!r} is a run of {existing.dataset!r}, not {dataset!r}: choose another --run-name."
                )
            db.execute(
                text(
                    """INSERT INTO dataset_runs (name, dataset, model, created, updated)
                       VALUES (:n, :d, :m, :t, :t) ON CONFLICT (name) DO UPDATE SET updated = :t"""
                ),
                {"n": run_name, "d": dataset, "m": runtime.choice.model_id, "t": now},
            )

    def done_ids(self) -> set[str]:
        return {
            r["item_id"]
            for r in self.store.rows("SELECT item_id FROM dataset_results WHERE run = :r", {"r": self.name})
        }

    def run_item(self, item: Item) -> ItemResult:
        """The agent on one item, in a session of its own, graded and stored."""
        runtime = self.runtime
        # During an A/B experiment a dataset runs against the control (`ab replay` runs each
        # variant as the control of an experiment reduced to it), never a variant by chance.
        experiment = runtime.settings.experiment
        session = runtime.new_session(
            f"dataset:{self.name}", variant=experiment.control if experiment is not None else None
        )
        tags = (DATASET_TAG, f"run:{self.name}", f"item:{item.id}")
        metadata = {
            **runtime.metadata(session),
            "dataset": self.dataset,
            "dataset_run": self.name,
            "dataset_item": item.id,
        }
        started = time.perf_counter()
        final = None
        try:
            for update in stream_turn(
                session, item.input, [], _Tagged(runtime.feedback.telemetry, tags), metadata
            ):
                if update.done:
                    final = update
        finally:
            close_session(session)
        latency = (time.perf_counter() - started) * 1000
        answer = None
        if final is not None and final.history and final.history[-1].get("role") == "assistant":
            answer = str(final.history[-1].get("content") or "")
        error = final.error if final is not None else "the turn produced nothing"
        strict, flexible, has_number = grade_item(None if error else answer, item.expected)
        graded = bool(item.expected.strip())
        result = ItemResult(
            item.id, item.input, item.expected, answer, final.trace_id if final else None,
            strict and graded and not error, flexible and graded and not error, has_number, error,
            round(latency, 3), graded,
        )  # fmt: skip
        self.record(result)
        self.evaluate(result.trace_id)
        return result

    def evaluate(self, trace_id: str | None) -> list[str]:
        """Score one item's trace with the chosen evaluators; returns their errors (never raises).

        An evaluator that already scored this trace at this version is not asked again, so a
        resumed run completes what an interruption left without paying twice.
        """
        if self.evaluation is None or not trace_id:
            return []
        self.runtime.feedback.telemetry.flush_to_store()  # the judge reads the turn from the store
        errors = []
        trace = self.store.get_trace(trace_id)
        if trace is None:
            return []
        for evaluator in self.evaluation.evaluators:
            job = job_on_trace(self.store, evaluator, trace, "dataset")
            if job is None:
                continue
            done = self.evaluation.queue.get(job.id)
            if done is not None and done.status == "completed":
                continue
            self.evaluation.queue.add([job])
            started = time.perf_counter()
            try:
                outcome = self.evaluation.evaluate(self.evaluation.queue.get(job.id), save=True)
            except Exception as exc:  # noqa: BLE001 - a failing judge is logged on the item, not fatal
                message = f"{evaluator.name}: {exc}"
                log.warning(
                    "Dataset run %s: evaluator %s on %s failed: %s", self.name, evaluator.name, trace_id, exc
                )
                self.evaluation.queue.fail(
                    job.id, None, str(exc), retry_at=None, latency_ms=(time.perf_counter() - started) * 1000
                )
                errors.append(message)
                continue
            self.evaluation.queue.finish(
                job.id, None, **outcome.recorded((time.perf_counter() - started) * 1000)
            )
            if outcome.scores:
                self.evaluation.notify_scores()
        return errors

    def record(self, r: ItemResult) -> None:
        with self.store.transaction() as db:
            db.execute(
                text(
                    """INSERT INTO dataset_results (run, item_id, input, expected, answer, trace_id, strict,
                           flexible, has_number, error, latency_ms, created, graded)
                       VALUES (:run, :item, :input, :expected, :answer, :trace, :strict, :flexible, :num,
                           :error, :latency, :now, :graded)
                       ON CONFLICT (run, item_id) DO UPDATE SET answer = excluded.answer,
                           trace_id = excluded.trace_id, strict = excluded.strict,
                           flexible = excluded.flexible, has_number = excluded.has_number,
                           error = excluded.error, latency_ms = excluded.latency_ms, created = excluded.created,
                           graded = excluded.graded"""
                ),
                {
                    "run": self.name, "item": r.item_id, "input": r.input, "expected": r.expected,
                    "answer": r.answer, "trace": r.trace_id, "strict": int(r.strict), "flexible": int(r.flexible),
                    "num": int(r.has_number), "error": r.error, "latency": r.latency_ms, "now": time.time(),
                    "graded": int(r.graded),
                },
            )  # fmt: skip
        if r.trace_id and r.graded:
            # On the item's trace, with a stable id: re-running the item overwrites it.
            self.store.upsert_score(
                score_id=score_id(self.name, r.item_id),
                trace_id=r.trace_id,
                name=SCORE_NAME,
                value=1.0 if r.strict else 0.0,
                data_type="BOOLEAN",
                source="EVAL",
                note=r.error,
                keep_note=False,
                metadata={"dataset": self.dataset, "dataset_run": self.name, "dataset_item": r.item_id},
                scored_by=BY_DATASET,
            )

    def run(
        self,
        items: Iterable[Item],
        *,
        concurrency: int = 1,
        on_result: Callable[[ItemResult], None] | None = None,
    ) -> None:
        """Run the items this run does not have yet; the local model runs one at a time."""
        items = list(items)
        done = self.done_ids()
        todo = [item for item in items if item.id not in done]
        if self.evaluation is not None:
            # Items finished before an interruption may still lack their evaluators' scores.
            wanted = {item.id for item in items} & done
            for row in self.store.rows(
                "SELECT item_id, trace_id FROM dataset_results WHERE run = :r", {"r": self.name}
            ):
                if row["item_id"] in wanted:
                    self.evaluate(row["trace_id"])
        if self.runtime.choice.provider == "local":
            concurrency = 1  # one llama.cpp context: parallel items would only queue
        if concurrency <= 1:
            for item in todo:
                result = self.run_item(item)
                if on_result is not None:
                    on_result(result)
            return
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="dataset-item") as pool:
            for result in pool.map(self.run_item, todo):
                if on_result is not None:
                    on_result(result)

    def summary(self, item_ids: Iterable[str] | None = None) -> dict[str, Any]:
        """The run's figures (over `item_ids` when given: the items of this invocation)."""
        rows = self.store.rows("SELECT * FROM dataset_results WHERE run = :r", {"r": self.name})
        if item_ids is not None:
            wanted = set(item_ids)
            rows = [r for r in rows if r["item_id"] in wanted]
        n = len(rows)
        # Accuracy is over the graded items: an item with no expected output is not wrong.
        graded = [r for r in rows if r["graded"]]
        g = len(graded)
        correct = sum(r["strict"] for r in graded)
        accuracy = correct / g if g else None
        traces = {r["trace_id"] for r in rows if r["trace_id"]}
        judged: dict[str, list[float]] = {}
        for score in self.store.rows(
            """SELECT s.trace_id, s.name, s.value FROM dataset_results r JOIN scores s ON s.trace_id = r.trace_id
               WHERE r.run = :r AND s.deleted = 0 AND s.source = 'EVAL' AND s.value IS NOT NULL
                 AND s.name <> :own""",
            {"r": self.name, "own": SCORE_NAME},
        ):
            if score["trace_id"] in traces:
                judged.setdefault(score["name"], []).append(float(score["value"]))
        return {
            "run_name": self.name,
            "dataset": self.dataset,
            "items": n,
            "graded": g,
            "correct": correct,
            "accuracy": accuracy,
            "flexible_accuracy": sum(r["flexible"] for r in graded) / g if g else None,
            "no_number": sum(1 for r in graded if not r["has_number"]) / g if g else None,
            "errors": sum(1 for r in rows if r["error"]),
            "scores": {
                **({SCORE_NAME: accuracy} if g else {}),
                **{name: sum(values) / len(values) for name, values in sorted(judged.items())},
            },
            "scored_items": {name: len(values) for name, values in sorted(judged.items())},
        }
