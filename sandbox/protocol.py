"""Messages between the app and a code worker: length-prefixed JSON over a socket.

JSON and nothing else: the app never unpickles what a worker sends (a hostile worker could
make unpickling run code in the app). Every read has a size cap and a deadline, so a worker
cannot make the app buffer gigabytes or wait forever.
"""

from __future__ import annotations

import json
import math
import select
import socket
import struct
import time
from typing import Any

_HEADER = struct.Struct("!I")
MAX_DEPTH = 20


class ChannelClosed(ConnectionError):
    """The other side went away (a killed or crashed worker)."""


class MessageTooLarge(ValueError):
    """The other side announced a message above the cap."""


class ChannelTimeout(TimeoutError):
    """No complete message before the deadline."""


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message, ensure_ascii=False, allow_nan=True).encode("utf-8", "replace")
    sock.sendall(_HEADER.pack(len(data)) + data)


def _read(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([sock], [], [], wait)[0]:
                raise ChannelTimeout("no reply in time")
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ChannelClosed("the other side closed the channel")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def recv(sock: socket.socket, *, limit: int, deadline: float | None = None) -> dict[str, Any]:
    """One message; `limit` bytes at most, before `deadline` (time.monotonic) if given."""
    (size,) = _HEADER.unpack(_read(sock, _HEADER.size, deadline))
    if size > limit:
        raise MessageTooLarge(f"message of {size} bytes, the limit is {limit}")
    try:
        message = json.loads(_read(sock, size, deadline).decode("utf-8", "replace"))
    except (ValueError, RecursionError) as exc:
        raise ChannelClosed(f"unreadable message: {exc}") from None
    if not isinstance(message, dict):
        raise ChannelClosed("unreadable message: not an object")
    return message


def plain(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy: numbers, text, lists and string-keyed dicts; anything else as its text."""
    if value is None or isinstance(value, (bool, int, str)):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 1 << 53:
            try:
                return str(value)
            except ValueError:  # more digits than Python converts to text
                return f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= MAX_DEPTH:
        return "..."
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v, depth + 1) for k, v in value.items()}
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a value whose __str__ fails is shown by its type
        return f"<{type(value).__name__}>"
