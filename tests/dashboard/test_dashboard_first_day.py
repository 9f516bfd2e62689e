"""The dashboard on day one (issue 22, item 6): what the handlers give the page when the store holds
an hour or a day of data, on SQLite and Postgres.

A single daily point must be drawn (as a point: Vega draws no line through one point), "Last 24
hours" goes by the hour, legends name each series apart and short, a chart with nothing to draw
says so in a sentence, a dataset run's row opens the run, and a run is never compared with itself.
What the browser then draws is checked in test_dashboard_browser.py.
"""

from __future__ import annotations

import html
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pandas as pd
import pytest

from config.settings import settings_from_env
from dashboard import charts, queries
from dashboard.access import Access
from dashboard.ui import DashboardHandlers, build_dashboard
from feedback.store import Store
from tests.dashboard.day_one import LOCAL, LOCAL_Q8, dataset_run, judge, trace_id, turn, vote

DAY = 86400.0
HOUR = 3600.0
# 13:30 UTC on 2024-06-11: "now" for the handlers (their clock) in every test here.
NOW = 19885 * DAY + 13.5 * HOUR
TODAY = "2024-06-11"
PLOTS = slice(4, 12)  # a refresh's outputs: the eight charts' tables...
NOTES = slice(20, 28)  # ...the sentence under each chart (NOTE_ORDER)...
RUNS_NOTE, RUN_NAMES = 28, 29  # ...the Dataset runs tab's hint and its runs (kept on the server)
# The charts in the order a refresh returns their tables and their notes (dashboard.ui.NOTE_ORDER).
NOTE_ORDER = PLOT_IDS = ["turns", "likes", "reasons", "evaluators", "latency", "tokens", "cost", "errors"]
LINES = {"likes", "evaluators", "latency", "errors"}


def owner() -> Any:
    from starlette.datastructures import Headers

    return SimpleNamespace(
        client=SimpleNamespace(host="127.0.0.1"), headers=Headers({"host": "127.0.0.1:7860"})
    )


def stranger() -> Any:
    return SimpleNamespace(client=SimpleNamespace(host="203.0.113.1"), headers={"host": "x"})


@pytest.fixture
def store(store_url: str) -> Store:
    store = Store(store_url)
    queries._DECODED.clear()
    yield store
    store.close()


@pytest.fixture
def handlers(store: Store, tmp_path) -> DashboardHandlers:
    settings = settings_from_env({"DATA_DIR": str(tmp_path), "EVALUATORS_FILE": "off"})
    return DashboardHandlers(store, settings, Access(settings, oauth_real=False), clock=lambda: NOW)


@pytest.fixture
def plots(handlers: DashboardHandlers) -> dict[str, Any]:
    """The page's eight chart components, by name (as the page builds them)."""
    with gr.Blocks() as demo:
        pass
    build_dashboard(demo, handlers)
    found = {
        getattr(block, "elem_id", None): block for block in demo.blocks.values() if hasattr(block, "elem_id")
    }
    return {name: found[f"plot-{name}"] for name in PLOT_IDS}


def refresh(handlers: DashboardHandlers, range_name: str = "Last 7 days") -> list[Any]:
    return handlers.refresh(range_name, "(all)", "(all)", "(all)", "", None, owner(), None)


def first_day(store: Store) -> list[str]:
    """Three turns this morning (one failed), a like, a dislike with a reason, a judge's scores."""
    ids = [
        turn(store, "a1", NOW - 4 * HOUR, latency=1.0, tokens=(120, 12)),
        turn(store, "a2", NOW - 2 * HOUR, latency=2.5, tokens=(150, 20), status="ERROR"),
        turn(store, "a3", NOW - 0.5 * HOUR, latency=1.5, tokens=(90, 9)),
    ]
    vote(store, ids[0], 1.0)
    vote(store, ids[1], 0.0, reason="Incorrect")
    for tid, value in zip(ids, (0.9, 0.1, 0.6), strict=True):
        judge(store, tid, "helpfulness", value, reasoning="because", demo=False)
    return ids


# ----- a single day is drawn ----------------------------------------------------------------------


