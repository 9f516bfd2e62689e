"""One chat session per browser tab: its own CodeAgent, memory, and answer -> trace map.

A session lives in Gradio's per-session state (never in a module global), so nothing one
user says or rates can reach another user's agent or traces.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smolagents import CodeAgent, Model, Tool

from agent.agent_process import AgentProcesses, RemoteAgent
from agent.chat_agent import ChatAgent, prompt_templates
from config.settings import Settings
from config.variants import Assignment, Variant
from llms.local_llm import LocalLlamaModel
from sandbox.executor import CodeSandbox, IsolatedExecutor, remove_folder
from sandbox.files import folder_open

log = logging.getLogger(__name__)


def new_session_id() -> str:
    return uuid.uuid4().hex


@dataclass(eq=False)
class ChatSession:
    """What the server keeps for one browser session."""

    session_id: str
    user_id: str
    # In this process, or (hosted models, AGENT_PROCESSES > 0) in an agent process.
    agent: CodeAgent | RemoteAgent
    # Chat index of every message of an answer -> the trace id of the turn that produced it.
    answer_traces: dict[int, str] = field(default_factory=dict)
    last_rated_trace: str | None = None
    # The page numbers its vote clicks; the latest click applied to each trace. Two clicks made
    # within a round trip can reach the server in either order: an older one arriving later is
    # stale and ignored, so the stored vote is always the one the page shows.
    vote_clicks: dict[str, float] = field(default_factory=dict)
    gradio_session: str | None = None  # the browser tab's Gradio session hash
    # Whom the per-user limits count this chat against (runtime.visitors), and why it was
    # closed early (its visitor opened too many chats): said when the tab sends again.
    visitor: str = ""
    closed_reason: str = ""
    # The user's place in the A/B experiment (VARIANTS_FILE): the agent is its variant's, and
    # every turn's trace says which (metadata, tag). None outside an experiment.
    assignment: Assignment | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def map_answer(self, indexes: range, trace_id: str) -> None:
        for index in indexes:
            self.answer_traces[index] = trace_id

    def forget_from(self, index: int) -> None:
        """Drop every mapping at or after this chat index (a new turn starts there)."""
        for key in [k for k in self.answer_traces if k >= index]:
            del self.answer_traces[key]

    def unmap(self, indexes: range) -> None:
        for index in indexes:
            self.answer_traces.pop(index, None)

    def newer_click(self, trace_id: str, click: object) -> bool:
        """Record the click number of a vote on this trace; False when a later click was applied.

        A vote without a number (an API caller) always applies and leaves the numbering alone.
        """
        if isinstance(click, bool) or not isinstance(click, (int, float)) or not math.isfinite(click):
            return True
        if click <= self.vote_clicks.get(trace_id, -math.inf):
            return False
        self.vote_clicks[trace_id] = float(click)
        return True

    def trace_for(self, index: object) -> str | None:
        """The trace of the answer at this chat index; None for anything else."""
        if isinstance(index, bool) or not isinstance(index, int):
            return None
        return self.answer_traces.get(index)


class AgentFactory:
    """Builds a fresh CodeAgent for each session, all sharing one model object.

    The agent's code runs where CODE_EXECUTOR says: by default in the session's own confined
    worker process (`sandbox`), started on its first code step. `variant`: an A/B variant's
    prompts (its model, tools and settings are the ones given).
    """

    def __init__(
        self,
        settings: Settings,
        model: Model,
        tools: list[Tool],
        sandbox: CodeSandbox | None = None,
        *,
        variant: Variant | None = None,
    ) -> None:
        self._settings = settings
        self._model = model
        self._tools = tools
        self.sandbox = sandbox
        self._local = isinstance(model, LocalLlamaModel)
        # Parsed once: reading the YAML is most of the cost of a new session's agent.
        self._templates = prompt_templates(local=self._local)
        self._instructions: str | None = None
        if variant is not None:
            self._templates = variant.templates(self._templates)
            self._instructions = variant.instructions
        # Tokens appear in the chat as they are generated, for every model that can stream.
        self._stream = callable(getattr(model, "generate_stream", None))

    def warm_up(self) -> None:
        """Have the offline model read its system prompt now, so the first answer starts fast."""
        if not isinstance(self._model, LocalLlamaModel):
            return
        agent = self("warm-up")
        try:
            messages = agent.write_memory_to_messages()
            self._model.warm_up([*messages, {"role": "user", "content": "New task:\n"}])
        finally:
            agent.cleanup()

    def health(self) -> str:
        """The local model's state when it is down or restarting (a sentence), else empty."""
        health = getattr(self._model, "health", None)
        if not callable(health):
            return ""
        try:
            return str(health())
        except Exception:  # noqa: BLE001 - the status line never breaks a handler
            log.exception("Could not read the model's health")
            return ""

    def work_dir(self, session_id: str) -> Path:
        return self._settings.agent_files_dir.resolve() / session_id

    def _executor(self, session_id: str) -> dict[str, Any]:
        kind = self._settings.code_executor
        if kind == "local-process":
            assert self.sandbox is not None, "local-process needs a CodeSandbox"
            return {"executor": IsolatedExecutor(self.sandbox, self.work_dir(session_id))}
        if kind == "local-unsafe":
            # In the app's own process: for comparison only (see README, Security).
            opener = folder_open(self._settings.agent_files_dir)
            return {"executor_kwargs": {"additional_functions": {"open": opener}}}
        return {"executor_type": kind}  # e2b, docker, modal: smolagents' own remote executors

    def __call__(self, session_id: str, variant: str | None = None) -> ChatAgent:
        """A new session's agent (`variant` is for VariantAgents; this factory is one variant's)."""
        return ChatAgent(
            tools=list(self._tools),
            model=self._model,
            max_steps=self._settings.max_steps,
            memory_turns=self._settings.memory_turns,
            trust_fallback=not self._local,
            compact=self._local,
            additional_authorized_imports=list(self._settings.allowed_imports),
            **self._executor(session_id),
            # Constrained JSON {thought, code}: the tiny local model's replies always parse.
            use_structured_outputs_internally=self._local,
            prompt_templates=copy.deepcopy(self._templates),
            instructions=self._instructions,
            stream_outputs=self._stream,
            verbosity_level=0,
        )


