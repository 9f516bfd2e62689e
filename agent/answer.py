"""Is what the agent ended with an answer a user should see?

A small model that runs out of steps, or whose output cannot be parsed, leaves behind
fragments of JSON or code. Showing them looks broken; a clear sentence that says what to do
is better. The trace keeps the raw output either way.
"""

from __future__ import annotations

import re

GIVE_UP = "I could not work this out; please try rephrasing. (A larger model answers better: see Settings in the README.)"

_FALLBACK_ERROR = "Error in generating final LLM output"
# The shape of the agent's own protocol: a JSON action, a code call, or the ReAct labels.
_PROTOCOL = re.compile(
    r'^\s*[\[{]\s*"(thought|code)"|"thought"\s*:|"code"\s*:|final_answer\s*\(|^\s*(Thought|Code|Observation)\s*:',
    re.MULTILINE,
)


def is_usable(answer: str | None, *, max_steps_reached: bool, trust_fallback: bool) -> bool:
    """An answer given with final_answer() is shown unless it is empty or protocol debris.

    The answer written after max steps (smolagents' fallback summary) is shown only for a
    model trusted to write one (hosted models); the offline model's is not reliable.
    """
    text = (answer or "").strip()
    if not text or text.startswith(_FALLBACK_ERROR) or _PROTOCOL.search(text):
        return False
    return trust_fallback or not max_steps_reached
