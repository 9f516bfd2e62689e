"""A small client for Gradio's queue API that can send event data (gradio_client cannot).

It speaks what the browser speaks: POST /gradio_api/queue/join with fn_index, data,
session_hash and event_data, then reads the session's server-sent events until the call
completes. Used to vote over HTTP, and to send what no browser would (hostile event data).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Result:
    success: bool
    output: list[Any]
    message: dict[str, Any]


class QueueClient:
    """One browser session (one session_hash) talking to a running app."""

    def __init__(
        self, url: str, session_hash: str | None = None, timeout: float = 60.0, page: str | None = ""
    ) -> None:
        self.url = url.rstrip("/")
        self.session_hash = session_hash or uuid.uuid4().hex[:12]
        self.clicks = 0
        self.http = httpx.Client(timeout=timeout)
        # A page's config, as a browser gets it with the page (the whole app's config adds the
        # other page's components, which no visitor of this page loads); page=None: the whole app.
        params = {} if page is None else {"page": page}
        config = self.http.get(f"{self.url}/config", params=params).json()
        self.config = config
        self.api_prefix = config.get("api_prefix", "/gradio_api")
        self.fn_by_name = {d.get("api_name"): d["id"] for d in config["dependencies"]}
        self.fn_by_target = {
            (target[0], target[1]): d["id"] for d in config["dependencies"] for target in d.get("targets", [])
        }
        self.chat_id = next(
            c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "chat"
        )

    def close(self) -> None:
        self.http.close()

    def call(
        self,
        fn_index: int,
        data: list[Any],
        event_data: Any = None,
        trigger_id: int | None = None,
        on_message: Callable[[dict[str, Any]], None] | None = None,
    ) -> Result:
        """One event; `on_message` sees each of its server-sent messages as it arrives."""
        body = {
            "data": data,
            "fn_index": fn_index,
            "session_hash": self.session_hash,
            "event_data": event_data,
            "trigger_id": trigger_id,
        }
        # ASCII-escaped JSON, so even invalid surrogates can be sent, as a browser could.
        join = self.http.post(
            f"{self.url}{self.api_prefix}/queue/join",
            content=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        join.raise_for_status()
        event_id = join.json()["event_id"]
        last: dict[str, Any] = {}
        with self.http.stream(
            "GET", f"{self.url}{self.api_prefix}/queue/data", params={"session_hash": self.session_hash}
        ) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") not in (event_id, None):
                    continue
                if on_message is not None:
                    on_message(message)
                if message.get("msg") == "process_completed" and message.get("event_id") == event_id:
                    last = message
                    break
        output = (last.get("output") or {}).get("data") or []
        return Result(bool(last.get("success")), output, last)

    def load(self) -> Result:
        """What a browser does when the page opens: the session (and its agent) is created."""
        return self.call(self.fn_by_name["on_load"], [self.session_hash])

    def chat(
        self,
        message: str,
        history: list[Any] | None = None,
        browser_id: str = "",
        on_message: Callable[[dict[str, Any]], None] | None = None,
    ) -> Result:
        # Inputs: message, chatbot value, session state (held by the server), browser id.
        return self.call(
            self.fn_by_name["respond"],
            [message, history or [], None, browser_id or self.session_hash],
            on_message=on_message,
        )

    def vote(self, index: Any, liked: Any, value: Any = None, click: Any = "next") -> Result:
        """Inputs: the session state (held by the server) and the click's number, which the page
        counts up with each click ("next", as a browser does; None: an API caller's vote)."""
        fn = self.fn_by_target[(self.chat_id, "like")]
        if click == "next":
            self.clicks += 1
            click = self.clicks
        return self.call(
            fn, [None, click], {"index": index, "value": value, "liked": liked}, trigger_id=self.chat_id
        )

    def new_chat(self) -> Result:
        return self.call(self.fn_by_name["on_new_chat"], [None, self.session_hash])
