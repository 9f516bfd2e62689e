"""Agent steps -> chat messages, as pure functions (no Gradio objects, easy to test).

Thoughts, code and observations are collapsible messages (a `metadata.title`); the final
answer is a plain assistant message and always comes last.
"""

from __future__ import annotations

import html
import json
from typing import Any

from smolagents.agent_types import AgentType
from smolagents.memory import ActionStep, FinalAnswerStep, PlanningStep

Message = dict[str, Any]


def as_text(value: str) -> str:
    """Show text as text: HTML in a message (the user's or the model's) is never rendered,
    while markdown still is. Code blocks are fenced and need no escaping."""
    return html.escape(value, quote=False)


def _collapsible(title: str, content: str) -> Message:
    return {"role": "assistant", "content": content, "metadata": {"title": title, "status": "done"}}


def _thought(model_output: str | None) -> str:
    """The tiny model answers JSON {thought, code}; show just the thought."""
    text = (model_output or "").strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return text
        if isinstance(data, dict) and "thought" in data:
            return str(data["thought"]).strip()
    return text


def _fenced(text: str, language: str = "") -> str:
    """A code block whose fence no line inside it can close."""
    body = text.strip()
    fence = "```"
    while fence in body:
        fence += "`"
    return f"{fence}{language}\n{body}\n{fence}"


def messages_from_step(step: Any) -> list[Message]:
    """The chat messages that show one agent step."""
    out: list[Message] = []
    if isinstance(step, ActionStep):
        label = f"Step {step.step_number}"
        thought = _thought(step.model_output)
        if thought:
            out.append(_collapsible(f"💭 {label}: thought", as_text(thought)))
        if step.code_action:
            out.append(_collapsible(f"🛠️ {label}: code", _fenced(step.code_action, "python")))
        if step.observations and step.observations.strip():
            out.append(_collapsible(f"📝 {label}: observations", _fenced(step.observations)))
        if step.error is not None:
            out.append(_collapsible(f"💥 {label}: error", as_text(str(step.error))))
    elif isinstance(step, PlanningStep):
        out.append(_collapsible("🧭 Plan", as_text(str(step.plan))))
    return out


def answer_text(step: FinalAnswerStep | Any) -> str:
    output = getattr(step, "output", step)
    if isinstance(output, AgentType):
        return str(output.to_string())
    return str(output)
