"""What the dashboard shows, for a store with known contents: the trace viewer and the charts.

The trace viewer builds HTML from hostile text (questions, answers, the model's code, span names
and attributes, reasons, comments, judge reasoning): the page it returns is parsed here and may
hold only the tags and attributes the viewer writes itself, with every injection shown as text.
"""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import text

from bench import dashboard_demo
from config.settings import settings_from_env
from dashboard import charts
from dashboard.access import Access
from dashboard.queries import Filters, overview, worst_answers
from dashboard.trace_view import format_cost, langfuse_trace_url, trace_html
from dashboard.ui import DashboardHandlers
from evals.jobs import eval_score_id
from feedback.database import StoreError
from feedback.store import SpanRecord, Store, TraceRecord
from feedback.votes import SCORE_NAME, score_id_for

T0 = 1_717_200_000.0  # 2024-06-01 00:00:00 UTC
TRACE = "a" * 32
SESSION = "session-1"
QUESTION = "<script>window.__pwned=1</script> What is **2+2**? [x](javascript:alert(1)) <!-- c -->"
ANSWER = '<img src=x onerror="window.__pwned=2"> # Heading </pre></div><b>4</b>'
SPAN_NAME = '<svg onload="alert(3)">step</svg>'
ATTRIBUTE = '"><img src=x onerror=alert(4)> {{7*7}} ${7*7}'
CODE = 'print("</pre><script>alert(5)</script>")\nfinal_answer(4)'
REASON = "<img src=x onerror=alert(6)>"
COMMENT = '<a href="javascript:alert(7)">click</a>'
REASONING = '<iframe src="javascript:alert(8)"></iframe> The answer is right.'
INJECTIONS = [QUESTION, ANSWER, SPAN_NAME, ATTRIBUTE, REASON, COMMENT, REASONING]

ALLOWED_TAGS = {
    "style",
    "div",
    "span",
    "pre",
    "table",
    "tr",
    "td",
    "th",
    "details",
    "summary",
    "b",
    "code",
    "h3",
    "p",
    "a",
}
ALLOWED_ATTRIBUTES = {"class", "style", "id", "title", "href", "target", "rel", "data-status", "open"}
STYLE = re.compile(r"^(padding-left:\d+px|left:[\d.]+%;width:[\d.]+%)$")


