"""Agent steps -> chat messages, as pure functions (no Gradio objects, easy to test).

Thoughts, code and observations are collapsible messages (a `metadata.title`); the final
answer is a plain assistant message and always comes last.
"""

from __future__ import annotations

import html
import json
import re
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


_JSON_STRING = {"thought": re.compile(r'"thought"\s*:\s*"'), "code": re.compile(r'"code"\s*:\s*"')}
_ESCAPES = {"n": "\n", "t": "\t", "r": "", '"': '"', "\\": "\\", "/": "/", "b": "", "f": ""}


def _partial_json_string(text: str, key: str) -> str | None:
    """The value of "key" in a JSON object still being written, as far as it goes."""
    match = _JSON_STRING[key].search(text)
    if match is None:
        return None
    out: list[str] = []
    i = match.end()
    while i < len(text):
        char = text[i]
        if char == '"':
            break
        if char == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt == "u" and len(text) >= i + 6:
                try:
                    out.append(chr(int(text[i + 2 : i + 6], 16)))
                except ValueError:
                    pass
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, ""))
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


def live_text(model_output: str) -> str:
    """What the model has written so far in this step, readable: its thought, then its code.

    The local model writes a JSON object; hosted models write "Thought: ... <code>...</code>".
    """
    text = model_output.lstrip()
    if text.startswith("{"):
        thought = _partial_json_string(text, "thought") or ""
        code = _partial_json_string(text, "code")
    else:
        thought, _, rest = text.partition("<code>")
        code = rest.split("</code>", 1)[0] if _ else None
        thought = "" if "Thought:".startswith(thought.strip()) else thought.removeprefix("Thought:")
    parts = [as_text(thought.strip())] if thought.strip() else []
    if code is not None and code.strip():
        parts.append(_fenced(code, "python"))
    return "\n\n".join(parts) or "…"


def live_message(model_output: str, step_number: int) -> Message:
    """The step being written, open (status pending) so its text shows while it grows."""
    return {
        "role": "assistant",
        "content": live_text(model_output),
        "metadata": {"title": f"✍️ Step {step_number}: writing…", "status": "pending"},
    }


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
