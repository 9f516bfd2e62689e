"""The hosted model's lean streamed call (llms/openai_model.py) against real local HTTP servers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from smolagents import CodeAgent
from smolagents.models import ChatMessage, MessageRole, agglomerate_stream_deltas

from config.settings import settings_from_env
from llms.models import build_model
from llms.openai_model import ModelServerError, StreamingOpenAIModel
from tests.fakes import FakeOpenAI

MESSAGES = [ChatMessage(role=MessageRole.USER, content=[{"type": "text", "text": "New task:\nWhat is 2+2?"}])]

# (status, body, chunk delay s) for one request; `body` bytes are sent as they are.
Reply = tuple[int, bytes, float]


def sse(*chunks: Any) -> bytes:
    return b"".join(f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n".encode() for c in chunks)


def chunk(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


USAGE = {"choices": [], "usage": {"prompt_tokens": 120, "completion_tokens": 7}}


class Scripted:
    """An HTTP server answering each POST with the next scripted reply; keeps what it was sent."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.disconnected = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                fake.requests.append((dict(self.headers), body))
                status, payload, delay = fake.replies.pop(0)
                self.send_response(status)
                self.send_header("Content-Type", "text/event-stream" if status < 400 else "application/json")
                self.end_headers()
                try:
                    for part in payload.split(b"\n\n") if delay else [payload]:
                        self.wfile.write(part + (b"\n\n" if delay else b""))
                        self.wfile.flush()
                        time.sleep(delay)
                except (BrokenPipeError, ConnectionResetError):
                    fake.disconnected.set()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., Scripted]]:
    servers: list[Scripted] = []

    def start(*replies: Reply) -> Scripted:
        servers.append(Scripted(*replies))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def model_for(url: str, key: str = "sk-test") -> StreamingOpenAIModel:
    return StreamingOpenAIModel(model_id="gpt-test", api_base=url, api_key=key)


def test_the_openai_provider_streams_with_the_lean_model():
    model, choice = build_model(settings_from_env({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}))
    assert isinstance(model, StreamingOpenAIModel) and choice.provider == "openai"


def test_a_streamed_answer_arrives_in_pieces_with_its_token_counts(scripted):
    server = scripted((200, sse(chunk("The answer "), chunk("is 4."), USAGE, "[DONE]"), 0))
    deltas = list(model_for(server.url).generate_stream(MESSAGES, stop_sequences=["<end_code>"]))
    assert [d.content for d in deltas if d.content] == ["The answer ", "is 4."]
    message = agglomerate_stream_deltas(deltas)
    assert message.content == "The answer is 4."
    assert (message.token_usage.input_tokens, message.token_usage.output_tokens) == (120, 7)
    headers, body = server.requests[0]
    assert headers["Authorization"] == "Bearer sk-test"
    assert body["model"] == "gpt-test" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True} and body["stop"] == ["<end_code>"]
    assert body["messages"][-1]["role"] == "user" and "2+2" in json.dumps(body["messages"])


def test_a_code_agent_answers_through_it():
    with FakeOpenAI() as llm:
        agent = CodeAgent(tools=[], model=model_for(llm.url), stream_outputs=True, max_steps=2)
        assert agent.run("What is 2+2?") == "Answer to: What is 2+2?"
        assert agent.monitor.total_input_token_count == 21


def test_a_refused_key_is_one_call_and_a_sentence_with_the_servers_reason(scripted):
    error = json.dumps({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
    server = scripted((401, error.encode(), 0))
    with pytest.raises(ModelServerError) as caught:
        list(model_for(server.url).generate_stream(MESSAGES))
    assert str(caught.value) == "The model server answered HTTP 401: Incorrect API key provided"
    assert caught.value.status == 401 and len(server.requests) == 1


def test_a_busy_server_is_tried_again(scripted):
    busy = (503, b'{"error": {"message": "overloaded"}}', 0)
    server = scripted(busy, busy, (200, sse(chunk("fine"), "[DONE]"), 0))
    deltas = list(model_for(server.url).generate_stream(MESSAGES))
    assert [d.content for d in deltas] == ["fine"] and len(server.requests) == 3


def test_a_server_that_stays_busy_gives_its_reason(scripted):
    busy = (502, b"<html>Bad gateway</html>", 0)
    server = scripted(busy, busy, busy)
    with pytest.raises(ModelServerError, match="HTTP 502: Bad Gateway"):
        list(model_for(server.url).generate_stream(MESSAGES))
    assert len(server.requests) == 3


def test_an_unreachable_server_is_a_sentence():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    with pytest.raises(
        ModelServerError, match=r"^The model server at .* could not be reached \(ConnectError\)\.$"
    ):
        list(model_for(url).generate_stream(MESSAGES))


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (sse("{not json"), "not JSON"),
        (sse("[1, 2]"), "not a JSON object"),
        (sse({"error": {"message": "context length exceeded"}}), "context length exceeded"),
    ],
)
def test_an_unreadable_stream_is_a_sentence(scripted, stream: bytes, expected: str):
    server = scripted((200, stream, 0))
    with pytest.raises(ModelServerError, match=expected):
        list(model_for(server.url).generate_stream(MESSAGES))


def test_hostile_chunks_are_skipped_not_crashed_on(scripted):
    odd = [
        {"choices": "everything"},
        {"choices": [{"delta": 5}]},
        {"choices": [{"delta": {"content": ["not", "text"]}}]},
        {"choices": [], "usage": {"prompt_tokens": "many", "completion_tokens": -3}},
        {"choices": [{"delta": {"tool_calls": [7, {"index": 0, "id": "c1", "function": {"name": "f"}}]}}]},
    ]
    server = scripted((200, b": keep-alive\n\nevent: x\n\n" + sse(*odd, chunk("ok"), "[DONE]"), 0))
    deltas = list(model_for(server.url).generate_stream(MESSAGES))
    assert [d.content for d in deltas if d.content] == ["ok"]
    assert [d.token_usage.input_tokens for d in deltas if d.token_usage] == [0]
    calls = [c for d in deltas for c in d.tool_calls or []]
    assert [(c.id, c.function.name) for c in calls] == [("c1", "f")]


def test_a_run_stopped_mid_answer_closes_the_connection(scripted):
    slow = sse(*[chunk(f"word{i} ") for i in range(200)], "[DONE]")
    server = scripted((200, slow, 0.02))
    stream = model_for(server.url).generate_stream(MESSAGES)
    assert next(stream).content == "word0 "
    stream.close()
    assert server.disconnected.wait(5), "the server went on streaming to nobody"
