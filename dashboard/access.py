"""Who may open the dashboard: decided again on every call, from what the server knows.

The dashboard shows every user's questions and answers, so each of its handlers asks `Access`
who is calling before it reads anything, and refuses with a sentence and no data otherwise
(hiding a handler from the API page is no defence: any visitor can call any endpoint).

The rules, the first that holds wins:

1. **The owner at the machine.** The app is served on a loopback address (GRADIO_SERVER_NAME,
   and the address Gradio really bound when it is known), not on a Space (SPACE_ID), not through
   Gradio's share tunnel or its SSR front server, and the request came straight from a loopback
   peer: its socket address is loopback, it carries no proxy header (X-Forwarded-*, Forwarded,
   X-Real-IP, Via, ...), and its Host (and Origin, when sent) names a loopback host. A reverse
   proxy or tunnel in front of a loopback app makes every visitor's socket look local; its headers
   or its public Host end the rule. The Host check also stops DNS rebinding (a web page whose own
   name resolves to 127.0.0.1). A header can only take this rule away, never grant it. What it
   cannot see: a plain TCP relay (socat, `ssh -R`) that exposes the port keeps no trace in the
   request; whoever runs one must bind the app elsewhere or accept that its visitors are owners.
2. **A Hugging Face user named in ADMIN_USERS**, signed in through the Space's OAuth. Only on a
   real Space with OAuth configured: elsewhere Gradio mocks the login (anyone who clicks it
   becomes the machine's own HF user) and signs its session cookie with a public key, so a name
   in it proves nothing.
3. **This browser session gave ADMIN_PASSWORD.** Compared in constant time; wrong guesses are
   limited per client address and overall (`PasswordGate`). The proof is a `Grant` kept in a
   gr.State, which only the server writes: a caller can neither send one nor read it.

`viewer` answers who may see the whole dashboard. `reviewer` answers who may use its review
queue: whoever `viewer` lets in, and **a Hugging Face user named in REVIEWERS**, signed in as in
rule 2, who sees the Review tab and nothing else (every other handler asks `viewer`, which never
names a reviewer).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from config.settings import Settings
from runtime.visitors import address_key, client_address

log = logging.getLogger(__name__)

__all__ = ["Access", "Grant", "PasswordGate", "Viewer", "is_loopback_host", "oauth_is_real"]

# Headers a proxy or tunnel adds; the owner's own browser never sends them.
PROXY_HEADERS = frozenset(
    {
        "forwarded",
        "via",
        "x-real-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "x-original-forwarded-for",
        "cf-connecting-ip",
        "true-client-ip",
        "fastly-client-ip",
    }
)
PROXY_HEADER_PREFIXES = ("x-forwarded-",)

# A password sign-in lasts this long (the browser session usually ends first).
GRANT_TTL_S = 8 * 3600.0
# The longest password text looked at (a longer one is a wrong guess, not a reason to hash MBs).
MAX_PASSWORD_CHARS = 1024


def is_loopback_host(host: Any) -> bool:
    """127.0.0.0/8, ::1 (also IPv4-mapped) or the name localhost; nothing else, never a guess."""
    if not isinstance(host, str) or not host:
        return False
    name = host.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def _authority_host(value: str) -> str:
    """The host of a Host header value: "[::1]:7860" -> "::1", "localhost:7860" -> "localhost"."""
    value = value.strip()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else ""
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def oauth_is_real() -> bool:
    """True only where Gradio's HF login is the real one: on a Space with OAuth configured.

    Gradio decides real or mocked login with `gradio.utils.get_space()` (SYSTEM=spaces), and
    signs the session cookie with OAUTH_CLIENT_SECRET (empty outside a Space: a public key).
    """
    from gradio import oauth
    from gradio.utils import get_space

    return bool(get_space() and oauth.OAUTH_CLIENT_ID and oauth.OAUTH_CLIENT_SECRET)


@dataclass(frozen=True)
class Viewer:
    """Who is looking, and why they may."""

    how: str  # "owner" | "hf" | "password" | "reviewer"
    name: str

    @property
    def is_admin(self) -> bool:
        """Whether they may see the whole dashboard (a reviewer sees the Review tab only)."""
        return self.how != "reviewer"

    def describe(self) -> str:
        if self.how == "owner":
            return "the owner (on this machine)"
        if self.how == "hf":
            return f"Hugging Face user {self.name}"
        if self.how == "reviewer":
            return f"reviewer {self.name} (Hugging Face)"
        return "signed in with the admin password"


class Grant:
    """Proof that one browser session gave the password; only a `PasswordGate` makes one.

    It lives in a gr.State (server side); the gate checks it is one of its own and not expired.
    """

    __slots__ = ("_gate", "expires_at", "client")

    def __init__(self, gate: PasswordGate, expires_at: float, client: str) -> None:
        self._gate = gate
        self.expires_at = expires_at
        self.client = client

    def __repr__(self) -> str:  # never anything that looks like a credential
        return "Grant(...)"

    def __deepcopy__(self, memo: dict[int, Any]) -> Grant:
        # Gradio deep-copies State values; a copy is the same proof (and shares the gate).
        return self


class PasswordGate:
    """ADMIN_PASSWORD checks with a limit on wrong guesses, per client address and overall.

    While a limit is reached, every attempt is refused without even comparing, so guessing goes
    no faster by waiting less. The overall limit means a flood of wrong guesses pauses password
    sign-in for everyone for a while: better than letting it be guessed (HF sign-in and the
    owner's local access still work).
    """

    def __init__(
        self,
        password: str,
        *,
        per_client: int = 5,
        overall: int = 20,
        window_s: float = 900.0,
        grant_ttl_s: float = GRANT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 10_000,
    ) -> None:
        self._digest = hashlib.sha256(password.encode("utf-8")).digest() if password else None
        self.per_client = per_client
        self.overall = overall
        self.window_s = window_s
        self.grant_ttl_s = grant_ttl_s
        self.clock = clock
        self.max_clients = max_clients
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()

    @property
    def enabled(self) -> bool:
        return self._digest is not None

    def _prune(self, now: float) -> None:
        edge = now - self.window_s
        while self._all and self._all[0] <= edge:
            self._all.popleft()
        for client in list(self._failures):
            times = self._failures[client]
            while times and times[0] <= edge:
                times.popleft()
            if not times:
                del self._failures[client]

    def _wait_text(self, oldest: float, now: float) -> str:
        minutes = max(1, int((oldest + self.window_s - now + 59) // 60))
        return f"{minutes} minute{'s' if minutes != 1 else ''}"

    def attempt(self, supplied: Any, client: str) -> tuple[Grant | None, str]:
        """A grant and "" when the password is right; otherwise None and why (never the text)."""
        if not self.enabled:
            return None, "Password sign-in is off (ADMIN_PASSWORD is not set)."
        if not isinstance(supplied, str) or not supplied:
            return None, "Type the admin password first."
        now = self.clock()
        with self._lock:
            self._prune(now)
            if len(self._all) >= self.overall:
                wait = self._wait_text(self._all[0], now)
                return None, (
                    f"Password sign-in is paused after too many wrong passwords; try again in {wait}."
                )
            mine = self._failures.get(client)
            if mine is not None and len(mine) >= self.per_client:
                wait = self._wait_text(mine[0], now)
                return None, f"Too many wrong passwords from your address; try again in {wait}."
            candidate = supplied if len(supplied) <= MAX_PASSWORD_CHARS else ""
            # Digests of equal length: the comparison time says nothing about the password.
            given = hashlib.sha256(candidate.encode("utf-8", "surrogatepass")).digest()
            assert self._digest is not None
            if candidate and hmac.compare_digest(given, self._digest):
                # Failures are not forgiven on success: visitors may share one address (a
                # Space's proxy), and an owner's sign-in must not give a guesser fresh tries.
                log.info("Dashboard: password sign-in from %s", client)
                return Grant(self, now + self.grant_ttl_s, client), ""
            if mine is None:
                if len(self._failures) >= self.max_clients:
                    # Forget the client whose last failure is oldest; the overall limit still holds.
                    oldest = min(self._failures, key=lambda c: self._failures[c][-1])
                    del self._failures[oldest]
                mine = self._failures[client] = deque()
            mine.append(now)
            self._all.append(now)
            left = self.per_client - len(mine)
        log.warning("Dashboard: wrong password from %s (%d left in this window)", client, max(left, 0))
        if left <= 0:
            return None, "Wrong password. No attempts left from your address for now."
        return None, f"Wrong password ({left} attempt{'s' if left != 1 else ''} left)."

    def valid(self, grant: Any) -> bool:
        return isinstance(grant, Grant) and grant._gate is self and self.clock() < grant.expires_at


def _header_items(request: Any) -> list[tuple[str, str]]:
    headers = getattr(request, "headers", None)
    if headers is None:
        return []
    raw = getattr(headers, "raw", None)
    if isinstance(raw, list):  # starlette Headers: every header, repeated ones too
        return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]
    try:
        return [(str(k).lower(), str(v)) for k, v in dict(headers).items()]
    except (TypeError, ValueError):
        return []


def _client_host(request: Any) -> str | None:
    client = getattr(request, "client", None)
    host = getattr(client, "host", None)
    if host is None and isinstance(client, dict):
        host = client.get("host")
    return host if isinstance(host, str) else None


def client_key(request: Any, hops: int = 0) -> str:
    """The client's address: the socket's, or behind TRUSTED_PROXY_HOPS proxies the entry the
    nearest one appended (never a header value the client itself chose)."""
    return address_key(client_address(request, hops))


def straight_from_loopback(request: Any) -> bool:
    """The request came from this machine with nothing in between (see rule 1)."""
    if request is None or not is_loopback_host(_client_host(request)):
        return False
    items = _header_items(request)
    names = {name for name, _ in items}
    if names & PROXY_HEADERS or any(n.startswith(PROXY_HEADER_PREFIXES) for n in names):
        return False
    hosts = [value for name, value in items if name == "host"]
    if not hosts or not all(is_loopback_host(_authority_host(h)) for h in hosts):
        return False
    for name, value in items:
        if name == "origin" and not is_loopback_host(urlsplit(value.strip()).hostname or ""):
            return False
    return True


@dataclass(frozen=True)
class Front:
    """How the running app is reached, as Gradio knows it after launch (None: not known)."""

    server_name: str | None = None
    share: bool = False
    ssr: bool = False


class Access:
    """The three rules of the module docstring, asked by every dashboard handler."""

    def __init__(
        self,
        settings: Settings,
        *,
        oauth_real: bool | None = None,
        gate: PasswordGate | None = None,
        front: Callable[[], Front] | None = None,
    ) -> None:
        self.settings = settings
        self.admin_users = frozenset(u.casefold() for u in settings.admin_users)
        self.reviewers = frozenset(u.casefold() for u in settings.reviewers) - self.admin_users
        self.oauth_real = oauth_is_real() if oauth_real is None else oauth_real
        self.gate = gate or PasswordGate(settings.admin_password)
        self._front = front or Front
        on_space = bool(settings.space_id or os.environ.get("SYSTEM") == "spaces")
        self.local_owner = is_loopback_host(settings.server_name) and not on_space

    def attach(self, front: Callable[[], Front]) -> None:
        """Tell Access how the app was really launched (build_app passes the Blocks' values)."""
        self._front = front

    @property
    def hf_sign_in(self) -> bool:
        """Whether a Hugging Face sign-in can open the dashboard (or its review queue) here."""
        return bool(self.admin_users or self.reviewers) and self.oauth_real

    def _owner_served_locally(self) -> bool:
        if not self.local_owner:
            return False
        front = self._front()
        if front.share or front.ssr:
            return False
        return front.server_name is None or is_loopback_host(front.server_name)

    def viewer(self, request: Any, profile: Any = None, grant: Any = None) -> Viewer | None:
        """Who this call comes from, if they may see the dashboard; None otherwise."""
        if self._owner_served_locally() and straight_from_loopback(request):
            return Viewer("owner", "owner")
        if self.hf_sign_in and profile is not None:
            username = getattr(profile, "username", None)
            if isinstance(username, str) and username.casefold() in self.admin_users:
                return Viewer("hf", username)
        if self.gate.valid(grant):
            return Viewer("password", "admin")
        return None

    def reviewer(self, request: Any, profile: Any = None, grant: Any = None) -> Viewer | None:
        """Who may use the review queue: an admin (`viewer`), or a REVIEWERS user signed in with
        Hugging Face on a real Space; None otherwise."""
        admin = self.viewer(request, profile, grant)
        if admin is not None:
            return admin
        if self.reviewers and self.oauth_real and profile is not None:
            username = getattr(profile, "username", None)
            if isinstance(username, str) and username.casefold() in self.reviewers:
                return Viewer("reviewer", username)
        return None

    def sign_in(self, password: Any, request: Any) -> tuple[Grant | None, str]:
        return self.gate.attempt(password, client_key(request, self.settings.trusted_proxy_hops))

    def ways_in(self) -> list[str]:
        """How a visitor could get in here, as sentences (for the sign-in screen)."""
        ways = []
        if self.local_owner:
            ways.append(
                f"open it on the machine that runs the app (http://127.0.0.1:{self.settings.server_port}/dashboard)"
            )
        if self.hf_sign_in:
            ways.append(
                "sign in with Hugging Face as one of the app's admins"
                + (" (or as a reviewer, for the review queue)" if self.reviewers else "")
            )
        elif self.admin_users or self.reviewers:
            ways.append(
                "Hugging Face sign-in (ADMIN_USERS, REVIEWERS) works only on a Space with `hf_oauth: true`"
            )
        if self.gate.enabled:
            ways.append("give the admin password")
        return ways

    def refusal(self) -> str:
        """The sentence a refused caller gets: what the dashboard is and how one gets in."""
        ways = self.ways_in()
        if not ways:
            return (
                "The dashboard is only for the app's owner, and this app opens it to nobody from "
                "here (set ADMIN_USERS or ADMIN_PASSWORD to allow it)."
            )
        return "The dashboard is only for the app's owner: " + "; or ".join(ways) + "."