class Page(HTMLParser):
    """Every tag and attribute of a page, and its text (entities decoded)."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(source)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def handle_comment(self, data: str) -> None:
        raise AssertionError(f"a comment reached the page: {data!r}")

    @property
    def all_text(self) -> str:
        return "".join(self.text)


def assert_inert(source: str) -> Page:
    page = Page(source)
    for tag, attrs in page.tags:
        assert tag in ALLOWED_TAGS, tag
        for name, value in attrs.items():
            assert name in ALLOWED_ATTRIBUTES, (tag, name)
            if name == "style":
                assert STYLE.match(value or ""), value
            if name == "href":
                assert (value or "").startswith("https://"), value
    return page


def span(
    span_id: str, parent: str | None, name: str, kind: str | None, start: float, end: float, **kw: Any
) -> SpanRecord:
    return SpanRecord(
        trace_id=kw.pop("trace_id", TRACE),
        span_id=span_id,
        parent_id=parent,
        name=name,
        kind=kind,
        start_time=T0 + start,
        end_time=T0 + end,
        status=kw.pop("status", "OK"),
        status_message=kw.pop("status_message", None),
        attributes=kw.pop("attributes", {}),
        **kw,
    )


@pytest.fixture
def store(store_url: str) -> Store:
    store = Store(store_url)
    yield store
    store.close()


def fill(store: Store) -> None:
    """One turn, 1 s long: agent > Step 1 (LLM, hostile tool) > Step 2 (LLM, failed)."""
    reply = json.dumps({"role": "assistant", "content": f"Thought: compute.\n<code>\n{CODE}\n</code>"})
    spans = [
        span("r", None, "Smolagent-Trace", None, 0.0, 1.0, attributes={"input.value": QUESTION}),
        span("ag", "r", "ChatAgent.run", "AGENT", 0.01, 0.99),
        span("s1", "ag", "Step 1", "CHAIN", 0.02, 0.5, attributes={"output.value": "Execution logs:\n4"}),
        span(
            "l1", "s1", "OpenAIServerModel.generate", "LLM", 0.03, 0.4,
            attributes={
                "llm.model_name": "gpt-4o-mini",
                "input.value": json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                                        {"role": "user", "content": ATTRIBUTE}]}),
                "output.value": reply,
            },
            prompt_tokens=1200, completion_tokens=80, total_tokens=1280,
        ),
        span("tool", "s1", SPAN_NAME, "TOOL", 0.41, 0.45,
             attributes={"tool.name": SPAN_NAME, "input.value": json.dumps({"args": [ATTRIBUTE]}), "output.value": ATTRIBUTE}),
        span("s2", "ag", "Step 2", "CHAIN", 0.5, 0.98, status="ERROR", status_message=f"boom {ATTRIBUTE}"),
        span("l2", "s2", "OpenAIServerModel.generate", "LLM", 0.51, 0.9,
             attributes={"llm.model_name": "gpt-4o-mini", "output.value": "{not json"},
             prompt_tokens=1300, completion_tokens=20, total_tokens=1320),
    ]  # fmt: skip
    trace = TraceRecord(
        id=TRACE, name="Smolagent-Trace", input=QUESTION, output=ANSWER, user_id="user-1", session_id=SESSION,
        status="OK", status_message=None, start_time=T0, end_time=T0 + 1.0, model="gpt-4o-mini",
        tags=["smolagents-chat", REASON], metadata={},
    )  # fmt: skip
    store.write_spans(spans, [trace])
    with store.transaction() as db:
        db.execute(text("UPDATE spans SET cost = 0.0012 WHERE span_id = 'l1'"))
        db.execute(text("UPDATE spans SET cost = NULL WHERE span_id = 'l2'"))
        db.execute(text("UPDATE traces SET cost = NULL WHERE id = :id"), {"id": TRACE})
    store.upsert_score(
        score_id=score_id_for(TRACE), trace_id=TRACE, name=SCORE_NAME, value=0.0, data_type="BOOLEAN",
        source="user", session_id=SESSION, user_id="user-1", reason=REASON, note=COMMENT,
    )  # fmt: skip
    judge_id = eval_score_id("helpfulness", "v1", "turn", TRACE)
    store.upsert_score(
        score_id=judge_id, trace_id=TRACE, name="helpfulness", value=0.25, data_type="NUMERIC", source="EVAL",
        session_id=SESSION, user_id="user-1", note=REASONING, keep_note=False,
    )  # fmt: skip
    store.upsert_score(
        score_id=eval_score_id("goal-reached", "v1", "conversation", SESSION, "1"), trace_id="", name="goal-reached",
        value=1.0, data_type="BOOLEAN", source="EVAL", session_id=SESSION, user_id="user-1", note="Reached.",
    )  # fmt: skip
    with store.transaction() as db:
        db.execute(
            text(
                """INSERT INTO eval_jobs (id, evaluator, version, kind, target_kind, target_id, revision, trigger,
                       status, created, finished, score_id, reasoning)
                   VALUES ('j1', 'helpfulness', 'v1', 'llm', 'turn', :t, '', 'new', 'completed', 1, 2, :s, :r)"""
            ),
            {"t": TRACE, "s": judge_id, "r": REASONING},
        )


def test_the_trace_page_shows_everything_and_every_injection_as_text(store):
    fill(store)
    source = trace_html(store, TRACE, langfuse_base_url="https://cloud.langfuse.com/")
    page = assert_inert(source)
    shown = page.all_text
    for injection in INJECTIONS:
        assert injection in shown, injection
    assert "<script" not in source.lower().replace("&lt;script", "")
    # The header: cost unknown (never $0), tokens summed over the LLM calls, the Langfuse link.
    assert "Cost" in shown and "unknown" in shown
    assert "2,500 in + 100 out" in shown
    links = [attrs["href"] for tag, attrs in page.tags if tag == "a"]
    assert links == [f"https://cloud.langfuse.com/trace/{TRACE}"]
    # The waterfall: one row per span, depth-first, bars placed by start and duration.
    rows = [attrs for tag, attrs in page.tags if tag == "div" and attrs.get("class") == "tv-row"]
    assert len(rows) == 7
    bars = [
        attrs["style"]
        for tag, attrs in page.tags
        if tag == "div" and (attrs.get("class") or "").startswith("tv-bar")
    ]
    assert bars[0] == "left:0.000%;width:100.000%"  # the root
    assert bars[2] == "left:2.000%;width:48.000%"  # Step 1: +20 ms, 480 ms of 1 s
    assert [r["data-status"] for r in rows].count("error") == 1
    names = [t for t in page.text if t.strip()]
    order = [n for n in names if n in ("Smolagent-Trace", "ChatAgent.run", "Step 1", "Step 2", SPAN_NAME)]
    assert order[:5] == ["Smolagent-Trace", "ChatAgent.run", "Step 1", SPAN_NAME, "Step 2"]
    assert "+20 ms · 480 ms" in shown
    # Steps: the code the model wrote, the observation, the failed step's error.
    assert CODE in shown and "Execution logs:\n4" in shown and f"boom {ATTRIBUTE}" in shown
    # LLM calls: messages, tokens, cost; a malformed output is shown as it is.
    assert "Be brief." in shown and "1,200 in + 80 out tokens · $0.0012" in shown
    assert "1,300 in + 20 out tokens · unknown" in shown and "{not json" in shown
    # Scores: the user's (reason and comment), the judge's reasoning, the conversation's.
    assert "disliked" in shown and f"{REASON}; {COMMENT}" in shown
    assert "helpfulness" in shown and "0.25" in shown and REASONING in shown
    assert "goal-reached (conversation)" in shown and "Reached." in shown


def test_unknown_and_hostile_trace_ids_get_a_sentence(store):
    assert "No trace with the id " + "b" * 32 + " is in the store." in trace_html(store, "b" * 32)
    page = assert_inert(trace_html(store, "<script>alert(1)</script>"))
    assert "No trace with the id <script>alert(1)</script> is in the store." in page.all_text
    assert "Pick an answer" in trace_html(store, "")
    assert "Pick an answer" in trace_html(store, None)
    assert "not a trace id" in trace_html(store, "x" * 500)


def test_malformed_spans_are_shown_with_a_note_never_a_traceback(store):
    store.write_spans(
        [
            span("r", None, "root", None, 0.0, 1.0, trace_id="c" * 32),
            span("x", "y", "loop-x", "CHAIN", 0.1, 0.2, trace_id="c" * 32),
            span("y", "x", "loop-y", "CHAIN", 0.3, 0.2, trace_id="c" * 32),  # ends before it starts
            span("z", "z", "Step 1", "CHAIN", 0.3, 0.4, trace_id="c" * 32),  # its own parent
        ],
        [TraceRecord("c" * 32, "root", "q", "a", None, None, "OK", None, T0, T0 + 1, None, [], {})],
    )
    with store.transaction() as db:
        db.execute(text("UPDATE spans SET attributes = '{broken' WHERE span_id = 'x'"))
        db.execute(text("UPDATE spans SET attributes = '[1, 2]' WHERE span_id = 'z'"))
        db.execute(text("UPDATE spans SET start_time = NULL WHERE span_id = 'y'"))
    page = assert_inert(trace_html(store, "c" * 32))
    assert "2 span(s) have attributes that could not be read" in page.all_text
    for name in ("root", "loop-x", "loop-y", "Step 1"):
        assert name in page.all_text


def test_a_store_failure_is_a_sentence():
    class Broken:
        def get_trace(self, trace_id: str) -> None:
            raise StoreError("The store (postgres at db.internal) failed: timeout", "timeout")

    html_out = trace_html(Broken(), TRACE)  # type: ignore[arg-type]
    assert "The store could not be read (timeout)" in html_out and "db.internal" not in html_out


def test_langfuse_links_and_costs():
    assert (
        langfuse_trace_url("https://cloud.langfuse.com", TRACE) == f"https://cloud.langfuse.com/trace/{TRACE}"
    )
    assert (
        langfuse_trace_url("http://localhost:3000/", TRACE.upper()) == f"http://localhost:3000/trace/{TRACE}"
    )
    assert langfuse_trace_url("javascript:alert(1)//", TRACE) is None
    assert langfuse_trace_url("https://cloud.langfuse.com", "../admin") is None
    assert [format_cost(v) for v in (None, 0, 0.0012, 1.5, "x", float("nan"))] == [
        "unknown", "$0", "$0.0012", "$1.5000", "unknown", "unknown"
    ]  # fmt: skip


# ----- the charts' numbers -------------------------------------------------------------------

PER_DAY = [
    {"day": "2024-06-01", "model": "m-a", "turns": 4, "errors": 1, "likes": 3, "dislikes": 1, "tokens": 400,
     "cost": 0.004, "cost_per_turn": 0.001, "cost_unknown_turns": 0, "latency_p50_ms": 900.0, "latency_p95_ms": 2000.0},
    {"day": "2024-06-01", "model": None, "turns": 1, "errors": 0, "likes": 0, "dislikes": 0, "tokens": 50,
     "cost": None, "cost_per_turn": None, "cost_unknown_turns": 1, "latency_p50_ms": None, "latency_p95_ms": None},
    {"day": "2024-06-02", "model": "m-a", "turns": 2, "errors": 0, "likes": 0, "dislikes": 2, "tokens": 300,
     "cost": 0.0, "cost_per_turn": 0.0, "cost_unknown_turns": 0, "latency_p50_ms": 1000.0, "latency_p95_ms": 1500.0},
]  # fmt: skip


def rows(frame: pd.DataFrame, columns: list[str] | None = None) -> list[list[Any]]:
    """A chart's table as plain rows, its day axis (dates) written as text."""
    frame = frame[columns] if columns else frame.copy()
    if "day" in frame.columns:
        assert pd.api.types.is_datetime64_any_dtype(frame["day"])  # a time axis in the plot
        frame = frame.assign(day=frame["day"].dt.strftime("%Y-%m-%d"))
    return frame.values.tolist()


