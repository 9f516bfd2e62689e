"""What a newcomer sees with the bundled model: the README's speed and accuracy figures.

The app as `python app.py` starts it with nothing configured (the bundled SmolLM2 GGUF, its
default evaluators, tracing to the store), warmed up as at start. It asks the newcomer's first
five questions in one chat, then ten more in two chats, through the page's own handlers, and
prints per question the answer, whether it is right, the time from Enter to the first words and to
the complete answer; then the range and median of each set. The README quotes this output.

    python -m bench.newcomer [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

BROWSER = "5d0e4c1a-2b7f-4c3e-9a61-7f0b8e2d4c55"
# (question, what a right answer contains; None: a greeting, answered in words)
FIRST_FIVE = [
    ("What is 12 times 3?", "36"),
    ("Hello! Who are you?", None),
    ("What is 15 plus 27?", "42"),
    ("What is 2 to the power of 10?", "1024"),
    ("What is the capital of France?", "Paris"),
]
NEXT_TEN = [
    ("Hi there!", None),
    ("What is 100 divided by 4?", "25"),
    ("What is 7 times 8?", "56"),
    ("Thanks!", None),
    ("What is the capital of Italy?", "Rome"),
    ("What is 9 plus 10?", "19"),
    ("What is 5 squared?", "25"),
    ("What is 3 to the power of 4?", "81"),
    ("Good morning!", None),
    ("What is 6 times 7?", "42"),
]


def _right(answer: str, expected: str | None, gave_up: str) -> bool:
    """A greeting (expected None) is answered in words, not a number nor the give-up sentence."""
    if expected is None:
        return gave_up not in answer and re.search(r"[A-Za-z]{2,}", answer) is not None
    return expected.lower() in answer.lower()


def run(repeat: int) -> list[dict[str, Any]]:
    from agent.answer import GIVE_UP
    from app import ChatHandlers, create_runtime
    from bench.harness import timed_turn
    from config.settings import settings_from_env
    from tests.helpers import text_of

    env = dict(os.environ)
    env["DATA_DIR"] = tempfile.mkdtemp(prefix="bench-newcomer-")
    runtime = create_runtime(settings_from_env(env))
    handlers = ChatHandlers(runtime)
    runtime.make_agent.warm_up()
    gave_up = GIVE_UP.split(";")[0]
    rows = []
    chats = [("first five", FIRST_FIVE)] + [("next ten", NEXT_TEN[:5]), ("next ten", NEXT_TEN[5:])]
    for _ in range(repeat):
        for label, questions in chats:
            session, history = None, []
            for question, expected in questions:
                history, session, first, total = timed_turn(handlers, question, history, session, BROWSER)
                answer = text_of(history[-1]).strip()
                rows.append(
                    {
                        "set": label,
                        "question": question,
                        "answer": answer,
                        "right": _right(answer, expected, gave_up),
                        "first_s": first,
                        "answer_s": total,
                    }
                )
                print(
                    f"{label:>10} | {question:<32} | {'right' if rows[-1]['right'] else 'WRONG':<5} | "
                    f"first words {rows[-1]['first_s']:5.2f} s | answer {total:5.2f} s | {answer[:60]!r}",
                    flush=True,
                )
    runtime.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    print(
        f"{os.cpu_count()} CPUs; evaluators as configured (EVALUATORS_FILE={os.environ.get('EVALUATORS_FILE', 'default')})"
    )
    rows = run(args.repeat)
    for label in ("first five", "next ten"):
        part = [r for r in rows if r["set"] == label]
        first = [r["first_s"] for r in part]
        answer = [r["answer_s"] for r in part]
        print(
            f"\n{label}: {sum(r['right'] for r in part)}/{len(part)} right; first words "
            f"{min(first):.2f}-{max(first):.2f} s (median {statistics.median(first):.2f}); answers "
            f"{min(answer):.2f}-{max(answer):.2f} s (median {statistics.median(answer):.2f})"
        )


if __name__ == "__main__":
    main()
