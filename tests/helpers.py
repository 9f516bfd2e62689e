"""Small helpers shared by tests: drive the real handlers like Gradio would."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gradio as gr

from agent.session import ChatSession
from app import ChatHandlers


def turn(
    handlers: ChatHandlers, session: ChatSession | None, history: list[dict[str, Any]], message: str
) -> tuple[list[dict[str, Any]], ChatSession, list[tuple[Any, ...]]]:
    """Send one message through the real streaming handler; return the final chat and session."""
    outputs = list(handlers.respond(message, history, session, "0b6c3b84-7f8c-4d35-8f4e-1f8f3c2e4a10"))
    _, history, session, _ = outputs[-1]
    return history, session, outputs


def like(handlers: ChatHandlers, session: ChatSession, index: Any, liked: Any) -> tuple[Any, str]:
    return handlers.on_vote(session, gr.LikeData(None, {"index": index, "value": None, "liked": liked}))


def answer_index(history: list[dict[str, Any]], nth: int) -> int:
    """The chat index of the first message of the nth answer group (what LikeData.index is)."""
    groups = []
    for i, message in enumerate(history):
        if message["role"] == "assistant" and (i == 0 or history[i - 1]["role"] != "assistant"):
            groups.append(i)
    return groups[nth]


def text_of(message: dict[str, Any]) -> str:
    """A chat message's text: Gradio 6 sends content back as a list of typed parts."""
    content = message["content"]
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


@contextmanager
def global_tracer_provider(provider: object) -> Iterator[None]:
    """Register a global tracer provider, as Langfuse does by default (trap 1 in the guide).

    FastAPI then traces every request, and Gradio's queue runs handlers inside a long-lived
    request span: a root opened the naive way would become its child and share its trace.
    """
    from opentelemetry import trace
    from opentelemetry.util._once import Once

    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = None, Once()
    trace.set_tracer_provider(provider)
    try:
        yield
    finally:
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(runtime: Any) -> Iterator[str]:
    """Serve the real app on a free port, with a global tracer provider set as Langfuse would."""
    from app import build_app

    with global_tracer_provider(runtime.feedback.telemetry.provider):
        demo = build_app(runtime=runtime)
        port = free_port()
        demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            # Every gradio_client Client keeps a /heartbeat stream waiting on the app's stop event
            # (an asyncio.Event). Blocks.close() sets it from this thread while the loop may be
            # removing a waiter: with dozens of clients that raised "deque mutated during
            # iteration" at teardown. Set on the loop first, close()'s own set() is a no-op.
            stop = getattr(getattr(demo, "app", None), "stop_event", None)
            loop = getattr(stop, "_loop", None)
            if stop is not None and loop is not None and loop.is_running():
                done = threading.Event()
                loop.call_soon_threadsafe(lambda: (stop.set(), done.set()))
                done.wait(5)
            demo.close()


def child_processes(pid: int, module: str | None = None) -> list[int]:
    """The children of a process (those running `python -m module`, if given), read from /proc."""
    out = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").glob("*"))
    except OSError:  # the process ended meanwhile
        return []
    for task in tasks:
        try:
            kids = [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            try:
                if module is None or module.encode() in Path(f"/proc/{kid}/cmdline").read_bytes():
                    out.append(kid)
            except OSError:
                continue
    return out


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children...), read from /proc."""
    out, todo = [], [pid]
    while todo:
        kids = child_processes(todo.pop())
        out.extend(kids)
        todo.extend(kids)
    return out


def rss_mb(pid: int) -> float:
    """A process's resident memory in MB (0 when it has ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # the process ended meanwhile
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tree_rss_mb(pid: int) -> float:
    """A process and all its descendants (model process, code workers...), in MB."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += rss_mb(current)
        todo.extend(child_processes(current))
    return total
