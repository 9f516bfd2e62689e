"""An agent's run as a stream of plain chat events, the same in the app and in an agent process.

A turn's chat only needs: the text the model is writing (at most every LIVE_INTERVAL_S), a summary
of each finished step, and how the run ended. Those are JSON-safe dicts, so an agent can
run in another process (agent.agent_process) and send them over a socket unchanged.

The generator must be advanced inside the turn's context: the agent's spans take the span
current there as their parent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace as otel_trace
from smolagents.memory import ActionStep, FinalAnswerStep, PlanningStep
from smolagents.models import ChatMessageStreamDelta
from smolagents.utils import AgentMaxStepsError

from agent.steps import answer_text, step_summary
from feedback.span_shaping import FINAL_OUTPUT_ATTRIBUTE

log = logging.getLogger(__name__)

# How often the growing text of a step is sent to the browser: often enough to look live,
# rarely enough that a fast model does not cost the server one update per token (each update
# is a few ms of CPU under the GIL, and under load every ms costs every user ~15 ms).
LIVE_INTERVAL_S = 0.2

Event = dict[str, Any]


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


def _max_steps_reached(agent: Any) -> bool:
    steps = agent.memory.steps
    last = steps[-1] if steps else None
    return isinstance(last, ActionStep) and isinstance(last.error, AgentMaxStepsError)


def _refusal(agent: Any) -> str:
    """The sentence of a code step refused for memory (sandbox.budget), else empty."""
    refusal = getattr(getattr(agent, "python_executor", None), "refusal", "")
    return refusal if isinstance(refusal, str) else ""


def run_events(agent: Any, message: str) -> Iterator[Event]:
    """Run one task; yield {"ev": "live" | "step" | "end", ...}. Exceptions propagate.

    - live: {"text": what the model wrote so far in this step, "step": its number}
    - step: {"step": what the chat shows of a finished step (agent.steps.step_summary)}
    - end: {"answer": the raw final answer or None, "max_steps": bool, "trust": bool,
      "refused": the sentence, when a code step was refused for memory}
    """
    run = agent.run(message, stream=True, reset=False)
    agent_span = otel_trace.get_current_span()  # the agent's own run span
    try:
        answer: str | None = None
        seen: set[int] = set()
        written = ""  # the model's output in the current step, so far
        shown_at = 0.0
        for step in run:
            if isinstance(step, ChatMessageStreamDelta):
                written += step.content or ""
                now = time.monotonic()
                if written.strip() and now - shown_at >= LIVE_INTERVAL_S:
                    shown_at = now
                    yield {"ev": "live", "text": written, "step": getattr(agent, "step_number", 1)}
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
                summary = step_summary(step)
                if summary is not None:
                    yield {"ev": "step", "step": summary}
                refusal = _refusal(agent)
                if refusal:
                    # The server has no memory for this code now: more steps would be refused
                    # too, so the turn ends with the sentence instead of a give-up.
                    yield {"ev": "end", "answer": None, "max_steps": False, "trust": True, "refused": refusal}
                    return
        yield {
            "ev": "end",
            "answer": answer,
            "max_steps": _max_steps_reached(agent),
            "trust": bool(getattr(agent, "trust_fallback", True)),
        }
    finally:
        try:
            run.close()
        except RuntimeError:
            # smolagents' run yields the interrupted step from a `finally` (it is kept in
            # memory first), so closing it mid-step says "generator ignored GeneratorExit".
            pass
