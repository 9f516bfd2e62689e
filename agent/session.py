"""One chat session per browser tab: its own CodeAgent, memory, and answer -> trace map.

A session lives in Gradio's per-session state (never in a module global), so nothing one
user says or rates can reach another user's agent or traces.
"""

from __future__ import annotations

import copy
import importlib.resources
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml
from smolagents import CodeAgent, Model, Tool

from agent.local_llm import LocalLlamaModel
from agent.sandbox import folder_open
from agent.settings import Settings


def new_session_id() -> str:
    return uuid.uuid4().hex


@dataclass(eq=False)
class ChatSession:
    """What the server keeps for one browser session."""

    session_id: str
    user_id: str
    agent: CodeAgent
    # Chat index of every message of an answer -> the trace id of the turn that produced it.
    answer_traces: dict[int, str] = field(default_factory=dict)
    last_rated_trace: str | None = None
    gradio_session: str | None = None  # the browser tab's Gradio session hash
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

    def trace_for(self, index: object) -> str | None:
        """The trace of the answer at this chat index; None for anything else."""
        if isinstance(index, bool) or not isinstance(index, int):
            return None
        return self.answer_traces.get(index)


class AgentFactory:
    """Builds a fresh CodeAgent for each session, all sharing one model object."""

    def __init__(self, settings: Settings, model: Model, tools: list[Tool]) -> None:
        self._settings = settings
        self._model = model
        self._tools = tools
        self._structured = isinstance(model, LocalLlamaModel)
        # Parsed once: reading the YAML is most of the cost of a new session's agent.
        name = "structured_code_agent.yaml" if self._structured else "code_agent.yaml"
        self._templates = yaml.safe_load(
            importlib.resources.files("smolagents.prompts").joinpath(name).read_text()
        )

    def __call__(self) -> CodeAgent:
        return CodeAgent(
            tools=list(self._tools),
            model=self._model,
            max_steps=self._settings.max_steps,
            additional_authorized_imports=list(self._settings.allowed_imports),
            # `open` for the model's code reaches only files inside AGENT_FILES_DIR.
            executor_kwargs={"additional_functions": {"open": folder_open(self._settings.agent_files_dir)}},
            # Constrained JSON {thought, code}: the tiny local model's replies always parse.
            use_structured_outputs_internally=self._structured,
            prompt_templates=copy.deepcopy(self._templates),
            verbosity_level=0,
        )


def new_session(make_agent: Callable[[], CodeAgent], user_id: str) -> ChatSession:
    return ChatSession(session_id=new_session_id(), user_id=user_id, agent=make_agent())