def test_chart_frames_from_known_figures():
    turns = charts.turns_per_day(PER_DAY)
    assert rows(turns) == [
        ["2024-06-01", "m-a", 4],
        ["2024-06-01", "unknown model", 1],
        ["2024-06-02", "m-a", 2],
    ]
    likes = charts.like_rate_per_day(PER_DAY)
    day1 = likes[likes.day == "2024-06-01"].set_index("series")
    assert day1.loc["like rate", "percent"] == 75.0 and day1.loc["like rate", "ratings"] == 4
    # Wilson 95% for 3 of 4: 30.06% to 95.44%.
    assert (day1.loc["95% low", "percent"], day1.loc["95% high", "percent"]) == (30.06, 95.44)
    assert likes[likes.day == "2024-06-02"].set_index("series").loc["like rate", "percent"] == 0.0
    errors = charts.error_rate_per_day(PER_DAY)
    assert rows(errors) == [["2024-06-01", 20.0, 5], ["2024-06-02", 0.0, 2]]
    latency = charts.latency_per_day(PER_DAY)
    assert rows(latency) == [
        ["2024-06-01", "m-a p50", 900.0], ["2024-06-01", "m-a p95", 2000.0],
        ["2024-06-02", "m-a p50", 1000.0], ["2024-06-02", "m-a p95", 1500.0],
    ]  # fmt: skip
    tokens = charts.tokens_per_day(PER_DAY)
    assert tokens["tokens"].tolist() == [400, 50, 300] and tokens["per turn"].tolist() == [100.0, 50.0, 150.0]
    # Unknown cost: no bar at all (a zero bar would say "free"); a known $0 is a bar.
    cost = charts.cost_per_day(PER_DAY)
    assert rows(cost, ["day", "model", "usd"]) == [
        ["2024-06-01", "m-a", 0.004],
        ["2024-06-02", "m-a", 0.0],
    ]
    reasons = charts.dislike_reasons([{"reason": REASON, "count": 2}])
    assert reasons.values.tolist() == [[REASON, 2]]
    means = charts.evaluator_means(
        [{"day": "2024-06-01", "evaluator": "helpfulness", "mean": 0.123456, "n": 3}]
    )
    assert rows(means) == [["2024-06-01", "helpfulness", 0.1235, 3]]


