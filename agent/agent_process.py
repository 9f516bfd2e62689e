"""Agents of hosted models run in agent processes, not in the Gradio server's process.

Profiled under load (bench/profile_load.py): with 20 users the agent's own work (smolagents,
the HTTP client, OpenInference spans, their export) is about 14 ms of CPU per turn, and in
the server's process it queues behind the same GIL as every page update: the app's p95 was
2.4 to 3.3 times plain Gradio's. Without the agent in that process the server's share is
plain Gradio's. So with a hosted model each chat session's agent lives in one of a few agent
processes (runtime.agent_host, AGENT_PROCESSES of them), which the OS schedules on the cores
like any other process. The offline model's agents stay in the app's process: llama.cpp
itself runs in the one model process (llms.model_process), which leaves the GIL free while it
computes, and agent processes would each need a way to it.

What crosses over (JSON only, sandbox.protocol): the user's message and the turn's trace
context one way; the chat events of agent.events the other way. The turn's root span, the
answer -> trace map and the votes stay in the app; the agent's spans are exported by its
process, as children of that root (same trace id), to the store and to Langfuse.
"""

from __future__ import annotations

import base64
import logging
import os
import pickle
import select
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.events import Event
from config.settings import Settings
from sandbox import code_worker, protocol
from sandbox.confine import start_child, stop_child

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EVENT_LIMIT = 16 * 1024 * 1024  # one chat event (a step's summary) at most
START_TIMEOUT_S = 180.0  # imports, the store, the code sandbox's zygote, on 2 busy cores
# A turn whose agent process says nothing for this long is given up (its model and code
# steps have their own, shorter, time limits: this catches a process that hangs).
SILENCE_LIMIT_S = 900.0
TERMINAL = ("end", "error", "cancelled")

STOPPED = (
    "The agent's process stopped unexpectedly, so this turn has no answer. Send your message "
    "again: a fresh agent takes it (it does not remember the earlier turns of this chat)."
)


