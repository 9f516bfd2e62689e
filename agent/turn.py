"""One chat turn: the agent's steps stream out while it runs inside the turn's own trace.

Gradio may resume a streaming handler on a different worker thread at each step, and its
queue runs handlers inside a long-lived request span. So the turn owns an *empty*
`contextvars.Context` and advances the agent only inside it: every span of the turn sees the
turn's root as its parent (never a web-server span), whichever thread runs the step.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import trace as otel_trace

from agent.agent_process import AgentProcessError, RemoteAgent
from agent.answer import GIVE_UP, is_usable
from agent.events import Event, run_events
from agent.session import ChatSession
from agent.steps import Message, as_text, how_message, live_message
from llms.llama_engine import LocalModelError

log = logging.getLogger(__name__)

THINKING = "⏳ Working on it…"
# The root span's attribute that keeps what the agent really ended with when the chat showed
# the give-up sentence instead (the trace's output is what the user saw).
RAW_OUTPUT_ATTRIBUTE = "app.raw_output"
BUSY = "⏳ Your previous message is still being answered; send this one when it is done."


class TurnTracer(Protocol):
    def turn(
        self,
        *,
        message: str,
        user_id: str,
        session_id: str,
        metadata: dict[str, str],
        extra_tags: tuple[str, ...] = (),
    ) -> Any: ...


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

    def open(
        self,
        tracer: TurnTracer,
        session: ChatSession,
        message: str,
        metadata: dict[str, str],
        tags: tuple[str, ...] = (),
    ) -> None:
        try:
            # Tags only when there are some: a tracer of another kind (a benchmark's) need not take them.
            extra = {"extra_tags": tags} if tags else {}
            cm = tracer.turn(
                message=message,
                user_id=session.user_id,
                session_id=session.session_id,
                metadata=metadata,
                **extra,
            )
            self.turn = self.ctx.run(cm.__enter__)
            self.cm = cm
        except Exception:  # noqa: BLE001 - telemetry must never break a chat turn
            log.exception("Could not start the trace of this turn; its answer cannot be rated")

    @property
    def trace_id(self) -> str | None:
        return getattr(self.turn, "trace_id", None)

    def parent(self) -> tuple[str, str] | None:
        """(trace id, span id) of the root, for spans made in another process."""
        span_id = getattr(self.turn, "span_id", None)
        return (self.trace_id, span_id) if self.trace_id and span_id else None

    def call(self, method: str, *args: Any) -> None:
        if self.turn is None:
            return
        try:
            self.ctx.run(getattr(self.turn, method), *args)
        except Exception:  # noqa: BLE001
            log.exception("Could not record %s on the trace", method)

    def set_attribute(self, key: str, value: str) -> None:
        """One attribute on the root span (the current span in the turn's context)."""
        if self.turn is None:
            return

        def put() -> None:
            span = otel_trace.get_current_span()
            if format(span.get_span_context().span_id, "016x") != getattr(self.turn, "span_id", None):
                log.warning("The turn's root is not the current span; %s not recorded", key)
                return
            span.set_attribute(key, value)

        try:
            self.ctx.run(put)
        except Exception:  # noqa: BLE001 - telemetry must never break a chat turn
            log.exception("Could not record %s on the trace", key)

    def close(self) -> None:
        if self.cm is None:
            return
        cm, self.cm = self.cm, None
        try:
            self.ctx.run(cm.__exit__, None, None, None)
        except Exception:  # noqa: BLE001
            log.exception("Could not close the trace of this turn")


def _events(
    session: ChatSession, message: str, trace: _Trace, metadata: dict[str, str], tags: tuple[str, ...]
) -> Iterator[Event]:
    """The agent's events: from its own process, or from this one (advanced in the turn's context)."""
    if isinstance(session.agent, RemoteAgent):
        yield from session.agent.events(
            message,
            parent=trace.parent(),
            user_id=session.user_id,
            session_id=session.session_id,
            metadata=metadata,
            tags=tags,
        )
        return
    ctx = trace.ctx
    events = run_events(session.agent, message)
    try:
        while True:
            try:
                event = ctx.run(next, events)
            except StopIteration:
                return
            yield event
    finally:
        # A turn left mid-way (the browser went away) stops the agent in the turn's context.
        ctx.run(events.close)


def _reason(exc: BaseException) -> str:
    """What the chat and the trace say: the local model's own sentence (smolagents wraps it
    in AgentGenerationError), else the exception's type and text."""
    cause: BaseException | None = exc
    for _ in range(5):
        if cause is None:
            break
        if isinstance(cause, LocalModelError):
            return str(cause)
        cause = cause.__cause__
    return f"{type(exc).__name__}: {exc}"


def _record_answer(trace: _Trace, end: Event) -> str:
    """The answer the chat shows, recorded on the trace as shown.

    When the agent ended with no usable answer the chat shows the give-up sentence: the
    trace's output is that sentence (what the user saw, what votes and checks judge), its
    level WARNING with the reason, and the raw output is kept in `app.raw_output`.
    """
    refused = end.get("refused")
    if isinstance(refused, str) and refused:
        # Not the agent's failure: the server had no memory for its code (sandbox.budget).
        trace.call("set_output", refused)
        trace.call("set_warning", "A code step was refused: the code memory budget was in use.")
        return refused
    raw = str(end.get("answer") or "")
    max_steps = bool(end.get("max_steps"))
    if is_usable(raw, max_steps_reached=max_steps, trust_fallback=bool(end.get("trust", True))):
        trace.call("set_output", raw)
        return as_text(raw)
    why = "reached the step limit" if max_steps else "its output was not a usable answer"
    trace.call("set_output", GIVE_UP)
    trace.set_attribute(RAW_OUTPUT_ATTRIBUTE, raw)
    trace.call("set_warning", f"No usable answer: the agent {why}; the chat showed the give-up message.")
    return GIVE_UP


def stream_turn(
    session: ChatSession,
    message: str,
    history: list[Message],
    tracer: TurnTracer,
    metadata: dict[str, str],
) -> Iterator[TurnUpdate]:
    """Run one turn; yield the growing chat. Every message of the answer maps to its trace.

    The model's tokens are shown as they arrive (at most every events.LIVE_INTERVAL_S), in an
    open message that folds into the answer's one "how I got this" message when the step ends.
    A session in an A/B experiment adds its variant to the trace: metadata `variant`,
    `experiment` (and `assigned` while the user's own variant is paused), tag `variant:<name>`.
    """
    tags: tuple[str, ...] = ()
    if session.assignment is not None:
        metadata = {**metadata, **session.assignment.metadata()}
        tags = session.assignment.tags()
    history = [*history, {"role": "user", "content": as_text(message)}]
    if not session.lock.acquire(blocking=False):
        yield TurnUpdate([*history, {"role": "assistant", "content": BUSY}], None, done=True, error=BUSY)
        return
    ctx = contextvars.Context()  # empty: no request span can become this turn's parent
    trace = _Trace(ctx)
    events: Iterator[Event] | None = None
    finished = False
    try:
        first = len(history)
        session.forget_from(first - 1)
        trace.open(tracer, session, message, metadata, tags)
        trace_id = trace.trace_id
        steps: list[dict[str, Any]] = []  # agent.steps.step_summary of each finished step
        pending = {"role": "assistant", "content": THINKING}
        if trace_id:
            session.map_answer(range(first, first + 1), trace_id)
        yield TurnUpdate([*history, pending], trace_id)

        end: Event = {}
        error: str | None = None
        cost: Any = None  # the agent's LLM calls, priced in its own process
        try:
            events = _events(session, message, trace, metadata, tags)
            for event in events:
                kind = event.get("ev")
                # "more": the next event is already here, so this update would be replaced at
                # once; it is not sent (each costs the server a few ms for every user).
                if kind == "live" and not event.get("more"):
                    live = live_message(str(event.get("text", "")), int(event.get("step") or 1))
                    yield TurnUpdate([*history, *how_message(steps), live], trace_id)
                elif kind == "step":
                    if isinstance(event.get("step"), dict):
                        steps.append(event["step"])
                    shown = [*history, *how_message(steps), pending]
                    if trace_id:
                        session.map_answer(range(first, len(shown)), trace_id)
                    if not event.get("more"):
                        yield TurnUpdate(shown, trace_id)
                elif kind == "end":
                    end, cost = event, event.get("cost")
        except AgentProcessError as exc:  # already a sentence
            error, cost = str(exc), exc.cost
            log.warning("Agent turn failed: %s", error)
        except Exception as exc:  # noqa: BLE001 - shown in the chat, recorded on the trace
            error = _reason(exc)
            log.warning("Agent turn failed: %s", error)

        if cost is not None:
            trace.call("add_cost", cost)
        if error is None:
            shown_answer = _record_answer(trace, end)
            history = [*history, *how_message(steps), {"role": "assistant", "content": shown_answer}]
            if trace_id:
                session.map_answer(range(first, len(history)), trace_id)
        else:
            trace.call("set_error", error[:2000])
            history = [
                *history,
                *how_message(steps),
                {
                    "role": "assistant",
                    "content": f"⚠️ Sorry, this turn failed and has no answer. Reason: {error}",
                },
            ]
            # An error is not an answer: votes on it are ignored.
            session.unmap(range(first, len(history)))
        trace.close()
        finished = True
        yield TurnUpdate(history, trace_id, done=True, error=error)
    finally:
        if not finished:
            # The browser went away mid-turn: stop the agent and close the trace in its context.
            if events is not None:
                try:
                    events.close()  # type: ignore[attr-defined]
                except Exception:  # noqa: BLE001
                    log.exception("Could not stop the abandoned agent run")
            trace.call("set_error", "cancelled: the chat was closed before the answer")
            trace.close()
        session.lock.release()
