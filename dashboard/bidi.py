"""Unicode bidirectional controls in hostile text, shown as visible marks instead of obeyed.

Escaping HTML does not touch them: an RLO (U+202E) or an isolate left open in a question, an
answer or the model's code reorders what the owner reads after it (the "Trojan Source" trick:
code that runs differently from how it looks, a score that reads 1.0 instead of 0.1). The
embedding, override and isolate controls are replaced by a mark such as "⟨U+202E⟩"; the weak
marks (LRM, RLM, ALM) cannot reorder a run and are kept, so right-to-left text reads as written.
"""

from __future__ import annotations

__all__ = ["BIDI_CONTROLS", "visible_controls"]

BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_MARKS = {ord(c): f"⟨U+{ord(c):04X}⟩" for c in BIDI_CONTROLS}


def visible_controls(value: str) -> str:
    """`value` with every bidirectional embedding, override or isolate shown as a mark."""
    return value.translate(_MARKS)
