"""`python -m llms.model_host FD`: the model process, started by llms.model_process.

It loads the GGUF once (llms.llama_engine) and serves every caller of the app that started
it: chat turns of all sessions, the local judge, warm-ups. Each call arrives as a socket the
app hands over on the control socket FD; one thread per call streams the reply's tokens back
as JSON messages (sandbox.protocol). It ends when the app closes the control socket, or with
the app (PDEATHSIG). A native crash here ends only this process: the app sees its sockets
close, tells the callers, and starts it again.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

from llms.llama_engine import GaveWay, LlamaEngine, LocalModelError
from sandbox import protocol
from sandbox.confine import OOM_SCORE_HELPER, die_with_parent, prefer_oom_kill, set_dumpable

log = logging.getLogger("model_host")

REQUEST_LIMIT = 16 * 1024 * 1024  # a prompt: a chat's messages (the app caps what it sends)


def serve_call(engine: LlamaEngine, channel: socket.socket) -> None:
    """One call: a request in, the reply's events out; a caller that leaves stops it."""
    with channel:
        try:
            request = protocol.recv(channel, limit=REQUEST_LIMIT)
        except (protocol.ChannelClosed, protocol.MessageTooLarge, OSError):
            return
        try:
            events = engine.serve(request, gone=lambda: _gone(channel))
            try:
                for event in events:
                    protocol.send(channel, event)
            finally:
                events.close()  # a caller that left: the context is free for the next one
        except GaveWay as exc:  # before OSError: GaveWay is a TimeoutError
            _reply(channel, {"ev": "gave_way", "message": str(exc)})
        except OSError:
            return  # the caller closed its socket (a closed chat, a cancelled turn)
        except LocalModelError as exc:
            _reply(channel, {"ev": "error", "error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - one call's failure never ends the process
            log.exception("A model call failed")
            _reply(channel, {"ev": "error", "error": f"{type(exc).__name__}: {exc}"})


def _gone(channel: socket.socket) -> bool:
    """The caller closed its end while the call waited for the model."""
    try:
        return channel.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _reply(channel: socket.socket, message: dict[str, Any]) -> None:
    try:
        protocol.send(channel, message)
    except OSError:
        pass


def main(argv: list[str]) -> int:
    """Load the model, say ready (with its weight buffer types), then take calls until closed."""
    die_with_parent()
    prefer_oom_kill(OOM_SCORE_HELPER)
    set_dumpable(False)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the app, which closes us
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    control = socket.socket(fileno=int(argv[1]))
    from sandbox.code_worker import control_recv, control_send

    init, _ = control_recv(control)
    if not init:
        return 0
    engine = LlamaEngine(str(init["path"]), int(init["n_ctx"]), repack=bool(init.get("repack")))
    try:
        engine.load()
    except LocalModelError as exc:
        control_send(control, {"ready": False, "error": str(exc)})
        return 1
    control_send(control, {"ready": True, "buffers": engine.buffer_types, "pid": os.getpid()})
    while True:
        try:
            message, fds = control_recv(control)
        except OSError:
            return 0
        if message is None:
            return 0  # the app closed the control socket
        for fd in fds:
            channel = socket.socket(fileno=fd)
            threading.Thread(
                target=serve_call, args=(engine, channel), name="model-call", daemon=True
            ).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