def test_one_day_of_data_is_drawn_as_points(handlers, store, plots):
    """Issue 22: with one day of data five of eight charts were empty axes; a single daily point
    is now a point (the chart's mark), every chart has its data, and the bars stay bars."""
    first_day(store)
    out = refresh(handlers)
    frames = dict(zip(NOTE_ORDER, out[PLOTS], strict=True))
    for name, frame in frames.items():
        assert isinstance(frame, pd.DataFrame) and len(frame), name
        data = plots[name].postprocess(frame)
        assert len(data.data) == len(frame), name
        if name in LINES:
            assert data.mark == "point", (name, data.mark)  # Vega draws no line through one point
        else:
            assert data.mark == "bar", name
    assert set(frames["turns"]["day"].dt.strftime("%Y-%m-%d")) == {TODAY}
    assert "one point or bar per **day** (UTC)" in out[3]


def test_two_days_are_lines_and_a_series_alone_on_a_day_is_a_point(handlers, store, plots):
    first_day(store)
    turn(store, "y1", NOW - 30 * HOUR, latency=3.0)  # yesterday
    out = refresh(handlers)
    frames = dict(zip(NOTE_ORDER, out[PLOTS], strict=True))
    assert plots["latency"].postprocess(frames["latency"]).mark == "line"
    assert plots["errors"].postprocess(frames["errors"]).mark == "line"
    # The judge scored only today's turns: its one point would not be drawn as a line.
    assert plots["evaluators"].postprocess(frames["evaluators"]).mark == "point"
    # A model new today beside one with two days: the chart shows points, not a missing series.
    turn(store, "q1", NOW - 1 * HOUR, model=LOCAL_Q8)
    frames = dict(zip(NOTE_ORDER, refresh(handlers)[PLOTS], strict=True))
    assert plots["latency"].postprocess(frames["latency"]).mark == "point"


def test_an_empty_chart_is_no_value_with_a_sentence_under_it(handlers, store, plots):
    """Bare axes looked broken: an empty chart is now Gradio's empty box, and its note says why."""
    out = refresh(handlers)
    for name, frame, note in zip(NOTE_ORDER, out[PLOTS], out[NOTES], strict=True):
        assert len(frame) == 0 and plots[name].postprocess(frame) is None, name
        assert note["value"], name
    notes = dict(zip(NOTE_ORDER, (n["value"] for n in out[NOTES]), strict=True))
    for name in ("turns", "latency", "tokens", "cost", "errors"):
        assert notes[name] == "No chat turns in this range yet.", name
    assert notes["likes"].startswith("No ratings from people in this range yet")
    assert notes["reasons"] == "No dislikes in this range."
    assert notes["evaluators"] == "Evaluation is off: no judge or check scores."
    assert out[RUNS_NOTE]["value"].startswith("No dataset runs yet. Run the agent over a dataset with")


def test_notes_say_what_is_missing_on_day_one(handlers, store):
    """Turns but no vote, no judge, no token count and only $0 costs (the bundled model)."""
    turn(store, "a1", NOW - HOUR, tokens=(0, 0), cost=0.0)
    notes = dict(zip(NOTE_ORDER, (n["value"] for n in refresh(handlers)[NOTES]), strict=True))
    assert notes["turns"] == notes["latency"] == notes["errors"] == ""
    assert notes["likes"].startswith("No ratings from people in this range yet")
    assert notes["reasons"] == "No dislikes in this range."
    assert notes["tokens"] == "No token counts were recorded for these turns."
    assert notes["cost"].startswith("Every turn with a known price cost $0")
    turn(store, "a2", NOW - HOUR, model="my-endpoint", cost=None)
    vote(store, trace_id("a1"), 1.0)
    notes = dict(zip(NOTE_ORDER, (n["value"] for n in refresh(handlers)[NOTES]), strict=True))
    assert notes["likes"] == "" and notes["tokens"] == ""
    assert notes["cost"].startswith("Every turn with a known price cost $0")  # the unknown one aside
    no_price = turn(store, "b1", NOW - 10 * DAY, model="my-endpoint", cost=None)
    data = queries.overview(store, queries.Filters(NOW - 11 * DAY, NOW - 9 * DAY))
    assert data["totals"]["turns"] == 1 and no_price
    assert charts.chart_notes(data)[NOTE_ORDER.index("cost")].startswith("The cost of these turns is unknown")


