"""What the model process costs: local turns with llama.cpp in its own process vs in the app's.

The same chat (the bundled SmolLM2 GGUF, real llama.cpp, the app's own handlers, tracing to
the store, isolated code execution) is run with the model in its supervised process (the
default) and with LOCAL_MODEL_IN_PROCESS=1, each in a fresh process of its own, in
alternating rounds so whatever else the shared machine does falls on both. Printed, in one
run: the turn p50 and the time from Enter to the first visible model text (p50), each as the
ratio process / in-process (target: at most 1.15), and the memory of the whole app (its
process and every process it started: the model process, the code workers), for both.

    python -m bench.local_model [--rounds 3] [--turns 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

BROWSER = "0b6c3b84-7f8c-4d35-8f4e-1f8f3c2e4a10"
# Questions a newcomer asks first (the first-run issue's and a few more), one chat each five.
QUESTIONS = [
    "What is 12 times 3?",
    "Hello! Who are you?",
    "What is 15 plus 27?",
    "What is 2 to the power of 10?",
    "What is the capital of France?",
    "What is 100 divided by 4?",
    "What is 7 times 8?",
    "What is the capital of Italy?",
    "What is 9 plus 10?",
    "What is 3 to the power of 4?",
]
MODES = ("process", "in-process")


def child(mode: str, turns: int) -> dict[str, Any]:
    """One app (one mode): warm it up as `python app.py` does, then run the chats."""
    from app import ChatHandlers, create_runtime
    from bench.harness import timed_turn
    from config.settings import settings_from_env
    from tests.helpers import text_of, tree_rss_mb

    data = tempfile.mkdtemp(prefix="bench-local-model-")
    env = {
        "DATA_DIR": data,
        "EVALUATORS_FILE": "off",
        "LOCAL_MODEL_IN_PROCESS": "1" if mode == "in-process" else "0",
    }
    runtime = create_runtime(settings_from_env(env))
    handlers = ChatHandlers(runtime)
    runtime.make_agent.warm_up()
    turn_s, first_text_s, answers = [], [], []
    session, history = None, []
    for n in range(turns):
        if n % 5 == 0:
            session, history = None, []
        history, session, first, total = timed_turn(
            handlers, QUESTIONS[n % len(QUESTIONS)], history, session, BROWSER
        )
        turn_s.append(total)
        first_text_s.append(first)
        answers.append(text_of(history[-1]))
    memory = tree_rss_mb(os.getpid())
    runtime.close()
    return {"turn_s": turn_s, "first_text_s": first_text_s, "answers": answers, "memory_mb": memory}


def run_child(mode: str, turns: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.local_model", "--child", mode, "--turns", str(turns)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise SystemExit(f"{mode} run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--child", choices=MODES)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.turns)))
        return
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for n in range(args.rounds):
        order = MODES if n % 2 == 0 else MODES[::-1]
        for mode in order:
            result = run_child(mode, args.turns)
            runs[mode].append(result)
            print(
                f"round {n + 1} {mode:>10}: turn p50 {statistics.median(result['turn_s']):.3f} s, "
                f"first text p50 {statistics.median(result['first_text_s']):.3f} s, "
                f"memory {result['memory_mb']:.0f} MB",
                flush=True,
            )

    def p50(mode: str, key: str) -> float:
        return statistics.median(x for r in runs[mode] for x in r[key])

    same = sum(
        a == b
        for p, i in zip(runs["process"], runs["in-process"], strict=True)
        for a, b in zip(p["answers"], i["answers"], strict=True)
    )
    total = args.rounds * args.turns
    print(
        f"\n{total} local turns per mode, {args.rounds} alternating rounds; same answers in both: {same}/{total}"
    )
    for key, label in (("turn_s", "turn p50"), ("first_text_s", "time to first visible text p50")):
        proc, inproc = p50("process", key), p50("in-process", key)
        print(
            f"{label}: process {proc:.3f} s, in-process {inproc:.3f} s, ratio {proc / inproc:.2f} (target <= 1.15)"
        )
    for mode in MODES:
        memory = statistics.median(r["memory_mb"] for r in runs[mode])
        print(f"memory of the whole app ({mode}): {memory:.0f} MB (median of {args.rounds})")


if __name__ == "__main__":
    main()
