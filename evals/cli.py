"""`python -m evals`: the online evaluators, their log, and runs by hand.

list                                   evaluators, their versions, how many jobs each ran
logs [--evaluator NAME] [--status S]   each job: target, status, latency, tokens, cost, error
run --evaluator NAME --trace ID        try one evaluator on one trace (nothing stored unless --save)
backfill --evaluator NAME --since DATE judge past traces or conversations (--dry-run: count first)
agreement [--evaluator NAME]           each judge against reviewers (verdict) and thumbs: kappa or r,
                                       95% intervals, last window, drift
judge-check [--evaluator NAME] [--json]  hostile answers through the judge: how many move its score
dataset run DATASET --run-name NAME    the agent over gsm8k or a JSONL/CSV file, graded (resumable)
dataset list | dataset show RUN        the runs, and one run item by item
dataset publish RUN                    send a run to Langfuse (done by dataset run when keys are set)
dataset from-traces --name NAME ...    keep real turns (disliked, or judged low) as dataset items
compare RUN_A RUN_B [--json] [--plot F] two runs: accuracy with 95% intervals, McNemar, flipped items
ab status [--json] [--since DATE]      the A/B experiment (VARIANTS_FILE): each variant's figures, each
                                       against the control (always-valid test), the split, a verdict each
ab replay DATASET [--limit N]          the dataset against every variant (runs <experiment>-<variant>),
                                       each compared with the control's run (McNemar)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from tqdm import tqdm

from config.settings import Settings, SettingsError, load_settings
from evals.config import Evaluator, EvaluatorsError, EvaluatorsFile, load_evaluators_file
from evals.context import conversation_data, prompt_variables, render_prompt, turn_data
from evals.jobs import STATUSES, Job, JobQueue, NewJob
from evals.judge import Judge, judge_model
from evals.judge_check import register as register_judge_check
from evals.langfuse_datasets import cmd_dataset_publish, publish_run
from evals.online import held_back, is_demo_judge
from evals.scheduler import (
    CONVERSATION,
    conversation_revision,
    decide,
    is_dataset_trace,
    is_evaluation_trace,
    job_on_trace,
    rating_cause,
    rating_version,
    turn_revision,
)
from evals.trust import Thresholds
from evals.worker import Evaluation
from feedback.costs import Pricing
from feedback.store import Store, StoreError

# Judge reply tokens assumed per call when estimating a backfill (reasoning, then the score).
REPLY_TOKENS = 200


@dataclass
class _NoTrace:
    trace_id: str | None = None

    def set_output(self, _answer: str) -> None:
        pass


class NoTelemetry:
    """`run` without --save: the judge's call is not traced (nothing is stored)."""

    @contextmanager
    def evaluation(self, **_kwargs: Any) -> Iterator[_NoTrace]:
        yield _NoTrace()


