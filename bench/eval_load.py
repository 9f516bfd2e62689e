"""Does online evaluation slow the chat? Turn and vote latency with and without a busy evaluator.

Two pairs of runs in one process, each a fresh app with a stand-in Langfuse and the shipped
evaluators, against the same app with evaluation off:
- hosted: an instant scripted agent model, and a judge that waits 50 ms on the network per call
  (EVAL_CONCURRENCY=2): what evaluation costs the app itself;
- local: the bundled model as agent AND as judge (the default setup): the judge starts only
  while no turn runs, and gives the model back to a chat turn between two tokens.
Before measuring, a backlog of turns is queued so the evaluator is busy for the whole run.
Prints p50/p95 of turns and votes, the ratio of each to the run without evaluation, and how
many judge calls completed.

    python -m bench.eval_load [--turns 60] [--backlog 40]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gradio as gr  # noqa: E402

from app import ChatHandlers, create_runtime  # noqa: E402
from bench.harness import start_fake_langfuse  # noqa: E402
from config.settings import settings_from_env  # noqa: E402
from evals.jobs import JobQueue  # noqa: E402
from evals.judge import Judge  # noqa: E402
from tests.fakes import JudgeModel, ScriptedModel  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def verdict(prompt: str) -> dict[str, Any]:
    if "reason" in prompt.lower() and "disliked" in prompt:
        return {"reasoning": "The answer is wrong.", "score": "wrong-answer"}
    if "safe" in prompt:
        return {"reasoning": "Harmless.", "score": True}
    return {"reasoning": "It answers.", "score": 0.8}


JUDGE_S = 0.05  # --judge-ms


def hosted(prompt: str) -> dict[str, Any]:
    time.sleep(JUDGE_S)  # the network: no CPU used here
    return verdict(prompt)


def run(
    label: str,
    langfuse_url: str,
    turns: int,
    backlog: int,
    judge: Any,
    env: dict[str, str],
    *,
    local: bool = False,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_from_env(
            {
                "DATA_DIR": tmp,
                "LANGFUSE_PUBLIC_KEY": f"pk-lf-eval-{label}",
                "LANGFUSE_SECRET_KEY": "sk-lf-eval",
                "LANGFUSE_BASE_URL": langfuse_url,
                **env,
            }
        )
        runtime = create_runtime(
            settings,
            model=None if local else ScriptedModel(),
            judge=Judge(judge, structured=False) if judge else None,
        )
        if local:
            runtime.make_agent.warm_up()
        handlers = ChatHandlers(runtime)
        evaluation = runtime.feedback.evaluation
        rng = random.Random(3)
        session, history = None, []
        for n in range(backlog):  # work for the evaluator before the clock starts
            *_, (_t, history, session, _s) = handlers.respond(f"backlog {n}", history, session, "b")
        turn_ms, vote_ms = [], []
        started = time.perf_counter()
        for n in range(turns):
            t0 = time.perf_counter()
            *_, (_t, history, session, _s) = handlers.respond(f"question {n}", history, session, "b")
            turn_ms.append((time.perf_counter() - t0) * 1000)
            index = rng.choice(sorted(session.answer_traces))
            data = gr.LikeData(None, {"index": index, "value": None, "liked": rng.choice([True, False])})
            t0 = time.perf_counter()
            handlers.on_vote(session, data)
            vote_ms.append((time.perf_counter() - t0) * 1000)
        elapsed = time.perf_counter() - started
        done, backlog_left, per_s = 0, 0, 0.0
        if evaluation is not None:
            queue = JobQueue(runtime.feedback.store)

            def judged() -> int:
                return sum(1 for j in queue.log(limit=100_000) if j.status == "completed" and j.kind == "llm")

            done = judged()
            backlog_left = queue.backlog()
            # Judge throughput once the chat is quiet: completed judge calls over the next seconds.
            drain_s = 5.0 if not local else 20.0
            time.sleep(drain_s)
            per_s = (judged() - done) / drain_s
        runtime.feedback.close()
    return {
        "label": label,
        "turn_p50": percentile(turn_ms, 0.5),
        "turn_p95": percentile(turn_ms, 0.95),
        "vote_p50": percentile(vote_ms, 0.5),
        "vote_p95": percentile(vote_ms, 0.95),
        "judged": done,
        "elapsed": elapsed,
        "backlog_left": backlog_left,
        "judged_per_s": per_s,
    }


def demo_judges() -> str:
    """The default evaluators with the bundled model's LLM judges on (they are off unless asked)."""
    path = Path(tempfile.mkdtemp(prefix="bench-evaluators-")) / "evaluators.toml"
    path.write_text("demo_judge = true\n" + (ROOT / "evaluators.toml").read_text())
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=60)
    parser.add_argument("--backlog", type=int, default=40)
    parser.add_argument("--local-turns", type=int, default=12)
    parser.add_argument("--judge-ms", type=float, default=50, help="how long a hosted judge call takes")
    parser.add_argument("--hosted-only", action="store_true")
    args = parser.parse_args()
    global JUDGE_S
    JUDGE_S = args.judge_ms / 1000
    fake, url = start_fake_langfuse()
    try:
        hosted_env = {"EVAL_CONCURRENCY": "2", "JUDGE_PROVIDER": "openai"}
        pairs = [
            (
                run("off", url, args.turns, args.backlog, None, {"EVALUATORS_FILE": "off"}),
                run("hosted-judge", url, args.turns, args.backlog, JudgeModel(hosted), hosted_env),
            ),
        ]
        if not args.hosted_only:
            pairs.append(
                (
                    run("local-off", url, args.local_turns, 4, None, {"EVALUATORS_FILE": "off"}, local=True),
                    run(
                        "local-judge",
                        url,
                        args.local_turns,
                        4,
                        None,
                        {"EVALUATORS_FILE": demo_judges()},
                        local=True,
                    ),
                )
            )
    finally:
        fake.terminate()
    print(
        f"hosted: {args.turns} turns and votes after a backlog of {args.backlog} turns; "
        f"local: {args.local_turns} turns and votes after 4 (6 evaluators each)"
    )
    for r in [r for pair in pairs for r in pair]:
        print(
            f"{r['label']:<13} turn p50 {r['turn_p50']:7.1f} ms p95 {r['turn_p95']:7.1f} ms | "
            f"vote p50 {r['vote_p50']:6.2f} ms p95 {r['vote_p95']:6.2f} ms | "
            f"judge calls done {r['judged']} in {r['elapsed']:.1f} s, jobs left {r['backlog_left']}; "
            f"then, the chat quiet: {r['judged_per_s']:.1f} judge calls/s"
        )
    for base, r in pairs:
        print(
            f"{r['label']} / {base['label']}: turn p95 ratio {r['turn_p95'] / base['turn_p95']:.2f}, "
            f"vote p95 ratio {r['vote_p95'] / base['vote_p95']:.2f} "
            f"(turn p50 {r['turn_p50'] / base['turn_p50']:.2f}, vote p50 {r['vote_p50'] / base['vote_p50']:.2f})"
        )


if __name__ == "__main__":
    main()
