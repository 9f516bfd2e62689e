"""Fakes over mocks: a scripted smolagents Model and a local HTTP server that speaks Langfuse."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from smolagents.models import ChatMessage, ChatMessageStreamDelta, MessageRole, Model, TokenUsage

from llms.local_llm import LocalLlamaModel
from tests.langfuse_server import FakeLangfuse, RecordedSpan, _JSONHandler

__all__ = ["FakeLangfuse", "RecordedSpan"]


def last_task(messages: list[Any]) -> str:
    """The newest user task in the agent's prompt (smolagents writes 'New task:\\n...')."""
    for message in reversed(messages):
        data = message.dict() if isinstance(message, ChatMessage) else dict(message)
        if str(getattr(data.get("role"), "value", data.get("role"))) != "user":
            continue
        content = data.get("content")
        text = (
            content
            if isinstance(content, str)
            else " ".join(part.get("text", "") for part in content or [] if isinstance(part, dict))
        )
        if "New task:" in text:
            return text.rsplit("New task:", 1)[1].strip()
    return ""


def all_text(messages: list[Any]) -> str:
    parts = []
    for message in messages:
        data = message.dict() if isinstance(message, ChatMessage) else dict(message)
        content = data.get("content")
        if isinstance(content, str):
            parts.append(content)
        else:
            parts.extend(p.get("text", "") for p in content or [] if isinstance(p, dict))
    return "\n".join(parts)


def code_reply(code: str, thought: str = "I will answer.") -> str:
    return f"Thought: {thought}\n<code>\n{code}\n</code>"


def echo_reply(messages: list[Any]) -> str:
    return code_reply(f"final_answer({('Answer to: ' + last_task(messages))!r})")


class ScriptedModel(Model):
    """A smolagents Model whose replies come from a function of the prompt, or a queue."""

    def __init__(
        self,
        respond: Callable[[list[Any]], str] = echo_reply,
        *,
        delay_s: float = 0.0,
        model_id: str = "scripted-model",
    ) -> None:
        super().__init__(model_id=model_id)
        self.respond = respond
        self.delay_s = delay_s
        self.queue: list[str | BaseException] = []
        self.calls = 0
        self._lock = threading.Lock()

    def enqueue(self, *replies: str | BaseException) -> None:
        with self._lock:
            self.queue.extend(replies)

    def generate(self, messages: list[Any], stop_sequences: Any = None, **kwargs: Any) -> ChatMessage:
        with self._lock:
            self.calls += 1
            reply: str | BaseException | None = self.queue.pop(0) if self.queue else None
        if self.delay_s:
            time.sleep(self.delay_s)
        if isinstance(reply, BaseException):
            raise reply
        text = reply if reply is not None else self.respond(messages)
        return ChatMessage(
            role=MessageRole.ASSISTANT,
            content=text,
            token_usage=TokenUsage(input_tokens=11, output_tokens=7),
        )


class StreamingScriptedModel(ScriptedModel):
    """A ScriptedModel that streams its reply in small chunks, `chunk_delay_s` apart."""

    def __init__(self, *args: Any, chunk_chars: int = 4, chunk_delay_s: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chunk_chars = chunk_chars
        self.chunk_delay_s = chunk_delay_s

    def generate_stream(
        self, messages: list[Any], stop_sequences: Any = None, **kwargs: Any
    ) -> Iterator[ChatMessageStreamDelta]:
        text = str(self.generate(messages, stop_sequences, **kwargs).content)
        for start in range(0, len(text), self.chunk_chars):
            if self.chunk_delay_s:
                time.sleep(self.chunk_delay_s)
            yield ChatMessageStreamDelta(content=text[start : start + self.chunk_chars])
        yield ChatMessageStreamDelta(content="", token_usage=TokenUsage(input_tokens=11, output_tokens=7))


def json_reply(messages: list[Any]) -> str:
    """The offline model's reply shape: one JSON object {thought, code}."""
    return json.dumps(
        {"thought": "I answer.", "code": f"final_answer({('Answer to: ' + last_task(messages))!r})"}
    )


class ScriptedLocalModel(LocalLlamaModel):
    """The offline model's class, so the app gives it the offline setup (compact prompt,
    JSON replies, bounded memory), with scripted replies instead of llama.cpp."""

    def __init__(self, respond: Callable[[list[Any]], str] = json_reply) -> None:
        super().__init__()
        self.respond = respond
        self.prompts: list[list[Any]] = []

    def load(self) -> None:
        return None

    def warm_up(self, messages: list[Any]) -> None:
        return None

    def generate(self, messages: list[Any], *args: Any, **kwargs: Any) -> ChatMessage:
        self.prompts.append(list(messages))
        usage = TokenUsage(input_tokens=300, output_tokens=30)
        return ChatMessage(role=MessageRole.ASSISTANT, content=self.respond(messages), token_usage=usage)

    def generate_stream(
        self, messages: list[Any], *args: Any, **kwargs: Any
    ) -> Iterator[ChatMessageStreamDelta]:
        text = str(self.generate(messages).content)
        for start in range(0, len(text), 4):
            yield ChatMessageStreamDelta(content=text[start : start + 4])
        yield ChatMessageStreamDelta(content="", token_usage=TokenUsage(input_tokens=300, output_tokens=30))


class _OpenAIHandler(_JSONHandler):
    def do_GET(self) -> None:
        if self.path == "/_control/service_ms":  # for FakeOpenAIProcess
            self._send(200, list(self.server.service_ms))  # type: ignore[attr-defined]
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        started = time.perf_counter()
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        messages = body.get("messages", [])
        delay = re.search(r"\[delay=([0-9.]+)\]", last_task(messages))
        if delay:  # a task can ask the scripted model to take its time
            time.sleep(float(delay.group(1)))
        text = echo_reply(messages)
        hold = re.search(r"\[hold=([0-9]+)\]", last_task(messages))
        if hold:  # a task can ask for code that keeps that many MB in a variable
            text = code_reply(f'held = b"x" * ({int(hold.group(1))} * 1024 * 1024)\nfinal_answer("holding")')
        if "[check-held]" in last_task(messages):  # ... and whether it is still there
            text = code_reply(
                "try:\n    print(len(held))\n    found = 'still held'\nexcept Exception:\n"
                "    found = 'gone'\nfinal_answer(found)"
            )
        if "[whoami]" in last_task(messages):  # ... and which model, at which temperature, was asked
            who = f"model={body.get('model')} temperature={body.get('temperature')}"
            text = code_reply(f"final_answer({who!r})")
        steps = re.search(r"\[steps=([0-9]+)\]", last_task(messages))
        if steps and _steps_in_task(messages) + 1 < int(steps.group(1)):
            # A task can ask for several steps: code that does not answer yet.
            text = code_reply("print('still working')")
        if body.get("stream"):
            self._stream(body, text)
            self.server.service_ms.append((time.perf_counter() - started) * 1000)  # type: ignore[attr-defined]
            return
        payload = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
            ],
            "usage": {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30},
        }
        self.server.service_ms.append((time.perf_counter() - started) * 1000)  # type: ignore[attr-defined]
        self._send(200, payload)

    def _stream(self, body: dict[str, Any], text: str) -> None:
        """Server-sent chunks as OpenAI streams them, usage last (stream_options.include_usage)."""
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time())}
        base["model"] = body.get("model", "fake")
        chunks = [
            {**base, "choices": [{"index": 0, "delta": {"content": text[i : i + 8]}, "finish_reason": None}]}
            for i in range(0, len(text), 8)
        ]
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}
            chunks.append({**base, "choices": [], "usage": usage})
        events = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]
        # A task can ask for a slow stream: "[chunk_delay=0.05]" between chunks.
        delay = re.search(r"\[chunk_delay=([0-9.]+)\]", last_task(body.get("messages", [])))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(sum(len(e) for e in events)))
        self.end_headers()
        if not delay:
            self.wfile.write(b"".join(events))
            return
        for event in events:
            self.wfile.write(event)
            self.wfile.flush()
            time.sleep(float(delay.group(1)))


