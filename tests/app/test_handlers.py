"""The chat and vote handlers, called directly as Gradio calls them (gr.LikeData included)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from agent.steps import HOW_TITLE
from agent.turn import THINKING
from app import ChatHandlers
from feedback.votes import SCORE_NAME, score_id_for
from tests.fakes import ScriptedModel, all_text, code_reply, last_task
from tests.helpers import answer_index, like, turn, wait_for


@pytest.fixture
def handlers(make_settings, make_runtime):
    return ChatHandlers(make_runtime(make_settings()))


def _trace_of(handlers, message):
    store = handlers.rt.feedback.store
    handlers.rt.feedback.telemetry.flush()
    rows = [t for t in store.list_traces(100) if t["input"] == message]
    assert len(rows) == 1, rows
    return rows[0]


def test_turn_streams_steps_then_answer_and_reenables_input(handlers):
    history, session, outputs = turn(handlers, None, [], "What is 2+2?")
    assert history[0] == {"role": "user", "content": "What is 2+2?"}
    assert history[-1]["content"] == "Answer to: What is 2+2?"
    assert all(m["content"] != THINKING for m in history)
    # The steps are one collapsed "how I got this" group holding the code, above the answer.
    groups = [m for m in history if m.get("metadata", {}).get("title")]
    assert [g["metadata"]["title"] for g in groups] == [f"{HOW_TITLE} (1 step)"]
    assert "```python" in groups[0]["content"] and history[-2] is groups[0]
    # Input is disabled while the turn runs, enabled at the end.
    assert outputs[0][0]["interactive"] is False
    assert outputs[-1][0]["interactive"] is True


def test_votes_land_on_the_trace_of_the_rated_answer(handlers):
    history, session, _ = turn(handlers, None, [], "first question")
    history, session, _ = turn(handlers, session, history, "second question")
    first, second = answer_index(history, 0), answer_index(history, 1)
    like(handlers, session, first, True)
    like(handlers, session, second, "Incorrect")
    t1 = _trace_of(handlers, "first question")
    t2 = _trace_of(handlers, "second question")
    assert t1["id"] != t2["id"]
    store = handlers.rt.feedback.store
    s1 = store.get_score(score_id_for(t1["id"]))
    s2 = store.get_score(score_id_for(t2["id"]))
    assert (s1.trace_id, s1.value, s1.name, s1.data_type) == (t1["id"], 1.0, SCORE_NAME, "BOOLEAN")
    assert (s2.trace_id, s2.value, s2.comment) == (t2["id"], 0.0, "Incorrect")
    assert s1.session_id == session.session_id and s1.user_id == session.user_id
    # Any index inside an answer group (buttons sit on its last message) maps to the same trace.
    assert session.trace_for(second + 1) in (t2["id"], None)
    assert session.trace_for(len(history) - 1) == t2["id"]


def test_changed_vote_overwrites_and_undo_deletes(handlers):
    history, session, _ = turn(handlers, None, [], "rate me")
    index = answer_index(history, 0)
    like(handlers, session, index, True)
    trace = _trace_of(handlers, "rate me")
    store = handlers.rt.feedback.store
    first = store.get_score(score_id_for(trace["id"]))
    like(handlers, session, index, False)
    changed = store.get_score(score_id_for(trace["id"]))
    assert changed.id == first.id and changed.value == 0.0 and changed.created == first.created
    assert changed.version == first.version + 1
    assert len(store.scores()) == 1
    like(handlers, session, index, "")
    assert store.scores() == []
    assert store.get_score(first.id).deleted
    like(handlers, session, index, "Like")
    assert store.get_score(first.id).value == 1.0 and not store.get_score(first.id).deleted


def test_a_click_overtaken_on_the_way_by_a_later_one_is_stale(handlers):
    import gradio as gr

    history, session, _ = turn(handlers, None, [], "rate me twice")
    index = answer_index(history, 0)
    trace = _trace_of(handlers, "rate me twice")
    store = handlers.rt.feedback.store

    def click(liked, number):
        handlers.on_vote(session, gr.LikeData(None, {"index": index, "value": None, "liked": liked}), number)

    click(True, 1)
    click(False, 3)  # the page's third click arrives before its second
    click(True, 2)
    assert store.get_score(score_id_for(trace["id"])).value == 0.0
    click("", 4)  # a later click still applies: undone
    assert store.get_score(score_id_for(trace["id"])).deleted
    # API callers send no number (or junk): their votes always apply.
    for junk in (None, float("nan"), True, "7"):
        click(True, junk)
        assert store.get_score(score_id_for(trace["id"])).value == 1.0
        click(False, junk)
        assert store.get_score(score_id_for(trace["id"])).value == 0.0


def test_comment_goes_to_the_last_rated_answer(handlers):
    history, session, _ = turn(handlers, None, [], "q1")
    history, session, _ = turn(handlers, session, history, "q2")
    text, session, status = handlers.on_comment("needs more detail", session)
    assert "Rate an answer first" in status and text == "needs more detail"
    like(handlers, session, answer_index(history, 0), "Not helpful")
    text, session, status = handlers.on_comment("  needs more detail ", session)
    assert text == "" and "saved" in status
    score = handlers.rt.feedback.store.get_score(score_id_for(_trace_of(handlers, "q1")["id"]))
    assert score.comment == "Not helpful; needs more detail" and score.value == 0.0
    # Changing the vote keeps the free text.
    like(handlers, session, answer_index(history, 0), True)
    score = handlers.rt.feedback.store.get_score(score.id)
    assert score.value == 1.0 and score.comment == "needs more detail"


@pytest.mark.parametrize("index", [0, 99, -1, "1", None, [1, 0], 1.5, True])
def test_vote_on_something_that_is_not_an_answer_is_ignored(handlers, index, caplog):
    history, session, _ = turn(handlers, None, [], "hello")
    _, status = like(handlers, session, index, True)
    assert handlers.rt.feedback.store.scores(include_deleted=True) == []
    assert "Vote ignored" in caplog.text


def test_vote_without_a_session_is_ignored(handlers):
    import gradio as gr

    session, _ = handlers.on_vote(None, gr.LikeData(None, {"index": 1, "value": None, "liked": True}))
    assert session is None


def test_blank_message_is_ignored(handlers):
    outputs = list(handlers.respond("   \n ", [], None, "b"))
    assert len(outputs) == 1
    textbox, history, session, _ = outputs[0]
    assert history == [] and textbox["value"] == ""
    assert handlers.rt.feedback.store.list_traces() == []


def test_too_long_message_is_refused_and_kept(make_settings, make_runtime):
    handlers = ChatHandlers(make_runtime(make_settings(MAX_INPUT_CHARS=50)))
    text = "x" * 51
    outputs = list(handlers.respond(text, [], None, "b"))
    textbox, history, session, status = outputs[-1]
    assert history == [] and textbox["value"] == text
    assert "51 characters" in status and "limit is 50" in status
    handlers.rt.feedback.telemetry.flush()
    assert handlers.rt.feedback.store.list_traces() == []


def test_model_failure_shows_error_marks_trace_and_app_goes_on(make_settings, make_runtime):
    model = ScriptedModel()
    handlers = ChatHandlers(make_runtime(make_settings(), model))
    model.enqueue(RuntimeError("model server exploded"))
    history, session, _ = turn(handlers, None, [], "break please")
    assert "model server exploded" in history[-1]["content"]
    assert history[-1]["content"].startswith("⚠️")
    # A vote on the error message maps to no answer.
    like(handlers, session, answer_index(history, 0), True)
    assert handlers.rt.feedback.store.scores() == []
    trace = _trace_of(handlers, "break please")
    assert trace["status"] == "ERROR" and "model server exploded" in trace["status_message"]
    history, session, _ = turn(handlers, session, history, "works again?")
    assert history[-1]["content"] == "Answer to: works again?"


def test_each_session_has_its_own_memory(make_settings, make_runtime):
    def respond(messages):
        task = last_task(messages)
        if task.startswith("My name is"):
            return code_reply("final_answer('Noted.')")
        earlier = all_text(messages)
        name = "Zed" if "My name is Zed" in earlier else "unknown"
        return code_reply(f"final_answer('Your name is {name}')")

    handlers = ChatHandlers(make_runtime(make_settings(), ScriptedModel(respond)))
    a_hist, a, _ = turn(handlers, None, [], "My name is Zed")
    b_hist, b, _ = turn(handlers, None, [], "What is my name?")
    a_hist, a, _ = turn(handlers, a, a_hist, "What is my name?")
    assert b_hist[-1]["content"] == "Your name is unknown"
    assert a_hist[-1]["content"] == "Your name is Zed"
    assert a.session_id != b.session_id


def test_new_chat_clears_memory_map_and_session_id(handlers):
    history, session, _ = turn(handlers, None, [], "remember this")
    index = answer_index(history, 0)
    chat, fresh, textbox, _ = handlers.on_new_chat(session, "b")
    assert chat == [] and fresh.session_id != session.session_id
    assert fresh.user_id == session.user_id
    assert fresh.answer_traces == {} and len(fresh.agent.memory.steps) == 0
    like(handlers, fresh, index, True)  # a stale index from the old chat
    assert handlers.rt.feedback.store.scores() == []


def test_trace_holds_turn_details_and_token_totals(handlers):
    history, session, _ = turn(handlers, None, [], "details please")
    trace = wait_for(lambda: _trace_of(handlers, "details please"))
    assert trace["name"] == "Smolagent-Trace"
    assert trace["output"] == "Answer to: details please"
    assert trace["user_id"] == session.user_id and trace["session_id"] == session.session_id
    assert trace["status"] == "OK" and trace["latency_ms"] > 0
    assert trace["model"] == "scripted-model"
    assert trace["prompt_tokens"] == 11 and trace["completion_tokens"] == 7 and trace["total_tokens"] == 18
    spans = handlers.rt.feedback.store.spans_of(trace["id"])
    assert sum(1 for s in spans if s["parent_id"] is None) == 1
    assert any(s["kind"] == "LLM" for s in spans) and any(s["kind"] == "AGENT" for s in spans)


def test_a_store_failure_on_vote_is_a_clear_message_not_a_crash(handlers, caplog):
    from feedback.store import StoreError

    history, session, _ = turn(handlers, None, [], "store breaks")
    handlers.rt.feedback.telemetry.flush()
    store = handlers.rt.feedback.store

    def broken(**_kwargs):
        raise StoreError("database is locked")

    store.upsert_score = broken
    _, status = like(handlers, session, answer_index(history, 0), True)
    assert "could not be saved (database is locked)" in status
    assert "Could not save a vote" in caplog.text


def test_a_tab_has_one_current_session_whichever_handler_makes_it(handlers):
    tab, browser_id = SimpleNamespace(session_hash="tab-1"), "0b6c3b84-7f8c-4d35-8f4e-1f8f3c2e4a10"
    # A first message before the page load made the session: the load finds that one.
    made = list(handlers.respond("hi", [], None, browser_id, tab))[-1][2]
    loaded_id, loaded, _ = handlers.on_load(browser_id, tab)
    assert loaded is made and loaded_id == browser_id
    assert made.user_id == f"anon-{browser_id}"
    # Whoever else loads with this tab's hash is not told the browser id it was made with.
    other = "6f1d2c3b-0000-4000-8000-000000000001"
    assert handlers.on_load(other, tab)[0] == other
    assert handlers.on_load("", tab)[0] not in (browser_id, "")
    # Another tab gets its own.
    assert handlers.on_load(browser_id, SimpleNamespace(session_hash="tab-2"))[1] is not made
    # New chat: the fresh session is the tab's current one from then on.
    _, fresh, _, _ = handlers.on_new_chat(made, browser_id, tab)
    assert fresh is not made and handlers.on_load(browser_id, tab)[1] is fresh
    # A session that expired is not handed out again.
    handlers.rt.end_session(fresh)
    assert handlers.on_load(browser_id, tab)[1] is not fresh


def test_a_signed_in_user_keeps_their_name_when_the_first_message_makes_the_session(handlers):
    tab = SimpleNamespace(session_hash="tab-signed-in")
    profile = SimpleNamespace(username="alice")
    made = list(handlers.respond("hi", [], None, "", tab, profile))[-1][2]
    assert handlers.on_load("", tab, profile)[1] is made and made.user_id == "alice"


def _plain(markdown: str) -> str:
    """A status line as the page shows it: Markdown's backslash escapes dropped."""
    return markdown.replace("\\", "")


