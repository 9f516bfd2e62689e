"""Vote handler latency while the Langfuse stand-in answers normally, answers 500, or hangs.

The handler must only commit the vote to the local store and wake the outbox; delivery
happens in the background, so Langfuse's health must not show in these figures.

    python -m bench.votes [--votes 1500]
Target: p99 < 5 ms in every mode.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gradio as gr  # noqa: E402

from app import ChatHandlers, create_runtime  # noqa: E402
from bench.harness import start_fake_langfuse  # noqa: E402
from config.settings import settings_from_env  # noqa: E402
from tests.fakes import ScriptedModel  # noqa: E402

LIKED = [True, False, "", "Incorrect", "Like", "Too slow"]


def set_mode(url: str, mode: str) -> None:
    req = urllib.request.Request(
        f"{url}/_control/mode", data=json.dumps({"mode": mode}).encode(), method="POST"
    )
    urllib.request.urlopen(req, timeout=5).read()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--votes", type=int, default=1500)
    parser.add_argument("--answers", type=int, default=20)
    args = parser.parse_args()

    fake, url = start_fake_langfuse()
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_from_env(
            {
                "DATA_DIR": tmp,
                "EVALUATORS_FILE": "off",
                "LANGFUSE_PUBLIC_KEY": f"pk-lf-votes-{uuid.uuid4().hex[:6]}",
                "LANGFUSE_SECRET_KEY": "sk-lf-votes",
                "LANGFUSE_BASE_URL": url,
                "LANGFUSE_TIMEOUT_S": "2",
            }
        )
        runtime = create_runtime(settings, model=ScriptedModel())
        handlers = ChatHandlers(runtime)
        session, history = None, []
        for n in range(args.answers):
            outputs = list(handlers.respond(f"question {n}", history, session, "b"))
            _textbox, history, session, _status = outputs[-1]
        indexes = sorted({i for i in session.answer_traces})
        rng = random.Random(7)
        results = {}
        for mode in ("ok", "error500", "hang"):
            set_mode(url, mode)
            latencies = []
            for _ in range(args.votes):
                data = gr.LikeData(
                    None, {"index": rng.choice(indexes), "value": None, "liked": rng.choice(LIKED)}
                )
                start = time.perf_counter()
                handlers.on_vote(session, data)
                latencies.append((time.perf_counter() - start) * 1000)
            results[mode] = latencies
        counts = runtime.feedback.store.delivery_counts()
        set_mode(url, "ok")
        runtime.feedback.close()
    fake.terminate()

    print(f"votes per mode: {args.votes} over {len(indexes)} answer messages")
    worst = 0.0
    for mode, values in results.items():
        p50, p99 = percentile(values, 0.50), percentile(values, 0.99)
        worst = max(worst, p99)
        print(
            f"langfuse {mode:<9} p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  max {max(values):7.3f} ms  "
            f"mean {statistics.mean(values):6.3f} ms  p99/target {p99 / 5.0:.3f}"
        )
    print(f"store after the run: {counts}")
    print("target p99 < 5 ms in every mode:", "MET" if worst < 5.0 else "NOT MET")


if __name__ == "__main__":
    main()
