"""What the benchmarks share: starting the servers they measure and measure against.

The fake Langfuse (tests.fakes, the same stand-in the tests use), the app (`python app.py`
with a scripted OpenAI-compatible model) and a bare gr.ChatInterface (bench/plain_chat.py)
each run in a process of their own, so none waits for the benchmark's GIL; `python -m
bench.<name>` from the project root puts the project on sys.path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]


def start_fake_langfuse() -> tuple[subprocess.Popen[str], str]:
    """The fake Langfuse server in its own process, and its URL (stop it with .terminate())."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def wait_ready(proc: subprocess.Popen, url: str, what: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"{what} did not start")


def start_app(
    data_dir: Path, llm_url: str, langfuse_url: str, *, command: list[str] | None = None, **extra: str
) -> tuple[subprocess.Popen, str]:
    """`python app.py` (or `command`, e.g. the app under a profiler) on a free port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "OPENAI_", "HF_", "MODEL_"))}
    env.update(
        MODEL_PROVIDER="openai",
        OPENAI_BASE_URL=llm_url,
        MODEL_ID="scripted",
        DATA_DIR=str(data_dir),
        EVALUATORS_FILE="off",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
        LANGFUSE_PUBLIC_KEY="pk-lf-load",
        LANGFUSE_SECRET_KEY="sk-lf-load",
        LANGFUSE_BASE_URL=langfuse_url,
        LOG_LEVEL="WARNING",
    )
    # The simulated users all come from 127.0.0.1, which the per-user limits count as one person
    # (runtime/visitors.py): out of the way here; their own cost is measured by bench.abuse.
    env.update(MAX_SESSIONS_PER_USER="1000000", TURNS_PER_MINUTE="1000000", USER_TURNS_AT_ONCE="1000")
    env.update(extra)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    log = open(data_dir.parent / f"app-{port}.log", "w")
    proc = subprocess.Popen(
        command or [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/"
    wait_ready(proc, url, "the app")
    return proc, url


def start_plain(
    log_dir: Path, concurrency: int, updates: int = 3, **extra: str
) -> tuple[subprocess.Popen, str]:
    """bench/plain_chat.py: a bare gr.ChatInterface in its own process, like the app."""
    port = free_port()
    env = dict(
        os.environ,
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
        MAX_CONCURRENT_TURNS=str(concurrency),
        PLAIN_UPDATES=str(updates),
        **extra,
    )
    log = open(log_dir / f"plain-{port}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "plain_chat.py")],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    wait_ready(proc, url, "the plain chat")
    return proc, url


def stop_app(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def timed_turn(
    handlers: Any, question: str, history: list, session: Any, browser: str
) -> tuple[list, Any, float, float]:
    """One turn through the page's own handler: (chat, session, seconds to the first words the
    user sees, seconds to the complete answer)."""
    from agent.session import ChatSession
    from agent.turn import THINKING
    from tests.helpers import text_of

    started = time.perf_counter()
    first = None
    for _box, chat, state, _status in handlers.respond(question, history, session, browser):
        if isinstance(state, ChatSession):  # later updates skip the session (gr.skip)
            session = state
        last = chat[-1] if chat else {}
        if first is None and last.get("role") == "assistant" and text_of(last).strip() not in ("", THINKING):
            first = time.perf_counter() - started
        history = chat
    total = time.perf_counter() - started
    return history, session, first if first is not None else total, total
