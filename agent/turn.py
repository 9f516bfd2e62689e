"""One chat turn: the agent's steps stream out while it runs inside the turn's own trace.

Gradio may resume a streaming handler on a different worker thread at each step, and its
queue runs handlers inside a long-lived request span. So the turn owns an *empty*
`contextvars.Context` and advances the agent only inside it: every span of the turn sees the
turn's root as its parent (never a web-server span), whichever thread runs the step.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import trace as otel_trace
from smolagents.memory import ActionStep, FinalAnswerStep, PlanningStep
from smolagents.models import ChatMessageStreamDelta
from smolagents.utils import AgentMaxStepsError

from agent.answer import GIVE_UP, is_usable
from agent.session import ChatSession
from agent.steps import Message, answer_text, as_text, live_message, messages_from_step

log = logging.getLogger(__name__)

THINKING = "⏳ Working on it…"
BUSY = "⏳ Your previous message is still being answered; send this one when it is done."
# How often the growing text of a step is sent to the browser: often enough to look live,
# rarely enough that a fast model does not cost the server one update per token (each update
# is a few ms of CPU under the GIL, and under load every ms costs every user ~15 ms).
LIVE_INTERVAL_S = 0.2
FINAL_OUTPUT_ATTRIBUTE = "app.final_output"


def mark_final_output(span: Any, answer: str) -> None:
    """Tell the span shaper that this agent run span's output is the final answer.

    OpenInference sets a streamed run's output to the repr of every step it yielded (tens of
    KB, growing with the chat); the shaper swaps that for this value when the span ends.
    """
    try:
        if span is not None and span.is_recording():
            span.set_attribute(FINAL_OUTPUT_ATTRIBUTE, answer)
    except Exception:  # noqa: BLE001 - telemetry must never break a chat turn
        log.exception("Could not mark the agent span's output")


class TurnTracer(Protocol):
    def turn(self, *, message: str, user_id: str, session_id: str, metadata: dict[str, str]) -> Any: ...


@dataclass(frozen=True)
class TurnUpdate:
    """A snapshot of the chat while a turn runs; `done` on the last one."""

    history: list[Message]
    trace_id: str | None
    done: bool = False
    error: str | None = None


class _Trace:
    """The turn's root observation, opened and closed inside the turn's context."""

    def __init__(self, ctx: contextvars.Context) -> None:
        self.ctx = ctx
        self.cm: Any = None
        self.turn: Any = None

    def open(self, tracer: TurnTracer, session: ChatSession, message: str, metadata: dict[str, str]) -> None:
        try:
            cm = tracer.turn(
                message=message, user_id=session.user_id, session_id=session.session_id, metadata=metadata
            )
            self.turn = self.ctx.run(cm.__enter__)
            self.cm = cm
        except Exception:  # noqa: BLE001 - telemetry must never break a chat turn
            log.exception("Could not start the trace of this turn; its answer cannot be rated")

    @property
    def trace_id(self) -> str | None:
        return getattr(self.turn, "trace_id", None)

    def call(self, method: str, *args: Any) -> None:
        if self.turn is None:
            return
        try:
            self.ctx.run(getattr(self.turn, method), *args)
        except Exception:  # noqa: BLE001
            log.exception("Could not record %s on the trace", method)

    def close(self) -> None:
        if self.cm is None:
            return
        cm, self.cm = self.cm, None
        try:
            self.ctx.run(cm.__exit__, None, None, None)
        except Exception:  # noqa: BLE001
            log.exception("Could not close the trace of this turn")


def _max_steps_reached(session: ChatSession) -> bool:
    steps = session.agent.memory.steps
    last = steps[-1] if steps else None
    return isinstance(last, ActionStep) and isinstance(last.error, AgentMaxStepsError)


def stream_turn(
    session: ChatSession,
    message: str,
    history: list[Message],
    tracer: TurnTracer,
    metadata: dict[str, str],
) -> Iterator[TurnUpdate]:
    """Run one turn; yield the growing chat. Every message of the answer maps to its trace.

    The model's tokens are shown as they arrive (at most every LIVE_INTERVAL_S), in an open
    message that collapses into the step's messages when the step ends.
    """
    history = [*history, {"role": "user", "content": as_text(message)}]
    if not session.lock.acquire(blocking=False):
        yield TurnUpdate([*history, {"role": "assistant", "content": BUSY}], None, done=True, error=BUSY)
        return
    ctx = contextvars.Context()  # empty: no request span can become this turn's parent
    trace = _Trace(ctx)
    run: Any = None
    finished = False
    try:
        first = len(history)
        session.forget_from(first - 1)
        trace.open(tracer, session, message, metadata)
        trace_id = trace.trace_id
        steps: list[Message] = []
        pending = {"role": "assistant", "content": THINKING}
        if trace_id:
            session.map_answer(range(first, first + 1), trace_id)
        yield TurnUpdate([*history, pending], trace_id)

        answer: str | None = None
        error: str | None = None
        seen: set[int] = set()
        written = ""  # the model's output in the current step, so far
        shown_at = 0.0
        try:
            run = ctx.run(session.agent.run, message, stream=True, reset=False)
            agent_span = ctx.run(otel_trace.get_current_span)  # the agent's own run span
            while True:
                try:
                    step = ctx.run(next, run)
                except StopIteration:
                    break
                if isinstance(step, ChatMessageStreamDelta):
                    written += step.content or ""
                    now = time.monotonic()
                    if written.strip() and now - shown_at >= LIVE_INTERVAL_S:
                        shown_at = now
                        live = live_message(written, getattr(session.agent, "step_number", 1))
                        yield TurnUpdate([*history, *steps, live], trace_id)
                    continue
                if id(step) in seen:  # smolagents yields the last step twice at max_steps
                    continue
                seen.add(id(step))
                if isinstance(step, FinalAnswerStep):
                    answer = answer_text(step)
                    # The run span's output is the answer, not a dump of every streamed step.
                    mark_final_output(agent_span, answer)
                elif isinstance(step, (ActionStep, PlanningStep)):
                    written, shown_at = "", 0.0
                    steps.extend(messages_from_step(step))
                    shown = [*history, *steps, pending]
                    if trace_id:
                        session.map_answer(range(first, len(shown)), trace_id)
                    yield TurnUpdate(shown, trace_id)
        except Exception as exc:  # noqa: BLE001 - shown in the chat, recorded on the trace
            error = f"{type(exc).__name__}: {exc}"
            log.warning("Agent turn failed: %s", error)

        if error is None:
            raw = answer or ""
            trace.call("set_output", raw)  # the trace keeps what the agent really ended with
            max_steps = _max_steps_reached(session)
            trust = getattr(session.agent, "trust_fallback", True)
            if is_usable(raw, max_steps_reached=max_steps, trust_fallback=trust):
                shown_answer = as_text(raw)
            else:
                shown_answer = GIVE_UP
                why = "reached the step limit" if max_steps else "its output was not a usable answer"
                trace.call(
                    "set_warning", f"No usable answer: the agent {why}; the chat showed the give-up message."
                )
            history = [*history, *steps, {"role": "assistant", "content": shown_answer}]
            if trace_id:
                session.map_answer(range(first, len(history)), trace_id)
        else:
            trace.call("set_error", error[:2000])
            # An error is not an answer: votes on it are ignored.
            session.unmap(range(first, first + len(steps) + 2))
            history = [
                *history,
                *steps,
                {
                    "role": "assistant",
                    "content": f"⚠️ Sorry, this turn failed and has no answer. Reason: {error}",
                },
            ]
        trace.close()
        finished = True
        yield TurnUpdate(history, trace_id, done=True, error=error)
    finally:
        if not finished:
            # The browser went away mid-turn: stop the agent and close the trace in its context.
            if run is not None:
                try:
                    ctx.run(run.close)
                except Exception:  # noqa: BLE001
                    log.exception("Could not stop the abandoned agent run")
            trace.call("set_error", "cancelled: the chat was closed before the answer")
            trace.close()
        session.lock.release()
