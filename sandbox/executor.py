"""The model's code runs in another process: the app's side of that boundary.

`CodeSandbox` (one per app) starts the zygote (sandbox.code_worker) with an empty environment and
asks it for one confined worker per chat session. `IsolatedExecutor` is the smolagents
`PythonExecutor` a session's CodeAgent gets through `executor=`: it sends code, runs the tools
the worker asks for (they may need the network the worker does not have), and enforces the
limits from outside the worker (wall time, output size, folder size) with SIGKILL, since a
worker that ran hostile code cannot be trusted to stop itself.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smolagents.local_python_executor import (
    BASE_BUILTIN_MODULES,
    CodeOutput,
    InterpreterError,
    PythonExecutor,
)

from config.settings import Settings, SettingsError
from sandbox import code_worker, confine, protocol
from sandbox.budget import CLEARED, MemoryBudget, MemoryRefused
from sandbox.memory import default_budget_mb, resident_mb

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Secret-free variables the worker may have (thread counts keep numeric libraries single-threaded).
WORKER_ENV = {
    "LANG": "C.UTF-8",
    "PYTHONHASHSEED": "random",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


MAX_TOOL_CALLS_PER_STEP = 20


class SandboxError(RuntimeError):
    """The worker processes cannot be started; the message says why."""


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    timeout_s: int
    output_kb: int
    max_files: int
    folder_mb: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            settings.code_memory_mb,
            settings.code_timeout_s,
            settings.code_max_output_kb,
            settings.code_max_files,
            settings.code_max_folder_mb,
        )

    def message(self, kind: str) -> str:
        """The sentence the chat shows when a limit stopped the code."""
        return {
            "memory": f"Your code used more than {self.memory_mb} MB of memory and was stopped.",
            "time": f"Your code ran for more than {self.timeout_s} s and was stopped.",
            "output": f"Your code's output was larger than {self.output_kb} KB and was stopped.",
            "folder": (
                f"Your code wrote more than {self.max_files} files or {self.folder_mb} MB in its folder "
                "and was stopped; the folder was emptied."
            ),
        }.get(
            kind,
            # Said without blame: the code may have crashed it, or something outside killed it.
            "The worker process running your code ended unexpectedly (a crash, or stopped from outside).",
        ) + (" Its variables are gone; the next code step starts a fresh worker.")


def folder_usage(path: Path, max_files: int) -> tuple[int, int]:
    """Files and bytes under `path` (symlinks not followed); stops counting past `max_files`."""
    files = size = 0
    stack = [str(path)]
    while stack and files <= max_files:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            files += 1
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    size += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return files, size


class Worker:
    """One confined worker process, as the app sees it: a socket and a pidfd to kill it with."""

    def __init__(self, pid: int, pidfd: int, channel: socket.socket) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.channel = channel
        self._lock = threading.Lock()
        self.dead = False

    def signal(self, signum: int) -> None:
        with self._lock:
            if not self.dead:
                try:
                    signal.pidfd_send_signal(self.pidfd, signum)
                except ProcessLookupError:
                    pass

    def pause(self) -> None:
        """Between steps the worker does not run at all: a forged 'done' reply buys it nothing."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def kill(self, wait_s: float = 0.0) -> None:
        """SIGKILL; with `wait_s`, also wait (that long at most) until the process is gone."""
        with self._lock:
            if self.dead:
                return
            self.dead = True
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                if wait_s > 0:
                    # A pidfd turns readable when the process has exited, after its memory is freed.
                    select.select([self.pidfd], [], [], wait_s)
            except ProcessLookupError:
                pass
            except OSError:
                log.exception("Could not kill code worker %s", self.pid)
            self.channel.close()
            os.close(self.pidfd)


