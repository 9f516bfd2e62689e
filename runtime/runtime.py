"""What one running app owns, and how it is put together: settings, the model choice, the agent
factory (agents here or in agent processes), the feedback backends, the sessions per tab.

The app (the page) and the CLIs build their runtime here. It composes agent/, llms/, sandbox/ and
feedback/; it imports nothing from evals/ or dashboard/ (the online evaluation is passed in).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from smolagents import Model, Tool

from agent.agent_process import AgentProcessError, AgentProcesses
from agent.session import AgentFactory, ChatSession, VariantAgents, close_session, new_session
from agent.tools import build_tools
from config import __version__
from config.settings import Settings, SettingsError
from config.variants import Assignment
from feedback.backends import FeedbackBackends
from feedback.tracing import register_model_class
from llms.local_llm import LocalLlamaModel
from llms.model_process import close_all as close_model_processes
from llms.model_process import process_ids as model_process_ids
from llms.models import ModelChoice, build_model
from runtime.variant_agents import (
    code_shares,
    hosted_variants,
    remote_choice,
    variant_factories,
    variant_models,
)
from runtime.visitors import VisitorLimits
from sandbox.executor import describe_isolation, start_sandbox

log = logging.getLogger("app")


class TurnCounter:
    """Chat activity: a local judge waits while a turn runs and for `quiet_s` after the last one.

    A judge call between two turns of a conversation would make the next turn wait for the
    judge's prompt to be read (llama.cpp cannot stop in the middle of that) and read its own
    prompt again (the judge's replaced it in the model's cache): measured, turns 3 times slower.
    People take seconds to type; the judge uses those pauses once they are this long.
    """

    def __init__(self, quiet_s: float = 5.0) -> None:
        self._n = 0
        self._last_end = float("-inf")
        self._lock = threading.Lock()
        self.quiet_s = quiet_s

    def __enter__(self) -> TurnCounter:
        with self._lock:
            self._n += 1
        return self

    def __exit__(self, *_exc: object) -> None:
        with self._lock:
            self._n -= 1
            self._last_end = time.monotonic()

    def busy(self) -> bool:
        return self._n > 0 or time.monotonic() - self._last_end < self.quiet_s


@dataclass
class Runtime:
    """What one running app owns: settings, model choice, agent factory, feedback backends."""

    settings: Settings
    # The model (in an A/B experiment: the control's).
    choice: ModelChoice
    # Agents in this process, or in agent processes (hosted models; AGENT_PROCESSES); in an A/B
    # experiment, each variant's (VariantAgents).
    make_agent: AgentFactory | AgentProcesses | VariantAgents
    feedback: FeedbackBackends
    # Chat turns running now (online evaluation with the local model waits for them).
    turns: TurnCounter = field(default_factory=TurnCounter)
    # Weak references only: they let tests and benchmarks see that dropped sessions are freed.
    sessions: weakref.WeakSet[ChatSession] = field(default_factory=weakref.WeakSet)
    # The current session of each browser tab (Gradio session hash), weakly: see session_for.
    by_tab: weakref.WeakValueDictionary[str, ChatSession] = field(default_factory=weakref.WeakValueDictionary)
    tab_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # Set by build_app: drops what Gradio itself keeps for a browser session.
    forget_gradio_session: Callable[[str], None] = field(default=lambda _hash: None)
    # Per-user limits (open chats, turns a minute, answers at once); made from the settings.
    visitors: VisitorLimits | None = None
    # In an A/B experiment: each variant's model, by variant name (for its traces and the banner).
    choices: dict[str, ModelChoice] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.visitors is None:
            self.visitors = VisitorLimits(self.settings)

    def new_session(
        self,
        user_id: str,
        gradio_session: str | None = None,
        visitor: str = "",
        *,
        variant: str | None = None,
    ) -> ChatSession:
        """A fresh session, from now on the tab's current one (New chat).

        Past MAX_SESSIONS_PER_USER open chats of this visitor, the least recently used is closed.
        In an A/B experiment its agent is the user's variant's; `variant` names another one (a
        dataset replayed against each variant), served even while paused.
        """
        assignment = self.assignment(user_id) if variant is None else self.pinned(variant)
        session = new_session(self.make_agent, user_id, assignment)
        session.gradio_session = gradio_session
        session.visitor = visitor
        self.sessions.add(session)
        if gradio_session is not None:
            self.by_tab[gradio_session] = session
        if visitor:
            assert self.visitors is not None
            for old in self.visitors.add_session(visitor, session):
                log.info(
                    "Session %s closed: its visitor opened more than %s chats",
                    old.session_id,
                    self.visitors.max_sessions,
                )
                old.closed_reason = (
                    f"This chat was closed because more than {self.visitors.max_sessions} chats were "
                    "open from your address or account; your message starts a new chat (earlier "
                    "answers on this page can no longer be rated)."
                )
                close_session(old)
        return session

    def assignment(self, user_id: str) -> Assignment | None:
        """The user's variant in the A/B experiment (None without one): the same for this user in
        every session, process and restart (config.variants.assign)."""
        experiment = self.settings.experiment
        return experiment.assign(user_id) if experiment is not None else None

    def pinned(self, variant: str) -> Assignment:
        """An assignment to this variant, whoever the user (ValueError: no such variant)."""
        experiment = self.settings.experiment
        if experiment is None or variant not in experiment.names:
            known = ", ".join(experiment.names) if experiment is not None else "none: no VARIANTS_FILE"
            raise ValueError(f"No variant {variant!r} in the experiment (the variants: {known}).")
        return Assignment(experiment.name, variant, variant)

    def session_for(self, user_id: str, gradio_session: str | None, visitor: str = "") -> ChatSession:
        """The tab's current session, made by whichever asks first.

        The page load and a message sent before it finished both find no session in the tab's
        state and ask for one; without this each made its own, the load's output replaced the
        turn's session, and the votes on that turn's answer found no answer (seen in CI).
        """
        if gradio_session is None:
            return self.new_session(user_id, visitor=visitor)
        with self.tab_lock:
            current = self.by_tab.get(gradio_session)
            if current is not None and not current.closed_reason:
                return current
            return self.new_session(user_id, gradio_session, visitor)

    def end_session(self, session: object) -> None:
        """Gradio calls this when a session's state expires (SESSION_TTL_S idle) or closes."""
        if isinstance(session, ChatSession):
            log.info("Session %s dropped after %ss idle", session.session_id, self.settings.session_ttl_s)
            close_session(session)
            if session.visitor and self.visitors is not None:
                self.visitors.forget_session(session.visitor, session)
            if session.gradio_session:
                if self.by_tab.get(session.gradio_session) is session:
                    del self.by_tab[session.gradio_session]
                self.forget_gradio_session(session.gradio_session)

    def close(self) -> None:
        """Flush pending traces and ratings, and stop the agent and model processes."""
        try:
            self.feedback.close()
        finally:
            if isinstance(self.make_agent, (AgentProcesses, VariantAgents)):
                self.make_agent.close()
            elif self.make_agent.sandbox is not None:
                self.make_agent.sandbox.close()
            close_model_processes()

    def model_health(self) -> str:
        """A sentence when the local model is down or restarting (for the status line)."""
        return self.make_agent.health()

    def metadata(self, session: ChatSession | None = None) -> dict[str, str]:
        """The turn's root metadata: the model that answers (the session's variant's, in an A/B
        experiment) and the app's version. The variant itself is added by agent.turn."""
        choice = self.choice
        if session is not None and session.assignment is not None:
            choice = self.choices.get(session.assignment.variant, choice)
        return {
            "provider": choice.provider,
            "model_id": choice.model_id,
            "app_version": __version__,
        }

    def banner(self) -> list[str]:
        """The start banner's model lines: the model and why, or the experiment and its variants."""
        experiment = self.settings.experiment
        if experiment is None:
            return [self.choice.banner()]
        return experiment.banner({name: f"{c.provider} {c.model_id}" for name, c in self.choices.items()})


