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
import json
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from llms.json_reply import JsonPrefix, Rest, strict_grammar

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


def _loop_period(text: str) -> int | None:
    for period in range(1, LOOP_MAX_PERIOD + 1):
        window = max(LOOP_MIN_WINDOW, 3 * period)
        if len(text) < window:
            return None
        tail = text[-window:]
        if tail == (tail[-period:] * (window // period + 1))[-window:]:
            return period
    return None


def is_looping(text: str) -> bool:
    """The reply ends in one unit repeated over and over ("2 * 2 * 2 * ...", or a whole
    clause "2 to the power of 10 is 1024, " again and again).

    A tiny model at temperature 0 never leaves such a loop; stopping it early saves the
    seconds it would spend filling max_tokens with it. A unit must repeat over at least
    48 characters and three times.
    """
    return _loop_period(text) is not None


def _run_start(text: str, period: int) -> int:
    """Where the text's trailing run of `period` starts: from there on each character
    equals the one `period` later."""
    start = len(text) - period
    while start > 0 and text[start - 1] == text[start - 1 + period]:
        start -= 1
    return start


def loop_cut(text: str) -> int | None:
    """Where a looping reply is cut: after the first copy of its repeated unit, so what is
    kept reads as the model meant it before it got stuck ("2 * 2 * 2 * ..." -> "2 * 2 *")."""
    period = _loop_period(text)
    return None if period is None else _run_start(text, period) + period


def repeating_tail(text: str) -> int:
    """How many trailing characters merely repeat earlier ones (beyond one copy of a unit).

    They are held back while the reply streams: if it turns out to be a loop they are
    dropped, and nothing already sent has to be taken back; otherwise they follow a few
    tokens later.
    """
    held = 0
    for period in range(1, min(LOOP_MAX_PERIOD, len(text) - 1) + 1):
        held = max(held, len(text) - period - _run_start(text, period))
    return held


class _Reply:
    """One reply as it streams: what may be sent now, and where it ends if it is stopped.

    Sent text is never taken back. So characters that merely repeat earlier ones wait (a loop
    drops them), and a JSON reply is sent only up to a point where it can still be closed
    (never half a key). When the reply stops early, `kept` is what it ends with and `rest`
    what closes it.
    """

    def __init__(self, schema: dict[str, Any] | None, *, hold_loops: bool) -> None:
        self.schema = schema
        self.text = ""
        self.kept = ""
        self.sent = 0
        self.hold_loops = hold_loops
        self.json = JsonPrefix(schema) if schema is not None else None

    def _limit(self, end: int) -> int:
        if self.json is not None and not (self.json.complete and end == len(self.text)):
            end = self.json.safe_before(end)
        return max(end, self.sent)

    def _send_to(self, end: int) -> str:
        out = self.text[self.sent : end]
        self.sent = end
        return out

    def add(self, text: str) -> str:
        """Take one token; return the text that may be sent now."""
        self.text += text
        if self.json is not None:
            self.json.feed(text)
        end = len(self.text) - (repeating_tail(self.text) if self.hold_loops else 0)
        return self._send_to(self._limit(end))

    def finish(self, *, looped: bool) -> str:
        """The reply ended (a loop, max_tokens or the model's own end): the rest to send."""
        end = len(self.text)
        if looped:
            end = loop_cut(self.text) or end
        end = self._limit(end)
        self.kept = self.text[:end]
        return self._send_to(end)

    def rest(self) -> Rest | None:
        """What still closes a JSON reply (None: whole, or not JSON)."""
        if self.json is None:
            return None
        return JsonPrefix(self.schema).feed(self.kept).rest()


def _constrained(request: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The request with its JSON schema as a strict grammar, and the schema (None: free text).

    llama-cpp-python's own grammar for a schema lets raw newlines into strings; this one
    does not (llms.json_reply.strict_grammar).
    """
    response_format = request.get("response_format")
    if not isinstance(response_format, dict) or response_format.get("type") != "json_object":
        return request, None
    schema = response_format.get("schema")
    if not isinstance(schema, dict):
        return request, {}  # any JSON object: llama.cpp's JSON grammar, already strict
    try:
        from llama_cpp.llama_grammar import LlamaGrammar

        grammar = LlamaGrammar.from_string(_grammar_text(schema), verbose=False)
    except Exception:  # noqa: BLE001 - llama.cpp's own conversion is still a grammar
        log.exception("Could not build a strict grammar for this schema; using llama.cpp's")
        return request, schema
    constrained = {k: v for k, v in request.items() if k != "response_format"}
    constrained["grammar"] = grammar
    return constrained, schema


_GRAMMARS: dict[str, str] = {}


def _defanged(text: str) -> str:
    """`<|im_start|>` -> `<\u2060|im_start|>`: the same to a reader, plain text to the tokenizer."""
    return text.replace("<", "<\u2060").replace("[", "[\u2060")


def _grammar_text(schema: dict[str, Any]) -> str:
    key = json.dumps(schema, sort_keys=True)
    text = _GRAMMARS.get(key)
    if text is None:
        if len(_GRAMMARS) > 64:
            _GRAMMARS.clear()
        text = _GRAMMARS[key] = strict_grammar(schema)
    return text


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
        self._prompt_tokens: list[int] | None = None  # the tokens of the current call's prompt
        self._complete: Callable[..., Any] | None = None
        self._special_seen: dict[int, bool] = {}  # hash of a message text -> has special tokens

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
                    self.attach(llama_cpp.Llama(model_path=self.path, n_ctx=self.n_ctx, verbose=False))
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

    def attach(self, llm: Any) -> None:
        """Use this loaded llama (tests pass a stand-in), noting each call's prompt tokens.

        llama-cpp-python's chat handler renders the chat template, tokenizes it and calls
        `create_completion(prompt=tokens)`; those tokens are what a reply stopped early is
        continued from (`_continue`), with the prompt cache still warm.
        """
        complete = llm.create_completion

        def noting_prompt(*args: Any, **kwargs: Any) -> Any:
            prompt = kwargs.get("prompt", args[0] if args else None)
            self._prompt_tokens = list(prompt) if isinstance(prompt, list) else None
            return complete(*args, **kwargs)

        llm.create_completion = noting_prompt
        self._complete = complete
        self._llm = llm

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
            self._llm.create_chat_completion(**{**self.plain_text(request), "max_tokens": 1})

    def plain_text(self, request: dict[str, Any]) -> dict[str, Any]:
        """The request with the model's special tokens in any message made plain text.

        llama-cpp-python renders the chat template and tokenizes the whole prompt with
        `special=True`, so `<|im_start|>system` typed by a user, written on a web page the agent
        read, or in an answer a judge reads would be the real control token: a forged turn. A
        text whose tokens differ with and without special parsing gets a word joiner (U+2060,
        invisible) after each `<` and `[`, which no special token contains.
        """
        messages = request.get("messages")
        if not isinstance(messages, list):
            return request
        changed = False
        out = []
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str) and self._has_special(content):
                message = {**message, "content": _defanged(content)}
                changed = True
            elif isinstance(content, list):
                parts = []
                for part in content:
                    text = part.get("text") if isinstance(part, dict) else None
                    if isinstance(text, str) and self._has_special(text):
                        part = {**part, "text": _defanged(text)}
                        changed = True
                    parts.append(part)
                message = {**message, "content": parts}
            out.append(message)
        return {**request, "messages": out} if changed else request

    def _has_special(self, text: str) -> bool:
        if "<" not in text and "[" not in text:
            return False
        # The system prompt and earlier messages come again in every call of a turn: each text is
        # tokenized twice once (about 4 ms per 1,000 characters here), then remembered by its hash.
        key = hash(text)
        known = self._special_seen.get(key)
        if known is not None:
            return known
        data = text.encode("utf-8", "replace")
        tokenize = self._llm.tokenize
        found = tokenize(data, add_bos=False, special=True) != tokenize(data, add_bos=False, special=False)
        if len(self._special_seen) >= 512:
            self._special_seen.clear()
        self._special_seen[key] = found
        return found

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
        A JSON reply stopped early (a loop, max_tokens) is still closed per its schema.
        """
        self.load()
        request, schema = _constrained(request)
        generated = 0
        with self._turn(low_priority):
            if low_priority and self._chat_waiting:
                raise GaveWay("The judge gave way to a chat turn before it started.")
            if gone():
                return
            self._prompt_tokens = None
            reply = _Reply(schema, hold_loops=stop_on_loop)
            looped = False
            stream = self._llm.create_chat_completion(**self.plain_text(request), stream=True)
            try:
                for chunk in stream:
                    if low_priority and self._chat_waiting:
                        raise GaveWay(f"The judge gave way to a chat turn after {generated} tokens.")
                    text = (chunk["choices"][0].get("delta") or {}).get("content")
                    if not text:
                        continue
                    generated += 1
                    if out := reply.add(text):
                        yield {"ev": "text", "text": out}
                    if stop_on_loop and is_looping(reply.text):
                        log.info("Local model stopped: it was repeating itself (%d tokens)", generated)
                        looped = True
                        break
            finally:
                stream.close()
            prompt = (
                len(self._prompt_tokens)
                if self._prompt_tokens is not None
                else max(0, int(self._llm.n_tokens) - generated)
            )
            if out := reply.finish(looped=looped):
                yield {"ev": "text", "text": out}
            rest = reply.rest()
            if rest is not None and not gone():
                closing, tokens = self._close(reply, rest, request)
                generated += tokens
                if closing:
                    yield {"ev": "text", "text": closing}
        yield {"ev": "end", "prompt_tokens": prompt, "completion_tokens": generated}

    def _close(self, reply: _Reply, rest: Rest, request: dict[str, Any]) -> tuple[str, int]:
        """The text that closes a JSON reply stopped early, and the tokens the model spent on it.

        Quotes and braces are written here; a required value still missing (the judge's score
        after its reasoning was cut) is written by the model, continuing the reply under a
        grammar for just that rest. Failing that, only an honestly empty value ("" for a
        string) is filled in; a score is never made up, so such a reply stays unparsed.
        """
        literal = rest.literal
        if literal is not None:
            log.info("Closed a JSON reply that was stopped early (%d characters kept)", len(reply.kept))
            return literal, 0
        try:
            text, tokens = self._continue(reply.kept, rest, request)
        except Exception:  # noqa: BLE001 - the fallback below still closes what it honestly can
            log.exception("Could not continue a JSON reply that was stopped early")
            text, tokens = "", 0
        if text and JsonPrefix(reply.schema).feed(reply.kept + text).complete:
            log.info("The model finished a JSON reply that was stopped early (%d tokens)", tokens)
            return text, tokens
        filled = rest.filled()
        if filled is None:
            log.warning("A JSON reply stopped early could not be closed: a required value is missing")
            return "", tokens
        return filled, tokens

    def _continue(self, kept: str, rest: Rest, request: dict[str, Any]) -> tuple[str, int]:
        """Let the model write the rest of its reply after `kept`, from the same prompt."""
        if self._prompt_tokens is None or self._complete is None:
            return "", 0
        from llama_cpp.llama_grammar import LlamaGrammar

        tokens = self._prompt_tokens + self._llm.tokenize(kept.encode("utf-8"), add_bos=False, special=False)
        out = self._complete(
            prompt=tokens,
            grammar=LlamaGrammar.from_string(rest.grammar(), verbose=False),
            max_tokens=int(request.get("max_tokens") or 64),
            temperature=float(request.get("temperature", 0.2)),
            stream=False,
        )
        text = str(out["choices"][0].get("text") or "")
        return text, int((out.get("usage") or {}).get("completion_tokens") or 0)
