"""Offline evaluation throughput: items per minute of a dataset run, and its cost per item against
calling the same agent in a bare loop (instant scripted model, so only our own work is timed).

One app runtime (create_runtime with a scripted model: provider "custom", so concurrency applies;
the default isolated code execution, one code worker per session; a SQLite store in a temp dir;
no Langfuse; evaluation off) runs the first --items GSM8K items in each measurement. Every
variant starts each item in a fresh session of that runtime (the same agent, its own code
worker; closed after the item), as the harness does:
- agent.run: the bare loop of the target. The session's CodeAgent.run(question) called
  directly, with the app's instrumentation on as it always is in this process (it is
  process-wide from the moment the runtime exists): no turn, no tags, no grading, no results.
  CodeAgent.run rather than stream_turn, because stream_turn is part of what the harness adds
  (the turn's root trace, streamed steps, the answer check);
- agent.run, untraced: the same with the instrumentation off (the agent's own cost);
- turn, untraced / turn, traced: through stream_turn, without a tracer and instrumentation, or
  traced into the store as a chat turn of the app is;
- harness c1, c4, c8: DatasetRun(...).run(items, concurrency=C) then summary(), as `python -m
  evals dataset run` does (a new run name each time, so every item runs): the traced turn with
  the run's tags, then grading, the result row and the score.
Traced measurements include writing their spans to the store (a flush at the end). The order
of the measurements is reversed every other round; figures are medians over rounds, ratios the
median of each round's ratio, so machine noise hits both sides alike.

The scripted model answers every item with final_answer(<the right number>), except items
3, 13, 23... (one more than the right number) and 7, 17, 27... (a sentence with no number):
accuracy 0.8, checked on every harness run (with every item's trace in the store), so grading
and tracing are real work.

    python -m bench.dataset_throughput [--items 150] [--rounds 5]
Target: harness <= 1.2 x the bare loop (agent.run) per item at concurrency 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Nothing from the developer's environment: no keys, no store, no model choice.
for _name in list(os.environ):
    if _name.startswith(("LANGFUSE_", "OPENAI_", "HF_TOKEN", "MODEL_", "OTEL_", "DATABASE_URL", "SPACE_ID")):
        os.environ.pop(_name)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from openinference.instrumentation.smolagents import SmolagentsInstrumentor  # noqa: E402

from agent.session import close_session  # noqa: E402
from agent.turn import stream_turn  # noqa: E402
from app import Runtime, create_runtime  # noqa: E402
from config.settings import settings_from_env  # noqa: E402
from evals.dataset_run import DatasetRun  # noqa: E402
from evals.datasets import Item, load_dataset  # noqa: E402
from evals.gsm8k import expected_number  # noqa: E402
from tests.fakes import ScriptedModel, code_reply, last_task  # noqa: E402

TARGET = 1.2
BARE = "agent.run"  # the bare loop of the target (see the docstring)
CONCURRENCY = (1, 4, 8)


def scripted_model(items: list[Item]) -> tuple[ScriptedModel, float]:
    """An instant model right on 8 items in 10, and the accuracy it must get."""
    replies = {}
    for n, item in enumerate(items):
        number = expected_number(item.expected)
        if n % 10 == 3:
            replies[item.input] = f"final_answer({str(number + 1)!r})"
        elif n % 10 == 7:
            replies[item.input] = "final_answer('I could not work it out.')"
        else:
            replies[item.input] = f"final_answer({str(number)!r})"
    wrong = sum(1 for n in range(len(items)) if n % 10 in (3, 7))

    def respond(messages: list[Any]) -> str:
        return code_reply(replies[last_task(messages)])

    return ScriptedModel(respond), (len(items) - wrong) / len(items)


class _NoTracer:
    """stream_turn's tracer when nothing is traced: the turn has no root and no trace id."""

    def turn(self, **_kwargs: Any) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()


@contextlib.contextmanager
def untraced(runtime: Runtime) -> Iterator[None]:
    SmolagentsInstrumentor().uninstrument()
    try:
        yield
    finally:
        runtime.feedback.telemetry.instrument()


def agent_run(runtime: Runtime, items: list[Item], *, traced: bool) -> None:
    with contextlib.nullcontext() if traced else untraced(runtime):
        for item in items:
            session = runtime.new_session("bench")
            try:
                session.agent.run(item.input)
            finally:
                close_session(session)
    if traced:
        runtime.feedback.telemetry.flush_to_store(10_000)


def turns(runtime: Runtime, items: list[Item], *, traced: bool) -> None:
    telemetry = runtime.feedback.telemetry
    metadata = runtime.metadata()
    with contextlib.nullcontext() if traced else untraced(runtime):
        for item in items:
            session = runtime.new_session("bench")
            try:
                for _update in stream_turn(
                    session, item.input, [], telemetry if traced else _NoTracer(), metadata
                ):
                    pass
            finally:
                close_session(session)
    if traced:
        telemetry.flush_to_store(10_000)