def _steps_in_task(messages: list[Any]) -> int:
    """Replies the model already gave to the newest task (its earlier steps)."""
    count = 0
    for message in reversed(messages):
        if message.get("role") == "assistant":
            count += 1
        elif message.get("role") == "user" and "New task:" in all_text([message]):
            break
    return count


class FakeOpenAI:
    """An OpenAI-compatible chat server on 127.0.0.1 whose model answers 'Answer to: <task>'."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _OpenAIHandler)
        self.server.daemon_threads = True
        self.server.service_ms = []  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def service_ms(self) -> list[float]:
        """How long each answer took inside the fake model server."""
        return self.server.service_ms  # type: ignore[attr-defined]

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeOpenAIProcess:
    """FakeOpenAI in a process of its own (`python -m tests.fakes openai`), for benchmarks.

    A model is a remote server: run in the benchmark's own process, its replies would wait for
    the GIL behind the load client's threads, and that wait would be charged to the app.
    """

    def __enter__(self) -> FakeOpenAIProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes", "openai"],
            cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url = self.proc.stdout.readline().strip()  # type: ignore[union-attr]
        if not self.url:
            self.proc.kill()
            raise RuntimeError("the fake OpenAI process did not start")
        return self

    @property
    def service_ms(self) -> list[float]:
        """How long each answer took inside the fake model server."""
        root = self.url.removesuffix("/v1")
        with urllib.request.urlopen(f"{root}/_control/service_ms", timeout=10) as response:
            return json.load(response)

    def __exit__(self, *exc: Any) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


if __name__ == "__main__":
    # `python -m tests.fakes [openai]`: a stand-alone fake Langfuse (or scripted model).
    # Benchmarks run them in processes of their own so their parsing does not share the
    # measured process's CPU and GIL.
    with FakeOpenAI() if sys.argv[1:] == ["openai"] else FakeLangfuse() as fake:
        print(fake.url, flush=True)
        try:
            fake.thread.join()
        except KeyboardInterrupt:
            pass


class JudgeModel(Model):
    """A scripted judge: `decide(prompt)` returns the verdict dict (or raises); records prompts.

    Thread-safe (evaluation workers call it from several threads); replies as plain JSON text.
    """

    def __init__(self, decide: Callable[[str], dict[str, Any] | BaseException]) -> None:
        super().__init__(model_id="scripted-judge")
        self.decide = decide
        self.prompts: list[str] = []
        self._lock = threading.Lock()

    def generate(self, messages: list[Any], stop_sequences: Any = None, **kwargs: Any) -> ChatMessage:
        prompt = all_text(messages[-1:])
        with self._lock:
            self.prompts.append(prompt)
        verdict = self.decide(prompt)
        if isinstance(verdict, BaseException):
            raise verdict
        return ChatMessage(
            role=MessageRole.ASSISTANT,
            content=json.dumps(verdict),
            token_usage=TokenUsage(input_tokens=100, output_tokens=20),
        )
