"""Clean text that comes from the browser before it reaches the agent, traces or the store.

Lone surrogates cannot be encoded as UTF-8 (SQLite, OTLP and JSON would fail on them) and
control characters have no business in a chat message; both are replaced, never fatal.
"""

from __future__ import annotations

import unicodedata

_KEEP = {"\n", "\t"}


def clean_text(text: str) -> str:
    """Replace invalid surrogates with U+FFFD and drop control characters but newline and tab."""
    if text.isascii() and text.isprintable():
        return text
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    out = []
    for ch in text:
        category = unicodedata.category(ch)
        if category == "Cs":
            out.append("\ufffd")
        elif category == "Cc" and ch not in _KEEP:
            continue
        else:
            out.append(ch)
    return "".join(out)