class Harness:
    """DatasetRun under a new run name per call; check() proves the last run did the real work."""

    def __init__(self, runtime: Runtime, accuracy: float) -> None:
        self.runtime = runtime
        self.accuracy = accuracy
        self.runs = 0
        self.last: dict[str, Any] = {}

    def __call__(self, items: list[Item], concurrency: int) -> None:
        self.runs += 1
        run = DatasetRun(self.runtime, f"bench-{self.runs}-c{concurrency}", "gsm8k")
        run.run(items, concurrency=concurrency)
        self.last = run.summary(item.id for item in items)
        self.runtime.feedback.telemetry.flush_to_store(10_000)

    def check(self, items: int) -> None:
        """Every item graded as scripted, and its trace in the store (outside the timings)."""
        got = (self.last["items"], self.last["accuracy"], self.last["errors"])
        if got != (items, self.accuracy, 0):
            raise SystemExit(f"The run graded {got}, expected {(items, self.accuracy, 0)}.")
        traced = self.runtime.feedback.store.rows(
            "SELECT COUNT(*) AS n FROM dataset_results d JOIN traces t ON t.id = d.trace_id WHERE d.run = :r",
            {"r": self.last["run_name"]},
        )[0]["n"]
        if traced != items:
            raise SystemExit(f"Only {traced} of {items} items have their trace in the store.")


def machine_busy_s() -> float:
    """CPU seconds all processes of the machine have used (Linux), code workers included."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def timed(work: Callable[[], None], items: int) -> tuple[float, float, float]:
    """Per item: wall ms, this process's CPU ms, the machine's CPU ms (all processes)."""
    wall, cpu, busy = time.perf_counter(), time.process_time(), machine_busy_s()
    work()
    return (
        (time.perf_counter() - wall) / items * 1000,
        (time.process_time() - cpu) / items * 1000,
        (machine_busy_s() - busy) / items * 1000,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=150, help="GSM8K items per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    load = os.getloadavg()

    items = load_dataset("gsm8k")[1][: args.items]
    model, accuracy = scripted_model(items)
    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        settings = settings_from_env({"DATA_DIR": str(Path(tmp) / "data"), "EVALUATORS_FILE": "off"})
        runtime = create_runtime(settings, model=model)
        try:
            assert runtime.choice.provider != "local" and runtime.feedback.telemetry.langfuse is None
            harness = Harness(runtime, accuracy)
            variants: dict[str, Callable[[], None]] = {
                "agent.run, untraced": lambda: agent_run(runtime, items, traced=False),
                "agent.run": lambda: agent_run(runtime, items, traced=True),
                "turn, untraced": lambda: turns(runtime, items, traced=False),
                "turn, traced": lambda: turns(runtime, items, traced=True),
                **{f"harness c{c}": (lambda c=c: harness(items, c)) for c in CONCURRENCY},
            }
            warm = items[:20]
            agent_run(runtime, warm, traced=False)
            agent_run(runtime, warm, traced=True)
            turns(runtime, warm, traced=False)
            turns(runtime, warm, traced=True)
            for c in CONCURRENCY:
                DatasetRun(runtime, f"warm-c{c}", "gsm8k").run(warm, concurrency=c)
            rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
            order = list(variants)
            for r in range(args.rounds):
                for name in order if r % 2 == 0 else reversed(order):
                    rows[name].append(timed(variants[name], len(items)))
                    if name.startswith("harness"):
                        harness.check(len(items))
            summary = harness.last
        finally:
            runtime.feedback.close()
    report(rows, args, summary, load)


def report(
    rows: dict[str, list[tuple[float, float, float]]], args: argparse.Namespace, summary: dict, load: tuple
) -> None:
    print(
        f"GSM8K items per measurement: {args.items}, rounds: {args.rounds} (order reversed every other "
        f"round); medians over rounds; load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(
        f"harness grading check: accuracy {summary['accuracy']:.2f}, no number {summary['no_number']:.2f}, "
        f"errors {summary['errors']}, every item traced, on every run"
    )
    print(f"{'':19} {'items/min':>10} {'wall ms/item':>13} {'cpu ms/item':>12} {'machine cpu ms/item':>20}")
    for name, values in rows.items():
        wall, cpu, machine = (statistics.median(v[i] for v in values) for i in range(3))
        print(f"{name:19} {60_000 / wall:10.0f} {wall:13.2f} {cpu:12.2f} {machine:20.2f}")
    print(
        "(cpu: this process; machine cpu: every process of the machine, the code workers included, "
        f"over {os.cpu_count()} cores)"
    )
    h1 = [v[0] for v in rows["harness c1"]]

    def ratio(base: str) -> tuple[float, str]:
        per_round = [h / b[0] for h, b in zip(h1, rows[base], strict=True)]
        return statistics.median(per_round), " ".join(f"{r:.3f}" for r in per_round)

    for base in ("agent.run, untraced", "agent.run", "turn, traced"):
        value, rounds = ratio(base)
        print(f"harness c1 / {base + ':':20} {value:.3f}  (rounds: {rounds})")
    value = ratio(BARE)[0]
    print(
        f"dataset harness per item at concurrency 1: {value:.3f} x the bare loop ({BARE}), "
        f"target <= {TARGET}: {'PASS' if value <= TARGET else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
