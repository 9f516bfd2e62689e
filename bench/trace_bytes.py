"""Bytes the local store keeps per chat turn, at turn 1, 10 and 30 of one chat.

Runs one chat of `--turns` one-step turns through the app's own handlers (isolated code
execution, tracing, the store) with an instant scripted model, in two configurations:

- local: the offline model's setup (compact prompt, constrained JSON replies, the last 3
  turns remembered) with a scripted stand-in for llama.cpp, so every turn is one step;
- hosted: smolagents' default prompt and free-text replies, every turn remembered
  (MEMORY_TURNS=0), streaming like OpenAIModel does.

For each turn it prints what the store holds for that trace (span rows with their
attributes, plus the trace row), the size of the agent run span's output, and the most
attributes any span had. Targets: the per-turn bytes grow at most linearly with the
turn number, and a one-step turn stores under 20 KB.

    python -m bench.trace_bytes [--turns 30]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from app import ChatHandlers, create_runtime  # noqa: E402
from config.settings import settings_from_env  # noqa: E402
from tests.fakes import ScriptedLocalModel, StreamingScriptedModel, code_reply, last_task  # noqa: E402

BROWSER = "0b6c3b84-7f8c-4d35-8f4e-1f8f3c2e4a10"


def _hosted_reply(messages: list[Any]) -> str:
    return code_reply(f"final_answer({('Answer to: ' + last_task(messages))!r})")


def stored_bytes(db: sqlite3.Connection, trace_id: str) -> tuple[int, int, int]:
    """(bytes in span rows + trace row, bytes of the agent run span's output, most attributes)."""
    spans = db.execute(
        "SELECT name, kind, status_message, attributes FROM spans WHERE trace_id = ?", (trace_id,)
    ).fetchall()
    trace = db.execute(
        "SELECT name, input, output, user_id, session_id, status_message, tags, metadata FROM traces WHERE id = ?",
        (trace_id,),
    ).fetchone()
    total = sum(len((v or "").encode()) for row in spans for v in row)
    total += sum(len((v or "").encode()) for v in trace or ())
    total += 120 * len(spans)  # ids, times, token counts: fixed-size columns, counted roughly
    run_output, most = 0, 0
    for name, _kind, _msg, attributes in spans:
        attrs = json.loads(attributes or "{}")
        most = max(most, len(attrs))
        if name.endswith(".run"):
            run_output = len(str(attrs.get("output.value", "")).encode())
    return total, run_output, most


def run_chat(label: str, model: Any, env: dict[str, str], turns: int, marks: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_from_env({"DATA_DIR": tmp, "EVALUATORS_FILE": "off", **env})
        runtime = create_runtime(settings, model=model)
        handlers = ChatHandlers(runtime)
        try:
            session, history = None, []
            traces: list[str] = []
            for n in range(1, turns + 1):
                *_, last = handlers.respond(
                    f"Question number {n}: what is {n} plus {n}?", history, session, BROWSER
                )
                _, history, session, _ = last
                traces.append(next(reversed(session.answer_traces.values())))
            runtime.feedback.telemetry.flush()
            db = sqlite3.connect(runtime.settings.db_path)
            for n in marks:
                if n <= turns:
                    total, run_output, most = stored_bytes(db, traces[n - 1])
                    print(
                        f"{label:7s} turn {n:3d}: {total / 1024:6.1f} KB stored"
                        f" (agent run span output {run_output} B, most attributes on a span {most})",
                        flush=True,
                    )
            sizes = [stored_bytes(db, t)[0] for t in traces]
            db.close()
            first, last_size = sizes[0], sizes[-1]
            print(
                f"{label:7s} growth: turn {turns} / turn 1 = {last_size / first:.2f}x;"
                f" largest turn {max(sizes) / 1024:.1f} KB",
                flush=True,
            )
        finally:
            runtime.feedback.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=30)
    args = parser.parse_args(argv)
    marks = [1, 10, 30]
    run_chat("local", ScriptedLocalModel(), {}, args.turns, marks)
    hosted = StreamingScriptedModel(_hosted_reply, model_id="scripted-hosted")
    run_chat("hosted", hosted, {"MEMORY_TURNS": "0"}, args.turns, marks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