def _vote(handlers, session, index, liked, click=None):
    import gradio as gr

    return handlers.on_vote(
        session, gr.LikeData(None, {"index": index, "value": None, "liked": liked}), click
    )


def test_the_status_line_says_what_each_vote_did(handlers):
    history, session, _ = turn(handlers, None, [], "q1")
    index = answer_index(history, 0)
    _, status = like(handlers, session, index, True)
    assert "Saved 👍 on the answer to “q1”." in _plain(status)
    _, status = like(handlers, session, index, False)
    assert "Rating changed to 👎 on the answer to “q1”." in _plain(status)
    assert "Say why with ⚑" in status
    _, status = like(handlers, session, index, "Incorrect")
    assert "Saved 👎 (Incorrect) on the answer to “q1”." in _plain(status)
    _, status = like(handlers, session, index, "")
    assert "Rating removed from the answer to “q1”." in _plain(status)
    _, status = like(handlers, session, index, "")
    assert "The answer to “q1” has no rating." in _plain(status)


def test_a_question_quoted_in_the_status_line_is_shown_as_text(handlers):
    question = "see <b>this</b> [here](https://evil.example) and www.evil.example"
    history, session, _ = turn(handlers, None, [], question)
    _, status = like(handlers, session, answer_index(history, 0), True)
    # Every punctuation mark escaped: no HTML, no Markdown link, no autolink.
    assert "\\<b\\>" in status and "\\]\\(https\\:\\/\\/evil" in status and "www\\.evil" in status
    assert question[:40] in _plain(status)


