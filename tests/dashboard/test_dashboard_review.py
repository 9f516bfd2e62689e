"""The dashboard's Review tab: a reviewer gets one item at a time (never one another reviewer
holds), sees the conversation, the answer and the steps but no score until they have labelled,
labels with the judges' own types, and the labels land in the store; REVIEWERS see the Review
tab and nothing else of the dashboard; anyone else gets nothing from any review handler."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.datastructures import Headers

from config.settings import settings_from_env
from dashboard import access as access_module
from dashboard.access import Access
from dashboard.review import ALL_QUEUES, KEYS_HELP, ReviewHandlers
from dashboard.trace_view import trace_html
from dashboard.ui import ADMIN_TABS, DashboardHandlers
from evals.config import load_evaluators_file
from evals.review_rules import ReviewRules
from feedback.review_queue import ANNOTATION, DONE, LEASED, MANUAL, NewItem, ReviewQueue
from feedback.store import BY_REVIEWER, Store
from tests.dashboard.day_one import judge, turn, vote
from tests.dashboard.test_dashboard_access import DashboardClient, _session_cookie, assert_no_data
from tests.helpers import serve

T0 = time.time() - 3600
JUDGE_REASONING = "JUDGE-REASONING-7f3a: the answer is fine"
USER_REASON = "Incorrect-9c1e"

EVALUATORS = """
[[evaluator]]
name = "helpfulness"
kind = "llm"
prompt = "HELP {input} {output}"

[[evaluator]]
name = "safety"
kind = "llm"
data_type = "BOOLEAN"
prompt = "SAFE {output}"

[[evaluator]]
name = "why"
kind = "llm"
data_type = "CATEGORICAL"
categories = ["wrong-answer", "incomplete", "other"]
prompt = "WHY {input}"

[review]
lease_minutes = 10

[[review.rule]]
name = "dislikes"
kind = "dislike"

