"""llama.cpp itself: the one place that loads the GGUF and runs it, token by token.

It runs in the model process (llms.model_host) and nowhere else by default: native code can
crash (llama.cpp's AMX path segfaults on Sapphire Rapids CPUs, llama.cpp #20824), and a crash
there must not take the web server with it. LOCAL_MODEL_IN_PROCESS=1 runs it in the caller's
process instead, for benchmarks only. It imports nothing of smolagents or of this app, so the
model process stays small and starts fast.

One llama.cpp context serves every caller (it is ~100 MB, and llama.cpp reuses the longest
prompt prefix it has already read); a lock makes them take turns. A low-priority caller (the
judge) gives way between two tokens when a chat call waits.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOOP_MIN_WINDOW = 48
LOOP_MAX_PERIOD = 40

# Event = {"ev": "text", "text": ...} | {"ev": "end", "prompt_tokens": n, "completion_tokens": m}
Event = dict[str, Any]


class LocalModelError(RuntimeError):
    """The local model cannot be loaded or cannot answer; the message is a sentence for the
    chat and says what to do."""


class GaveWay(TimeoutError):
    """A low-priority call (the judge) stopped between two tokens so a chat turn could use the
    model; it is asked again later."""


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


class _BufferLog:
    """Which buffer types llama.cpp put the weights in, read from its load log.

    llama.cpp says "AMX model buffer size = ..." when it repacks weights for AMX (the path
    that crashes) and "CPU_REPACK model buffer size = ..." for its other repacked layouts.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._partial = ""

    def __call__(self, _level: int, text: bytes, _user_data: Any) -> None:
        self._partial += text.decode("utf-8", "replace")
        while "\n" in self._partial:
            line, self._partial = self._partial.split("\n", 1)
            if "buffer size" in line:
                self.lines.append(line.strip())

    def buffer_types(self) -> list[str]:
        """E.g. ["CPU_Mapped"], or ["CPU_Mapped", "AMX"] when the AMX path is in use."""
        found = []
        for line in self.lines:
            if " model buffer size" in line:
                name = line.split(":", 1)[-1].strip().split(" model buffer size")[0].strip()
                if name and name not in found:
                    found.append(name)
        return found


@contextlib.contextmanager
def _model_params(repack: bool) -> Iterator[None]:
    """Load with llama.cpp's extra buffer types on or off (`--no-repack` when off).

    llama-cpp-python 0.3.36 has no argument for `use_extra_bufts`, so the defaults it reads
    while the model loads are adjusted here (the loading thread holds the engine's lock).
    """
    import llama_cpp.llama_cpp as native

    original = native.llama_model_default_params

    def params() -> Any:
        value = original()
        value.use_extra_bufts = repack
        return value

    native.llama_model_default_params = params
    try:
        yield
    finally:
        native.llama_model_default_params = original


class LlamaEngine:
    """One loaded GGUF and the lock its callers take turns on."""

    def __init__(self, path: str, n_ctx: int, *, repack: bool = False) -> None:
        self.path = path
        self.n_ctx = n_ctx
        self.repack = repack
        self.buffer_types: list[str] = []
        self._llm: Any = None
        self._load_lock = threading.Lock()
        self._lock = threading.Lock()
        self._waiting_lock = threading.Lock()
        self._chat_waiting = 0  # chat calls waiting for the model: the judge gives way to them

    def load(self) -> None:
        with self._load_lock:
            if self._llm is not None:
                return
            if not Path(self.path).is_file():
                raise LocalModelError(f"LOCAL_MODEL_PATH points to {self.path}, which is not a file.")
            try:
                import llama_cpp
            except ImportError as exc:
                raise LocalModelError(
                    "The offline model needs llama-cpp-python: run pip install -r requirements.txt."
                ) from exc
            log.info("Loading local model %s (repack=%s)", self.path, self.repack)
            buffers = _BufferLog()
            callback = llama_cpp.llama_log_callback(buffers)
            llama_cpp.llama_log_set(callback, None)
            try:
                with _model_params(self.repack):
                    self._llm = llama_cpp.Llama(model_path=self.path, n_ctx=self.n_ctx, verbose=False)
            except (ValueError, RuntimeError, OSError) as exc:
                raise LocalModelError(
                    f"The local model {Path(self.path).name} could not be loaded ({exc}); check "
                    "LOCAL_MODEL_PATH points to a GGUF file llama.cpp can read."
                ) from None
            finally:
                # llama-cpp-python's own logger again: quiet unless verbose.
                from llama_cpp._logger import llama_log_callback as quiet

                llama_cpp.llama_log_set(quiet, None)
            self.buffer_types = buffers.buffer_types()
            log.info("Local model loaded; weight buffers: %s", ", ".join(self.buffer_types) or "unknown")

    @contextlib.contextmanager
    def _turn(self, low_priority: bool) -> Iterator[None]:
        """Hold the model; a chat caller says it waits, so a judge holding it gives way."""
        if low_priority:
            with self._lock:
                yield
            return
        with self._waiting_lock:
            self._chat_waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._waiting_lock:
                self._chat_waiting -= 1
        try:
            yield
        finally:
            self._lock.release()

    def warm_up(self, request: dict[str, Any]) -> None:
        """Evaluate a prompt prefix once, so later prompts sharing it start fast."""
        self.load()
        with self._lock:
            self._llm.create_chat_completion(**{**request, "max_tokens": 1})

    def serve(self, message: dict[str, Any], gone: Callable[[], bool] = lambda: False) -> Iterator[Event]:
        """One call as the model process and the in-process runner both take it:
        {"op": "warm_up" | "generate", "request": ..., "low_priority": ..., "stop_on_loop": ...}."""
        if message.get("op") == "warm_up":
            self.warm_up(message["request"])
            yield {"ev": "end", "prompt_tokens": 0, "completion_tokens": 0}
            return
        yield from self.stream(
            message["request"],
            low_priority=bool(message.get("low_priority")),
            stop_on_loop=bool(message.get("stop_on_loop")),
            gone=gone,
        )

    def stream(
        self,
        request: dict[str, Any],
        *,
        low_priority: bool = False,
        stop_on_loop: bool = True,
        gone: Callable[[], bool] = lambda: False,
    ) -> Iterator[Event]:
        """The reply token by token, then its usage; raises GaveWay for a judge that gave way.

        llama.cpp reports no usage when streaming: each content chunk is one token, and the
        context length after the reply gives the prompt's size. `gone` says the caller left.
        """
        self.load()
        generated = 0
        with self._turn(low_priority):
            if low_priority and self._chat_waiting:
                raise GaveWay("The judge gave way to a chat turn before it started.")
            if gone():
                return
            stream = self._llm.create_chat_completion(**request, stream=True)
            written = ""
            try:
                for chunk in stream:
                    if low_priority and self._chat_waiting:
                        raise GaveWay(f"The judge gave way to a chat turn after {generated} tokens.")
                    text = (chunk["choices"][0].get("delta") or {}).get("content")
                    if not text:
                        continue
                    generated += 1
                    written += text
                    yield {"ev": "text", "text": text}
                    if stop_on_loop and is_looping(written):
                        log.info("Local model stopped: it was repeating itself (%d tokens)", generated)
                        break
            finally:
                stream.close()
            prompt = max(0, int(self._llm.n_tokens) - generated)
        yield {"ev": "end", "prompt_tokens": prompt, "completion_tokens": generated}
