"""Per-user limits of a public deployment: chats kept open, turns per minute, answers at once.

A public Space opens a session for anyone, for free: one script could open thousands of chats
or queue thousands of turns and starve everyone else. These limits are per *visitor*: a signed-in
Hugging Face user (only where the login is real, on a Space with OAuth), else the client's
address. Behind a proxy every socket comes from the proxy, so the address is then read from
X-Forwarded-For, trusting only the entries the proxies in front of the app appended
(TRUSTED_PROXY_HOPS; 1 on a Space). IPv6 addresses count per /64, the block one subscriber gets.

Defaults a demo never hits (settings in config.settings): 20 open chats, 30 turns a minute and
MAX_CONCURRENT_TURNS - 1 answers at once per visitor; people behind one address (an office)
share them, and signing in separates them.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from config.settings import Settings

log = logging.getLogger(__name__)

# Visitors with nothing to remember are forgotten at most this often (an O(n) sweep).
SWEEP_EVERY_S = 60.0
WINDOW_S = 60.0


def _header(request: Any, name: str) -> list[str]:
    headers = getattr(request, "headers", None)
    if headers is None:
        return []
    getlist = getattr(headers, "getlist", None)
    if callable(getlist):  # starlette Headers: every occurrence of a repeated header
        return [str(v) for v in getlist(name)]
    try:
        value = dict(headers).get(name)
    except (TypeError, ValueError):
        return []
    return [str(value)] if value is not None else []


def _socket_host(request: Any) -> str | None:
    client = getattr(request, "client", None)
    host = getattr(client, "host", None)
    if host is None and isinstance(client, dict):
        host = client.get("host")
    return host if isinstance(host, str) and host else None


def client_address(request: Any, hops: int) -> str:
    """The client's address: the socket's, or (hops > 0) the entry the nearest trusted proxy
    appended to X-Forwarded-For. Entries left of it were written by the client: never trusted."""
    host = _socket_host(request) or "unknown"
    if hops <= 0 or request is None:
        return host
    entries = [e.strip() for value in _header(request, "x-forwarded-for") for e in value.split(",")]
    entries = [e for e in entries if e]
    if len(entries) < hops:
        return host  # fewer entries than proxies: the request did not come through them all
    return entries[-hops]


def address_key(address: str) -> str:
    """IPv4 as is; IPv6 by its /64 (one subscriber's block: trivial to rotate within)."""
    text = address.strip().strip("[]")
    try:
        ip = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return f"addr:{text[:100]}"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"ip:{ip.ipv4_mapped}"
        return f"ip6:{ipaddress.IPv6Network((ip, 64), strict=False)}"
    return f"ip:{ip}"


def visitor_key(request: Any, profile: Any, hops: int, oauth_real: bool) -> str:
    """Whom the limits count: the HF user when the login is real, else the client's address;
    empty (no limits) for a call made in-process, with no request (tests, embedders)."""
    name = getattr(profile, "username", None) if profile is not None else None
    if oauth_real and isinstance(name, str) and name:
        return f"hf:{name}"
    if request is None:
        return ""
    return address_key(client_address(request, hops))


class _Visitor:
    __slots__ = ("turns", "running", "sessions")

    def __init__(self) -> None:
        self.turns: deque[float] = deque()  # when each turn of the last minute started
        self.running = 0
        # Open chats, least recently active first: session id -> the session (weakly).
        self.sessions: OrderedDict[str, weakref.ref[Any]] = OrderedDict()

    def empty(self) -> bool:
        return not self.turns and not self.running and not self.sessions


class VisitorLimits:
    """The counters; one per app (runtime), shared by every request handler thread."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_sessions = settings.max_sessions_per_user
        self.per_minute = settings.turns_per_minute
        self.at_once = settings.user_turns_at_once or max(1, settings.max_concurrent_turns - 1)
        self._clock = clock
        self._lock = threading.Lock()
        self._visitors: dict[str, _Visitor] = {}
        self._swept = clock()
        self.refused = 0  # turns refused, for the log and the tests
        self.closed = 0  # chats closed for their visitor's limit

    # --- turns

    def start_turn(self, key: str) -> str | None:
        """Count a turn that starts now; a sentence instead when a limit says no."""
        if not key:
            return None
        now = self._clock()
        with self._lock:
            visitor = self._visitors.setdefault(key, _Visitor())
            while visitor.turns and now - visitor.turns[0] >= WINDOW_S:
                visitor.turns.popleft()
            if visitor.running >= self.at_once:
                self.refused += 1
                many = "message is" if self.at_once == 1 else f"{self.at_once} messages are"
                return f"Your previous {many} still being answered; please wait for an answer, then send this again."
            if len(visitor.turns) >= self.per_minute:
                self.refused += 1
                wait = max(1, math.ceil(WINDOW_S - (now - visitor.turns[0])))
                return (
                    f"You have sent {self.per_minute} messages in the last minute, the most this app "
                    f"takes from one person; please wait {wait} s and send it again."
                )
            visitor.turns.append(now)
            visitor.running += 1
            self._sweep_locked(now)
        return None

    def end_turn(self, key: str) -> None:
        if not key:
            return
        with self._lock:
            visitor = self._visitors.get(key)
            if visitor is not None and visitor.running > 0:
                visitor.running -= 1

    # --- chats

    def add_session(self, key: str, session: Any) -> list[Any]:
        """A new chat of this visitor; the chats it pushes over the limit (to be closed).

        The least recently active go first; a chat answering a turn right now is never chosen.
        """
        with self._lock:
            visitor = self._visitors.setdefault(key, _Visitor())
            visitor.sessions[session.session_id] = weakref.ref(session)
            for sid, ref in list(visitor.sessions.items()):
                if ref() is None:  # dropped without Gradio's end-of-session callback
                    del visitor.sessions[sid]
            over: list[Any] = []
            for sid, ref in list(visitor.sessions.items()):
                if len(visitor.sessions) <= self.max_sessions:
                    break
                old = ref()
                if old is None:
                    del visitor.sessions[sid]
                    continue
                if old is session or _answering(old):
                    continue
                del visitor.sessions[sid]
                over.append(old)
            self.closed += len(over)
        return over

    def touch(self, key: str, session: Any) -> None:
        """The chat was used: it becomes the visitor's most recent."""
        with self._lock:
            visitor = self._visitors.get(key)
            if visitor is not None and session.session_id in visitor.sessions:
                visitor.sessions.move_to_end(session.session_id)

    def forget_session(self, key: str, session: Any) -> None:
        with self._lock:
            visitor = self._visitors.get(key)
            if visitor is not None:
                visitor.sessions.pop(session.session_id, None)

    def open_sessions(self, key: str) -> int:
        with self._lock:
            visitor = self._visitors.get(key)
            return sum(1 for ref in visitor.sessions.values() if ref() is not None) if visitor else 0

    def _sweep_locked(self, now: float) -> None:
        if now - self._swept < SWEEP_EVERY_S:
            return
        self._swept = now
        for key, visitor in list(self._visitors.items()):
            while visitor.turns and now - visitor.turns[0] >= WINDOW_S:
                visitor.turns.popleft()
            for sid, ref in list(visitor.sessions.items()):
                if ref() is None:
                    del visitor.sessions[sid]
            if visitor.empty():
                del self._visitors[key]

    def describe(self) -> str:
        return (
            f"per-user limits: {self.max_sessions} open chats, {self.per_minute} turns a minute, "
            f"{self.at_once} answers at once"
        )


def _answering(session: Any) -> bool:
    lock = getattr(session, "lock", None)
    return bool(lock is not None and lock.locked())
