"""The A/B experiment in a real browser (Debian's chromium via playwright): two Hugging Face users,
signed in through the Space's OAuth, are assigned different variants (each answered by their
variant's agent); one likes an answer, the other dislikes one with a reason, in the chat page;
the owner's dashboard has an Experiment tab whose figures show each vote under its variant."""

from __future__ import annotations

import textwrap

import pytest

from dashboard import access as access_module
from evals import ab
from feedback.votes import score_id_for
from tests.app.test_browser import browser  # noqa: F401 - the shared chromium fixture
from tests.dashboard.test_dashboard_access import _session_cookie
from tests.fakes import ScriptedModel, all_text, code_reply, last_task
from tests.helpers import serve, wait_for

pytestmark = pytest.mark.slow

VARIANTS = """
[experiment]
name = "prompt-test"
salt = "browser"
control = "alpha"

[[variant]]
name = "alpha"
weight = 1
system_prompt = "You are agent ALPHA. {{ custom_instructions }}"

[[variant]]
name = "beta"
weight = 1
system_prompt = "You are agent BETA. {{ custom_instructions }}"
"""


def who_answers(messages) -> str:  # type: ignore[no-untyped-def]
    who = "ALPHA" if "agent ALPHA" in all_text(messages) else "BETA"
    return code_reply(f"final_answer({(who + ' says: ' + last_task(messages))!r})")


def _signed_in(browser, url: str, username: str):  # type: ignore[no-untyped-def]  # noqa: F811
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    cookie = _session_cookie("client-secret-v4", username).split("=", 1)[1]
    context.add_cookies([{"name": "session", "value": cookie, "url": url}])
    return context


def _ask(page, text: str, who: str) -> None:  # type: ignore[no-untyped-def]
    page.fill("#msg textarea", text)
    page.keyboard.press("Enter")
    page.get_by_text(f"{who} says: {text}", exact=True).wait_for(timeout=30_000)
    page.wait_for_function("!document.querySelector('#msg textarea').disabled", timeout=30_000)


def test_two_users_in_two_variants_vote_and_the_experiment_tab_shows_each_vote_in_its_variant(
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
    ab.forget_cached()
    path = tmp_path / "variants.toml"
    path.write_text(textwrap.dedent(VARIANTS))
    settings = make_settings(SPACE_ID="someone/space", ADMIN_USERS="boss", VARIANTS_FILE=str(path))
    # A user of each variant (assignment is a function of the salt and the user: fixed here).
    users: dict[str, str] = {}
    for name in ("ann", "bob", "cat", "dan", "eve", "fay", "gus", "hal"):
        users.setdefault(settings.experiment.assign(name).variant, name)
    assert set(users) == {"alpha", "beta"}
    runtime = make_runtime(settings, model=ScriptedModel(who_answers))
    store = runtime.feedback.store
    with serve(runtime) as url:
        liker = _signed_in(browser, url, users["alpha"]).new_page()
        disliker = _signed_in(browser, url, users["beta"]).new_page()
        liker.goto(url)
        disliker.goto(url)
        # Each is answered by their own variant's agent, and votes on that answer.
        _ask(liker, "What is 2+2?", "ALPHA")
        _ask(disliker, "What is 3+3?", "BETA")
        liker.locator('#chat button[aria-label="Like"]').first.click()
        disliker.locator('#chat button[aria-label="Feedback"]').first.click()
        disliker.locator("#chat .extra-feedback-option:visible", has_text="Incorrect").click()
        runtime.feedback.telemetry.flush()
        turns = wait_for(
            lambda: rows if len(rows := store.rows("SELECT id, user_id, variant FROM traces")) == 2 else None
        )
        by_user = {r["user_id"]: r for r in turns}
        assert by_user[users["alpha"]]["variant"] == "alpha" and by_user[users["beta"]]["variant"] == "beta"
        wait_for(lambda: all(store.get_score(score_id_for(r["id"])) is not None for r in turns), timeout=15)

        # The owner's dashboard: the Experiment tab, each vote under its variant.
        owner = _signed_in(browser, url, "boss").new_page()
        owner.goto(url + "dashboard")
        owner.get_by_text("Dashboard · Hugging Face user boss").wait_for(timeout=30_000)
        owner.get_by_role("tab", name="Experiment").click()
        owner.locator("#xp-figures").wait_for(timeout=30_000)
        figures = owner.locator("#xp-figures")
        header = figures.locator("thead th")
        assert [header.nth(i).inner_text().split("\n")[0] for i in (1, 2)] == ["alpha", "beta"]
        like_row = figures.locator("tr", has_text="Like rate")
        cells = like_row.locator("td")
        alpha, beta = cells.nth(0).inner_text(), cells.nth(1).inner_text()
        assert alpha.startswith("100.0%") and "1 likes of 1 rated turns by 1 users" in alpha
        assert beta.startswith("0.0%") and "0 likes of 1 rated turns by 1 users" in beta
        reasons = figures.locator("tr", has_text="Dislike reasons").locator("td")
        assert reasons.nth(0).inner_text() == "none" and reasons.nth(1).inner_text() == "Incorrect: 1"
        turns_row = figures.locator("tr", has_text="Turns").first.locator("td")
        assert [turns_row.nth(i).inner_text() for i in (0, 1)] == ["1", "1"]
        verdict = owner.locator("#xp-verdict-0").inner_text()
        assert "beta against alpha" in verdict and "no difference yet" in verdict.lower()
        assert (
            "the split of users" in owner.locator("#xp-srm").inner_text()
            or "too few users" in owner.locator("#xp-srm").inner_text()
        )
        # A vote changed in the chat shows once the tab is refreshed.
        liker.locator('#chat button[aria-label^="Dislike"]').first.click()
        liker_trace = by_user[users["alpha"]]["id"]
        wait_for(lambda: store.get_score(score_id_for(liker_trace)).value == 0.0, timeout=15)
        owner.click("#dash-experiment-refresh")
        first = owner.locator("#xp-figures tr", has_text="Like rate").locator("td").first
        wait_for(lambda: first.inner_text().startswith("0.0%"), timeout=30)
        assert "0 likes of 1 rated turns by 1 users" in first.inner_text()
        for context in (liker.context, disliker.context, owner.context):
            context.close()
