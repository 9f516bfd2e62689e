"""Fakes over mocks: a scripted smolagents Model and a local HTTP server that speaks Langfuse."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from smolagents.models import ChatMessage, ChatMessageStreamDelta, MessageRole, Model, TokenUsage

from llms.local_llm import LocalLlamaModel


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


@dataclass
class RecordedSpan:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    attributes: dict[str, Any]
    status_code: int
    start_time_unix_nano: int = 0


@dataclass
class FakeLangfuseState:
    """What the fake server received; `mode` switches how it answers score calls."""

    spans: list[RecordedSpan] = field(default_factory=list)
    score_posts: list[dict[str, Any]] = field(default_factory=list)
    # Langfuse upserts a resent id only when the name and the timestamp's date match; a post
    # that breaks this would create a second score there, so the fake records it.
    upsert_violations: list[dict[str, Any]] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    auth_calls: int = 0
    # Datasets: POST /api/public/v2/datasets upserts by name (the same id every time).
    dataset_posts: list[dict[str, Any]] = field(default_factory=list)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Dataset items: POST /api/public/dataset-items upserts by id; an item sent without an id
    # gets a new one, so a second item with the same input in one dataset is a duplicate there.
    dataset_item_posts: list[dict[str, Any]] = field(default_factory=list)
    dataset_items: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset_item_duplicates: list[dict[str, Any]] = field(default_factory=list)
    # Experiment (dataset run) items: Langfuse v5 derives them from observations that carry
    # langfuse.experiment.* attributes and are their item's root observation. A span sent again
    # replaces the stored one only with the same trace id, span id and start time (its events
    # table's sorting key); anything else for the same experiment and item is a second run item.
    experiment_items: dict[tuple[str, str, int], RecordedSpan] = field(default_factory=dict)
    experiment_item_duplicates: list[RecordedSpan] = field(default_factory=list)
    mode: str = "ok"  # ok | error500 | hang | reject | unauthorized
    hang_s: float = 10.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind is None:
        return None
    return getattr(value, kind)


class _JSONHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        return None

    def _send(self, status: int, payload: Any = None, content_type: str = "application/json") -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Handler(_JSONHandler):
    state: FakeLangfuseState

    def _body(self) -> bytes:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        return raw

    def do_GET(self) -> None:
        if self.path == "/_control/state":
            with self.state.lock:
                self._send(
                    200,
                    {
                        "scores": self.state.scores,
                        "posts": len(self.state.score_posts),
                        "deletes": len(self.state.deletes),
                        "upsert_violations": len(self.state.upsert_violations),
                    },
                )
            return
        if self.path.startswith("/api/public/projects"):
            with self.state.lock:
                self.state.auth_calls += 1
            if self.state.mode == "unauthorized":
                self._send(401, {"message": "Invalid credentials"})
                return
            self._send(
                200,
                {
                    "data": [
                        {
                            "id": "p1",
                            "name": "fake-project",
                            "organization": {"id": "o1", "name": "org"},
                            "metadata": {},
                        }
                    ]
                },
            )
            return
        self._send(404, {"message": "not found"})

    def do_POST(self) -> None:
        body = self._body()
        if self.path == "/_control/mode":
            # Lets a benchmark switch a fake running in another process.
            self.state.mode = json.loads(body)["mode"]
            self._send(200, {"mode": self.state.mode})
            return
        if self.path.startswith("/api/public/otel/v1/traces"):
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                ExportTraceServiceRequest,
                ExportTraceServiceResponse,
            )

            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            spans = []
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        spans.append(
                            RecordedSpan(
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_id=span.parent_span_id.hex() or None,
                                name=span.name,
                                attributes={a.key: _any_value(a.value) for a in span.attributes},
                                status_code=span.status.code,
                                start_time_unix_nano=span.start_time_unix_nano,
                            )
                        )
            with self.state.lock:
                self.state.spans.extend(spans)
                for span in spans:
                    self._record_experiment_item(span)
            self._send(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")
            return
        if self.path.rstrip("/") == "/api/public/scores":
            mode = self.state.mode
            if mode == "hang":
                time.sleep(self.state.hang_s)
                self._send(504, {"message": "timeout"})
                return
            if mode == "error500":
                self._send(500, {"message": "internal error"})
                return
            if mode == "unauthorized":
                self._send(401, {"message": "Invalid credentials"})
                return
            items = json.loads(body)
            with self.state.lock:
                self.state.score_posts.extend(items)
                if mode == "reject":
                    errors = [{"message": f"score {i.get('id')} rejected: invalid value"} for i in items]
                    self._send(207, {"accepted": 0, "rejected": len(items), "errors": errors})
                    return
                for item in items:
                    old = self.state.scores.get(item["id"])
                    if old is not None and (
                        old["name"] != item["name"] or old["timestamp"][:10] != item["timestamp"][:10]
                    ):
                        self.state.upsert_violations.append(item)
                    self.state.scores[item["id"]] = item
            self._send(202, {"message": "Accepted"})
            return
        if self.path.rstrip("/") == "/api/public/v2/datasets":
            if not self._refused_by_mode():
                self._upsert_dataset(json.loads(body))
            return
        if self.path.rstrip("/") == "/api/public/dataset-items":
            if not self._refused_by_mode():
                self._upsert_dataset_item(json.loads(body))
            return
        self._send(404, {"message": "not found"})

    def _refused_by_mode(self) -> bool:
        """Answer a dataset call as the current mode says; True when it was refused."""
        mode = self.state.mode
        if mode == "hang":
            time.sleep(self.state.hang_s)
            self._send(504, {"message": "timeout"})
        elif mode == "error500":
            self._send(500, {"message": "internal error"})
        elif mode == "unauthorized":
            self._send(401, {"message": "Invalid credentials"})
        elif mode == "reject":
            self._send(400, {"message": "Invalid request data"})
        else:
            return False
        return True

    def _upsert_dataset(self, body: dict[str, Any]) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        with self.state.lock:
            self.state.dataset_posts.append(body)
            old = self.state.datasets.get(body["name"])
            dataset = {
                "id": old["id"] if old else f"ds-{len(self.state.datasets) + 1}",
                "name": body["name"],
                "description": body.get("description"),
                "metadata": body.get("metadata"),
                "projectId": "p1",
                "createdAt": old["createdAt"] if old else now,
                "updatedAt": now,
            }
            self.state.datasets[body["name"]] = dataset
        self._send(200, dataset)

    def _upsert_dataset_item(self, body: dict[str, Any]) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        with self.state.lock:
            self.state.dataset_item_posts.append(body)
            dataset = self.state.datasets.get(body.get("datasetName", ""))
            if dataset is None:
                self._send(404, {"message": f"Dataset {body.get('datasetName')} not found"})
                return
            item_id = body.get("id") or f"item-{len(self.state.dataset_item_posts)}"
            old = self.state.dataset_items.get(item_id)
            if old is not None and old["datasetId"] != dataset["id"]:
                self._send(409, {"message": f"Dataset item {item_id} belongs to another dataset"})
                return
            if old is None and any(
                other["datasetId"] == dataset["id"] and other["input"] == body.get("input")
                for other in self.state.dataset_items.values()
            ):
                self.state.dataset_item_duplicates.append(body)
            item = {
                "id": item_id,
                "status": body.get("status") or "ACTIVE",
                "input": body.get("input"),
                "expectedOutput": body.get("expectedOutput"),
                "metadata": body.get("metadata"),
                "sourceTraceId": body.get("sourceTraceId"),
                "sourceObservationId": body.get("sourceObservationId"),
                "datasetId": dataset["id"],
                "datasetName": dataset["name"],
                "createdAt": old["createdAt"] if old else now,
                "updatedAt": now,
                "mediaReferences": [],
            }
            self.state.dataset_items[item_id] = item
        self._send(200, item)

    def _record_experiment_item(self, span: RecordedSpan) -> None:
        experiment = span.attributes.get("langfuse.experiment.id")
        item = span.attributes.get("langfuse.experiment.item.id")
        if (
            not experiment
            or not item
            or span.attributes.get("langfuse.experiment.item.root_observation_id") != span.span_id
        ):
            return
        key = (span.trace_id, span.span_id, span.start_time_unix_nano)
        for other_key, other in self.state.experiment_items.items():
            if other_key != key and (
                other.attributes.get("langfuse.experiment.id"),
                other.attributes.get("langfuse.experiment.item.id"),
            ) == (experiment, item):
                self.state.experiment_item_duplicates.append(span)
                return
        self.state.experiment_items[key] = span

    def do_DELETE(self) -> None:
        match = re.fullmatch(r"/api/public/scores/([^/?]+)", self.path)
        if not match:
            self._send(404, {"message": "not found"})
            return
        mode = self.state.mode
        if mode == "error500":
            self._send(500, {"message": "internal error"})
            return
        if mode == "hang":
            time.sleep(self.state.hang_s)
            self._send(504, {"message": "timeout"})
            return
        score_id = match.group(1)
        with self.state.lock:
            self.state.deletes.append(score_id)
            existed = self.state.scores.pop(score_id, None)
        if existed is None:
            self._send(404, {"message": "Score not found"})
        else:
            self._send(200, {"message": "Score deleted"})


class _ReusableServer(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


class FakeLangfuse:
    """A real HTTP server on 127.0.0.1 that answers like Langfuse's public API.

    `refuse()` closes its port (connections are refused) and `accept()` opens it again on
    the same port, with everything it recorded kept.
    """

    def __init__(self) -> None:
        self.state = FakeLangfuseState()
        self._handler = type("Handler", (_Handler,), {"state": self.state})
        self.server: ThreadingHTTPServer | None = _ReusableServer(("127.0.0.1", 0), self._handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeLangfuse:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.refuse()

    def refuse(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def accept(self) -> None:
        if self.server is None:
            self.server = _ReusableServer(("127.0.0.1", self.port), self._handler)
            self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
            self.thread.start()

    def spans_of(self, trace_id: str) -> list[RecordedSpan]:
        with self.state.lock:
            return [s for s in self.state.spans if s.trace_id == trace_id]

    def roots(self) -> list[RecordedSpan]:
        with self.state.lock:
            return [s for s in self.state.spans if s.parent_id is None]


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
