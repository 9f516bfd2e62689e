"""The review queue in a real browser (Debian's chromium via playwright): a REVIEWERS user,
signed in through the Space's OAuth, sees the Review tab alone and labels three answers with
the keyboard only (digits, Enter); the judges' reasoning appears only after each save; the
labels land in the store as the reviewer's ANNOTATION scores."""

from __future__ import annotations

import re

import pytest

from dashboard import access as access_module
from feedback.review_queue import ANNOTATION, ReviewQueue
from feedback.store import BY_REVIEWER
from tests.app.test_browser import browser  # noqa: F401 - the shared chromium fixture
from tests.dashboard.test_dashboard_access import _session_cookie
from tests.dashboard.test_dashboard_review import JUDGE_REASONING, evaluators_file, fill
from tests.helpers import serve

pytestmark = pytest.mark.slow

TRACE_IN_ITEM = re.compile(r"trace ([0-9a-f]{32})")


def _item_trace(page) -> str | None:
    match = TRACE_IN_ITEM.search(page.inner_text("#rv-item"))
    return match.group(1) if match else None


def test_a_reviewer_labels_three_answers_with_the_keyboard_only(
    browser,  # noqa: F811 - the fixture imported above
    make_settings,
    make_runtime,
    monkeypatch,
    tmp_path,
):
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
        make_settings(SPACE_ID="someone/space", REVIEWERS="rita", EVALUATORS_FILE=str(evaluators))
    )
    store = runtime.feedback.store
    ids = fill(store, evaluators, n=3)
    with serve(runtime) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 1100})
        cookie = _session_cookie("client-secret-v4", "rita").split("=", 1)[1]
        context.add_cookies([{"name": "session", "value": cookie, "url": url}])
        page = context.new_page()
        page.goto(url + "dashboard")
        page.get_by_text("Review · reviewer rita (Hugging Face)").wait_for(timeout=30_000)
        # The Review tab alone: no filters, no other tab.
        page.locator("#rv-save").wait_for(state="visible", timeout=30_000)
        assert not page.locator("#dash-admin-bar").is_visible()
        for name in ("Overview", "Worst answers", "Trace", "Dataset runs"):
            assert (
                page.get_by_role("tab", name=name).count() == 0
                or not page.get_by_role("tab", name=name).is_visible()
            )
        assert "Enter" in page.inner_text("#rv-keys") and "skips" in page.inner_text("#rv-keys")
        labelled = []
        for n in range(3):
            page.wait_for_function(
                "() => /trace [0-9a-f]{32}/.test(document.querySelector('#rv-item').innerText)"
            )
            trace_id = _item_trace(page)
            assert trace_id and trace_id not in labelled
            if n == 0:
                # Before labelling: the answer, never the judge's verdict.
                assert "Answer" in page.inner_text("#rv-item")
                assert JUDGE_REASONING not in page.inner_text("body")
            page.locator("body").click(position={"x": 5, "y": 5})  # no text box has the cursor
            # helpfulness 0.3, safety true, why "incomplete" (its 2nd category), then save.
            for key in ("3", "1", "2"):
                page.keyboard.press(key)
            page.wait_for_function(
                "() => [...document.querySelectorAll('#rv-labels input[type=radio]')].filter(i => i.checked).length === 3"
            )
            page.keyboard.press("Enter")
            page.wait_for_function(
                f"() => !document.querySelector('#rv-item').innerText.includes('{trace_id}')", timeout=30_000
            )
            # After the save: the judge's reasoning of the answer just labelled.
            page.locator("#rv-reveal").get_by_text(JUDGE_REASONING).first.wait_for(timeout=15_000)
            assert "Saved 3 labels." in page.inner_text("#rv-status")
            labelled.append(trace_id)
        page.get_by_text("Nothing left to review in the review queue.").first.wait_for(timeout=15_000)
        assert "3 of 3" in page.inner_text("#rv-progress")
        context.close()
    assert sorted(labelled) == sorted(ids[1:])
    queue = ReviewQueue(store)
    for trace_id in labelled:
        labels = {s.name: s for s in queue.labels_of(trace_id)}
        assert (labels["helpfulness"].value, labels["safety"].value, labels["why"].string_value) == (
            0.3,
            1.0,
            "incomplete",
        )
        assert all(s.source == ANNOTATION and s.scored_by == BY_REVIEWER for s in labels.values())
        assert '"reviewer": "rita"' in labels["safety"].metadata
    assert {i.state for i in queue.items(limit=100)} == {"done"}


def test_the_owner_opens_the_tab_labels_corrects_skips_and_adds_a_trace_by_hand(
    browser,  # noqa: F811 - the fixture imported above
    make_settings,
    make_runtime,
    tmp_path,
):
    evaluators = evaluators_file(tmp_path)
    runtime = make_runtime(make_settings(EVALUATORS_FILE=str(evaluators)))
    store = runtime.feedback.store
    ids = fill(store, evaluators, n=2)
    queue = ReviewQueue(store)
    with serve(runtime) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url + "dashboard")
        page.get_by_text("Dashboard · the owner (on this machine)").wait_for(timeout=30_000)
        assert page.get_by_role("tab", name="Overview").is_visible()
        # The owner holds nothing until they open the tab (they may never do).
        page.wait_for_timeout(500)
        assert queue.items(state="leased") == []
        page.get_by_role("tab", name="Review").click()
        page.wait_for_function(
            "() => /trace [0-9a-f]{32}/.test(document.querySelector('#rv-item').innerText)", timeout=20_000
        )
        # The first label is the highlighted one; each digit moves the highlight on.
        page.wait_for_function("() => document.querySelector('#rv-label-0').classList.contains('rv-current')")
        first = _item_trace(page)
        for key in ("5", "0", "3"):
            page.keyboard.press(key)
        page.keyboard.press("c")  # to the corrected answer, typed, saved with Ctrl+Enter from the box
        page.keyboard.type("It is 2.")
        page.keyboard.press("Control+Enter")
        page.get_by_text("Saved 3 labels and a corrected answer.").wait_for(timeout=20_000)
        page.wait_for_function(f"() => !document.querySelector('#rv-item').innerText.includes('{first}')")
        page.keyboard.press("s")  # the box let go of the cursor when saving: s skips
        page.get_by_text("Skipped.").first.wait_for(timeout=20_000)
        # The Trace tab's button puts a trace in the manual queue.
        page.get_by_role("tab", name="Trace").click()
        page.fill("#dash-trace-id input, #dash-trace-id textarea", ids[0])
        page.click("#dash-add-review")
        page.get_by_text("Added to the review queue (manual).").wait_for(timeout=20_000)
    labels = {s.name: (s.value, s.string_value) for s in queue.labels_of(first)}
    assert labels == {"helpfulness": (0.5, None), "safety": (0.0, None), "why": (None, "other")}
    assert queue.review_of(first)["corrected_answer"] == "It is 2."
    assert "skipped" in {i.state for i in queue.items(limit=100)}
    assert [i.trace_id for i in queue.items(queue="manual")] == [ids[0]]
