"""bench.load's plain-Gradio baseline drives a real gr.ChatInterface as its page does.

The app's load figure is a ratio to this baseline, so a baseline that skipped work (or broke
after a Gradio upgrade changed the ChatInterface's chain of events) would make the ratio lie.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.harness import start_plain, stop_app
from bench.load import PlainChatClient


@pytest.fixture(scope="module")
def plain_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_plain(Path(tmp_path_factory.mktemp("plain")), concurrency=4, updates=4)
    try:
        yield url
    finally:
        stop_app(proc)


def _user_texts(history: list[dict]) -> list[str]:
    texts = []
    for message in history:
        if message["role"] == "user":
            content = message["content"]
            texts.append(content if isinstance(content, str) else content[0]["text"])
    return texts


@pytest.mark.parametrize("lean", [False, True], ids=["page", "lean"])
def test_the_baseline_chats_with_its_memory_and_times_what_the_user_waits_for(
    plain_url: str, lean: bool
) -> None:
    client = PlainChatClient(plain_url, lean=lean)
    history: list = []
    for n in range(3):
        result, waited, streamed = client.turn(f"question {n}", history)
        assert result.success, result.message
        history = result.output[1]
        # The chat so far reached the server: every earlier message is in the answer's chat.
        assert _user_texts(history) == [f"question {i}" for i in range(n + 1)]
        assert history[-1]["content"][0]["text"] == f"Answer to: question {n}"
        # Per turn, as the app: the question, one collapsed "how I got this" group, the answer.
        assert len(history) == 3 * (n + 1)
        assert 0 < streamed <= waited
        if lean:
            assert streamed == waited
    client.close()


def test_the_page_client_makes_the_calls_a_chatinterface_page_makes(plain_url: str) -> None:
    client = PlainChatClient(plain_url)
    names = {d["id"]: d.get("api_name") for d in client.http.get(f"{plain_url}config").json()["dependencies"]}
    chain = [client.save, client.append, client.stream, client.sync, client.unlock, client.store]
    assert [names[fn] for fn in chain][:3] == [
        "_clear_and_save_textbox",
        "_append_message_to_history",
        "_submit_fn",
    ]
    assert names[client.store] == "_save_conversation"
    assert len(client.extras) == 2
    client.close()