def test_headline_says_unknown_never_zero():
    totals = {
        "turns": 7, "ratings": 6, "like_rate": 0.5, "like_rate_low": 0.188, "like_rate_high": 0.812,
        "error_rate": 1 / 7, "latency_p50_ms": 950.0, "latency_p95_ms": 12_000.0, "tokens": 750,
        "tokens_per_turn": 750 / 7, "cost": 0.004, "cost_per_turn": 0.004 / 6, "cost_known_turns": 6,
        "cost_unknown_turns": 1, "outbox_waiting": 9, "ratings_waiting": 2, "judge_scores_waiting": 7,
        "eval_backlog": 5,
    }  # fmt: skip
    text_ = charts.headline(totals, langfuse=True)
    assert "**7** turns" in text_ and "50.0% (95% interval 18.8% to 81.2%) from 6 ratings" in text_
    assert "errors **14.3%**" in text_ and "p50 **950 ms**" in text_ and "p95 **12.0 s**" in text_
    assert "$0.004 for 6 turns + unknown for 1" in text_ and "ratings **2 waiting for Langfuse**" in text_
    assert "judge and check scores **7 waiting**" in text_  # apart from people's ratings (issue 22)
    assert "evaluation backlog **5**" in text_
    none_known = charts.headline(
        {**totals, "cost": None, "cost_per_turn": None, "cost_known_turns": 0, "cost_unknown_turns": 7},
        langfuse=False,
    )
    assert "unknown (7 turns without a price)" in none_known and "per turn **unknown**" in none_known
    assert "$0" not in none_known and "Langfuse off" in none_known
    assert "no ratings yet" in charts.headline({"turns": 0}, langfuse=False)


