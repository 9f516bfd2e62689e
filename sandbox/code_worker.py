"""The processes that run the model's code: a zygote, and one confined worker per chat session.

`python -m sandbox.code_worker FD` is started by the app with an empty environment. It imports
smolagents' executor once, measures which confinement layers this kernel allows, then forks a
worker on each request: forking a warm process takes milliseconds where a fresh interpreter
that imports smolagents takes about a second. The zygote never runs the model's code itself;
each worker confines itself (sandbox.confine) before it reads its first line of code.

Nothing here is trusted by the app after a worker has run code: the app enforces the time,
output and folder limits from outside and kills the worker with SIGKILL.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from sandbox import confine, protocol
from sandbox.files import folder_open

REQUEST_LIMIT = 64 * 1024 * 1024  # code, variables and tool results sent by the app


class ToolCallError(RuntimeError):
    """A tool the app ran for this worker failed; the message is the tool's error."""


def _final_answer(answer: Any = None, *args: Any, **kwargs: Any) -> Any:
    return answer


def _tool_proxy(channel: socket.socket, name: str) -> Any:
    """Tools run in the app (network tools need the network the worker does not have)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        protocol.send(
            channel,
            {"op": "tool", "name": name, "args": protocol.plain(args), "kwargs": protocol.plain(kwargs)},
        )
        reply = protocol.recv(channel, limit=REQUEST_LIMIT)
        if "error" in reply:
            raise ToolCallError(str(reply["error"]))
        return reply.get("result")

    call.__name__ = name
    return call


def _run(executor: Any, code: str, max_chars: int) -> dict[str, Any]:
    try:
        out = executor(code)
        logs = str(out.logs)
        if len(logs) > max_chars:
            return {"limit": "output"}
        return {"output": protocol.plain(out.output), "logs": logs, "final": bool(out.is_final_answer)}
    except MemoryError:
        return {"limit": "memory"}
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the app as text
        text = str(exc)
        logs = str(executor.state.get("_print_outputs", ""))
        if len(logs) > max_chars:
            return {"limit": "output"}
        if "due to: MemoryError" in text:
            return {"limit": "memory", "logs": logs}
        if "[Errno 27]" in text:  # RLIMIT_FSIZE: a file grew past the limit
            return {"limit": "folder", "logs": logs}
        return {"error": text, "error_type": type(exc).__name__, "logs": logs}


def serve(channel: socket.socket, config: dict[str, Any], applied: list[str]) -> None:
    """The worker's loop: tools, variables and code from the app; results back."""
    from smolagents.local_python_executor import LocalPythonExecutor

    executor = LocalPythonExecutor(
        additional_authorized_imports=list(config["imports"]),
        max_print_outputs_length=1 << 40,  # never cut here: past the limit the step is stopped
        additional_functions={"open": folder_open(Path.cwd(), relative=True)},
        timeout_seconds=None,  # its timer needs a thread; the app's wall clock is the limit
    )
    executor.send_tools({"final_answer": _final_answer})
    protocol.send(channel, {"ready": True, "layers": applied})
    while True:
        try:
            message = protocol.recv(channel, limit=REQUEST_LIMIT)
        except (protocol.ChannelClosed, OSError):
            return
        op = message.get("op")
        if op == "tools":
            tools = {n: _tool_proxy(channel, n) for n in message.get("names", []) if n != "final_answer"}
            executor.send_tools({**tools, "final_answer": _final_answer})
        elif op == "variables":
            executor.send_variables(dict(message.get("variables") or {}))
        elif op == "run":
            confine.limit_step_cpu(int(config["timeout_s"]))
            try:
                reply = _run(executor, str(message.get("code", "")), int(config["max_output_chars"]))
                protocol.send(channel, reply)
            except MemoryError:
                protocol.send(channel, {"limit": "memory"})


# --- the zygote


