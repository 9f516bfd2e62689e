"""The model process: the offline model runs beside the app, supervised, never inside it.

llama.cpp is native code, and native code can crash: on Intel CPUs with AMX its weight repack
segfaults at the first decode (llama.cpp #20824), and a GGUF, a kernel or the OOM killer can
end it in other ways. Inside the web server such a crash ends every user's chat and the
dashboard. So one process (llms.model_host) holds the model for the whole app: every
session's turns and the local judge share its one copy of the weights (~100 MB) and its
prompt cache. The app talks to it over sockets (sandbox.protocol, JSON only); a call is a
request out and the reply's tokens back.

When the process dies, the calls in flight end with CRASHED (a sentence for the chat and the
trace), and it is started again after a backoff (RESTART_DELAYS_S); after MAX_CRASHES within
CRASH_WINDOW_S it stays down, and `health()` says so for the page's status line. Votes,
hosted models and the dashboard never touch it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llms.llama_engine import Event, GaveWay, LlamaEngine, LocalModelError
from sandbox import protocol
from sandbox.code_worker import control_recv, control_send
from sandbox.confine import start_child, stop_child

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 120.0  # python, llama.cpp and the weights, on 2 busy cores (about 1 s idle)
# A call that hears nothing for this long is given up: waiting for the model behind other
# users' replies is normal, a silent process for 10 minutes is not.
SILENCE_LIMIT_S = 600.0
EVENT_LIMIT = 1024 * 1024
# Crash n (counted within the window) waits RESTART_DELAYS_S[n-1] before the restart.
RESTART_DELAYS_S = (0.5, 2.0, 8.0)
MAX_CRASHES = len(RESTART_DELAYS_S)
CRASH_WINDOW_S = 600.0

CRASHED = "The local model crashed and was restarted; please ask again."


class ModelProcessError(LocalModelError):
    """The model process could not serve a call; the message is a sentence for the chat."""


class ModelCrashed(ModelProcessError):
    """The model process died while this call was in flight."""


# What the model process may see of the app's environment: how to run Python and llama.cpp,
# never the app's keys (HF_TOKEN, OPENAI_API_KEY, LANGFUSE_SECRET_KEY, DATABASE_URL...).
ENV_KEPT = ("PATH", "HOME", "LANG", "TMPDIR", "LOG_LEVEL", "PYTHONHASHSEED", "VIRTUAL_ENV")
ENV_PREFIXES_KEPT = ("LC_", "GGML_", "LLAMA_", "OMP_", "OPENBLAS_", "LD_LIBRARY_PATH")


def model_env(environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The model process's environment: the app's, without its secrets."""
    env = {k: v for k, v in environ.items() if k in ENV_KEPT or k.startswith(ENV_PREFIXES_KEPT)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), environ.get("PYTHONPATH", "")) if p)
    return env