# Builds the online evaluation over the runtime's feedback (evals.online.build_evaluation, bound
# to a judge by the caller): given by the app, so this layer never imports evals/.
EvaluationFactory = Callable[[Settings, FeedbackBackends, Callable[[], bool]], Any]


def create_runtime(
    settings: Settings,
    *,
    model: Model | None = None,
    extra_tools: list[Tool] | None = None,
    evaluation: EvaluationFactory | None = None,
) -> Runtime:
    """Wire agents, processes and feedback together; `model` and `extra_tools` let tests and
    embedders pass their own; `evaluation` adds the online evaluators (none without it)."""
    register_model_class(LocalLlamaModel)
    if settings.experiment is not None:
        return _experiment_runtime(settings, model, extra_tools, evaluation)
    # A hosted model's agents run in agent processes; a model or tools passed in as objects
    # (tests, embedders) cannot cross over, so their agents run here.
    remote = (
        model is None
        and not extra_tools
        and settings.agent_processes > 0
        and settings.model_provider != "local"
    )
    if remote:
        choice = ModelChoice(settings.model_provider, settings.model_id, settings.provider_reason)
    elif model is None:
        model, choice = build_model(settings)
    else:
        choice = ModelChoice("custom", str(model.model_id), "a model object was passed in")
    if model is not None:
        register_model_class(type(model))
    feedback = FeedbackBackends.from_settings(settings)
    feedback.start()
    try:
        if remote:
            # After the store exists (its migrations ran): the processes open it too.
            make_agent: AgentFactory | AgentProcesses = AgentProcesses(settings, settings.agent_processes)
            make_agent.start()
        else:
            assert model is not None
            tools = [*build_tools(settings.agent_tools), *(extra_tools or [])]
            make_agent = AgentFactory(
                settings, model, tools, start_sandbox(settings, fixed_pids=model_process_ids)
            )
    except (SettingsError, AgentProcessError):
        feedback.close()
        raise
    return _finish(settings, choice, make_agent, feedback, evaluation)


