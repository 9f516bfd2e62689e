"""Agent steps -> chat messages, as pure functions (no Gradio objects, easy to test).

An answer is one collapsed "how I got this" message (a `metadata.title`) holding every step
as compact text (thought, code, what it printed or returned, its error), then the answer
itself as a plain assistant message, always last. Three panels per step buried even "Hello"
under a pile of clicks, and the last step's output only repeated the answer.

A step crosses processes (agent.agent_process) as a small JSON-safe summary (`step_summary`);
the chat message is drawn from the summaries in the app (`how_message`).
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


_LOGS = "Execution logs:"
_LAST_OUTPUT = "Last output from code snippet:"
HOW_TITLE = "🔎 How I got this"
_MAX_PART = 1500  # characters of one step's logs, output or error shown in the chat


def _split_observations(observations: str | None) -> tuple[str, str]:
    """smolagents' "Execution logs:\n<prints>Last output from code snippet:\n<value>" ->
    (prints, value)."""
    text = observations or ""
    logs, marker, output = text.partition(_LAST_OUTPUT)
    if not marker:
        logs, output = text, ""
    return logs.strip().removeprefix(_LOGS).strip(), output.strip()


def _short(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _MAX_PART else text[: _MAX_PART - 1] + "…"


def step_summary(step: Any) -> dict[str, Any] | None:
    """What the chat shows of one step, JSON-safe; None for a step it does not show.

    The final step's returned value is the answer, shown right below: it is left out here.
    """
    if isinstance(step, PlanningStep):
        return {"plan": _short(str(step.plan))}
    if not isinstance(step, ActionStep):
        return None
    logs, output = _split_observations(step.observations)
    if getattr(step, "is_final_answer", False):
        output = ""
    return {
        "number": step.step_number,
        "thought": _short(_thought(step.model_output)),
        "code": (step.code_action or "").strip(),
        "logs": _short(logs),
        "output": _short(output),
        "error": _short(str(step.error)) if step.error is not None else "",
    }


def _step_text(summary: dict[str, Any]) -> str:
    if "plan" in summary:
        return f"**Plan**\n{as_text(str(summary['plan']))}"
    thought = str(summary.get("thought") or "")
    head = f"**Step {summary.get('number')}**" + (f" · {as_text(thought)}" if thought else "")
    lines = [head]
    if summary.get("code"):
        lines.append(_fenced(str(summary["code"]), "python"))
    if summary.get("logs"):
        lines.append("Printed:\n" + _fenced(str(summary["logs"])))
    if summary.get("output"):
        lines.append(f"→ {as_text(str(summary['output']))}")
    if summary.get("error"):
        lines.append("⚠️ Error:\n" + _fenced(str(summary["error"])))
    return "\n".join(lines)


def how_title(steps: list[dict[str, Any]]) -> str:
    """E.g. "🔎 How I got this (2 steps, 1 error)"."""
    actions = sum("plan" not in s for s in steps)
    errors = sum(bool(s.get("error")) for s in steps)
    detail = f"{actions} step" + ("" if actions == 1 else "s")
    if errors:
        detail += f", {errors} error" + ("" if errors == 1 else "s")
    return f"{HOW_TITLE} ({detail})"


def how_message(steps: list[dict[str, Any]]) -> list[Message]:
    """The one collapsed message that shows how an answer was reached ([] before any step)."""
    if not steps:
        return []
    content = "\n\n".join(_step_text(s) for s in steps)
    return [
        {"role": "assistant", "content": content, "metadata": {"title": how_title(steps), "status": "done"}}
    ]


def answer_text(step: FinalAnswerStep | Any) -> str:
    output = getattr(step, "output", step)
    if isinstance(output, AgentType):
        return str(output.to_string())
    return str(output)