# ----- short ranges by the hour --------------------------------------------------------------------


def test_last_24_hours_goes_by_the_hour(handlers, store):
    """'Last 24 hours' grouped by day was one or two points; it is now one point per UTC hour."""
    ids = [
        turn(store, "h1", NOW - 23 * HOUR, latency=1.0),  # yesterday 14:30
        turn(store, "h2", NOW - 5 * HOUR - 60, latency=2.0),  # 08:29
        turn(store, "h3", NOW - 5 * HOUR + 60, latency=3.0),  # 08:31, the same hour
        turn(store, "h4", NOW - 0.25 * HOUR, latency=4.0),  # 13:15
    ]
    judge(store, ids[1], "helpfulness", 0.5, demo=False)
    judge(store, ids[3], "helpfulness", 1.0, demo=False)
    out = refresh(handlers, "Last 24 hours")
    assert "one point or bar per **hour** (UTC)" in out[3]
    turns = out[4]
    got = sorted(zip(turns["day"].dt.strftime("%Y-%m-%d %H:%M"), turns["turns"], strict=True))
    assert got == [("2024-06-10 14:00", 1), ("2024-06-11 08:00", 2), ("2024-06-11 13:00", 1)]
    means = out[7]
    assert sorted(zip(means["day"].dt.strftime("%H:%M"), means["mean"], strict=True)) == [
        ("08:00", 0.5),
        ("13:00", 1.0),
    ]
    latency = out[8].set_index("series")["ms"]
    assert sorted(latency[f"{charts.short_model(LOCAL)} p95"].tolist()) == [1000.0, 3000.0, 4000.0]
    # Longer ranges stay by the day.
    week = refresh(handlers, "Last 7 days")
    assert "per **day**" in week[3] and week[4]["turns"].tolist() == [1, 3]


def test_hourly_overview_from_the_queries(store):
    turn(store, "h1", NOW - 5 * HOUR)
    turn(store, "h2", NOW - 0.25 * HOUR)
    store.upsert_score(
        score_id="goal", trace_id="", name="goal-reached", value=1.0, data_type="BOOLEAN", source="EVAL",
        session_id="s1", user_id="ann",
    )  # fmt: skip
    from sqlalchemy import text

    with store.transaction() as db:  # a conversation judge written at 12:40
        db.execute(text("UPDATE scores SET created = '2024-06-11T12:40:00.000+00:00' WHERE id = 'goal'"))
    span = queries.Filters(NOW - DAY, NOW + 60)
    hourly = queries.overview(store, span, hourly=True)
    assert hourly["bucket"] == "hour"
    assert [(r["day"], r["turns"]) for r in hourly["per_day"]] == [
        ("2024-06-11 08:00", 1),
        ("2024-06-11 13:00", 1),
    ]
    assert [(e["day"], e["evaluator"]) for e in hourly["evaluators"]] == [
        ("2024-06-11 12:00", "goal-reached")
    ]
    daily = queries.overview(store, span)
    assert daily["bucket"] == "day" and [(r["day"], r["turns"]) for r in daily["per_day"]] == [(TODAY, 2)]
    assert hourly["totals"] == daily["totals"]
    # A long range is never read hour by hour (90 days of hours), whatever is asked.
    assert queries.overview(store, queries.Filters(NOW - 30 * DAY, NOW), hourly=True)["bucket"] == "day"


# ----- legends -------------------------------------------------------------------------------------