def _when(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S") if epoch else "-"


def _evaluator(evaluators: Sequence[Evaluator], name: str) -> Evaluator:
    for e in evaluators:
        if e.name == name:
            return e
    raise SystemExit(f"No evaluator named {name!r}; `python -m evals list` shows them.")


def cmd_list(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    counts = ctx.queue.counts()
    for e in ctx.evaluators:
        runs = counts.get((e.name, e.version), {})
        state = "on" if e.enabled else "off"
        done = ", ".join(f"{status} {n}" for status, n in sorted(runs.items())) or "no jobs yet"
        extra = f", idle {e.idle_s:g} s, messages {e.messages}" if e.target == CONVERSATION else ""
        out.write(
            f"{e.name:<22} v{e.version} {state:<3} {e.kind:<4} {e.target:<12} {e.data_type:<11} "
            f"sampling {e.sampling_rate:g}{extra}\n    jobs: {done}\n"
        )
    older = {
        k: v for k, v in counts.items() if (k[0], k[1]) not in {(e.name, e.version) for e in ctx.evaluators}
    }
    for (name, version), runs in sorted(older.items()):
        out.write(f"{name:<22} v{version} (an earlier version) jobs: {sum(runs.values())}\n")
    skipped = held_back(ctx.settings, ctx.file)
    if skipped:
        out.write(
            f"Online, the LLM evaluators ({', '.join(skipped)}) do not run: the judge is the bundled demo "
            "model. Set JUDGE_PROVIDER / JUDGE_MODEL_ID for a capable judge, or demo_judge = true in the "
            "evaluators file to run them anyway (scores labelled as a demo judge's).\n"
        )
    elif is_demo_judge(ctx.settings) and any(e.kind == "llm" for e in ctx.evaluators):
        out.write("The judge is the bundled demo model: its scores are labelled as a demo judge's.\n")
    return 0


def cmd_logs(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    jobs = ctx.queue.log(evaluator=args.evaluator, status=args.status, limit=args.n)
    if args.json:
        out.write(json.dumps([job.__dict__ for job in jobs], indent=2, default=str) + "\n")
        return 0
    for job in jobs:
        tokens = "-" if job.prompt_tokens is None else f"{job.prompt_tokens}+{job.completion_tokens}"
        latency = "-" if job.latency_ms is None else f"{job.latency_ms:.0f} ms"
        result = job.string_value if job.string_value is not None else job.value
        cost = "-" if job.status != "completed" else "unknown" if job.cost is None else f"${job.cost:.6f}"
        line = (
            f"{_when(job.created)} {job.evaluator} v{job.version} {job.target_kind} {job.target_id} "
            f"[{job.trigger}] {job.status} latency {latency} tokens {tokens} cost {cost}"
        )
        if result is not None:
            line += f" -> {result}"
        if job.error:
            line += f"\n    error: {job.error}"
        out.write(line + "\n")
    if not jobs:
        out.write("No evaluation jobs match.\n")
    return 0


def cmd_run(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    evaluator = _evaluator(ctx.evaluators, args.evaluator)
    trace = ctx.store.get_trace(args.trace)
    if trace is None:
        print(f"No trace {args.trace} in the store ({ctx.store.where}).", file=sys.stderr)
        return 1
    job = job_on_trace(ctx.store, evaluator, trace, "manual")
    if job is None:
        print("That trace belongs to no conversation.", file=sys.stderr)
        return 1
    evaluation = ctx.evaluation(telemetry=None if args.save else NoTelemetry())
    started = time.perf_counter()
    outcome = evaluation.evaluate(_as_job(job), save=args.save)
    took = (time.perf_counter() - started) * 1000
    if args.save:
        # Logged like any other job (a run by hand at this version and revision).
        ctx.queue.add([job])
        ctx.queue.finish(job.id, None, **outcome.recorded(round(took, 3)))
        ctx.flush()
    if args.json:
        out.write(json.dumps({**outcome.__dict__, "latency_ms": round(took, 1)}, default=str) + "\n")
        return 0
    if outcome.prompt and args.show_prompt:
        out.write(f"--- prompt ---\n{outcome.prompt}\n--- end of prompt ---\n")
    for score in outcome.scores:
        value = score["string_value"] if score["string_value"] is not None else score["value"]
        out.write(f"{score['name']} = {value}\n")
    if not outcome.scores:
        out.write("no score (the evaluator returned nothing)\n")
    if outcome.reasoning:
        out.write(f"reasoning: {outcome.reasoning}\n")
    if outcome.prompt_tokens is not None:
        out.write(f"tokens: {outcome.prompt_tokens} prompt + {outcome.completion_tokens} completion\n")
    out.write(f"took {took:.0f} ms; {'saved' if args.save else 'nothing stored (--save stores it)'}\n")
    return 0


def _as_job(job: NewJob | Job) -> Job:
    if isinstance(job, Job):
        return job
    return Job(
        id=job.id, evaluator=job.evaluator, version=job.version, kind=job.kind, target_kind=job.target_kind,
        target_id=job.target_id, revision=job.revision, trigger=job.trigger, status=job.status, attempts=0,
        next_attempt_at=0, lease_owner=None, lease_until=0, created=time.time(), called_at=None,
        finished=None, latency_ms=None, prompt_tokens=None, completion_tokens=None, score_id=None,
        eval_trace_id=None, value=None, string_value=None, reasoning=None, error=None,
        cause_score_id=job.cause_score_id, cause_version=job.cause_version,
    )  # fmt: skip


def _since(text: str) -> float:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a date like 2026-11-01 (or 2026-11-01T12:00), got {text!r}"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def backfill_jobs(ctx: Context, evaluator: Evaluator, since: float) -> tuple[list[NewJob], int]:
    """The jobs a backfill would create (selected and skipped), and the judge tokens estimated."""
    jobs, tokens = [], 0
    if evaluator.target == CONVERSATION:
        sessions = ctx.store.rows(
            # Dataset items' sessions are not conversations (python -m evals dataset run --evaluator).
            """SELECT session_id, COUNT(*) AS turns FROM traces WHERE start_time >= :t
               AND session_id IS NOT NULL AND (tags IS NULL OR tags NOT LIKE '%"dataset"%')
               GROUP BY session_id""",
            {"t": since},
        )
        targets = [(s["session_id"], conversation_data(ctx.store, s["session_id"])) for s in sessions]
    else:
        rows = ctx.store.rows(
            "SELECT id, tags FROM traces WHERE start_time >= :t ORDER BY start_time", {"t": since}
        )
        targets = [
            (r["id"], turn_data(ctx.store, r["id"]))
            for r in rows
            if not is_evaluation_trace(r["tags"]) and not is_dataset_trace(r["tags"])
        ]
    for target_id, data in targets:
        if data is None or (evaluator.target == CONVERSATION and not data.turns):
            continue
        cause: tuple[str | None, int] = (None, 0)
        if evaluator.target == CONVERSATION:
            revision = conversation_revision(len(data.turns))
        else:
            version = rating_version(ctx.store, target_id)
            revision = turn_revision(evaluator, version)
            cause = rating_cause(evaluator, target_id, version)
        job = decide(evaluator, data, evaluator.target, target_id, revision, "backfill", cause)
        jobs.append(job)
        if job.status == "pending" and evaluator.kind == "llm":
            prompt = render_prompt(
                evaluator.prompt or "", prompt_variables(data, messages=evaluator.messages)
            )
            tokens += math.ceil(len(prompt) / 4) + REPLY_TOKENS
    return jobs, tokens


def cmd_backfill(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    evaluator = _evaluator(ctx.evaluators, args.evaluator)
    jobs, tokens = backfill_jobs(ctx, evaluator, args.since)
    selected = [j for j in jobs if j.status == "pending"]
    existing = sum(1 for j in selected if ctx.queue.get(j.id) is not None)
    noun = "conversations" if evaluator.target == CONVERSATION else "traces"
    out.write(
        f"{len(jobs)} {noun} since {_when(args.since)}: {len(selected)} selected by the filter and sampling "
        f"({existing} already judged or queued at this version); estimated judge tokens: {tokens:,}"
        f"{' (about 4 characters a token, ' + str(REPLY_TOKENS) + ' reply tokens a call)' if evaluator.kind == 'llm' else ' (a code evaluator: no judge calls)'}\n"
    )
    if args.dry_run:
        out.write("Dry run: nothing was queued or spent.\n")
        return 0
    ctx.queue.add(jobs)
    evaluation = ctx.evaluation()
    todo = [j for j in selected if (ctx.queue.get(j.id) or j).status in ("pending", "delayed", "running")]
    interrupted = False
    with tqdm(total=len(selected), initial=len(selected) - len(todo), unit="job", file=sys.stderr) as bar:
        job = None
        try:
            while True:
                job = ctx.queue.claim(evaluation.owner, evaluation.lease_s, evaluator=evaluator.name)
                if job is None:
                    break
                evaluation.run(job)
                bar.update(1)
        except KeyboardInterrupt:
            interrupted = True
            if job is not None:
                ctx.queue.release(job.id, evaluation.owner)  # the next run takes it at once
    if interrupted:
        out.write("Interrupted: run the same command again to go on where it stopped.\n")
        return 130
    done = ctx.queue.counts().get((evaluator.name, evaluator.version), {})
    out.write("Done: " + ", ".join(f"{k} {v}" for k, v in sorted(done.items())) + "\n")
    ctx.flush()
    return 0


def agreement(store: Store, evaluator: Evaluator, thresholds: Thresholds | None = None) -> dict[str, Any]:
    """One evaluator against people (evals.judge_trust): today's fields (the judge, >= 0.5 as a
    like, against users' thumbs: pairs, table, agreement, kappa), then the agreement with
    reviewers' labels and with thumbs, each with intervals, last window and drift, and the
    verdict (from reviewer labels only; None for a code check)."""
    from evals.judge_trust import assess_evaluator, report

    return report(assess_evaluator(store, evaluator, thresholds or Thresholds()))


def _window_lines(a: dict[str, Any], indent: str) -> list[str]:
    lines = []
    last = a["last_window"]
    if last is not None:
        lines.append(f"{indent}last {a['window']}: {_measure_text(last)}")
    else:
        lines.append(f"{indent}last {a['window']}: all {a['n']} labels are within one window")
    if a["drift"] is not None:
        lines.append(f"{indent}{a['drift']['sentence']}")
    else:
        lines.append(f"{indent}drift: not measured ({a['drift_reason']})")
    return lines


def _measure_text(m: dict[str, Any]) -> str:
    if m["value"] is None:
        return f"{m['name']} undefined, n={m['n']} ({m['reason']})"
    figure = f"{m['name']} {m['value']:.2f}"
    if m["low"] is None:
        figure += f", n={m['n']} (no interval: {m['reason']})"
    else:
        figure += f" (95% interval {m['low']:.2f} to {m['high']:.2f}, n={m['n']})"
    if m.get("observed") is not None:
        figure += f", raw agreement {m['observed']:.0%}"
    if m.get("bias") is not None:
        figure += f", judge - reviewer mean {m['bias']:+.2f}"
    return figure


def describe_agreement(r: dict[str, Any]) -> str:
    """The text of `agreement` for one evaluator."""
    verdict = r["verdict"]
    status = "code check (not a judge: no verdict)" if verdict is None else verdict["status"].upper()
    lines = [f"{r['evaluator']} ({r['kind']}, {r['data_type']}, version {r['version']}): {status}"]
    rev = r["reviewers"]
    if rev["n"]:
        lines.append(f"  against reviewers: {_measure_text(rev['overall'])}")
        if rev["secondary"] is not None:
            lines.append(f"    also {_measure_text(rev['secondary'])} (5 levels)")
        lines += _window_lines(rev, "    ")
    else:
        lines.append("  against reviewers: no reviewer has labelled a turn this version judged yet")
    if verdict is not None:
        lines.append(f"  verdict: {verdict['reason']}")
    if r["thumbs"] is not None:
        if not r["pairs"]:
            lines.append("  against user thumbs: no turn has both a judge score and a user rating yet")
        else:
            (dd, dl), (ld, ll) = r["table"]
            kappa = "undefined (one side never varies)" if r["kappa"] is None else f"{r['kappa']:.2f}"
            lines.append(
                f"  against user thumbs (shown, never a verdict: users who rate are not a random sample): "
                f"{r['pairs']} turns, agreement {r['agreement']:.0%}, Cohen's kappa {kappa} "
                f"(user dislike: judge low {dd}, high {dl}; user like: judge low {ld}, high {ll})"
            )
            lines.append(f"    {_measure_text(r['thumbs']['overall'])}")
            lines += _window_lines(r["thumbs"], "    ")
    return "\n".join(lines)


def _thresholds(args: argparse.Namespace) -> Thresholds:
    d = Thresholds()
    return Thresholds(
        min_labels=d.min_labels if args.min_labels is None else args.min_labels,
        kappa_lower=d.kappa_lower if args.kappa_lower is None else args.kappa_lower,
        correlation_lower=d.correlation_lower if args.correlation_lower is None else args.correlation_lower,
        window=d.window if args.window is None else args.window,
    )


def cmd_agreement(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    evaluators = [_evaluator(ctx.evaluators, args.evaluator)] if args.evaluator else ctx.evaluators
    thresholds = _thresholds(args)
    results = [agreement(ctx.store, e, thresholds) for e in evaluators]
    if args.json:
        out.write(json.dumps(results, indent=2) + "\n")
        return 0
    for r in results:
        out.write(describe_agreement(r) + "\n")
    if not results:
        out.write("No evaluators.\n")
    return 0


def _accuracy_line(summary: dict[str, Any]) -> str:
    if summary["accuracy"] is None:
        return (
            f"{summary['items']} items run, none graded (no expected outputs; see the evaluators' scores), "
            f"errors {summary['errors']}"
        )
    ungraded = summary["items"] - summary["graded"]
    return (
        f"{summary['correct']}/{summary['graded']} correct (accuracy {summary['accuracy']:.1%}, "
        f"flexible {summary['flexible_accuracy']:.1%}, no number {summary['no_number']:.1%}, "
        f"errors {summary['errors']}" + (f", {ungraded} not graded" if ungraded else "") + ")"
    )


def cmd_dataset_run(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    from dataclasses import replace

    from evals.dataset_run import DatasetRun
    from evals.datasets import DatasetError, load_dataset
    from runtime.runtime import create_runtime

    try:
        name, items = load_dataset(
            args.dataset, input_field=args.input_field, expected_field=args.expected_field, store=ctx.store
        )
    except DatasetError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    items = items[args.offset : args.offset + args.limit if args.limit else None]
    chosen = [_evaluator(ctx.evaluators, n) for n in dict.fromkeys(args.evaluator or [])]
    ungated = [name for name, _ in args.fail_under_score or [] if name not in {e.name for e in chosen}]
    if ungated:
        print(
            f"--fail-under-score {', '.join(ungated)}: only the scores of the evaluators named with "
            "--evaluator can be held to a minimum.",
            file=sys.stderr,
        )
        return 2
    # The dataset's traces are not judged by the online evaluators (they would spend judge calls);
    # the ones named with --evaluator score every item.
    runtime = create_runtime(replace(ctx.settings, evaluators_file=None))
    try:
        evaluation = ctx.evaluation(feedback=runtime.feedback, evaluators=chosen) if chosen else None
        try:
            run = DatasetRun(runtime, args.run_name, name, evaluation=evaluation)
        except ValueError as exc:
            print(str(exc), file=sys.stderr)
            return 2
        done = run.done_ids()
        todo = [item for item in items if item.id not in done]
        seen = {"n": 0, "right": 0}
        with tqdm(total=len(items), initial=len(items) - len(todo), unit="item", file=sys.stderr) as bar:

            def progress(result: Any) -> None:
                seen["n"] += 1
                seen["right"] += int(result.strict)
                bar.set_postfix(accuracy=f"{seen['right'] / seen['n']:.0%}", errors=result.error is not None)
                bar.update(1)

            try:
                run.run(items, concurrency=args.concurrency, on_result=progress)
            except KeyboardInterrupt:
                out.write("Interrupted: run the same command again to go on where it stopped.\n")
                return 130
        summary = run.summary(item.id for item in items)
        runtime.feedback.telemetry.flush()
        if runtime.feedback.outbox is not None:
            runtime.feedback.outbox.flush(10)
    finally:
        runtime.feedback.close()
    if ctx.settings.langfuse_enabled:
        # After the runtime closed: the items' spans and scores have left the process first.
        report = publish_run(ctx.settings, ctx.store, args.run_name)
        print(report.message, file=sys.stderr)  # stderr: --json stays one object on stdout
        summary["langfuse"] = report.as_dict()
    gate_failed = _score_gates(ctx, chosen, summary, args.fail_under_score or [])
    if args.json:
        out.write(json.dumps(summary, default=str) + "\n")
    else:
        out.write(f"{summary['run_name']} on {summary['dataset']}: " + _accuracy_line(summary) + "\n")
        for score, mean in summary["scores"].items():
            if score in summary["scored_items"]:
                out.write(f"  {score}: mean {mean:.3f} over {summary['scored_items'][score]} items\n")
    if args.fail_under is not None and summary["accuracy"] is None:
        print(
            "No item has an expected output, so there is no accuracy to hold to --fail-under.",
            file=sys.stderr,
        )
        return 1
    if args.fail_under is not None and summary["accuracy"] < args.fail_under:
        print(f"Accuracy {summary['accuracy']:.3f} is under --fail-under {args.fail_under}.", file=sys.stderr)
        return 1
    return 1 if gate_failed else 0


def _gate(text: str) -> tuple[str, float]:
    name, sep, minimum = text.partition("=")
    try:
        if not sep or not name.strip():
            raise ValueError
        return name.strip(), float(minimum)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be NAME=MIN, e.g. helpfulness=0.7, not {text!r}") from None


def _score_gates(
    ctx: Context, chosen: Sequence[Evaluator], summary: dict[str, Any], gates: list[tuple[str, float]]
) -> bool:
    """--fail-under-score: each evaluator's mean over the run's items, held to its minimum unless
    its judge is unverified (evals.judge_trust: then the gate is skipped, saying why). Accuracy
    (--fail-under) is graded against expected outputs, never by a judge: it is always held."""
    if not gates:
        return False
    from evals.judge_trust import judge_trust, score_gates

    verdicts = judge_trust(ctx.store, chosen)
    outcome = score_gates(summary["scores"], dict(gates), verdicts)
    for line in outcome.ignored + outcome.failed:
        print(line, file=sys.stderr)
    summary["gates"] = {"failed": outcome.failed, "ignored": outcome.ignored, "passed": outcome.passed}
    return not outcome.ok


def cmd_dataset_from_traces(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    from evals.from_traces import Selection, items_from, save_items, select_turns

    if args.below is not None and args.evaluator is None:
        print("--below needs --evaluator NAME (whose score must be below it).", file=sys.stderr)
        return 2
    selection = Selection(
        feedback=args.feedback, evaluator=args.evaluator, below=args.below, since=args.since, limit=args.limit,
        reviewed=args.reviewed,
    )  # fmt: skip
    items = items_from(ctx.store, select_turns(ctx.store, selection))
    if not items:
        out.write("No turn matches: nothing added.\n")
        return 0
    try:
        added = save_items(ctx.store, args.name, items)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    out.write(
        f"{len(items)} turns match: {added} new items in dataset {args.name!r} "
        f"({len(items) - added} already there).\n"
    )
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            for item in items:
                row = {"id": item.id, "input": item.input, "expected_output": item.expected, **item.metadata}
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        out.write(
            f"Written to {args.output}: fill in expected_output where you know the right answer and run "
            f"the file to grade them too.\n"
        )
    out.write(
        f"Run the agent over them: python -m evals dataset run {args.name} --run-name NAME "
        "--evaluator helpfulness (real turns have no expected answer: they are judged, not graded).\n"
    )
    return 0


def cmd_dataset_list(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    from evals.dataset_run import list_runs

    runs = list_runs(ctx.store)
    for r in runs:
        n = int(r["items"])
        graded = int(r["graded"])
        # Over the graded items, as compare and the dashboard count it.
        accuracy = f"{int(r['correct']) / graded:.1%}" if graded else "-"
        out.write(
            f"{r['name']:<24} {r['dataset']:<12} {r['model'] or '-':<36} items {n:>5} "
            f"accuracy {accuracy:>6} errors {int(r['errors'] or 0)}  {_when(r['updated'])}\n"
        )
    if not runs:
        out.write("No dataset runs yet: python -m evals dataset run gsm8k --run-name first --limit 20\n")
    from evals.datasets import stored_datasets

    stored = stored_datasets(ctx.store)
    if stored:
        out.write("\nDatasets kept in the store (from-traces):\n")
    for d in stored:
        out.write(f"{d['dataset']:<24} items {int(d['items']):>5}  {_when(d['updated'])}\n")
    return 0


def cmd_dataset_show(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    from evals.gsm8k import expected_number

    rows = ctx.store.rows("SELECT * FROM dataset_results WHERE run = :r ORDER BY item_id", {"r": args.run})
    if not rows:
        print(f"No run named {args.run!r} (python -m evals dataset list shows the runs).", file=sys.stderr)
        return 1
    if args.json:
        out.write(json.dumps(rows, default=str, indent=2) + "\n")
        return 0
    for r in rows:
        number = expected_number(r["expected"] or "")
        expected = str(number) if number is not None else (r["expected"] or "")
        mark = "right" if r["strict"] else "WRONG"
        answer = " ".join(str(r["answer"] or "").split())[:80]
        out.write(
            f"{r['item_id']}  {mark:<5} expected {expected!r} answer {answer!r} trace {r['trace_id']}"
            + (f"\n    error: {r['error']}" if r["error"] else "")
            + f"\n    {' '.join(str(r['input']).split())[:120]}\n"
        )
    return 0


def cmd_compare(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    from evals.compare import compare, describe

    known = {r["name"] for r in ctx.store.rows("SELECT name FROM dataset_runs")}
    missing = [r for r in (args.run_a, args.run_b) if r not in known]
    if missing:
        print(
            f"No run named {', '.join(map(repr, missing))} (python -m evals dataset list).", file=sys.stderr
        )
        return 1
    result = compare(ctx.store, args.run_a, args.run_b)
    out.write((json.dumps(result, indent=2) if args.json else describe(result)) + "\n")
    if args.plot:
        from evals.compare_plot import write_plot

        try:
            written = write_plot(result, args.plot)
        except (OSError, ValueError) as exc:
            print(f"Cannot write the chart to {args.plot}: {exc}", file=sys.stderr)
            return 1
        print(f"Chart written to {written}", file=sys.stderr)
    return 0


def _experiment(ctx: Context) -> Any:
    """The app's A/B experiment (VARIANTS_FILE), or None with the reason printed."""
    experiment = getattr(ctx.settings, "experiment", None)
    if experiment is None:
        print(
            "No experiment: VARIANTS_FILE is not set (README: Experiments). `ab` reads the variants file "
            "the app runs with.",
            file=sys.stderr,
        )
    return experiment


def cmd_ab_status(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    from evals.ab import Experiment, describe, results

    experiment = _experiment(ctx)
    if experiment is None:
        return 2
    found = results(
        ctx.store,
        Experiment.of(experiment, since=args.since),
        # Without an evaluators file every judge score is shown and none counts in the verdict.
        evaluators=ctx.evaluators or None,
    )
    if args.json:
        out.write(json.dumps(found.as_dict(), indent=2, allow_nan=False) + "\n")
    else:
        out.write(describe(found) + "\n")
    return 0


def replay_run_name(experiment: str, variant: str) -> str:
    """The dataset run of one variant in `ab replay`."""
    return f"{experiment}-{variant}"


def cmd_ab_replay(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    """The dataset against every variant (each a dataset run with that variant's agent, as
    `dataset run` makes it: resumable, published to Langfuse with keys), then each variant's run
    against the control's (evals.compare: accuracy, exact McNemar, the items that flipped)."""
    import dataclasses
    import io

    from evals.compare import compare, describe

    experiment = _experiment(ctx)
    if experiment is None:
        return 2
    summaries: dict[str, Any] = {}
    for variant in experiment.variants:
        name = replay_run_name(experiment.name, variant.name)
        # Every user of this runtime gets this variant: the experiment reduced to it, unpaused.
        alone = dataclasses.replace(
            experiment, variants=(dataclasses.replace(variant, paused=False),), control=variant.name
        )
        settings = dataclasses.replace(ctx.settings, experiment=alone)
        run_args = argparse.Namespace(
            dataset=args.dataset, run_name=name, limit=args.limit, offset=args.offset,
            concurrency=args.concurrency, input_field=args.input_field, expected_field=args.expected_field,
            evaluator=None, fail_under=None, fail_under_score=None, json=True,
        )  # fmt: skip
        print(f"Variant {variant.name}: dataset run {name}", file=sys.stderr)
        captured = io.StringIO()
        code = cmd_dataset_run(Context(settings, ctx.store, ctx.evaluators, ctx.file), run_args, captured)
        if code != 0:
            out.write(captured.getvalue())
            return code
        summaries[variant.name] = json.loads(captured.getvalue())
    control = replay_run_name(experiment.name, experiment.control)
    comparisons = {
        v.name: compare(ctx.store, control, replay_run_name(experiment.name, v.name))
        for v in experiment.variants
        if v.name != experiment.control
    }
    if args.json:
        out.write(json.dumps({"runs": summaries, "comparisons": comparisons}, indent=2, default=str) + "\n")
        return 0
    for variant, summary in summaries.items():
        out.write(f"{summary['run_name']} ({variant}) on {summary['dataset']}: {_accuracy_line(summary)}\n")
    for variant, result in comparisons.items():
        out.write(f"\n{variant} against the control {experiment.control}:\n{describe(result)}\n")
    return 0


class Context:
    """The store, the evaluators and a way to build the evaluation, for one command."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        evaluators: list[Evaluator],
        file: EvaluatorsFile | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.evaluators = evaluators
        self.file = file or EvaluatorsFile(evaluators)
        self.queue = JobQueue(store)
        self._feedback: Any = None

    def evaluation(
        self,
        telemetry: Any = None,
        *,
        feedback: Any = None,
        evaluators: Sequence[Evaluator] | None = None,
    ) -> Evaluation:
        """The evaluation of this command: its own backends, or `feedback` (a dataset run's
        runtime), whose store, traces and outbox it then uses."""
        if feedback is None:
            feedback = self._backends() if telemetry is None else self._feedback
        if telemetry is None:
            telemetry = feedback.telemetry
        queue = self.queue if feedback is None or feedback.store is self.store else JobQueue(feedback.store)
        notify = feedback.outbox.notify if feedback is not None and feedback.outbox else (lambda: None)
        return Evaluation(
            queue,
            self.evaluators if evaluators is None else evaluators,
            telemetry,
            judge=lambda: Judge(judge_model(self.settings)),
            notify_scores=notify,
            judge_provider=self.settings.judge_provider or self.settings.model_provider,
            pricing=Pricing.from_settings(self.settings),
            # A run by hand is asked for: it runs on the demo model too, its scores labelled so.
            demo_judge=is_demo_judge(self.settings),
        )

    def _backends(self) -> Any:
        if self._feedback is None:
            from feedback.backends import FeedbackBackends
            from feedback.tracing import register_model_class
            from llms.local_llm import LocalLlamaModel

            register_model_class(LocalLlamaModel)
            self._feedback = FeedbackBackends.from_settings(self.settings, store=self.store)
            self._feedback.start()
        return self._feedback

    def flush(self) -> None:
        if self._feedback is not None:
            self._feedback.telemetry.flush()
            if self._feedback.outbox is not None:
                self._feedback.outbox.flush(10)

    def close(self) -> None:
        if self._feedback is not None:
            self._feedback.close()
        else:
            self.store.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evals", description="Online evaluators of the chat app.")
    p.add_argument("--evaluators", help="the evaluators file (default: EVALUATORS_FILE)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("list", help="evaluators, versions and job counts")
    s.set_defaults(fn=cmd_list)
    s = sub.add_parser("logs", help="each evaluation job")
    s.add_argument("--evaluator")
    s.add_argument("--status", choices=STATUSES)
    s.add_argument("-n", type=int, default=50)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_logs)
    s = sub.add_parser("run", help="try one evaluator on one trace")
    s.add_argument("--evaluator", required=True)
    s.add_argument("--trace", required=True)
    s.add_argument("--save", action="store_true", help="store the score (and the judge's trace)")
    s.add_argument("--show-prompt", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_run)
    s = sub.add_parser("backfill", help="judge past traces or conversations")
    s.add_argument("--evaluator", required=True)
    s.add_argument("--since", required=True, type=_since, help="a date, e.g. 2026-11-01")
    s.add_argument("--dry-run", action="store_true", help="count and estimate, spend nothing")
    s.set_defaults(fn=cmd_backfill)
    s = sub.add_parser("dataset", help="offline evaluation over a dataset")
    dsub = s.add_subparsers(dest="dataset_command", required=True)
    d = dsub.add_parser("run", help="run the agent over a dataset and grade it")
    d.add_argument("dataset", help="gsm8k, or a .jsonl / .csv file")
    d.add_argument("--run-name", required=True, help="the same name continues an interrupted run")
    d.add_argument("--limit", type=int, default=0, help="at most this many items (0: all)")
    d.add_argument("--offset", type=int, default=0)
    d.add_argument("--concurrency", type=int, default=1, help="items at once (hosted models only)")
    d.add_argument("--input-field", default="input")
    d.add_argument("--expected-field", default="expected_output")
    d.add_argument(
        "--evaluator",
        action="append",
        metavar="NAME",
        help="also score every item with this evaluator from the evaluators file (repeatable; "
        "its filter and sampling are not applied)",
    )
    d.add_argument("--fail-under", type=float, help="exit 1 when accuracy is below this (0..1)")
    d.add_argument(
        "--fail-under-score",
        action="append",
        type=_gate,
        metavar="NAME=MIN",
        help="exit 1 when an --evaluator's mean score is below MIN (repeatable); ignored, with the "
        "reason printed, while that judge is unverified (python -m evals agreement)",
    )
    d.add_argument("--json", action="store_true", help="one JSON object with the run's figures")
    d.set_defaults(fn=cmd_dataset_run)
    d = dsub.add_parser(
        "publish", help="send a run to Langfuse: dataset, items, the run on its traces, run scores"
    )
    d.add_argument("run")
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_dataset_publish)
    d = dsub.add_parser("from-traces", help="keep real turns (e.g. the disliked ones) as dataset items")
    d.add_argument("--name", required=True, help="the dataset (created, or added to)")
    d.add_argument("--feedback", type=int, choices=(0, 1), help="0: turns users disliked; 1: liked")
    d.add_argument("--evaluator", help="turns this evaluator scored below --below")
    d.add_argument("--below", type=float, help="with --evaluator (default 0.5)")
    d.add_argument("--since", type=_since, help="turns since this date, e.g. 2026-11-01")
    d.add_argument("--limit", type=int, default=1000, help="at most this many turns (oldest first)")
    d.add_argument("--reviewed", action="store_true", help="turns a reviewer corrected (expected = the fix)")
    d.add_argument("--output", help="also write the items to this .jsonl file (to add expected outputs)")
    d.set_defaults(fn=cmd_dataset_from_traces)
    d = dsub.add_parser("list", help="the runs, and the datasets kept in the store")
    d.set_defaults(fn=cmd_dataset_list)
    d = dsub.add_parser("show", help="one run, item by item")
    d.add_argument("run")
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_dataset_show)
    s = sub.add_parser("compare", help="two dataset runs side by side")
    s.add_argument("run_a")
    s.add_argument("run_b")
    s.add_argument("--json", action="store_true")
    s.add_argument("--plot", metavar="FILE.png", help="also write a chart: accuracy with intervals, latency")
    s.set_defaults(fn=cmd_compare)
    s = sub.add_parser("agreement", help="each judge against reviewers' labels and users' thumbs")
    s.add_argument("--evaluator")
    s.add_argument("--json", action="store_true")
    s.add_argument("--window", type=int, help="labels in the last window (default 50)")
    s.add_argument("--min-labels", type=int, help="labels a verdict needs (default 30)")
    s.add_argument("--kappa-lower", type=float, help="kappa's lower bound to verify (default 0.4)")
    s.add_argument(
        "--correlation-lower", type=float, help="correlation's lower bound to verify (default 0.5)"
    )
    s.set_defaults(fn=cmd_agreement)
    s = sub.add_parser("ab", help="the A/B experiment of VARIANTS_FILE: results, and replays of a dataset")
    asub = s.add_subparsers(dest="ab_command", required=True)
    a = asub.add_parser("status", help="each variant's figures and verdict against the control")
    a.add_argument("--json", action="store_true", help="one JSON object with every figure")
    a.add_argument("--since", type=_since, help="count turns from this date (when the weights were last set)")
    a.set_defaults(fn=cmd_ab_status)
    a = asub.add_parser(
        "replay", help="run a dataset against every variant and compare each with the control"
    )
    a.add_argument("dataset", help="gsm8k, or a .jsonl / .csv file, or a dataset kept in the store")
    a.add_argument("--limit", type=int, default=0, help="at most this many items (0: all)")
    a.add_argument("--offset", type=int, default=0)
    a.add_argument("--concurrency", type=int, default=1, help="items at once (hosted models only)")
    a.add_argument("--input-field", default="input")
    a.add_argument("--expected-field", default="expected_output")
    a.add_argument("--json", action="store_true")
    a.set_defaults(fn=cmd_ab_replay)
    register_judge_check(sub)
    return p


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    args = parser().parse_args(argv)
    out = out or sys.stdout
    try:
        settings = load_settings()
        path = args.evaluators or settings.evaluators_file
        if path is None and args.command not in ("dataset", "compare", "ab"):
            print("EVALUATORS_FILE is off; give --evaluators FILE.", file=sys.stderr)
            return 2
        file = load_evaluators_file(path) if path is not None else EvaluatorsFile([])
    except (SettingsError, EvaluatorsError) as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        store = Store(settings.store_url)
    except StoreError as exc:
        print(f"Cannot open the store: {exc}", file=sys.stderr)
        return 1
    ctx = Context(settings, store, file.evaluators, file)
    try:
        return int(args.fn(ctx, args, out) or 0)
    finally:
        ctx.close()