class AgentProcessError(RuntimeError):
    """A turn could not run in the agent process; the message is a sentence for the chat."""

    def __init__(self, message: str, cost: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.cost = cost


class _Host:
    """One agent process, as the app sees it."""

    def __init__(self, settings: Settings, index: int) -> None:
        self.settings = settings
        self.index = index
        self.isolation = ""
        self.sessions = 0  # opened on this process so far (new ones go where there are fewest)
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def launch(self) -> None:
        """Start the process (its reply is read by `ready`, so several start at once)."""
        with self._lock:
            self._launch_locked()

    def _launch_locked(self) -> None:
        self._stop_locked()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        try:
            self._process = start_child(
                [sys.executable, "-m", "runtime.agent_host", str(theirs.fileno())],
                env=env,  # the working directory is the app's: relative paths in the settings agree
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        finally:
            theirs.close()
        self._control = ours
        self.sessions = 0
        # The settings go from the app to its own child over a private socket (never back).
        settings = base64.b64encode(pickle.dumps(self.settings)).decode()
        code_worker.control_send(ours, {"op": "init", "settings": settings})

    def ready(self) -> None:
        with self._lock:
            self._ready_locked()

    def _ready_locked(self) -> None:
        assert self._control is not None
        self._control.settimeout(START_TIMEOUT_S)
        try:
            reply, _ = code_worker.control_recv(self._control)
        except OSError as exc:
            self._stop_locked()
            raise AgentProcessError(f"The agent process did not start: {exc}") from exc
        if not reply or not reply.get("ready"):
            detail = (reply or {}).get("error") or "it exited at start; see the log above"
            self._stop_locked()
            raise AgentProcessError(f"The agent process did not start: {detail}")
        self._control.settimeout(None)
        self.isolation = str(reply.get("isolation") or "")

    def open(self, session_id: str, variant: str | None = None) -> socket.socket:
        """A channel to a new agent for this session, of its A/B variant when it has one (the
        process is restarted if it died)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with self._lock:
            if not self.alive():
                log.warning("Agent process %d is gone; starting it again", self.index)
                self._launch_locked()
                self._ready_locked()
            assert self._control is not None
            try:
                request = {"op": "session", "session_id": session_id}
                if variant is not None:
                    request["variant"] = variant
                code_worker.control_send(self._control, request, [theirs.fileno()])
            except OSError as exc:
                ours.close()
                raise AgentProcessError(STOPPED) from exc
            finally:
                theirs.close()
            self.sessions += 1
        return ours

    def _stop_locked(self) -> None:
        if self._control is not None:
            self._control.close()  # the process ends when its control channel closes
            self._control = None
        if self._process is not None:
            stop_child(self._process, grace_s=10)  # time to flush its spans
            self._process = None

    def close(self) -> None:
        with self._lock:
            self._stop_locked()


class AgentProcesses:
    """The app's agent processes: the agent factory of sessions whose agent runs in one of them."""

    def __init__(self, settings: Settings, size: int) -> None:
        self.hosts = [_Host(settings, i) for i in range(max(1, size))]
        self._finalizer = weakref.finalize(self, _close_hosts, list(self.hosts))

    def start(self) -> None:
        """Start every process at once, then wait until each is ready to take sessions."""
        for host in self.hosts:
            host.launch()
        try:
            for host in self.hosts:
                host.ready()
        except AgentProcessError:
            self.close()
            raise

    def __call__(self, session_id: str, variant: str | None = None) -> RemoteAgent:
        return RemoteAgent(self, session_id, variant)

    def open(self, session_id: str, variant: str | None = None) -> socket.socket:
        host = min(self.hosts, key=lambda h: h.sessions)
        return host.open(session_id, variant)

    def warm_up(self) -> None:
        """Nothing to warm: a hosted model has no weights to read."""

    def health(self) -> str:
        """Nothing to report: a hosted model has no process of its own here."""
        return ""

    def isolation_line(self) -> str:
        return self.hosts[0].isolation or "code isolation: see the agent process's log"

    def pids(self) -> list[int]:
        return [pid for h in self.hosts if (pid := h.pid) is not None]

    def close(self) -> None:
        self._finalizer()


def _close_hosts(hosts: list[_Host]) -> None:
    for host in hosts:
        try:
            host.close()
        except Exception:  # noqa: BLE001 - shutting down: the others still get closed
            log.exception("Could not stop agent process %d", host.index)


class RemoteAgent:
    """A chat session's agent in an agent process: its memory and code worker live there.

    The channel is opened on the session's first turn (a page that never chats costs nothing
    there) and closed with the session; the process then drops the agent and its folder.
    """

    def __init__(self, pool: AgentProcesses, session_id: str, variant: str | None = None) -> None:
        self.pool = pool
        self.session_id = session_id
        # The A/B variant whose agent the process builds for this session (None: the app's agent).
        self.variant = variant
        self._channel: socket.socket | None = None
        # Held by a turn, and by the drain of a cancelled turn until its process stops it.
        self._lock = threading.Lock()
        self._closed = False

    def events(
        self,
        message: str,
        *,
        parent: tuple[str, str] | None,
        user_id: str,
        session_id: str,
        metadata: dict[str, str],
        tags: tuple[str, ...] = (),
    ) -> Iterator[Event]:
        """The turn's chat events, as agent.events.run_events yields them in the agent process.
        `tags`: the turn's own tags (its variant's), beside the app's, on the spans made there."""
        self._lock.acquire()
        handed_over = False
        try:
            channel = self._connect()
            try:
                protocol.send(
                    channel,
                    {
                        "op": "turn",
                        "message": message,
                        "parent": list(parent) if parent else None,
                        "user_id": user_id,
                        "session_id": session_id,
                        "metadata": metadata,
                        "tags": list(tags),
                    },
                )
            except OSError as exc:
                self._drop()
                raise AgentProcessError(STOPPED) from exc
            done = False
            try:
                while True:
                    event = self._next(channel)
                    # A later event already waiting makes this one's chat update stale: the
                    # turn may skip showing it (under load the page gets fewer, fresher updates).
                    event["more"] = readable(channel)
                    kind = event.get("ev")
                    if kind == "error":
                        done = True
                        raise AgentProcessError(str(event.get("error") or "unknown error"), event.get("cost"))
                    if kind in TERMINAL:
                        done = True
                    yield event
                    if done:
                        return
            except GeneratorExit:
                if not done:
                    # The browser went away: the process stops the agent at its next event; this
                    # session's next turn waits until it has.
                    handed_over = self._cancel(channel)
                raise
        finally:
            if not handed_over:
                self._lock.release()

    def _connect(self) -> socket.socket:
        if self._closed:
            raise AgentProcessError("This chat was closed; start a new chat.")
        if self._channel is None:
            self._channel = self.pool.open(self.session_id, self.variant)
        return self._channel

    def _next(self, channel: socket.socket) -> Event:
        try:
            return protocol.recv(channel, limit=EVENT_LIMIT, deadline=time.monotonic() + SILENCE_LIMIT_S)
        except protocol.ChannelTimeout:
            self._drop()
            raise AgentProcessError(
                f"The agent process did not answer for {SILENCE_LIMIT_S / 60:.0f} minutes; this turn was given up."
            ) from None
        except (protocol.ChannelClosed, protocol.MessageTooLarge, OSError):
            self._drop()
            raise AgentProcessError(STOPPED) from None

    def _cancel(self, channel: socket.socket) -> bool:
        try:
            protocol.send(channel, {"op": "cancel"})
        except OSError:
            self._drop()
            return False
        threading.Thread(target=self._drain, args=(channel,), name="agent-cancel", daemon=True).start()
        return True

    def _drain(self, channel: socket.socket) -> None:
        try:
            while True:
                if self._next(channel).get("ev") in TERMINAL:
                    return
        except AgentProcessError:
            return
        finally:
            self._lock.release()

    def _drop(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    def close(self) -> None:
        """The session ended: its agent process drops the agent, its memory and its folder."""
        self._closed = True
        channel, self._channel = self._channel, None
        if channel is None:
            return
        try:
            # Read by the process between turns; a turn still running is cancelled first.
            protocol.send(channel, {"op": "close"})
        except OSError:
            pass
        finally:
            channel.close()


def readable(channel: socket.socket) -> bool:
    """Whether a message is waiting (the agent process checks for a cancel between events)."""
    try:
        return bool(select.select([channel], [], [], 0)[0])
    except (OSError, ValueError):
        return True
