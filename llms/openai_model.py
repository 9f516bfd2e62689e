"""The hosted OpenAI-compatible model, with a lean streamed call.

Agents stream every model call. Through the OpenAI SDK one streamed call cost 5.5 ms of
CPU on this machine (its request transform and a pydantic object per chunk), against 1.6 ms
for the same request sent as JSON and read as server-sent events here: under load that CPU is
shared by every user's turn. Non-streamed calls (the judge) still go through the SDK.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
from smolagents import OpenAIModel
from smolagents.models import (
    ChatMessage,
    ChatMessageStreamDelta,
    ChatMessageToolCallFunction,
    ChatMessageToolCallStreamDelta,
    TokenUsage,
    Tool,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# As the OpenAI SDK does: a refused connection, a timeout or these statuses are tried again
# (twice, after 0.5 s and 1 s) before the error reaches smolagents' own rate-limit retries.
RETRIED_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_RETRIES = 2
TIMEOUT = httpx.Timeout(600.0, connect=5.0)
# What of a server's error text is kept in the message (it ends up in the chat and the trace).
ERROR_TEXT_CHARS = 500


class ModelServerError(RuntimeError):
    """The model server could not be reached, refused the call, or sent something unreadable."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StreamingOpenAIModel(OpenAIModel):
    """smolagents' OpenAIModel whose `generate_stream` talks HTTP itself."""

    def __init__(self, model_id: str, api_base: str | None = None, api_key: str | None = None, **kwargs: Any):
        super().__init__(model_id=model_id, api_base=api_base, api_key=api_key, **kwargs)
        self.base_url = (api_base or DEFAULT_BASE_URL).rstrip("/")
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.http = httpx.Client(headers=headers, timeout=TIMEOUT)

    def generate_stream(
        self,
        messages: list[ChatMessage | dict],
        stop_sequences: list[str] | None = None,
        response_format: dict[str, str] | None = None,
        tools_to_call_from: list[Tool] | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatMessageStreamDelta]:
        body = self._prepare_completion_kwargs(
            messages=messages,
            stop_sequences=stop_sequences,
            response_format=response_format,
            tools_to_call_from=tools_to_call_from,
            model=self.model_id,
            custom_role_conversions=self.custom_role_conversions,
            convert_images_to_image_urls=True,
            **kwargs,
        )
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        content = json.dumps(body, default=_jsonable).encode()
        self._apply_rate_limit()
        response = self.retryer(self._open, content)
        try:
            yield from _deltas(response)
        finally:
            response.close()  # a run stopped mid-answer closes the connection

    def _open(self, content: bytes) -> httpx.Response:
        """The response of a streamed call, once its status says it streams."""
        url = f"{self.base_url}/chat/completions"
        for attempt in range(MAX_RETRIES + 1):
            last = attempt == MAX_RETRIES
            try:
                response = self.http.send(self.http.build_request("POST", url, content=content), stream=True)
            except httpx.TimeoutException as exc:
                if last:
                    raise ModelServerError(
                        f"The model server at {self.base_url} did not answer in time."
                    ) from exc
            except httpx.TransportError as exc:
                if last:
                    raise ModelServerError(
                        f"The model server at {self.base_url} could not be reached ({type(exc).__name__})."
                    ) from exc
            else:
                if response.status_code < 400:
                    return response
                error = _status_error(response)
                if last or response.status_code not in RETRIED_STATUSES:
                    raise error
            time.sleep(min(0.5 * 2**attempt, 8.0) * (0.75 + random.random() / 2))
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def close(self) -> None:
        self.http.close()


def _status_error(response: httpx.Response) -> ModelServerError:
    """A sentence with the status and the server's own reason (429 keeps smolagents' retry)."""
    try:
        raw = response.read()
        detail: Any = json.loads(raw)
        if isinstance(detail, dict):
            inner = detail.get("error", detail)
            detail = inner.get("message", inner) if isinstance(inner, dict) else inner
    except (httpx.HTTPError, ValueError):
        detail = ""
    finally:
        response.close()
    reason = str(detail or response.reason_phrase)[:ERROR_TEXT_CHARS]
    return ModelServerError(
        f"The model server answered HTTP {response.status_code}: {reason}", status=response.status_code
    )


def _deltas(response: httpx.Response) -> Iterator[ChatMessageStreamDelta]:
    """Server-sent chat completion chunks as smolagents stream deltas."""
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue  # comments, event names, keep-alives, blank separators
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise ModelServerError("The model server sent a streamed chunk that is not JSON.") from exc
        if not isinstance(chunk, dict):
            raise ModelServerError("The model server sent a streamed chunk that is not a JSON object.")
        if chunk.get("error"):
            raise ModelServerError(
                f"The model server reported an error: {str(chunk['error'])[:ERROR_TEXT_CHARS]}"
            )
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            yield ChatMessageStreamDelta(
                content="",
                token_usage=TokenUsage(
                    input_tokens=_count(usage.get("prompt_tokens")),
                    output_tokens=_count(usage.get("completion_tokens")),
                ),
            )
        choices = chunk.get("choices") or []
        delta = choices[0].get("delta") if choices and isinstance(choices[0], dict) else None
        if isinstance(delta, dict) and (delta.get("content") or delta.get("tool_calls")):
            text = delta.get("content")
            yield ChatMessageStreamDelta(
                content=text if isinstance(text, str) else None,
                tool_calls=_tool_call_deltas(delta.get("tool_calls")),
            )


def _count(value: Any) -> int:
    """A token count as the server sent it, or 0 for anything that is not a count."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _tool_call_deltas(raw: Any) -> list[ChatMessageToolCallStreamDelta] | None:
    if not isinstance(raw, list):
        return None
    deltas = []
    for call in raw:
        if not isinstance(call, dict):
            continue
        function = call.get("function") if isinstance(call.get("function"), dict) else None
        deltas.append(
            ChatMessageToolCallStreamDelta(
                index=call.get("index"),
                id=call.get("id"),
                type=call.get("type"),
                function=ChatMessageToolCallFunction(
                    name=str(function.get("name") or ""), arguments=function.get("arguments") or ""
                )
                if function
                else None,
            )
        )
    return deltas or None


def _jsonable(value: Any) -> Any:
    """What json cannot encode by itself in a request (smolagents passes plain data)."""
    if hasattr(value, "model_dump"):
        return value.model_dump()
    raise TypeError(f"{type(value).__name__} cannot be sent to the model server")