def _walls(config: dict[str, Any], request: dict[str, Any], layers: list[str]) -> confine.Walls:
    return confine.Walls(
        work_dir=str(request["work_dir"]),
        ro_paths=tuple(request["ro_paths"]),
        root_dir=str(request["root_dir"]),
        memory_mb=int(config["memory_mb"]),
        max_file_mb=int(config["max_file_mb"]),
        cpu_s=int(config["cpu_budget_s"]),
        layers=frozenset(layers),
    )


def _try_layers(config: dict[str, Any], probe: dict[str, Any], layers: list[str]) -> str | None:
    """Fork a child that puts these layers in place; None if it worked, else the reason."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            confine.confine(_walls(config, probe, layers))
            os.write(write, b"ok")
        except BaseException as exc:  # noqa: BLE001
            os.write(write, f"{type(exc).__name__}: {exc}".encode()[:500])
        os._exit(0)
    os.close(write)
    answer = b""
    while chunk := os.read(read, 1024):
        answer += chunk
    os.close(read)
    os.waitpid(pid, 0)
    return None if answer == b"ok" else (answer.decode(errors="replace") or "the probe died")


def measure_layers(config: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """Which layers this kernel allows, each tried alone, then all together."""
    base = tempfile.mkdtemp(prefix="sandbox-probe-")
    probe = {
        "work_dir": os.path.join(base, "work"),
        "root_dir": os.path.join(base, "root"),
        "ro_paths": config["ro_paths"],
    }
    os.makedirs(probe["work_dir"])
    os.makedirs(probe["root_dir"])
    wanted = [layer for layer in confine.LAYERS if layer in config.get("layers", confine.LAYERS)]
    works, why = [], {}
    try:
        for layer in wanted:
            reason = _try_layers(config, probe, [layer])
            if reason is None:
                works.append(layer)
            else:
                why[layer] = reason
        while works and (reason := _try_layers(config, probe, works)) is not None:
            why[works[-1]] = f"not with the others: {reason}"
            works.pop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return works, why


def _reap(*_args: Any) -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def control_send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    """One record on the zygote's SOCK_SEQPACKET control socket (record boundaries are kept)."""
    socket.send_fds(sock, [json.dumps(message).encode()], fds or [])


def control_recv(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, 4)
    return (json.loads(data) if data else None), fds


def _spawn(
    control: socket.socket,
    channel_fd: int,
    config: dict[str, Any],
    layers: list[str],
    request: dict[str, Any],
) -> None:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            control.close()
            fd = confine.close_other_fds(channel_fd)
            os.setsid()
            confine.die_with_parent()
            applied = confine.confine(_walls(config, request, layers))
            serve(socket.socket(fileno=fd), config, applied)
        except BaseException:  # noqa: BLE001 - the app sees the channel close
            code = 1
        os._exit(code)
    os.close(channel_fd)
    pidfd = os.pidfd_open(pid)
    try:
        control_send(control, {"pid": pid}, [pidfd])
    finally:
        os.close(pidfd)


def main(argv: list[str]) -> int:
    control = socket.socket(fileno=int(argv[1]))
    confine.die_with_parent()
    confine.prefer_oom_kill(confine.OOM_SCORE_WORKER)  # the workers it forks inherit it
    confine.set_dumpable(False)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the app, which stops us
    config, _ = control_recv(control)
    if config is None:
        return 0
    sys.path[:] = [p for p in config["sys_path"] if p]
    for name in ["smolagents.local_python_executor", *config["preload"]]:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the app already refused unknown modules
            traceback.print_exc()
    # Nothing after this imports from the project folder, which the workers cannot see.
    project = config["project_root"]
    sys.path[:] = [p for p in sys.path if p != project]
    os.chdir("/")
    layers, why = measure_layers(config)
    control_send(control, {"layers": layers, "why": why})
    signal.signal(signal.SIGCHLD, _reap)
    while True:
        try:
            request, fds = control_recv(control)
        except OSError:
            return 0
        if request is None:
            return 0
        if fds:
            _spawn(control, fds[0], config, layers, request)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