[[review.rule]]
name = "judge-vs-user"
kind = "disagreement"
evaluators = ["helpfulness"]
"""


def evaluators_file(tmp_path: Path) -> Path:
    path = tmp_path / "evaluators.toml"
    path.write_text(textwrap.dedent(EVALUATORS))
    return path


def fill(store: Store, evaluators: Path, n: int = 3) -> list[str]:
    """A conversation of n+1 turns; the last n disliked, judged 0.9 with a reasoning: each one
    in the dislikes and the judge-vs-user queues (applied by the rules, as the app does)."""
    first = turn(store, "c0", T0, question="What is the capital of France?", session="conv")
    ids = [first]
    for i in range(1, n + 1):
        tid = turn(store, f"c{i}", T0 + i * 10, question=f"And what is {i} + {i}?", session="conv")
        judge(store, tid, "helpfulness", 0.9, reasoning=JUDGE_REASONING)
        vote(store, tid, 0.0, reason=USER_REASON)
        ids.append(tid)
    ReviewRules(store, load_evaluators_file(evaluators).review).sweep()
    return ids


def owner_request() -> Any:
    return SimpleNamespace(
        client=SimpleNamespace(host="127.0.0.1"),
        headers=Headers({"host": "127.0.0.1:7860"}),
        session_hash="s1",
    )


def space_request(session: str = "s2") -> Any:
    return SimpleNamespace(
        client=SimpleNamespace(host="203.0.113.9"),
        headers=Headers({"host": "someone-space.hf.space"}),
        session_hash=session,
    )


def profile(name: str) -> Any:
    return SimpleNamespace(username=name, name=name)


@pytest.fixture
def space(tmp_path):
    """A Space with one admin (ada) and two reviewers (rita, rob), on a filled store."""
    evaluators = evaluators_file(tmp_path)
    settings = settings_from_env(
        {
            "DATA_DIR": str(tmp_path / "data"),
            "EVALUATORS_FILE": str(evaluators),
            "SPACE_ID": "someone/space",
            "ADMIN_USERS": "ada",
            "REVIEWERS": "Rita, rob",
        }
    )
    store = Store(settings.store_url)
    ids = fill(store, evaluators)
    handlers = DashboardHandlers(store, settings, Access(settings, oauth_real=True))
    yield handlers, store, ids
    store.close()


def open_item(handlers: ReviewHandlers, who: str, queue: str = ALL_QUEUES, session: str = "s2") -> list[Any]:
    return handlers.open(queue, None, space_request(session), profile(who))


def save(
    handlers: ReviewHandlers,
    who: str,
    item_id: str | None,
    labels: list[Any],
    corrected: str = "",
    note: str = "",
    queue: str = ALL_QUEUES,
) -> list[Any]:
    return handlers.save(item_id, queue, *labels, corrected, note, None, space_request(), profile(who))


# Positions in the Review tab's outputs (ReviewTab.outputs): queue, progress, status, item, the
# three labels, corrected, note, reveal, item id.
STATUS, ITEM, REVEAL, ITEM_ID = 2, 3, -2, -1


def test_a_reviewer_sees_the_answer_and_steps_but_no_score_until_they_label(space):
    handlers, store, ids = space
    review = handlers.review
    out = open_item(review, "rita")
    item_id = out[ITEM_ID]
    item = ReviewQueue(store).get(item_id)
    assert item.state == LEASED and item.lease_owner == "rita"
    page = out[ITEM]
    # The conversation before, the question and the answer are there...
    assert "What is the capital of France?" in page and "answer c0" in page
    assert "And what is 1 + 1?" in page and "answer c1" in page and "The conversation before" in page
    # ...and nothing anyone scored, nor why it is in the queue (it would anchor the label).
    text = json.dumps(out, ensure_ascii=False)
    for hidden in (JUDGE_REASONING, USER_REASON, "0.9", "disliked", "from the judge", "user-feedback"):
        assert hidden not in text, hidden
    assert "dislikes" in out[1] and "0 of 3" in out[1]  # progress per queue
    # Labelled: saved as ANNOTATION scores by the reviewer, then the judges are shown.
    done = save(review, "rita", item_id, ["0.3", "1", "wrong-answer"], corrected="2", note="It is 2.")
    assert done[STATUS] == "Saved 3 labels and a corrected answer."
    revealed = done[REVEAL]
    assert JUDGE_REASONING in revealed and "0.9" in revealed and USER_REASON in revealed
    assert "In the queue because: " in revealed and item.reason in revealed
    labels = {s.name: s for s in ReviewQueue(store).labels_of(item.trace_id)}
    assert {n: (s.value, s.string_value) for n, s in labels.items()} == {
        "helpfulness": (0.3, None),
        "safety": (1.0, None),
        "why": (None, "wrong-answer"),
    }
    assert all(s.source == ANNOTATION and s.scored_by == BY_REVIEWER for s in labels.values())
    assert ReviewQueue(store).review_of(item.trace_id)["corrected_answer"] == "2"
    # The trace viewer names who scored: the judge, and now the reviewer.
    assert "<td>reviewer</td>" in trace_html(store, item.trace_id)
    # Both queues' items of that trace are done; the next item is another trace.
    assert {i.state for i in ReviewQueue(store).items_of(item.trace_id)} == {DONE}
    next_item = ReviewQueue(store).get(done[ITEM_ID])
    assert next_item.trace_id != item.trace_id
    assert all(v == {"value": None, "__type__": "update"} for v in done[4:7])  # labels cleared


def test_a_wrong_label_is_not_saved_and_the_page_keeps_what_was_typed(space):
    handlers, store, _ids = space
    review = handlers.review
    item_id = open_item(review, "rita")[ITEM_ID]
    out = save(review, "rita", item_id, ["7", None, None])
    assert out[STATUS] == "⚠️ Not saved: helpfulness is a number from 0 to 1, not '7'."
    assert all(o == {"__type__": "update"} for i, o in enumerate(out) if i != STATUS)
    out = save(review, "rita", item_id, [None, None, None], corrected="   ")
    assert "Nothing to save: give at least one label or a corrected answer (or skip)." in out[STATUS]
    assert ReviewQueue(store).labels_of(ReviewQueue(store).get(item_id).trace_id) == []


def test_two_reviewers_get_different_items_and_skip_moves_on(space):
    handlers, store, ids = space
    review = handlers.review
    rita = open_item(review, "rita")[ITEM_ID]
    rob = open_item(review, "rob")[ITEM_ID]
    queue = ReviewQueue(store)
    assert queue.get(rita).trace_id != queue.get(rob).trace_id
    assert open_item(review, "rita")[ITEM_ID] == rita  # a reload: the same item
    skipped = review.skip(rita, ALL_QUEUES, None, space_request(), profile("rita"))
    assert skipped[STATUS] == "Skipped." and skipped[ITEM_ID] not in (rita, rob)
    # rob cannot skip rita's item.
    third = skipped[ITEM_ID]
    assert review.skip(third, ALL_QUEUES, None, space_request(), profile("rob"))[STATUS].startswith(
        "Nothing to skip"
    )
    # A queue picked: only its items.
    out = open_item(review, "rob", queue="judge-vs-user")
    assert queue.get(out[ITEM_ID]).queue == "judge-vs-user"
    assert (
        out[0]["choices"] == [ALL_QUEUES, "dislikes", "judge-vs-user"] and out[0]["value"] == "judge-vs-user"
    )
    # One item at a time: the one rob held in the other queue went back to the queue.
    assert [i.id for i in queue.items(limit=100) if i.lease_owner == "rob"] == [out[ITEM_ID]]


def test_reviewers_see_the_review_tab_and_nothing_else(space):
    handlers, store, ids = space
    reviewer = (None, space_request(), profile("rita"))
    page = handlers.refresh("Last 7 days", "(all)", "(all)", "(all)", "", *reviewer)
    assert page[0] == "Review · reviewer rita (Hugging Face)"
    assert page[1] == {"visible": True, "__type__": "update"}
    assert page[-1] == {"visible": False, "__type__": "update"}  # the filters
    layout = handlers.layout(*reviewer)
    assert layout[:ADMIN_TABS] == [{"visible": "hidden", "__type__": "update"}] * ADMIN_TABS
    assert layout[-1].selected == "review"
    text = json.dumps(page, default=str)
    for trace_id in ids:
        assert trace_id not in text
    assert "What is the capital" not in text and "ann" not in text
    # Every other handler refuses them.
    assert "is only for the app" in handlers.open_trace(ids[0], *reviewer)
    assert "is only for the app" in handlers.compare_runs("a", "b", *reviewer)[0]
    assert "is only for the app" in handlers.review.add_to_queue(ids[0], *reviewer)
    assert handlers.link(space_request(), profile("rita")).endswith(">Review queue</a>")
    # The review handlers serve them; on page load their item is handed out at once.
    out = handlers.review.open_for_reviewer(ALL_QUEUES, *reviewer)
    assert out[ITEM_ID] and "answer c" in out[ITEM]
    # An admin gets the whole dashboard, and no item until they open the tab.
    admin = (None, space_request("s9"), profile("ada"))
    assert (
        handlers.refresh("Last 7 days", "(all)", "(all)", "(all)", "", *admin)[0]
        == "Dashboard · Hugging Face user ada"
    )
    assert handlers.layout(*admin) == [{"__type__": "update"}] * (ADMIN_TABS + 1)
    assert handlers.review.open_for_reviewer(ALL_QUEUES, *admin)[ITEM_ID] == {"__type__": "update"}
    assert handlers.review.open(ALL_QUEUES, *admin)[ITEM_ID]
    assert handlers.link(space_request(), profile("ada")).endswith(">Dashboard</a>")


def test_strangers_get_nothing_from_the_review_handlers(space):
    handlers, store, ids = space
    review = handlers.review
    item_id = open_item(review, "rita")[ITEM_ID]
    for who in (None, profile("mallory"), profile("ann")):
        stranger = (None, space_request("x"), who)
        outputs = [
            review.open(ALL_QUEUES, *stranger),
            review.open_for_reviewer(ALL_QUEUES, *stranger),
            review.save(item_id, ALL_QUEUES, "1", "1", "other", "x", "y", *stranger),
            review.skip(item_id, ALL_QUEUES, *stranger),
            review.add_to_queue(ids[0], *stranger),
            handlers.link(space_request(), who),
        ]
        text = json.dumps(outputs, ensure_ascii=False, default=str)
        for trace_id in ids:
            assert trace_id not in text
        assert "capital of France" not in text and "answer c" not in text and item_id not in text
    assert ReviewQueue(store).labels_of(ReviewQueue(store).get(item_id).trace_id) == []
    assert ReviewQueue(store).get(item_id).state == LEASED  # still rita's


def test_the_owner_adds_a_trace_by_hand_from_the_trace_viewer(tmp_path):
    evaluators = evaluators_file(tmp_path)
    settings = settings_from_env({"DATA_DIR": str(tmp_path / "data"), "EVALUATORS_FILE": str(evaluators)})
    store = Store(settings.store_url)
    trace_id = turn(store, "h1", T0)
    handlers = DashboardHandlers(store, settings, Access(settings, oauth_real=False))
    owner = (None, owner_request(), None)
    assert handlers.review.add_to_queue(trace_id, *owner) == "Added to the review queue (manual)."
    assert handlers.review.add_to_queue(trace_id, *owner).startswith(
        "This trace is in the review queue already"
    )
    assert handlers.review.add_to_queue("", *owner) == "Open a trace first (its id goes in the box above)."
    [item] = ReviewQueue(store).items(queue=MANUAL)
    assert item.added_by == "owner"
    out = handlers.review.open(MANUAL, *owner)
    assert out[ITEM_ID] == item.id
    store.close()


def test_without_an_evaluators_file_the_reviewer_can_still_correct_the_answer(tmp_path):
    settings = settings_from_env({"DATA_DIR": str(tmp_path / "data"), "EVALUATORS_FILE": "off"})
    store = Store(settings.store_url)
    trace_id = turn(store, "o1", T0)
    ReviewQueue(store).add([NewItem(trace_id, MANUAL, "x")])
    handlers = DashboardHandlers(store, settings, Access(settings, oauth_real=False))
    out = handlers.review.open(ALL_QUEUES, None, owner_request(), None)
    assert "No judge to label: evaluation is off (EVALUATORS_FILE=off)." in out[STATUS]
    done = handlers.review.save(
        out[ITEM_ID], ALL_QUEUES, "The right answer.", "", None, owner_request(), None
    )
    assert done[STATUS] == "Saved 0 labels and a corrected answer."
    assert ReviewQueue(store).review_of(trace_id)["corrected_answer"] == "The right answer."
    store.close()


def test_the_keys_are_documented_on_the_page():
    for key in ("**1** / **0**", "**Enter**", "**Ctrl+Enter**", "**s** skips", "**↑** / **↓**", "**Esc**"):
        assert key in KEYS_HELP


# ----- the live server: a reviewer through a real OAuth session ----------------------------------


def test_a_reviewer_through_a_real_oauth_session(make_settings, make_runtime, monkeypatch, tmp_path):
    pytest.importorskip("authlib")
    pytest.importorskip("itsdangerous")
    from gradio import oauth

    for name, value in {
        "OAUTH_CLIENT_ID": "client-id",
        "OAUTH_CLIENT_SECRET": "client-secret",
        "OAUTH_SCOPES": "openid profile",
        "OPENID_PROVIDER_URL": "https://huggingface.co",
    }.items():
        monkeypatch.setattr(oauth, name, value)
    monkeypatch.setattr(oauth, "get_space", lambda: "someone/space")
    monkeypatch.setattr(access_module, "oauth_is_real", lambda: True)
    evaluators = evaluators_file(tmp_path)
    runtime = make_runtime(
        make_settings(
            SPACE_ID="someone/space", ADMIN_USERS="ada", REVIEWERS="rita", EVALUATORS_FILE=str(evaluators)
        )
    )
    ids = fill(runtime.feedback.store, evaluators)
    demo = SimpleNamespace(traces=ids, runs=[])
    with serve(runtime) as url:
        rita = DashboardClient(url, cookies=_session_cookie("client-secret-v4", "rita"))
        page = json.dumps(rita.refresh(), ensure_ascii=False)
        assert "Review · reviewer rita (Hugging Face)" in page
        assert "What is the capital" not in page and "answer c" not in page
        assert "is only for the app" in json.dumps(rita.open_trace(ids[1]))
        opened = json.dumps(rita.call(rita.fn_by_name["open"], [ALL_QUEUES, None]).output, ensure_ascii=False)
        assert "answer c" in opened and JUDGE_REASONING not in opened
        rita.close()
        stranger = DashboardClient(url, cookies=_session_cookie("client-secret-v4", "bob"))
        for name in ("open", "open_for_reviewer"):
            assert_no_data(stranger.call(stranger.fn_by_name[name], [ALL_QUEUES, None]).output, demo)
        stranger.close()
    # rita holds one item through the server (her lease), under her own name.
    held = [i for i in ReviewQueue(runtime.feedback.store).items(limit=100) if i.state == LEASED]
    assert [i.lease_owner for i in held] == ["rita"]