class Zygote:
    """The clean process that forks workers; shared by every runtime with the same configuration."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.layers: list[str] = []
        self.why: dict[str, str] = {}
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None

    def start(self) -> None:
        with self._lock:
            self._start_locked()

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def _start_locked(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self._stop_locked()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = confine.start_child(
                [sys.executable, "-E", "-m", "sandbox.code_worker", str(theirs.fileno())],
                cwd=PROJECT_ROOT,
                env=dict(WORKER_ENV),  # no inherited secrets: the settings never cross over
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                close_fds=True,
            )
        finally:
            theirs.close()
        self._control = ours
        ours.settimeout(60)
        try:
            code_worker.control_send(ours, self.config)
            reply, _ = code_worker.control_recv(ours)
        except OSError as exc:
            self._stop_locked()
            raise SandboxError(f"The code worker process did not start: {exc}") from exc
        if reply is None:
            self._stop_locked()
            raise SandboxError("The code worker process exited at start; see the log above.")
        ours.settimeout(None)
        self.layers = list(reply["layers"])
        self.why = dict(reply["why"])
        for layer, reason in self.why.items():
            log.info("Code isolation layer %s is not available here: %s", layer, reason)

    def spawn(self, request: dict[str, Any]) -> Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with self._lock:
            self._start_locked()
            assert self._control is not None
            try:
                self._control.settimeout(30)
                code_worker.control_send(self._control, request, [theirs.fileno()])
                reply, fds = code_worker.control_recv(self._control)
            except OSError as exc:
                self._stop_locked()
                raise SandboxError(f"The code worker process is not answering: {exc}") from exc
            finally:
                theirs.close()
                if self._control is not None:
                    self._control.settimeout(None)
            if reply is None or not fds:
                self._stop_locked()
                raise SandboxError("The code worker process exited; it is restarted on the next step.")
        worker = Worker(int(reply["pid"]), fds[0], ours)
        try:
            # The worker's first message says it is confined and ready.
            protocol.recv(ours, limit=1 << 16, deadline=time.monotonic() + 30)
        except (OSError, ValueError) as exc:
            worker.kill()
            raise SandboxError(f"A code worker could not confine itself: {exc}") from exc
        return worker

    def _stop_locked(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._process is not None:
            confine.stop_child(self._process)
            self._process = None

    def close(self) -> None:
        with self._lock:
            self._stop_locked()


# Zygotes by configuration: process infrastructure (like the loaded model), never per-user state.
_zygotes: dict[str, Zygote] = {}
_zygotes_lock = threading.Lock()


def _zygote_for(config: dict[str, Any]) -> Zygote:
    key = json.dumps(config, sort_keys=True)
    with _zygotes_lock:
        zygote = _zygotes.get(key)
        if zygote is None:
            zygote = _zygotes[key] = Zygote(config)
    return zygote


class CodeSandbox:
    """A runtime's code workers: where their folders are, what they may see, their limits, and
    the memory budget they share (`share`: how many agent processes split CODE_TOTAL_MEMORY_MB;
    `fixed_pids`: other processes started for users whose memory counts against it)."""

    def __init__(
        self, settings: Settings, *, share: int = 1, fixed_pids: Callable[[], Iterable[int]] | None = None
    ) -> None:
        self.limits = Limits.from_settings(settings)
        if settings.code_total_memory_mb:
            total, self.budget_source = float(settings.code_total_memory_mb), "CODE_TOTAL_MEMORY_MB"
        else:
            mb, source = default_budget_mb()
            total, self.budget_source = float(mb), f"default: {source}"
        if share > 1:
            total /= share
            self.budget_source += f", split between {share} agent processes"
        extra = fixed_pids or tuple
        self.files_dir = settings.agent_files_dir.resolve()
        # Never visible to a worker: the project (code, .env), the store and other sessions' folders.
        hidden = (str(PROJECT_ROOT), str(settings.data_dir.resolve()), str(self.files_dir))
        self.ro_paths = confine.runtime_paths(hidden)
        imports = list(settings.allowed_imports)
        preload = sorted({*BASE_BUILTIN_MODULES, *imports, "json"})
        self.zygote = _zygote_for(
            {
                "sys_path": [p for p in sys.path if p],
                "project_root": str(PROJECT_ROOT),
                "preload": [m for m in preload if "*" not in m],
                "ro_paths": list(self.ro_paths),
                "memory_mb": self.limits.memory_mb,
                "max_file_mb": self.limits.folder_mb,
                "timeout_s": self.limits.timeout_s,
                # The worker's lifetime CPU budget; past it the session gets a fresh worker.
                "cpu_budget_s": self.limits.timeout_s * 40,
                "max_output_chars": self.limits.output_kb * 1024 // 2,
                "imports": imports,
                "layers": list(settings.code_sandbox_layers),
            }
        )
        zygote = self.zygote
        self.budget = MemoryBudget(
            total,
            self.limits.memory_mb,
            settings.code_idle_s,
            lambda: [p for p in (zygote.pid, *extra()) if p],
        )

    def start(self) -> None:
        """Start the zygote now (it measures which layers this kernel allows)."""
        self.zygote.start()
        pid = self.zygote.pid
        if pid is not None:
            self.budget.set_fresh_mb(resident_mb(pid))
        self.budget.refresh_fixed()
        smallest = self.budget.fixed_mb + self.budget._fresh_mb() + self.limits.memory_mb
        if self.budget.total_mb < smallest:
            raise SandboxError(
                f"The code memory budget ({self.budget.total_mb:,.0f} MB, {self.budget_source}) is "
                f"smaller than one code step needs ({smallest:,.0f} MB: CODE_MEMORY_MB, a worker and "
                "the processes already running); raise CODE_TOTAL_MEMORY_MB or lower CODE_MEMORY_MB."
            )

    def budget_line(self) -> str:
        return f"{self.budget.describe()} [{self.budget_source}]"

    def close(self) -> None:
        self.budget.close()

    def describe(self) -> str:
        """One line for the start banner."""
        self.start()
        layers = self.zygote.layers
        parts = ["process", *layers]
        if "namespaces" in layers or "seccomp" in layers:
            parts.append("no network")
        missing = [layer for layer in confine.LAYERS if layer not in layers]
        note = f" ({', '.join(missing)} not permitted or not enabled here)" if missing else ""
        return f"code isolation: {' + '.join(parts)}{note}"

    def spawn(self, work_dir: Path) -> Worker:
        work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        root_dir = self.files_dir / ".sandbox-root"
        root_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.zygote.spawn(
            {
                "work_dir": str(work_dir),
                "root_dir": str(root_dir),
                "ro_paths": list(self.ro_paths),
            }
        )


class IsolatedExecutor(PythonExecutor):
    """A session's code executor: a worker process of its own, started on its first code step."""

    def __init__(self, sandbox: CodeSandbox, work_dir: Path) -> None:
        self.sandbox = sandbox
        self.limits = sandbox.limits
        self.work_dir = work_dir
        self.tools: dict[str, Any] = {}
        self.variables: dict[str, Any] = {}
        self.worker: Worker | None = None
        self.slot = sandbox.budget.slot(work_dir.name)
        # Set when a step was refused for memory: the turn ends with this sentence.
        self.refusal = ""
        # CodeAgent shows these logs when a step fails.
        self.state: dict[str, Any] = {"_print_outputs": ""}
        # Kills the worker if the executor is dropped without cleanup().
        self._finalizer: weakref.finalize | None = None

    # --- PythonExecutor

    # Both are called at every run(): the worker is only woken (SIGCONT, send, SIGSTOP) when
    # something changed.

    def send_tools(self, tools: dict[str, Any]) -> None:
        changed = sorted(tools) != sorted(self.tools)
        self.tools = dict(tools)
        if self.worker is not None and changed:
            self._send_between_steps({"op": "tools", "names": sorted(self.tools)})

    def send_variables(self, variables: dict[str, Any]) -> None:
        plain = protocol.plain(dict(variables))
        # Sent again when not empty: the worker's code may have changed them since.
        changed = plain != self.variables or bool(plain)
        self.variables = plain
        if self.worker is not None and changed:
            self._send_between_steps({"op": "variables", "variables": self.variables})

    def __call__(self, code_action: str) -> CodeOutput:
        self.state["_print_outputs"] = ""
        budget = self.sandbox.budget
        try:
            cleared = budget.admit(self.slot)
        except MemoryRefused as exc:
            self.refusal = str(exc)
            raise InterpreterError(str(exc)) from None
        self.refusal = ""
        note = CLEARED + "\n" if cleared else ""
        if cleared and self.worker is not None:
            self.worker.kill()  # already killed for the budget, or about to be: never reused
            self.worker = None
        try:
            worker = self._ensure_worker()
            worker.resume()
            self._send({"op": "run", "code": code_action})
            reply = self._wait(worker)
            worker.pause()
            logs = note + str(reply.get("logs", ""))
            self.state["_print_outputs"] = logs
            if reply.get("limit"):
                self._stop(str(reply["limit"]))
            if self._folder_over():
                self._stop("folder")
            if "error" in reply:
                # The note is in the logs, which smolagents puts in the step's observation too.
                raise InterpreterError(str(reply["error"]))
            return CodeOutput(output=reply.get("output"), logs=logs, is_final_answer=bool(reply.get("final")))
        finally:
            budget.release(self.slot)

    def cleanup(self) -> None:
        """Kill the worker (the session ended, expired or was reset)."""
        if self.worker is not None:
            self.worker.kill()
            self.worker = None
        self.sandbox.budget.drop(self.slot)

    # --- internals

    def _ensure_worker(self) -> Worker:
        if self.worker is None or self.worker.dead:
            try:
                self.worker = self.sandbox.spawn(self.work_dir)
            except SandboxError as exc:
                raise InterpreterError(f"The code could not run: {exc}") from exc
            if self._finalizer is not None:
                self._finalizer.detach()
            self._finalizer = weakref.finalize(self, Worker.kill, self.worker)
            self.sandbox.budget.attach(self.slot, self.worker)
            self._send({"op": "tools", "names": sorted(self.tools)})
            self._send({"op": "variables", "variables": self.variables})
        return self.worker

    def _send_between_steps(self, message: dict[str, Any]) -> None:
        """Queued for the worker, which reads it when it resumes for its next step."""
        with self.sandbox.budget.pinned(self.slot):
            worker = self.worker
            if worker is None or worker.dead:
                return  # stopped for memory or idleness: the next step's fresh worker gets it all
            worker.resume()
            try:
                self._send(message)
            finally:
                if self.worker is not None:
                    self.worker.pause()

    def _send(self, message: dict[str, Any]) -> None:
        assert self.worker is not None
        try:
            protocol.send(self.worker.channel, message)
        except OSError:
            self._stop("crash")

    def _wait(self, worker: Worker) -> dict[str, Any]:
        limit = self.limits.output_kb * 1024 + 4096
        deadline = time.monotonic() + self.limits.timeout_s
        tool_calls = 0
        while True:
            now = time.monotonic()
            if now >= deadline:
                self._stop("time")
            # Poll for the start of a reply (checking the folder meanwhile); once it has started,
            # read it whole against the step's deadline, so a message is never cut in two.
            try:
                readable = select.select([worker.channel], [], [], min(deadline - now, 1.0))[0]
            except (OSError, ValueError):
                self._stop("crash")
            if not readable:
                if self._folder_over():
                    self._stop("folder")
                continue
            try:
                message = protocol.recv(worker.channel, limit=limit, deadline=deadline)
            except protocol.MessageTooLarge:
                self._stop("output")
            except protocol.ChannelTimeout:
                self._stop("time")
            except (protocol.ChannelClosed, OSError):
                self._stop("time" if time.monotonic() >= deadline - 0.5 else "crash")
            if message.get("op") == "tool":
                tool_calls += 1
                if tool_calls > MAX_TOOL_CALLS_PER_STEP:
                    # Tool time does not count against the step, so the number of calls must.
                    self._send(
                        {"error": f"A code step may call tools at most {MAX_TOOL_CALLS_PER_STEP} times."}
                    )
                    continue
                started = time.monotonic()
                reply = self._run_tool(message)
                deadline += time.monotonic() - started  # a tool's own time is not the code's
                self._send(reply)
                continue
            return message

    def _run_tool(self, message: dict[str, Any]) -> dict[str, Any]:
        name = str(message.get("name"))
        tool = self.tools.get(name)
        if tool is None or name == "final_answer":
            return {"error": f"There is no tool named {name!r}."}
        args = message.get("args") if isinstance(message.get("args"), list) else []
        kwargs = message.get("kwargs") if isinstance(message.get("kwargs"), dict) else {}
        try:
            return {"result": protocol.plain(tool(*args, **kwargs))}
        except Exception as exc:  # noqa: BLE001 - the tool's error goes back to the code
            return {"error": f"{type(exc).__name__}: {exc}"}

    def _folder_over(self) -> bool:
        files, size = folder_usage(self.work_dir, self.limits.max_files)
        return files > self.limits.max_files or size > self.limits.folder_mb * 1024 * 1024

    def _stop(self, kind: str) -> Any:
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.kill()
        self.sandbox.budget.drop(self.slot)
        if kind == "folder":
            remove_folder(self.work_dir)  # or every later step would stop at the same limit
        message = self.limits.message(kind)
        log.warning("Code worker stopped (%s): %s", kind, message)
        raise InterpreterError(message)