def _finish(
    settings: Settings,
    choice: ModelChoice,
    make_agent: AgentFactory | AgentProcesses | VariantAgents,
    feedback: FeedbackBackends,
    evaluation: EvaluationFactory | None,
    choices: dict[str, ModelChoice] | None = None,
) -> Runtime:
    turns = TurnCounter()
    try:
        feedback.evaluation = evaluation(settings, feedback, turns.busy) if evaluation is not None else None
    except SettingsError:
        feedback.close()
        if isinstance(make_agent, (AgentProcesses, VariantAgents)):
            make_agent.close()
        raise
    if feedback.evaluation is not None:
        feedback.evaluation.start()
    return Runtime(settings, choice, make_agent, feedback, turns=turns, choices=choices or {})


def _experiment_runtime(
    settings: Settings,
    model: Model | None,
    extra_tools: list[Tool] | None,
    evaluation: EvaluationFactory | None,
) -> Runtime:
    """An A/B experiment's runtime: each variant's agents built from its own settings, here or (a
    hosted model's, unless a model or tools were passed in as objects) in the agent processes,
    which then build the same variants' agents. The judge and everything else are the app's."""
    experiment = settings.experiment
    assert experiment is not None
    remote = hosted_variants(settings) if model is None and not extra_tools else []
    here = [name for name in experiment.names if name not in remote]
    # Before the tracing is instrumented (each model class gets its LLM spans).
    models = variant_models(settings, here, model)
    choices = {
        name: models[name][1] if name in models else remote_choice(experiment.variant(name))
        for name in experiment.names
    }
    feedback = FeedbackBackends.from_settings(settings)
    feedback.start()
    pool: AgentProcesses | None = None
    sandbox = None
    try:
        factories: dict[str, AgentFactory | AgentProcesses] = {}
        if remote:
            pool = AgentProcesses(settings, settings.agent_processes)
            pool.start()
            factories.update(dict.fromkeys(remote, pool))
        if here:
            share = code_shares(settings) if remote else 1
            running = pool
            sandbox = start_sandbox(
                settings,
                share=share,
                fixed_pids=lambda: [*model_process_ids(), *(running.pids() if running is not None else [])],
            )
            factories.update(variant_factories(settings, models, sandbox, extra_tools))
    except (SettingsError, AgentProcessError):
        feedback.close()
        if pool is not None:
            pool.close()
        raise
    make_agent = VariantAgents(
        {name: factories[name] for name in experiment.names}, experiment.control, sandbox
    )
    return _finish(settings, choices[experiment.control], make_agent, feedback, evaluation, choices)


def isolation_line(runtime: Runtime) -> str:
    agents = runtime.make_agent
    if isinstance(agents, AgentProcesses):
        return agents.isolation_line()
    if isinstance(agents, VariantAgents):
        lines = []
        if agents.pool is not None:
            lines.append(agents.pool.isolation_line())
        if agents.sandbox is not None or agents.pool is None:
            lines.append(describe_isolation(runtime.settings, agents.sandbox))
        return "\n".join(lines)
    return describe_isolation(runtime.settings, agents.sandbox)
