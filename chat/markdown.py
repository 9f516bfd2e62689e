"""Chat text shown as Markdown without ever becoming a link or an image.

A link in a chat message comes from whoever wrote it: a user, or a model steered by a hostile web
page into a disguised link or a tracking image. So every message is shown as text.
"""

from __future__ import annotations

import re
from typing import Any

# Text Gradio's Markdown would turn into a link: a URL (GFM autolinks any http(s)://, ftp:// or
# www.), an e-mail address, and a `]` opening an inline link, an image, a reference or its
# definition. Each gets a backslash before it, which Markdown shows as nothing.
_LINKABLE = re.compile(r"(?i)(?:https?|ftp)(?=://)|www(?=\.)|(?<=[\w.+-])(?=@[\w-])|\](?=[(\[:])")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_TICKS = re.compile(r"`+")


def _escape_links(text: str) -> str:
    return _LINKABLE.sub(lambda m: m.group() + "\\", text)


def _unlink_line(line: str) -> str:
    """One line, its code spans left as they are (a backslash would show inside them)."""
    parts: list[str] = []
    done = start = 0
    while (ticks := _TICKS.search(line, start)) is not None:
        close = re.compile(rf"(?<!`){ticks.group()}(?!`)").search(line, ticks.end())
        if close is None:
            start = ticks.end()
            continue
        parts += [_escape_links(line[done : ticks.start()]), line[ticks.start() : close.end()]]
        done = start = close.end()
    parts.append(_escape_links(line[done:]))
    return "".join(parts)


def unlinked(text: str) -> str:
    """Markdown text in which nothing becomes a link or an image: a link in a chat message comes
    from whoever wrote it (a user, or a model reading a hostile web page), so it is shown as text.

    Shown the same (Markdown drops the backslashes), code blocks and spans untouched, and applying
    it twice changes nothing.
    """
    out: list[str] = []
    fence = ""
    for line in text.splitlines(keepends=True):
        opening = _FENCE.match(line)
        if fence:
            body = line.strip()
            if body and body == body[0] * len(body) and body[0] == fence[0] and len(body) >= len(fence):
                fence = ""
            out.append(line)
        elif opening:
            fence = opening.group(1)
            out.append(line)
        else:
            out.append(_unlink_line(line))
    return "".join(out)


def unlinked_message(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    shown = dict(message)
    content = shown.get("content")
    if isinstance(content, str):
        shown["content"] = unlinked(content)
    elif isinstance(content, list):
        shown["content"] = [
            {**part, "text": unlinked(part["text"])}
            if isinstance(part, dict) and isinstance(part.get("text"), str)
            else part
            for part in content
        ]
    metadata = shown.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("title"), str):
        shown["metadata"] = {**metadata, "title": unlinked(metadata["title"])}
    return shown


def md_literal(text: str) -> str:
    """Text shown literally in Markdown: every ASCII punctuation mark escaped (no HTML, no link)."""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", text)


def snippet(text: str, limit: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
