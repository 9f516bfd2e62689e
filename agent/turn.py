"""One chat turn: the agent runs in its own thread inside a fresh trace; steps stream out.

The agent runs in a dedicated thread because Gradio may resume a streaming handler on a
different worker thread each time, and an OpenTelemetry context must be entered and left
on the same thread. The thread starts from an empty context, so each turn is its own trace.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from smolagents.memory import ActionStep, FinalAnswerStep, PlanningStep

from agent.session import ChatSession
from agent.steps import Message, answer_text, messages_from_step

log = logging.getLogger(__name__)

THINKING = "⏳ Working on it…"


class TurnTracer(Protocol):
    def turn(self, *, message: str, user_id: str, session_id: str, metadata: dict[str, str]) -> Any: ...


@dataclass(frozen=True)
class TurnUpdate:
    """A snapshot of the chat while a turn runs; `done` on the last one."""

    history: list[Message]
    trace_id: str | None
    done: bool = False
    error: str | None = None


def _agent_worker(
    session: ChatSession,
    message: str,
    tracer: TurnTracer,
    metadata: dict[str, str],
    out: queue.Queue[tuple[str, Any]],
) -> None:
    turn = None
    cm = None
    try:
        cm = tracer.turn(
            message=message,
            user_id=session.user_id,
            session_id=session.session_id,
            metadata=metadata,
        )
        turn = cm.__enter__()
        out.put(("trace", turn.trace_id))
    except Exception:  # noqa: BLE001 - telemetry must never break a chat turn
        log.exception("Could not start the trace of this turn; the answer cannot be rated")
        cm = turn = None
        out.put(("trace", None))
    error: BaseException | None = None
    try:
        answer = None
        seen: set[int] = set()
        for step in session.agent.run(message, stream=True, reset=False):
            if id(step) in seen:  # smolagents yields the last step twice at max_steps
                continue
            seen.add(id(step))
            if isinstance(step, FinalAnswerStep):
                answer = answer_text(step)
            elif isinstance(step, (ActionStep, PlanningStep)):
                out.put(("step", step))
        answer = "" if answer is None else answer
        if turn is not None:
            turn.set_output(answer)
        out.put(("answer", answer))
    except Exception as exc:  # noqa: BLE001 - shown in the chat, recorded on the trace
        error = exc
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("Agent turn failed: %s", reason)
        if turn is not None:
            try:
                turn.set_error(reason[:2000])
            except Exception:  # noqa: BLE001
                log.exception("Could not mark the trace as failed")
        out.put(("error", reason))
    finally:
        if cm is not None:
            try:
                cm.__exit__(None, None, None)
            except Exception:  # noqa: BLE001
                log.exception("Could not close the trace of this turn")
        out.put(("end", error))


def stream_turn(
    session: ChatSession,
    message: str,
    history: list[Message],
    tracer: TurnTracer,
    metadata: dict[str, str],
) -> Iterator[TurnUpdate]:
    """Run one turn; yield the growing chat. The answer's indexes map to its trace id."""
    with session.lock:
        history = [*history, {"role": "user", "content": message}]
        first = len(history)
        session.forget_from(first - 1)
        steps: list[Message] = []
        trace_id: str | None = None
        out: queue.Queue[tuple[str, Any]] = queue.Queue()
        worker = threading.Thread(
            target=_agent_worker,
            args=(session, message, tracer, metadata, out),
            name=f"turn-{session.session_id[:8]}",
            daemon=True,
        )
        worker.start()
        pending = {"role": "assistant", "content": THINKING}
        while True:
            kind, payload = out.get()
            if kind == "trace":
                trace_id = payload
                if trace_id:
                    session.map_answer(range(first, first + 1), trace_id)
                yield TurnUpdate([*history, pending], trace_id)
            elif kind == "step":
                steps.extend(messages_from_step(payload))
                shown = [*history, *steps, pending]
                if trace_id:
                    session.map_answer(range(first, len(shown)), trace_id)
                yield TurnUpdate(shown, trace_id)
            elif kind == "answer":
                final = [*history, *steps, {"role": "assistant", "content": payload or "(empty answer)"}]
                if trace_id:
                    session.map_answer(range(first, len(final)), trace_id)
                history = final
            elif kind == "error":
                # An error is not an answer: votes on it are ignored.
                session.unmap(range(first, first + len(steps) + 2))
                history = [
                    *history,
                    *steps,
                    {
                        "role": "assistant",
                        "content": f"⚠️ Sorry, this turn failed and has no answer. Reason: {payload}",
                    },
                ]
                yield TurnUpdate(history, trace_id, done=True, error=payload)
            elif kind == "end":
                if payload is None:
                    yield TurnUpdate(history, trace_id, done=True)
                break
        worker.join(timeout=5)
