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

import yaml
from smolagents import CodeAgent
from smolagents.memory import ActionStep, TaskStep
from smolagents.models import ChatMessage, MessageRole

LOCAL_PROMPTS = Path(__file__).with_name("local_prompts.yaml")


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
