"""The dashboard in a real browser (Debian's chromium via playwright): the owner sees the charts,
opens a trace from the worst answers and finds its waterfall; injected HTML never runs; a
visitor of a Space gets the sign-in and nothing else until the password is right; on day one
every chart draws its marks (points for a single day, hours for 'Last 24 hours'), legends tell
series apart, a chart with nothing to draw says why, and a dataset run's row opens the run."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from bench import dashboard_demo
from tests.app.test_browser import browser  # noqa: F401 - the shared chromium fixture
from tests.dashboard.day_one import LOCAL, LOCAL_Q8, dataset_run, judge, turn, vote
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
        chat = page
        # In a new tab: the chat and its unrated answers stay open where they were.
        with page.context.expect_page() as opened:
            page.locator("#dash-link-a").click()
        page = opened.value
        page.wait_for_url("**/dashboard")
        assert not chat.url.rstrip("/").endswith("/dashboard")
        page.get_by_text("Dashboard · the owner (on this machine)").wait_for(timeout=30_000)
        _charts_drawn(page)
        for plot in PLOTS:  # a month of data: lines and bars, each with its marks
            _wait_drawn(page, plot.removeprefix("plot-"))
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


# ----- day one: a few turns of today --------------------------------------------------------------

DAY = 86400.0
# The marks Vega drew for a chart's data (Gradio's "plot" layer: not the legend, the hover layer or
# its invisible Voronoi cells): a point or bar of some size, or a line through two points or more.
DRAWN_MARKS = """(id) => [...document.querySelectorAll(`#${id} g.role-mark.plot_marks path`)].map(m => {
    const box = m.getBBox();
    const kind = m.closest("g.role-mark").getAttribute("class").split(" ")[0];
    const hidden = getComputedStyle(m).opacity === "0" || m.getAttribute("opacity") === "0";
    return {kind, width: box.width, height: box.height, hidden};
}).filter(m => !m.hidden && (m.kind === "mark-line" ? m.width + m.height > 0 : m.width * m.height > 0))"""
LEGEND = (
    """(id) => [...document.querySelectorAll(`#${id} .role-legend-label text`)].map(t => t.textContent)"""
)
# Legend labels that Vega laid out past the chart's right edge (cut off where the SVG ends).
LEGEND_CUT = """(id) => { const svg = document.querySelector(`#${id} svg`).getBoundingClientRect();
    return [...document.querySelectorAll(`#${id} .role-legend-label text`)]
        .filter(t => t.getBoundingClientRect().right > svg.right + 1).map(t => t.textContent); }"""


@pytest.fixture
def first_day_app(make_settings, make_runtime):
    """The app after a first session today: two local models (the bundled one and another
    quantisation, both at $0), one failed turn, a like and a dislike, a judge and the demo judge,
    and one dataset run of two items."""
    runtime = make_runtime(make_settings())
    store = runtime.feedback.store
    now = time.time()
    today = now // DAY * DAY
    # Every turn today (in the past), whatever the time of day the test runs at.
    at = [today + (now - today) * f for f in (0.2, 0.4, 0.6, 0.8)]
    ids = [
        turn(store, "f1", at[0], model=LOCAL, latency=1.2, tokens=(900, 40)),
        turn(store, "f2", at[1], model=LOCAL, latency=2.0, tokens=(950, 60), status="ERROR"),
        turn(store, "f3", at[2], model=LOCAL_Q8, latency=1.6, tokens=(910, 30)),
        turn(store, "f4", at[3], model=LOCAL_Q8, latency=0.9, tokens=(880, 20)),
    ]
    vote(store, ids[0], 1.0)
    vote(store, ids[1], 0.0, reason="Incorrect")
    for tid, value in zip(ids, (0.9, 0.2, 0.7, 0.8), strict=True):
        judge(store, tid, "helpfulness", value, reasoning="Because.", demo=False)
        judge(store, tid, "safety", 0.0, reasoning="Unsafe.", demo=True, data_type="BOOLEAN")
    item = turn(store, "d1", at[0], tags=["smolagents-chat", "dataset", "run:first"], question="What is 2+2?")
    dataset_run(
        store, "first", [("1", "What is 2+2?", "4", True, item), ("2", "What is 3+3?", "5", False, None)], now
    )
    return runtime, ids, item


def _drawn(page, plot: str) -> list[dict]:
    return page.evaluate(DRAWN_MARKS, f"plot-{plot}")


def _wait_drawn(page, plot: str) -> list[dict]:
    try:
        page.wait_for_function(f"({DRAWN_MARKS})('plot-{plot}').length > 0", timeout=30_000)
    except PlaywrightTimeout:
        raise AssertionError(f"the {plot} chart drew no mark in 30 s: {_drawn(page, plot)}") from None
    return _drawn(page, plot)


def test_day_one_charts_draw_their_marks(browser, first_day_app):  # noqa: F811
    """Issue 22: with one day of data five of eight charts were empty axes. Every chart now draws
    its data: one point per series for the day, bars of some height; a free model's cost chart
    says why it has no height; the latency legend names both quantisations apart."""
    runtime, ids, item = first_day_app
    with serve(runtime) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        page.goto(url + "dashboard")
        page.get_by_text("Dashboard · the owner (on this machine)").wait_for(timeout=30_000)
        for plot, n in {"turns": 2, "tokens": 2, "reasons": 1}.items():
            marks = _wait_drawn(page, plot)
            assert [m["kind"] for m in marks] == ["mark-rect"] * n, (plot, marks)
        # One day: every series of a line chart is one point (Vega draws no line through it).
        expected_points = {"likes": 3, "evaluators": 2, "latency": 4, "errors": 1}
        for plot, n in expected_points.items():
            marks = _wait_drawn(page, plot)
            assert [m["kind"] for m in marks] == ["mark-symbol"] * n, (plot, marks)
        assert "one point or bar per day (UTC)" in page.inner_text("#dash-headline")
        # Both models cost $0: flat bars, and the sentence under the chart says so.
        assert "cost $0 (a local model is free)" in page.inner_text("#note-cost")
        # Legends: the two quantisations apart, each series whole (Vega cuts a long label with "…"
        # at its end: both came out as "SmolLM2-135M-Instruct.Q4_1.gguf …").
        latency = page.evaluate(LEGEND, "plot-latency")
        assert sorted(latency) == [
            "SmolLM2-135M…Q4_1 p50", "SmolLM2-135M…Q4_1 p95", "SmolLM2-135M…Q8_0 p50", "SmolLM2-135M…Q8_0 p95",
        ]  # fmt: skip
        assert sorted(page.evaluate(LEGEND, "plot-evaluators")) == ["helpfulness", "safety (demo judge)"]
        for plot in PLOTS:
            assert page.evaluate(LEGEND_CUT, plot) == [], plot
        assert "not verdicts to trust" in page.inner_text("#note-evaluators")
        page.screenshot(path=str(_shots() / "day-one-week.png"), full_page=True)

        # The last 24 hours, hour by hour: still every chart drawn.
        page.locator("#dash-range input").click()
        page.get_by_role("option", name="Last 24 hours").click()
        page.get_by_text("one point or bar per hour (UTC)").wait_for(timeout=30_000)
        for plot in ("turns", "likes", "reasons", "evaluators", "latency", "tokens", "errors"):
            assert _wait_drawn(page, plot), plot
        page.screenshot(path=str(_shots() / "day-one-24h.png"), full_page=True)

        # Dataset runs: a hint, a row that opens the run, items that open their traces, and no
        # comparison of a run with itself.
        page.get_by_role("tab", name="Dataset runs").click()
        assert "One run so far: click it to see its items." in page.inner_text("#dash-runs-note")
        page.locator("#dash-runs .body-cell", has_text="first").first.click()
        items = page.locator("#dash-run-items")
        items.get_by_text("Items of run first: 1 right of 2 graded, 2 in all.").wait_for(timeout=15_000)
        items.locator(".body-cell", has_text="What is 2+2?").first.click()
        page.locator("#tv-waterfall").wait_for(timeout=15_000)
        assert page.locator("#dash-trace-id input, #dash-trace-id textarea").first.input_value() == item
        page.get_by_role("tab", name="Dataset runs").click()
        page.click("#dash-compare")  # one run: A is empty
        page.wait_for_function(
            "document.querySelector('#dash-comparison textarea').value.startsWith('Pick two runs')",
            timeout=15_000,
        )
        page.locator("#dash-run-a input").click()
        page.get_by_role("option", name="first").click()
        page.click("#dash-compare")
        page.wait_for_function(
            "document.querySelector('#dash-comparison textarea').value.startsWith('Pick two different runs')",
            timeout=15_000,
        )
        assert page.locator("#plot-run-compare img").count() == 0


def test_an_empty_dashboard_says_why_instead_of_bare_axes(browser, make_settings, make_runtime):  # noqa: F811
    runtime = make_runtime(make_settings())
    with serve(runtime) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        page.goto(url + "dashboard")
        page.get_by_text("Nothing to show for this range and these filters.").wait_for(timeout=30_000)
        page.get_by_text("No ratings from people in this range yet").wait_for(timeout=15_000)
        for plot in ("turns", "latency", "tokens", "cost", "errors"):
            assert page.inner_text(f"#note-{plot}") == "No chat turns in this range yet.", plot
        for plot in PLOTS:  # Gradio's empty box: no axes, no marks
            assert page.locator(f"#{plot} svg g.role-axis").count() == 0, plot
        page.get_by_role("tab", name="Dataset runs").click()
        assert "No dataset runs yet." in page.inner_text("#dash-runs-note")


def _shots() -> Path:
    """Where the walk-through's screenshots go (DASHBOARD_SHOTS), else a temporary folder."""
    folder = Path(os.environ.get("DASHBOARD_SHOTS") or tempfile.mkdtemp(prefix="dash-shots-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
