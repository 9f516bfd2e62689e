"""The CodeAgent a chat session runs: smolagents' CodeAgent with a bounded memory.

A chat keeps its earlier turns in the agent's memory, and smolagents re-sends all of them at
every step: the prompt grows with the chat until a small model's context overflows (the
offline model died at the fifth question). `memory_turns` keeps only the last N turns, both
in what is sent and in what the session holds.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import smolagents.agents
import yaml
from smolagents import CodeAgent
from smolagents.memory import ActionStep, TaskStep
from smolagents.models import ChatMessage, MessageRole

LOCAL_PROMPTS = Path(__file__).with_name("local_prompts.yaml")
_SYSTEM_PROMPTS: dict[tuple[Any, ...], str] = {}
_SYSTEM_PROMPTS_MAX = 64


class _QuietLive:
    """Stands in for rich's Live display, which smolagents opens on its console while a reply
    streams and re-renders as Markdown on every token: quadratic in the reply's length, under
    the GIL, for a console the app keeps quiet (the chat shows the stream). Profiled under
    load: about 10 ms per turn, and 0.36 s for a 384-token reply."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __enter__(self) -> _QuietLive:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None


def _no_markdown(*args: Any, **kwargs: Any) -> None:
    return None


# Only smolagents' agents module is changed, and only its console rendering of a stream.
smolagents.agents.Live = _QuietLive  # type: ignore[misc]
smolagents.agents.Markdown = _no_markdown  # type: ignore[assignment,misc]


def prompt_templates(*, local: bool) -> dict[str, Any]:
    """The compact templates for the offline model; smolagents' own for hosted models."""
    if local:
        return yaml.safe_load(LOCAL_PROMPTS.read_text())
    text = importlib.resources.files("smolagents.prompts").joinpath("code_agent.yaml").read_text()
    return yaml.safe_load(text)


class ChatAgent(CodeAgent):
    """A CodeAgent that remembers at most the last `memory_turns` turns (0: all of them).

    `trust_fallback` says whether the answer the model writes after running out of steps is
    worth showing (a hosted model's is; the offline model's is not).
    """

    def __init__(
        self,
        *args: Any,
        memory_turns: int = 0,
        trust_fallback: bool = True,
        compact: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.memory_turns = memory_turns
        self.trust_fallback = trust_fallback
        self.compact = compact
        # The chat shows the model's tokens; smolagents would also print them to the console.
        self.logger.console.quiet = True

    def initialize_system_prompt(self) -> str:
        """The system prompt, rendered once per configuration instead of at every run.

        smolagents compiles the Jinja template on every `run()`: about 5 ms of CPU per turn
        under the GIL, which under load costs every user 15 to 20 times that in latency.
        """
        tools = tuple((t.name, t.description, repr(t.inputs), t.output_type) for t in self.tools.values())
        key = (
            self.prompt_templates["system_prompt"],
            tools,
            tuple(sorted(self.managed_agents)),
            tuple(self.authorized_imports),
            self.instructions,
            self.code_block_tags,
        )
        prompt = _SYSTEM_PROMPTS.get(key)
        if prompt is None:
            prompt = super().initialize_system_prompt()
            if len(_SYSTEM_PROMPTS) >= _SYSTEM_PROMPTS_MAX:
                _SYSTEM_PROMPTS.clear()
            _SYSTEM_PROMPTS[key] = prompt
        return prompt

    def forget_old_turns(self) -> None:
        """Drop every step of the turns before the last `memory_turns` earlier ones."""
        if self.memory_turns <= 0:
            return
        starts = [i for i, step in enumerate(self.memory.steps) if isinstance(step, TaskStep)]
        keep = self.memory_turns + 1  # the earlier turns, plus the one being answered
        if len(starts) > keep:
            del self.memory.steps[: starts[-keep]]

    def write_memory_to_messages(self, summary_mode: bool = False) -> list[ChatMessage]:
        """The prompt. `compact` (the offline model) shows earlier turns as a short dialogue.

        A tiny model copies whatever JSON it sees: given its earlier turns' steps it repeats
        their code for a new question. So earlier turns are one "Earlier in this chat" note
        of questions and answers, and only the current turn's steps are shown in full,
        without the "Calling tools: [...]" echo of code its own reply already holds.
        """
        self.forget_old_turns()
        if not self.compact:
            return super().write_memory_to_messages(summary_mode=summary_mode)
        steps = self.memory.steps
        starts = [i for i, step in enumerate(steps) if isinstance(step, TaskStep)]
        current = starts[-1] if starts else 0
        messages = self.memory.system_prompt.to_messages(summary_mode=summary_mode)
        if earlier := _dialogue(steps[:current]):
            messages.append(ChatMessage(role=MessageRole.USER, content=[{"type": "text", "text": earlier}]))
        for step in steps[current:]:
            shown = step.to_messages(summary_mode=summary_mode)
            if isinstance(step, ActionStep) and step.error is not None:
                # A failed reply (often a loop cut short) is not shown again: the model would
                # copy it. The error note that follows says what went wrong.
                shown = [m for m in shown if m.role != MessageRole.ASSISTANT]
            messages.extend(m for m in shown if m.role != MessageRole.TOOL_CALL)
        return messages

    def provide_final_answer(self, task: str) -> ChatMessage:
        """After the last step smolagents asks the model for a summary answer. When that
        answer would not be shown (`trust_fallback` off), skip the call: the chat shows the
        give-up sentence, and the trace keeps the last reply the model wrote."""
        if self.trust_fallback:
            return super().provide_final_answer(task)
        last = next((s for s in reversed(self.memory.steps) if isinstance(s, ActionStep)), None)
        raw = str(last.model_output or "") if last is not None else ""
        return ChatMessage(role=MessageRole.ASSISTANT, content=raw)


def _dialogue(steps: list[Any]) -> str:
    """Earlier turns as "User: ... / You: ..." lines: each question and the answer it got."""
    lines: list[str] = []
    for step in steps:
        if isinstance(step, TaskStep):
            lines += [f"User: {step.task}", "You: (no answer)"]
        elif isinstance(step, ActionStep) and step.is_final_answer and lines:
            lines[-1] = f"You: {step.action_output}"
    return "Earlier in this chat:\n" + "\n".join(lines) if lines else ""
