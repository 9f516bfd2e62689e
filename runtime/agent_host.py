"""`python -m runtime.agent_host FD`: an agent process, started by the app (agent.agent_process).

It builds what the app would have built for its agents (the model, the tools, the code
sandbox, the tracing to the store and Langfuse) from the app's settings, then serves one
thread per chat session on the socket the app hands over for it: turns in, chat events out.
It ends when the app closes its control socket, or with the app (PDEATHSIG).
"""

from __future__ import annotations

import base64
import contextvars
import logging
import os
import pickle
import signal
import socket
import sys
import threading
from typing import Any

from agent.agent_process import readable
from agent.events import Event, run_events
from agent.session import AgentFactory, VariantAgents, close_agent
from agent.tools import build_tools
from config.settings import Settings
from feedback.store import Store
from feedback.tracing import Telemetry, register_model_class
from llms.local_llm import LocalLlamaModel
from llms.models import build_model
from runtime.variant_agents import code_shares, hosted_variants, variant_factories, variant_models
from sandbox import code_worker, protocol
from sandbox.confine import OOM_SCORE_HELPER, die_with_parent, prefer_oom_kill, set_dumpable
from sandbox.executor import describe_isolation, start_sandbox

log = logging.getLogger("agent_host")

REQUEST_LIMIT = 4 * 1024 * 1024  # a turn request: the user's message (capped by the app) and ids


