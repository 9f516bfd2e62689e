"""Plain Gradio, for bench.load to compare against: a bare `gr.ChatInterface`, no agent, no tracing.

Its function is a generator that streams what the app streams for one turn with the scripted
model: a "working" message, each step while it is written, then one collapsed "how I got this"
group and the answer, with the app's message texts and titles. PLAIN_UPDATES is the number of chatbot updates per turn
(3 by default: working, one step, answer; bench.load sets it to what it counted from the app).
Started by bench.load in its own process like app.py, on GRADIO_SERVER_PORT, with the same queue
concurrency as the app.

    GRADIO_SERVER_PORT=7861 python bench/plain_chat.py

PLAIN_BURN_MS=N makes each turn's step spend N ms of pure-Python CPU (holding the GIL, as the
agent's own work does in the app), to see what in-process work costs the latency of everyone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr

THINKING = "⏳ Working on it…"
CONCURRENCY = int(os.environ.get("MAX_CONCURRENT_TURNS", "4"))
BURN_S = float(os.environ.get("PLAIN_BURN_MS", "0")) / 1000
UPDATES = max(2, int(os.environ.get("PLAIN_UPDATES", "3")))


def burn(seconds: float) -> None:
    """Pure-Python work for `seconds` of this thread's CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        sum(range(200))


def _collapsible(title: str, content: str) -> dict[str, Any]:
    return {"role": "assistant", "content": content, "metadata": {"title": title, "status": "done"}}


def respond(message: str, history: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """The updates the app yields for a scripted turn (see agent/turn.py and agent/steps.py):
    working, each step as it is written, then one collapsed "how I got this" group and the answer."""
    answer = f"Answer to: {message}"
    code = f"final_answer({answer!r})"
    pending = {"role": "assistant", "content": THINKING}
    steps: list[str] = []
    yield [pending]
    for n in range(1, UPDATES - 1):
        if BURN_S and n == 1:
            burn(BURN_S)
        steps.append(f"**Step {n}.** I will answer.\n```python\n{code}\n```")
        writing = {
            "role": "assistant",
            "content": f"Thought: I will answer.\n```python\n{code}\n```",
            "metadata": {"title": f"✍️ Step {n}: writing…", "status": "pending"},
        }
        yield [writing, pending]
    group = _collapsible(
        f"🔎 How I got this ({len(steps)} step{'s' if len(steps) != 1 else ''})", "\n\n".join(steps)
    )
    yield [group, {"role": "assistant", "content": answer}]


def build() -> gr.ChatInterface:
    return gr.ChatInterface(
        respond,
        chatbot=gr.Chatbot(elem_id="chat", height=520),
        concurrency_limit=CONCURRENCY,
        title="Plain chat",
    )


if __name__ == "__main__":
    build().queue(default_concurrency_limit=CONCURRENCY).launch(
        server_name="127.0.0.1", server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7861"))
    )