REMOTE_EXECUTOR_NEEDS = {
    "e2b": ("e2b_code_interpreter", "pip install 'smolagents[e2b]' and set E2B_API_KEY"),
    "docker": ("docker", "pip install 'smolagents[docker]' and a running Docker engine"),
    "modal": ("modal", "pip install 'smolagents[modal]' and a Modal token (modal token new)"),
}


def start_sandbox(
    settings: Settings, *, share: int = 1, fixed_pids: Callable[[], Iterable[int]] | None = None
) -> CodeSandbox | None:
    """The worker processes for CODE_EXECUTOR=local-process; remote executors are checked here.

    `share` and `fixed_pids`: see CodeSandbox (the memory budget)."""
    kind = settings.code_executor
    if kind in REMOTE_EXECUTOR_NEEDS:
        module, needs = REMOTE_EXECUTOR_NEEDS[kind]
        try:
            __import__(module)
        except ImportError:
            raise SettingsError(f"CODE_EXECUTOR={kind} needs {needs}.") from None
        return None
    if kind != "local-process":
        return None
    sandbox = CodeSandbox(settings, share=share, fixed_pids=fixed_pids)
    sandbox.start()
    return sandbox


def describe_isolation(settings: Settings, sandbox: CodeSandbox | None, where: str = "the app") -> str:
    """The start banner's line on where the model's code runs (`where`: the process of the agents)."""
    if sandbox is not None:
        return f"{sandbox.describe()}\n{sandbox.budget_line()}"
    if settings.code_executor == "local-unsafe":
        return f"code isolation: NONE (CODE_EXECUTOR=local-unsafe runs the model's code in {where}; never expose it)"
    return f"code isolation: remote sandbox ({settings.code_executor}, smolagents' executor)"


def remove_folder(path: Path) -> None:
    """A session's folder goes with the session (rmtree never follows the symlinks inside)."""
    shutil.rmtree(path, ignore_errors=True)
