"""Code evaluators shipped with the app (see evaluators.toml).

Each gets one turn as a plain dict (input, output, steps, tools, status, latency_ms, tokens,
feedback, metadata, ...) and returns a value of the evaluator's data type, or a dict of named
values (each its own score, named "evaluator.key").
"""

from __future__ import annotations

from typing import Any

from agent.answer import GIVE_UP


def no_error(turn: dict[str, Any]) -> bool:
    """The turn ended with an answer and no error: a give-up (status WARNING) is not one."""
    return turn.get("status") not in ("ERROR", "WARNING")


def answer_not_empty(turn: dict[str, Any]) -> bool:
    """The user got an answer: not empty, not only whitespace, not the give-up sentence."""
    answer = (turn.get("output") or "").strip()
    return bool(answer) and answer != GIVE_UP