def test_chart_numbers_through_the_queries(store):
    """Two days of turns written through the store: what each chart gets from dashboard.queries."""
    day = 86400.0
    starts = [T0 + 3600, T0 + 7200, T0 + day + 3600]
    for n, start in enumerate(starts):
        trace_id = f"{n:032d}"
        store.write_spans(
            [span("r", None, "Smolagent-Trace", None, start - T0, start - T0 + 1.0 + n, trace_id=trace_id)],
            [TraceRecord(trace_id, "Smolagent-Trace", f"question {n}", f"answer {n}", "u", "s", "ERROR" if n == 1 else "OK",
                         None, start, start + 1.0 + n, "m-a", ["smolagents-chat"], {})],
        )  # fmt: skip
        with store.transaction() as db:
            db.execute(
                text(
                    "UPDATE traces SET cost = :c, prompt_tokens = 100, completion_tokens = 10 WHERE id = :id"
                ),
                {"c": None if n == 2 else 0.5, "id": trace_id},
            )
        store.upsert_score(
            score_id=score_id_for(trace_id), trace_id=trace_id, name=SCORE_NAME, value=float(n != 1),
            data_type="BOOLEAN", source="user", reason="Incorrect" if n == 1 else None,
        )  # fmt: skip
    figures = overview(store, Filters(since=T0, until=T0 + 2 * day))
    assert rows(charts.turns_per_day(figures["per_day"])) == [
        ["2024-06-01", "m-a", 2],
        ["2024-06-02", "m-a", 1],
    ]
    assert rows(charts.error_rate_per_day(figures["per_day"])) == [
        ["2024-06-01", 50.0, 2],
        ["2024-06-02", 0.0, 1],
    ]
    likes = {(d, series): p for d, series, p, _n in rows(charts.like_rate_per_day(figures["per_day"]))}
    assert likes[("2024-06-01", "like rate")] == 50.0 and likes[("2024-06-02", "like rate")] == 100.0
    assert rows(charts.cost_per_day(figures["per_day"]), ["day", "usd"]) == [["2024-06-01", 1.0]]
    assert charts.dislike_reasons(figures["dislike_reasons"]).values.tolist() == [["Incorrect", 1]]
    latency = charts.latency_per_day(figures["per_day"]).set_index("series")["ms"]
    assert latency["m-a p95"].tolist() == [2000.0, 3000.0]
    table, ids = charts.worst_frame(worst_answers(store, Filters(since=T0, until=T0 + 2 * day), 10))
    assert (
        ids == [f"{1:032d}"]
        and table.loc[0, "Question"] == "question 1"
        and table.loc[0, "Rating"] == "disliked"
    )
    assert "$1.00 for 2 turns + unknown for 1" in charts.headline(figures["totals"], langfuse=False)