def test_the_page_gets_each_answers_stored_thumb_and_where_a_comment_goes(make_settings, make_runtime):
    model = ScriptedModel()
    handlers = ChatHandlers(make_runtime(make_settings(), model))
    history, session, _ = turn(handlers, None, [], "q1")
    model.enqueue(RuntimeError("model server exploded"))
    history, session, _ = turn(handlers, session, history, "q2")  # an error: no answer to rate
    history, session, _ = turn(handlers, session, history, "q3")
    like(handlers, session, answer_index(history, 0), True)
    like(handlers, session, answer_index(history, 2), "Incorrect")
    chat, comment = handlers.show_ratings(session, history)
    assert chat["feedback_value"] == ["Like", None, "Incorrect"]
    assert comment["label"] == "Comment on your 👎 (Incorrect) of the answer to “q3”"
    like(handlers, session, answer_index(history, 2), "")
    chat, comment = handlers.show_ratings(session, history)
    assert chat["feedback_value"] == ["Like", None, None]
    assert comment["label"] == "Comment on your 👍 of the answer to “q1”"
    # A new chat shows no rating and nowhere for a comment to go.
    _, fresh, _, _ = handlers.on_new_chat(session, "b")
    chat, comment = handlers.show_ratings(fresh, [])
    assert chat["feedback_value"] == [] and comment["label"].startswith("Comment: rate an answer first")