class AgentHost:
    """What one agent process owns: the agent factory and the telemetry its agents report to."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        register_model_class(LocalLlamaModel)
        # In an A/B experiment: the variants of hosted models, each with its own model and agents.
        hosted = hosted_variants(settings)
        if settings.experiment is None:
            model, _choice = build_model(settings)
            register_model_class(type(model))
        else:
            models = variant_models(settings, hosted)
        # An equal share of the code memory budget; this process's own size counts in it.
        self.sandbox = start_sandbox(settings, share=code_shares(settings), fixed_pids=lambda: [os.getpid()])
        self.factory: AgentFactory | VariantAgents
        if settings.experiment is None:
            self.factory = AgentFactory(settings, model, build_tools(settings.agent_tools), self.sandbox)
        else:
            control = settings.experiment.control
            self.factory = VariantAgents(
                dict(variant_factories(settings, models, self.sandbox)),
                control if control in hosted else hosted[0],
                self.sandbox,
            )
        self.store = Store(settings.store_url)
        # The app's turns wait on nothing here: spans go to the store when each turn ends.
        self.telemetry = Telemetry.from_settings(settings, self.store)
        self.telemetry.instrument()
        # A finished turn's spans are written now, by one thread for all sessions: they reach
        # the store before the app's root span (exported 0.2 s after the turn), so evaluators
        # read a turn whole; neither the answer nor the session's next turn waits on SQLite's
        # lock (shared with the app and the other agent processes).
        self._flush = threading.Event()
        threading.Thread(target=self._flush_loop, name="span-flush", daemon=True).start()

    def isolation(self) -> str:
        return describe_isolation(self.settings, self.sandbox, "the agent process")

    def serve_session(self, session_id: str, channel: socket.socket, variant: str | None = None) -> None:
        """One chat session: its agent (its A/B variant's) answers its turns, one at a time, until
        the app closes it."""
        agent = None
        try:
            agent = self.factory(session_id, variant)
            while True:
                try:
                    request = protocol.recv(channel, limit=REQUEST_LIMIT)
                except (protocol.ChannelClosed, protocol.MessageTooLarge, OSError):
                    return
                op = request.get("op")
                if op == "turn":
                    contextvars.Context().run(self._turn, agent, request, channel)
                elif op == "close":
                    return
        except OSError:
            return  # the app closed the session's channel mid-turn
        except Exception:  # noqa: BLE001 - one session's failure never ends the process
            log.exception("Session %s failed in the agent process", session_id)
        finally:
            channel.close()
            if agent is not None:
                close_agent(agent)

    def _turn(self, agent: Any, request: dict[str, Any], channel: socket.socket) -> None:
        """Run in an empty context: the agent's spans are children of the app's root span only."""
        raw = request.get("parent")
        parent = (str(raw[0]), str(raw[1])) if isinstance(raw, list) and len(raw) == 2 else None
        trace_id = parent[0] if parent else None
        message = str(request.get("message") or "")
        metadata = request.get("metadata") if isinstance(request.get("metadata"), dict) else {}
        tags = request.get("tags") if isinstance(request.get("tags"), list) else []
        with self.telemetry.continue_turn(
            parent=parent,
            user_id=str(request.get("user_id") or ""),
            session_id=str(request.get("session_id") or ""),
            metadata={str(k): str(v) for k, v in metadata.items()},
            extra_tags=tuple(str(t) for t in tags),
        ):
            events = run_events(agent, message)
            try:
                for event in events:
                    if event.get("ev") == "end":
                        event["cost"] = self._cost(trace_id)
                        # Nothing is read after the last event: what comes next is the next turn.
                        protocol.send(channel, event)
                        break
                    protocol.send(channel, event)
                    # Mid-turn the app sends only a cancel (or a close) on this channel.
                    if readable(channel) and self._cancelled(channel):
                        events.close()
                        self._cost(trace_id)
                        protocol.send(channel, {"ev": "cancelled"})
                        return
            except OSError:
                raise  # the app closed the channel: nobody to tell (serve_session ends)
            except Exception as exc:  # noqa: BLE001 - the chat shows it, the trace records it
                error: Event = {"ev": "error", "error": f"{type(exc).__name__}: {exc}"}
                error["cost"] = self._cost(trace_id)
                protocol.send(channel, error)
            finally:
                events.close()
                self._flush.set()

    def _flush_loop(self) -> None:
        while True:
            self._flush.wait()
            self._flush.clear()
            try:
                self.telemetry.flush_to_store()
            except Exception:  # noqa: BLE001 - the batch exporter writes them later anyway
                log.exception("Could not write the turn's spans to the store now")

    def _cancelled(self, channel: socket.socket) -> bool:
        try:
            request = protocol.recv(channel, limit=REQUEST_LIMIT)
        except (protocol.ChannelClosed, protocol.MessageTooLarge):
            raise OSError("the app closed the session") from None
        if request.get("op") not in ("cancel", "close"):
            log.warning("Ignored a %r request sent while a turn was running", request.get("op"))
            return False
        return True

    def _cost(self, trace_id: str | None) -> dict[str, Any] | None:
        """The cost of the turn's LLM calls, for the app's root span (priced as they ended)."""
        if trace_id is None:
            return None
        try:
            return self.telemetry.shaper.pop_cost(int(trace_id, 16))
        except ValueError:
            return None

    def close(self) -> None:
        self.telemetry.shutdown()
        self.store.close()
        if self.sandbox is not None:
            self.sandbox.close()
            self.sandbox.zygote.close()


def main(fd: int) -> int:
    control = socket.socket(fileno=fd)
    # Ctrl-C in a terminal reaches the whole process group: the app decides when this process
    # ends (it closes the control socket after its own flush), so the spans here get flushed too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    prefer_oom_kill(OOM_SCORE_HELPER)
    set_dumpable(False)  # it holds the same keys as the app
    init, _ = code_worker.control_recv(control)
    if not init or init.get("op") != "init":
        return 2
    settings: Settings = pickle.loads(base64.b64decode(init["settings"]))
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s agent-process %(name)s: %(message)s"
    )
    try:
        host = AgentHost(settings)
        isolation = host.isolation()
    except Exception as exc:  # noqa: BLE001 - the app shows why it cannot start
        log.exception("The agent process could not start")
        code_worker.control_send(control, {"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    code_worker.control_send(control, {"ready": True, "isolation": isolation})
    threading.Thread(target=host.factory.warm_up, name="model-warm-up", daemon=True).start()
    try:
        while True:
            try:
                request, fds = code_worker.control_recv(control)
            except OSError:
                break
            if request is None:
                break  # the app closed the control socket: it is shutting down
            if request.get("op") == "session" and fds:
                variant = request.get("variant")
                threading.Thread(
                    target=host.serve_session,
                    args=(
                        str(request.get("session_id")),
                        socket.socket(fileno=fds[0]),
                        variant if isinstance(variant, str) else None,
                    ),
                    name="agent-session",
                    daemon=True,
                ).start()
    finally:
        host.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