def test_legends_name_every_series_apart_and_short():
    """The latency legend cut both series of the bundled model to the same
    'SmolLM2-135M-Instruct.Q4_1.gguf …': names are now short, with what tells them apart kept."""
    models = [LOCAL, LOCAL_Q8, "meta-llama/Llama-3.3-70B-Instruct", "org-a/m", "org-b/m", None, "gpt-4o-mini"]
    per_day = [
        {"day": TODAY, "model": m, "turns": 1, "tokens": 10, "cost": 0.0, "cost_per_turn": 0.0,
         "latency_p50_ms": 100.0, "latency_p95_ms": 200.0}
        for m in models
    ]  # fmt: skip
    series = charts.latency_per_day(per_day)["series"].tolist()
    assert len(series) == len(set(series)) == 2 * len(models)
    assert all(len(s) <= charts.MODEL_LABEL_CHARS + 4 and s.endswith((" p50", " p95")) for s in series)
    labels = charts.turns_per_day(per_day)["model"].tolist()
    assert len(set(labels)) == len(models)
    assert labels[:3] == ["SmolLM2-135M…Q4_1", "SmolLM2-135M…Q8_0", "Llama-3.3-70B-Instruct"]
    assert "unknown model" in labels and "gpt-4o-mini" in labels
    assert set(labels) >= {"org-a/m", "org-b/m"}  # the same name under two organisations: kept apart
    # The same model has the same label in every chart (one colour per model).
    assert charts.tokens_per_day(per_day)["model"].tolist() == labels
    assert charts.cost_per_day(per_day)["model"].tolist() == labels
    assert charts.short_model("a" * 80) == "a" * 23 + "…"


# ----- dataset runs --------------------------------------------------------------------------------


def test_a_run_row_opens_the_run_and_its_items_open_their_traces(handlers, store):
    item_trace = turn(store, "d1", NOW - HOUR, tags=["smolagents-chat", "dataset", "run:r1"])
    dataset_run(
        store,
        "r1",
        [("1", "What is 2+2?", "4", True, item_trace), ("2", "What is 3+3?", "5", False, None)],
        NOW,
    )
    out = refresh(handlers)
    assert out[RUNS_NOTE]["value"].startswith("One run so far: click it to see its items.")
    names = out[RUN_NAMES]["value"]
    assert names == ["r1"]
    update, ids = handlers.pick_run(names, None, SimpleNamespace(index=[0, 3]), owner(), None)
    items = update["value"]
    assert items["Item"].tolist() == ["1", "2"] and items["Result"].tolist() == ["right", "wrong"]
    assert items.loc[0, "Question"] == "What is 2+2?" and items.loc[1, "Answer"] == "5"
    assert update["label"].startswith("Items of run r1: 1 right of 2 graded, 2 in all.")
    assert ids == [item_trace, None]
    page, opened, tabs = handlers.pick_run_item(ids, None, SimpleNamespace(index=[0, 0]), owner(), None)
    assert opened == item_trace and "tv-waterfall" in page and tabs is not None
    page, opened, _ = handlers.pick_run_item(ids, None, SimpleNamespace(index=[1, 0]), owner(), None)
    assert opened == "" and "has no trace" in page
    # A row that is not in the server's list, or a caller who may not look: a sentence, no data.
    for index in ([5, 0], [-1, 0], None, [True, 0]):
        update, ids_ = handlers.pick_run(names, None, SimpleNamespace(index=index), owner(), None)
        assert len(update["value"]) == 0 and ids_ == [] and "not in the table" in update["label"]
    update, ids_ = handlers.pick_run(names, None, SimpleNamespace(index=[0, 0]), stranger(), None)
    assert (
        len(update["value"]) == 0 and ids_ == [] and "is only for the app" in html.unescape(update["label"])
    )
    page, opened, _ = handlers.pick_run_item(
        [item_trace], None, SimpleNamespace(index=[0, 0]), stranger(), None
    )
    assert opened == "" and item_trace not in page


def test_a_run_is_not_compared_with_itself(handlers, store):
    dataset_run(store, "r1", [("1", "q", "4", True, None)], NOW)
    out = refresh(handlers)
    assert out[18]["value"] is None and out[19]["value"] == "r1"  # one run: no pair picked
    assert handlers.compare_runs("r1", "r1", None, owner(), None) == (
        "Pick two different runs: a run compared with itself shows no change.",
        None,
    )
    dataset_run(store, "r2", [("1", "q", "5", False, None)], NOW + 1)
    out = refresh(handlers)
    assert out[18]["value"] == "r1" and out[19]["value"] == "r2"
    assert out[RUNS_NOTE]["value"].startswith("Click a run to see its items; pick two different runs")
    text_, figure = handlers.compare_runs("r1", "r2", None, owner(), None)
    assert text_.startswith("r1: ") and figure is not None