def _signal_name(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class ModelProcess:
    """One supervised model process: started on first use, restarted after a crash."""

    def __init__(self, path: str, n_ctx: int, *, repack: bool = False) -> None:
        self.path = path
        self.n_ctx = n_ctx
        self.repack = repack
        self.buffer_types: list[str] = []
        self.crashes: deque[float] = deque()  # when each recent crash happened
        self.restarts = 0
        self.down_reason = ""  # set when it stays down after repeated crashes
        self._cond = threading.Condition()
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._state = "idle"  # idle -> starting -> ready -> (crashed -> starting ...) | down | closed
        self._generation = 0  # counts starts: a call knows which process it talked to
        self._warm_up: dict[str, Any] | None = None  # replayed after a restart

    # --- what callers use

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def health(self) -> str:
        """A sentence for the page's status line when the model is not there; else empty."""
        with self._cond:
            if self._state == "down":
                return f"⚠️ {self.down_reason}"
            if self._state in ("crashed", "starting") and self.crashes:
                return "⏳ The local model crashed and is restarting; please wait a moment."
        return ""

    def ensure_started(self) -> None:
        """Start the process now if it is not running (it also starts with the first call)."""
        self._ready()

    def warm_up(self, request: dict[str, Any]) -> None:
        """Have the model read this prompt prefix now; replayed after every restart."""
        with self._cond:
            self._warm_up = request
        self._send_warm_up(request)

    def _send_warm_up(self, request: dict[str, Any]) -> None:
        for _ in self.call({"op": "warm_up", "request": request}):
            pass

    def call(self, message: dict[str, Any]) -> Iterator[Event]:
        """Send one request; yield the reply's events. Closing the iterator stops the reply."""
        generation = self._ready()
        channel = self._open()
        try:
            try:
                protocol.send(channel, message)
            except OSError:
                raise self._lost(generation) from None
            while True:
                try:
                    event = protocol.recv(
                        channel, limit=EVENT_LIMIT, deadline=time.monotonic() + SILENCE_LIMIT_S
                    )
                except protocol.ChannelTimeout:
                    raise ModelProcessError(
                        f"The local model did not answer for {SILENCE_LIMIT_S / 60:.0f} minutes; "
                        "this call was given up."
                    ) from None
                except (protocol.ChannelClosed, protocol.MessageTooLarge, OSError):
                    raise self._lost(generation) from None
                kind = event.get("ev")
                if kind == "gave_way":
                    raise GaveWay(str(event.get("message") or "The judge gave way to a chat turn."))
                if kind == "error":
                    raise ModelProcessError(str(event.get("error") or "The local model failed."))
                yield event
                if kind == "end":
                    return
        finally:
            channel.close()  # before the end: the process stops this reply at its next token

    def close(self) -> None:
        with self._cond:
            self._state = "closed"
            self._cond.notify_all()
        self._stop()

    # --- the process's life

    def _ready(self) -> int:
        """Wait until the process is ready (starting it if needed); its generation number."""
        deadline = time.monotonic() + START_TIMEOUT_S + max(RESTART_DELAYS_S)
        with self._cond:
            while True:
                if self._state == "ready":
                    return self._generation
                if self._state == "down":
                    raise ModelProcessError(self.down_reason)
                if self._state == "closed":
                    raise ModelProcessError("The local model was shut down with the app.")
                if self._state == "idle":
                    self._state = "starting"
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ModelProcessError("The local model is still starting; please ask again.")
                self._cond.wait(left)
        self._launch()  # this caller starts it; the others wait above
        with self._cond:
            if self._state in ("crashed", "starting"):
                raise ModelCrashed(CRASHED)
            if self._state != "ready":
                raise ModelProcessError(self.down_reason or "The local model could not start.")
            return self._generation

    def _launch(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = model_env(os.environ)
        process: subprocess.Popen[bytes] | None = None
        reply: dict[str, Any] | None = None
        error = ""
        try:
            process = start_child(
                [sys.executable, "-m", "llms.model_host", str(theirs.fileno())],
                env=env,
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
            theirs.close()
            control_send(ours, {"path": self.path, "n_ctx": self.n_ctx, "repack": self.repack})
            ours.settimeout(START_TIMEOUT_S)
            reply, _ = control_recv(ours)
            ours.settimeout(None)
        except OSError as exc:
            error = f"The local model process did not start: {exc}"
        finally:
            theirs.close()
        if reply and reply.get("ready"):
            self.buffer_types = [str(b) for b in reply.get("buffers") or []]
            log.info(
                "Local model process %s ready; weight buffers: %s",
                process.pid if process else "?",
                ", ".join(self.buffer_types) or "unknown",
            )
            self._started(process, ours, "")
            return
        ours.close()
        crashed = reply is None and not error  # it died while loading: counted as a crash
        if process is not None:
            if crashed:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
                error = f"the local model process ended while loading ({_signal_name(process.poll())})"
            stop_child(process, grace_s=1)
        self._started(None, None, str((reply or {}).get("error") or error), crashed=crashed)

    def _started(
        self,
        process: subprocess.Popen[bytes] | None,
        control: socket.socket | None,
        error: str,
        crashed: bool = False,
    ) -> None:
        with self._cond:
            if self._state == "closed":
                if control is not None:
                    control.close()
                if process is not None:
                    stop_child(process, grace_s=1)
                return
            if process is None:
                log.error("The local model did not start: %s", error)
                if crashed:
                    self._crashed_locked(error)
                else:
                    self._state = "idle"  # the next call tries again (a file may have been fixed)
                    self.down_reason = error
                self._cond.notify_all()
                return
            self._process, self._control = process, control
            self._generation += 1
            self._state = "ready"
            self.down_reason = ""
            generation = self._generation
            warm = self._warm_up if self.restarts else None
            self._cond.notify_all()
        threading.Thread(
            target=self._watch, args=(process, generation), name="model-process-watch", daemon=True
        ).start()
        if warm is not None:
            threading.Thread(target=self._rewarm, args=(warm,), name="model-rewarm", daemon=True).start()

    def _rewarm(self, request: dict[str, Any]) -> None:
        try:
            self._send_warm_up(request)
        except (LocalModelError, GaveWay):
            log.warning("Could not warm the restarted model up; the next answer will be slower")

    def _watch(self, process: subprocess.Popen[bytes], generation: int) -> None:
        code = process.wait()
        with self._cond:
            if self._state == "closed" or generation != self._generation:
                return
            self._process = None
            if self._control is not None:
                self._control.close()
                self._control = None
            self._crashed_locked(_signal_name(code))

    def _crashed_locked(self, how: str) -> None:
        now = time.monotonic()
        self.crashes.append(now)
        while self.crashes and now - self.crashes[0] > CRASH_WINDOW_S:
            self.crashes.popleft()
        count = len(self.crashes)
        # The crash of llama.cpp #20824: its AMX weight layout (LOCAL_MODEL_REPACK=1) on recent Xeons.
        hint = (
            " llama.cpp was using its AMX weight layout, which crashes on some Intel CPUs: "
            "set LOCAL_MODEL_REPACK=0."
            if any("AMX" in b for b in self.buffer_types)
            else ""
        )
        if count > MAX_CRASHES:
            self._state = "down"
            self.down_reason = (
                f"The local model crashed {count} times in {CRASH_WINDOW_S / 60:.0f} minutes and was "
                f"stopped; chats with it fail until the app is restarted (see the app's log).{hint}"
            )
            log.error("Local model process %s; %s", how, self.down_reason)
            self._cond.notify_all()
            return
        delay = RESTART_DELAYS_S[count - 1]
        log.error("Local model process %s; restarting it in %.1f s (crash %d).%s", how, delay, count, hint)
        self._state = "crashed"
        self._cond.notify_all()
        threading.Thread(target=self._restart, args=(delay,), name="model-restart", daemon=True).start()

    def _restart(self, delay: float) -> None:
        time.sleep(delay)
        with self._cond:
            if self._state != "crashed":
                return
            self._state = "starting"
            self.restarts += 1
        self._launch()

    def _open(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with self._cond:
                control = self._control
                if control is None:
                    raise ModelCrashed(CRASHED)
                try:
                    control_send(control, {"op": "call"}, [theirs.fileno()])
                except OSError:
                    ours.close()
                    raise ModelCrashed(CRASHED) from None
        finally:
            theirs.close()
        return ours

    def _lost(self, generation: int) -> ModelProcessError:
        """The call's socket closed: the process died (or is dying) under it."""
        deadline = time.monotonic() + 5.0
        with self._cond:
            while self._generation == generation and self._state == "ready":
                process = self._process
                if process is None or process.poll() is not None:
                    break  # dead; the watcher records it in a moment
                if time.monotonic() >= deadline:
                    return ModelProcessError(
                        "The local model stopped this reply unexpectedly; please ask again."
                    )
                self._cond.wait(0.05)
        return ModelCrashed(CRASHED)

    def _stop(self) -> None:
        with self._cond:
            process, control = self._process, self._control
            self._process = self._control = None
        if control is not None:
            control.close()  # the process ends when its control socket closes
        if process is not None:
            stop_child(process, grace_s=5)


class InProcessModel:
    """The same calls, answered by llama.cpp in this very process (LOCAL_MODEL_IN_PROCESS=1).

    For benchmarks and comparison only: a native crash then ends the app. Same interface as
    ModelProcess, so the model class has one code path whichever runs it.
    """

    def __init__(self, path: str, n_ctx: int, *, repack: bool = False) -> None:
        self.engine = LlamaEngine(path, n_ctx, repack=repack)

    @property
    def pid(self) -> int:
        return os.getpid()

    @property
    def buffer_types(self) -> list[str]:
        return self.engine.buffer_types

    def health(self) -> str:
        return ""

    def ensure_started(self) -> None:
        self.engine.load()

    def warm_up(self, request: dict[str, Any]) -> None:
        self.engine.warm_up(request)

    def call(self, message: dict[str, Any]) -> Iterator[Event]:
        return self.engine.serve(message)

    def close(self) -> None:
        """Nothing to stop: the weights go with this process."""


Runner = ModelProcess | InProcessModel

_registry_lock = threading.Lock()
_registry: dict[tuple[str, int, bool, bool], Runner] = {}


def runner_for(path: str, n_ctx: int, *, repack: bool = False, in_process: bool = False) -> Runner:
    """The one runner of this app for these settings, shared by the chat and the judge."""
    key = (path, n_ctx, repack, in_process)
    with _registry_lock:
        runner = _registry.get(key)
        if runner is None:
            kind = InProcessModel if in_process else ModelProcess
            runner = _registry[key] = kind(path, n_ctx, repack=repack)
        return runner


def process_ids() -> list[int]:
    """The running model processes of this app (their memory counts against the code budget)."""
    with _registry_lock:
        runners = list(_registry.values())
    return [pid for r in runners if isinstance(r, ModelProcess) and (pid := r.pid) is not None]


def close_all() -> None:
    """Stop every model process of this app (at shutdown)."""
    with _registry_lock:
        processes = list(_registry.values())
        _registry.clear()
    for process in processes:
        process.close()


# Before the interpreter's threads are joined at exit: the thread that started the model
# process (sandbox.confine's keeper) ends then, and PDEATHSIG would kill the process under a
# supervisor that still reads that as a crash and restarts it.
threading._register_atexit(close_all)  # type: ignore[attr-defined]
