"""The dashboard in a real browser (Debian's chromium via playwright): the owner sees the charts,
opens a trace from the worst answers and finds its waterfall; injected HTML never runs; a
visitor of a Space gets the sign-in and nothing else until the password is right."""

from __future__ import annotations

import time

import pytest

from bench import dashboard_demo
from tests.app.test_browser import browser  # noqa: F401 - the shared chromium fixture
from tests.helpers import serve

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
PLOTS = [
    "plot-turns",
    "plot-likes",
    "plot-reasons",
    "plot-evaluators",
    "plot-latency",
    "plot-errors",
    "plot-tokens",
    "plot-cost",
]
INJECTED = "img[src=x], svg[onload], iframe, #dash-content script, #dash-trace script"


@pytest.fixture
def demo_app(make_settings, make_runtime):
    def start(**env: str):
        runtime = make_runtime(make_settings(**env))
        demo = dashboard_demo.build(runtime.feedback.store, now=time.time(), turns=120, hostile=True)
        return runtime, demo

    return start


def _charts_drawn(page) -> None:
    for plot in PLOTS:
        page.locator(f"#{plot} canvas, #{plot} svg").first.wait_for(timeout=30_000)


def test_the_owner_sees_the_charts_and_opens_a_trace_from_the_worst_answers(browser, demo_app):  # noqa: F811
    runtime, demo = demo_app()
    with serve(runtime) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        # The chat page links to the dashboard for the owner.
        page.goto(url)
        page.locator("#dash-link-a").click()
        page.wait_for_url("**/dashboard")
        page.get_by_text("Dashboard · the owner (on this machine)").wait_for(timeout=30_000)
        _charts_drawn(page)
        assert "turns" in page.inner_text("#dash-headline")
        # The hostile reason is a bar label in the chart: hover it, nothing runs.
        page.hover("#plot-reasons canvas, #plot-reasons svg")
        page.get_by_role("tab", name="Worst answers").click()
        row = page.locator("#dash-worst .virtual-row", has_text="What is **2+2**?").first
        row.wait_for(timeout=15_000)
        assert "<script>window.__pwned" in row.inner_text()  # shown as text
        row.locator(".body-cell").nth(1).click()
        waterfall = page.locator("#tv-waterfall")
        waterfall.wait_for(timeout=15_000)
        assert page.locator("#tv-waterfall .tv-row").count() >= 5  # root, agent, step, LLM call, tool
        assert (
            page.locator("#dash-trace-id input, #dash-trace-id textarea").first.input_value()
            == demo.hostile[0]
        )
        trace_text = page.inner_text("#dash-trace")
        for injection in (
            dashboard_demo.HOSTILE_QUESTION,
            dashboard_demo.HOSTILE_SPAN,
            dashboard_demo.HOSTILE_REASON,
        ):
            assert injection in trace_text
        # Open every collapsed section (LLM calls), where the hostile attribute is.
        page.locator("#dash-trace details").evaluate_all("ds => ds.forEach(d => d.open = true)")
        assert dashboard_demo.HOSTILE_ATTRIBUTE in page.inner_text("#dash-trace")
        page.wait_for_timeout(500)
        assert page.evaluate("window.__pwned") is None
        assert page.locator(INJECTED).count() == 0
        # Another trace by id, and an unknown one.
        page.fill("#dash-trace-id input, #dash-trace-id textarea", demo.traces[0])
        page.click("#dash-open-trace")
        page.get_by_text(demo.traces[0]).first.wait_for(timeout=15_000)
        page.fill("#dash-trace-id input, #dash-trace-id textarea", "f" * 32)
        page.click("#dash-open-trace")
        page.get_by_text(f"No trace with the id {'f' * 32} is in the store.").wait_for(timeout=15_000)
        # Dataset runs: the list and the comparison (the CLI's text and chart).
        page.get_by_role("tab", name="Dataset runs").click()
        page.click("#dash-compare")
        page.locator("#plot-run-compare img").first.wait_for(timeout=30_000)
        assert "McNemar" in page.locator("#dash-comparison textarea").input_value()
        assert page.evaluate("window.__pwned") is None


def test_a_space_visitor_sees_only_the_sign_in_until_the_password_is_right(browser, demo_app):  # noqa: F811
    runtime, demo = demo_app(SPACE_ID="someone/space", ADMIN_PASSWORD=PASSWORD)
    with serve(runtime) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_timeout(1500)
        assert page.locator("#dash-link-a").count() == 0  # no link for a visitor
        page.goto(url + "dashboard")
        page.get_by_text("The dashboard is only for the app's owner").wait_for(timeout=30_000)
        page.locator("#dash-password input").wait_for(timeout=15_000)
        assert not page.locator("#dash-content").is_visible()
        body = page.inner_text("body")
        assert demo.traces[0] not in body and "What is 17%" not in body
        page.fill("#dash-password input", "not the password")
        page.click("#dash-sign-in")
        page.get_by_text("Wrong password (4 attempts left).").wait_for(timeout=15_000)
        assert page.locator("#dash-password input").input_value() == ""
        page.fill("#dash-password input", PASSWORD)
        page.click("#dash-sign-in")
        page.get_by_text("Dashboard · signed in with the admin password").wait_for(timeout=30_000)
        _charts_drawn(page)
        assert not page.locator("#dash-password").is_visible()  # the sign-in is gone
        page.click("#dash-sign-out")
        page.get_by_text("Signed out.").wait_for(timeout=15_000)
        page.wait_for_function(
            "!document.querySelector('#dash-content') || !document.querySelector('#dash-content').checkVisibility()"
        )
        assert "The dashboard is only for the app's owner" in page.inner_text("#dash-gate")
        page.locator("#dash-password input").wait_for(timeout=15_000)