# ----- the handlers, called as Gradio calls them ----------------------------------------------


def owner_request() -> Any:
    from starlette.datastructures import Headers

    return SimpleNamespace(
        client=SimpleNamespace(host="127.0.0.1"), headers=Headers({"host": "127.0.0.1:7860"})
    )


@pytest.fixture
def handlers(tmp_path) -> DashboardHandlers:
    settings = settings_from_env({"DATA_DIR": str(tmp_path), "EVALUATORS_FILE": "off"})
    store = Store(settings.store_url)
    demo = dashboard_demo.build(store, now=T0 + 30 * 86400, turns=60, hostile=True)
    handlers = DashboardHandlers(
        store, settings, Access(settings, oauth_real=False), clock=lambda: T0 + 30 * 86400
    )
    handlers.demo = demo  # type: ignore[attr-defined]
    yield handlers
    store.close()


def test_refresh_fills_every_chart_and_the_table(handlers):
    out = handlers.refresh("Last 30 days", "(all)", "(all)", "(all)", "", None, owner_request(), None)
    assert out[0] == "Dashboard · the owner (on this machine)"
    plots = out[4:12]
    assert all(isinstance(p, pd.DataFrame) for p in plots)
    assert all(len(p) for p in plots), [len(p) for p in plots]
    table, ids = out[12], out[13]
    assert list(table.columns) == charts.WORST_COLUMNS and len(table) == len(ids) > 0
    assert set(ids) <= set(handlers.demo.disliked) | set(handlers.demo.traces)
    # A filter that matches nothing: empty charts and a sentence, not an error.
    empty = handlers.refresh(
        "Last 24 hours", "no-such-model", "(all)", "(all)", "", None, owner_request(), None
    )
    assert empty[3].startswith("Nothing to show") and all(len(p) == 0 for p in empty[4:12])
    # Hostile values from a client are ignored or refused politely.
    odd = handlers.refresh(["x"], {"a": 1}, 3, None, "s" * 10_000, None, owner_request(), None)
    assert odd[0].startswith("Dashboard")


def test_picking_a_row_opens_its_trace_and_odd_indexes_are_refused(handlers):
    ids = handlers.demo.hostile + handlers.demo.disliked[:3]
    page, trace_id, tabs = handlers.pick_worst(
        ids, None, SimpleNamespace(index=[0, 2]), owner_request(), None
    )
    assert trace_id == handlers.demo.hostile[0] and "tv-waterfall" in page and tabs is not None
    assert_inert(page)
    for index in ("0", [-1, 0], [len(ids), 0], [True, 0], None, [], [1.5, 0], [[0], 0]):
        page, trace_id, _ = handlers.pick_worst(
            ids, None, SimpleNamespace(index=index), owner_request(), None
        )
        assert trace_id == "" and "not in the table any more" in page, index
    # Somebody else: nothing, whatever the index.
    stranger = SimpleNamespace(client=SimpleNamespace(host="203.0.113.1"), headers={"host": "x"})
    page, trace_id, _ = handlers.pick_worst(ids, None, SimpleNamespace(index=[0, 0]), stranger, None)
    assert trace_id == "" and "is only for the app" in html.unescape(page)


def test_compare_runs_gives_the_clis_text_and_figure(handlers):
    from matplotlib.figure import Figure

    a, b = handlers.demo.runs
    text_, figure = handlers.compare_runs(a, b, None, owner_request(), None)
    assert text_.startswith(f"{a}: ") and "McNemar" in text_ and isinstance(figure, Figure)
    assert handlers.compare_runs(a, "nope", None, owner_request(), None) == (
        "No dataset run is named 'nope'.",
        None,
    )
    assert handlers.compare_runs(None, b, None, owner_request(), None) == ("Pick two runs to compare.", None)


def test_headline_says_evaluation_is_off_instead_of_a_growing_backlog():
    from dashboard import charts

    totals = {"turns": 3, "ratings": 0, "eval_backlog": 3, "outbox_waiting": 0}
    assert "evaluation **off**" in charts.headline(totals, langfuse=False, evaluation=False)
    assert "evaluation backlog **3**" in charts.headline(totals, langfuse=False, evaluation=True)