class VariantAgents:
    """The agent factory of an A/B experiment: each session's agent is built by its variant's
    factory, here (AgentFactory) or in the agent processes (AgentProcesses, shared by the variants
    of hosted models). Nothing here depends on the user: the session says its variant."""

    def __init__(
        self,
        factories: dict[str, AgentFactory | AgentProcesses],
        default: str,
        sandbox: CodeSandbox | None = None,
    ) -> None:
        self.factories = factories
        self.default = default
        # The code sandbox of the variants whose agents run in this process (None: none do).
        self.sandbox = sandbox

    def __call__(self, session_id: str, variant: str | None = None) -> ChatAgent | RemoteAgent:
        return self.factories[variant or self.default](session_id, variant or self.default)

    def _distinct(self) -> list[AgentFactory | AgentProcesses]:
        return list({id(f): f for f in self.factories.values()}.values())

    @property
    def pool(self) -> AgentProcesses | None:
        return next((f for f in self._distinct() if isinstance(f, AgentProcesses)), None)

    def warm_up(self) -> None:
        """Each offline model reads its system prompt once (hosted models: nothing to do)."""
        for factory in self._distinct():
            factory.warm_up()

    def health(self) -> str:
        return next((h for f in self._distinct() if (h := f.health())), "")

    def close(self) -> None:
        pool = self.pool
        try:
            if pool is not None:
                pool.close()
        finally:
            if self.sandbox is not None:
                self.sandbox.close()


def new_session(
    make_agent: Callable[..., CodeAgent | RemoteAgent], user_id: str, assignment: Assignment | None = None
) -> ChatSession:
    session_id = new_session_id()
    agent = make_agent(session_id, assignment.variant) if assignment is not None else make_agent(session_id)
    return ChatSession(session_id=session_id, user_id=user_id, agent=agent, assignment=assignment)


def close_agent(agent: CodeAgent) -> None:
    """Stop an agent's code worker (or remote sandbox) and drop its memory and folder."""
    agent.memory.reset()
    executor = getattr(agent, "python_executor", None)
    try:
        agent.cleanup()
    except Exception:  # noqa: BLE001 - a remote sandbox that is already gone
        log.exception("Could not stop an agent's code executor")
    if isinstance(executor, IsolatedExecutor):
        remove_folder(executor.work_dir)


def close_session(session: ChatSession) -> None:
    """End the session's agent, here or in its agent process, and forget its answers."""
    session.answer_traces.clear()
    if isinstance(session.agent, RemoteAgent):
        session.agent.close()
    else:
        close_agent(session.agent)
