"""Hostile input: huge, malformed or forged data is refused or cleaned, and nothing is lost."""

from __future__ import annotations

import pytest
from gradio_client import Client

from app import ChatHandlers
from feedback.votes import score_id_for
from tests.gradio_queue import QueueClient
from tests.helpers import answer_index, like, serve


@pytest.fixture
def live(make_settings, make_runtime):
    runtime = make_runtime(make_settings())
    with serve(runtime) as url:
        yield url, runtime


def test_one_megabyte_message_is_refused_and_kept(live):
    url, runtime = live
    huge = "x" * 1_000_000
    textbox, history, status = Client(url, verbose=False).predict(huge, [], "b", api_name="/respond")
    assert history == [] and textbox["value"] == huge
    assert "1,000,000 characters" in status and "limit is 8,000" in status
    runtime.feedback.telemetry.flush()
    assert runtime.feedback.store.list_traces() == []


def test_control_characters_and_invalid_surrogates_are_cleaned(live):
    url, runtime = live
    q = QueueClient(url)
    nasty = "bad\x00\x1b[31m \ud800 text\r\nline2\x7f"
    assert q.chat(nasty).success
    runtime.feedback.telemetry.flush()
    (trace,) = runtime.feedback.store.list_traces()
    assert trace["input"] == "bad[31m \ufffd text\nline2"
    assert q.vote(2, True).success
    (score,) = runtime.feedback.store.scores()
    assert score.trace_id == trace["id"]


@pytest.mark.parametrize(
    "event_data",
    [
        {"index": 999, "value": None, "liked": True},
        {"index": -1, "value": None, "liked": True},
        {"index": "2", "value": None, "liked": True},
        {"index": [2, 0], "value": None, "liked": True},
        {"index": None, "value": None, "liked": True},
        {"index": {"trace": "x"}, "value": None, "liked": True},
        {"index": 2, "value": None, "liked": {"evil": 1}},
        {"index": 2, "value": None},
        {"value": None, "liked": True},
        None,
    ],
)
def test_forged_vote_events_through_the_queue_api_are_ignored(live, event_data):
    url, runtime = live
    q = QueueClient(url)
    assert q.chat("a real question").success
    fn = q.fn_by_target[(q.chat_id, "like")]
    q.call(fn, [None], event_data, trigger_id=q.chat_id)
    assert runtime.feedback.store.scores(include_deleted=True) == []
    # The app keeps serving this session: a proper vote still lands.
    assert q.vote(2, True).success
    assert len(runtime.feedback.store.scores()) == 1


def test_vote_while_the_turn_is_still_streaming(make_settings, make_runtime):
    handlers = ChatHandlers(make_runtime(make_settings()))
    updates = handlers.respond("stream me", [], None, "b")
    _, history, session, _ = next(updates)  # the turn has started, its answer is pending
    like(handlers, session, len(history) - 1, True)
    rest = list(updates)
    final_history = rest[-1][1]
    handlers.rt.feedback.telemetry.flush()
    (trace,) = handlers.rt.feedback.store.list_traces()
    score = handlers.rt.feedback.store.get_score(score_id_for(trace["id"]))
    assert score is not None and score.value == 1.0
    assert session.trace_for(answer_index(final_history, 0)) == trace["id"]


def test_stale_index_after_new_chat_through_the_queue_api(live):
    url, runtime = live
    q = QueueClient(url)
    assert q.chat("before new chat").success
    assert q.new_chat().success
    assert q.vote(2, True).success  # index 2 of the old chat
    assert runtime.feedback.store.scores() == []


LINKS = (
    '<a href="https://evil.example">link</a> https://plain.example/x HTTP://upper.example '
    "www.w.example me@mail.example [md](https://md.example) ![img](https://img.example/i.png) "
    "[ref][1]\n[1]: https://ref.example"
)


def test_nothing_in_a_message_becomes_a_link_and_the_trace_keeps_what_was_typed(make_settings, make_runtime):
    from chat.markdown import unlinked

    handlers = ChatHandlers(make_runtime(make_settings()))
    *_, (_, history, _, _) = handlers.page_respond(LINKS, [], None, "b")
    user, answer = history[0]["content"], history[-1]["content"]
    for shown in (user, answer):
        assert "https\\://evil.example" in shown and "https://" not in shown.replace("https\\://", "")
        assert "HTTP\\://upper" in shown and "www\\.w" in shown and "me\\@mail" in shown
        assert "[md]\\(https" in shown and "![img]\\(https" in shown and "[ref]\\[1]" in shown
        assert "[1]\\: https" in shown
        assert unlinked(shown) == shown  # applied again (the next turn sends it back): unchanged
    handlers.rt.feedback.telemetry.flush()
    (trace,) = handlers.rt.feedback.store.list_traces()
    assert trace["input"] == LINKS


def test_code_and_plain_text_are_shown_unchanged():
    from chat.markdown import unlinked

    code = "```python\nrequests.get('https://example.com')  # me@x.org [a](b)\n```"
    assert unlinked(code) == code
    assert unlinked("call `open('https://x.org')` now") == "call `open('https://x.org')` now"
    assert unlinked("a list [1, 2] and 3 < 4: fine") == "a list [1, 2] and 3 < 4: fine"
    assert unlinked("``a`b`` https://y") == "``a`b`` https\\://y"