def test_a_vote_made_while_the_answer_streams_is_shown_on_the_finished_answer(handlers):
    updates = handlers.respond("stream me", [], None, "b")
    _, history, session, _ = next(updates)  # the turn has started, its answer is pending
    _, status = like(handlers, session, len(history) - 1, False)
    assert "the answer being written" in _plain(status) and "It stays on the answer" in status
    chat, _ = handlers.show_ratings(session, history)
    assert chat["feedback_value"] == ["Dislike"]
    final = list(updates)[-1][1]
    chat, comment = handlers.show_ratings(session, final)
    assert chat["feedback_value"] == ["Dislike"]
    assert comment["label"] == "Comment on your 👎 of the answer to “stream me”"


def test_a_comment_after_an_undo_goes_to_the_answer_still_showing_a_rating(handlers):
    history, session, _ = turn(handlers, None, [], "q1")
    history, session, _ = turn(handlers, session, history, "q2")
    like(handlers, session, answer_index(history, 0), True)
    like(handlers, session, answer_index(history, 1), False)
    like(handlers, session, answer_index(history, 1), "")  # the last rating is undone
    text, session, status = handlers.on_comment("a fine answer", session)
    assert text == "" and "Comment saved with your 👍 of the answer to “q1”." in _plain(status)
    store = handlers.rt.feedback.store
    assert store.get_score(score_id_for(_trace_of(handlers, "q1")["id"])).comment == "a fine answer"
    like(handlers, session, answer_index(history, 0), "")
    text, session, status = handlers.on_comment("nothing rated now", session)
    assert text == "nothing rated now" and "Rate an answer first" in status


def test_a_click_on_a_dislike_shown_with_its_reason_undoes_it(handlers):
    history, session, _ = turn(handlers, None, [], "why not")
    index = answer_index(history, 0)
    trace = _trace_of(handlers, "why not")
    store = handlers.rt.feedback.store
    _vote(handlers, session, index, "Not helpful", 1)
    # The page shows the pressed 👎; Gradio sends a click on it as a plain dislike.
    _, status = _vote(handlers, session, index, False, 2)
    assert store.get_score(score_id_for(trace["id"])).deleted
    assert "Rating removed" in status
    # An API caller's plain dislike is a dislike (without the reason).
    _vote(handlers, session, index, "Not helpful")
    _vote(handlers, session, index, False)
    score = store.get_score(score_id_for(trace["id"]))
    assert (score.deleted, score.value, score.reason) == (False, 0.0, None)


def test_a_refused_message_leaves_the_status_line_when_the_next_one_is_sent(make_settings, make_runtime):
    handlers = ChatHandlers(make_runtime(make_settings(MAX_INPUT_CHARS=50)))
    *_, (_, _, session, status) = handlers.respond("x" * 51, [], None, "b")
    assert "limit is 50" in status
    outputs = list(handlers.respond("short", [], session, "b"))
    assert outputs[0][3] == handlers.status()  # set when the turn starts, the refusal gone
    assert all("limit is 50" not in str(out[3]) for out in outputs)
