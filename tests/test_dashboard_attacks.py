"""The owner-only dashboard attacked the way a visitor of a public Hugging Face Space would.

Anyone can open the app and call every Gradio endpoint (gradio_client, raw HTTP, by fn_index,
with any session_hash and any State value they like), and the store is full of text an
attacker wrote: questions, the model's answers, span names and attributes, dislike reasons,
comments, judge reasoning (and, to be safe, model names, tags, user ids and run names too).
Each probe below is a regression test; the module docstring of each section says what it tries.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import text
from starlette.datastructures import Headers

from agent.settings import settings_from_env
from dashboard import charts, queries
from dashboard.access import Access
from dashboard.ui import DashboardHandlers
from evals.jobs import eval_score_id
from feedback.store import SpanRecord, Store, TraceRecord
from feedback.votes import SCORE_NAME, score_id_for

PASSWORD = "correct horse battery staple"
NOW = time.time()
DAY = 86400.0

# ----- a store holding another user's conversation and hostile text ---------------------------

# The victim's conversation: none of this may ever reach someone who is not the owner.
SECRET = "victim-8c1f0e"
VICTIM_TRACE = "5e" * 16
VICTIM_USER = f"victim-user-{SECRET}"
VICTIM_SESSION = f"victim-session-{SECRET}"
VICTIM_RUN = f"victim-run-{SECRET}"
VICTIM_TEXTS = {
    "question": f"VICTIM-QUESTION {SECRET}: my card number is 4111 1111 1111 1111",
    "answer": f"VICTIM-ANSWER {SECRET}: noted",
    "reason": f"VICTIM-REASON {SECRET}",
    "comment": f"VICTIM-COMMENT {SECRET}",
    "reasoning": f"VICTIM-REASONING {SECRET}",
    "attribute": f"VICTIM-ATTRIBUTE {SECRET}",
}

# Unicode bidirectional embeddings, overrides and isolates: shown raw they reorder what the owner
# reads (an answer, the model's code, a score next to them), the Trojan Source trick.
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
PAYLOADS = [
    "<script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=2">',
    "[click](javascript:window.__pwned=3)",
    "![pixel](https://evil.example/pixel.png)",
    "<https://evil.example/autolink>",
    '<a href="javascript:window.__pwned=4">a</a>',
    "</style><style>*{display:none}</style>",
    '" style="background:url(https://evil.example/css)" x="',
    "' onmouseover='window.__pwned=5",
    "<!-- a comment --> -->",
    "$$\\href{javascript:alert(6)}{x}$$",
    '<iframe srcdoc="<script>parent.__pwned=7</script>"></iframe>',
    "<svg/onload=window.__pwned=8>",
    "</pre></div></td></tr></table></details></summary>",
    "{{7*7}} ${7*7}",
    "\u202eevil-reversed\u202c and \u2066isolated\u2069 0.1",
    "%_%' OR '1'='1",
]


def hostile(label: str) -> str:
    return f"HOSTILE-{label} " + " ".join(PAYLOADS)


HOSTILE_TRACE = "ba" * 16
HUGE_TRACE = "f0" * 16
HOSTILE_USER = hostile("user")
HOSTILE_SESSION = hostile("session")
HOSTILE_MODEL = hostile("model")
HOSTILE_TAG = hostile("tag")
HOSTILE_EVALUATOR = hostile("evaluator")
HOSTILE_RUNS = [
    "<img src=x onerror=alert(1)> run",
    "$\\sqrt{x$ mathtext $\\frac{",  # matplotlib reads $...$ in labels as math
    "%_ run ' OR 1=1 --",
    "\u202erun-reversed",
]
HUGE = 1_000_000  # characters of each huge field


def _span(trace: str, span_id: str, parent: str | None, name: str, kind: str | None, t: float, **kw: Any):
    return SpanRecord(
        trace_id=trace,
        span_id=span_id,
        parent_id=parent,
        name=name,
        kind=kind,
        start_time=t,
        end_time=t + kw.pop("duration", 0.5),
        status=kw.pop("status", "OK"),
        status_message=kw.pop("status_message", None),
        attributes=kw.pop("attributes", {}),
        **kw,
    )


def _turn(
    store: Store,
    trace_id: str,
    start: float,
    *,
    question: str,
    answer: str,
    user: str,
    session: str,
    model: str,
    tags: list[str],
    attribute: str,
    span_name: str,
    status_message: str,
    messages: int = 2,
) -> None:
    """One chat turn as the app records it: root > agent > step (LLM call, tool) > failed step."""
    llm_input = json.dumps({"messages": [{"role": "user", "content": attribute}] * messages})
    reply = json.dumps(
        {"role": "assistant", "content": f"Thought: {attribute}\n<code>\n{attribute}\n</code>"}
    )
    spans = [
        _span(trace_id, "r" + trace_id[:15], None, "Smolagent-Trace", None, start, duration=3.0,
              attributes={"input.value": question, "output.value": answer}),
        _span(trace_id, "a" + trace_id[:15], "r" + trace_id[:15], span_name, "AGENT", start + 0.01, duration=2.9),
        _span(trace_id, "s" + trace_id[:15], "a" + trace_id[:15], "Step 1", "CHAIN", start + 0.02,
              attributes={"output.value": f"Execution logs:\n{attribute}"}),
        _span(trace_id, "l" + trace_id[:15], "s" + trace_id[:15], span_name, "LLM", start + 0.03,
              attributes={"llm.model_name": model, "input.value": llm_input, "output.value": reply},
              prompt_tokens=10, completion_tokens=5, total_tokens=15),
        _span(trace_id, "t" + trace_id[:15], "s" + trace_id[:15], span_name, "TOOL", start + 0.4,
              attributes={"tool.name": span_name, "input.value": json.dumps({"args": [attribute]}),
                          "output.value": attribute}),
        _span(trace_id, "e" + trace_id[:15], "a" + trace_id[:15], "Step 2", "CHAIN", start + 1.0,
              status="ERROR", status_message=status_message),
    ]  # fmt: skip
    record = TraceRecord(
        id=trace_id, name="Smolagent-Trace", input=question, output=answer, user_id=user, session_id=session,
        status="ERROR", status_message=status_message, start_time=start, end_time=start + 3.0, model=model,
        tags=tags, metadata={},
    )  # fmt: skip
    store.write_spans(spans, [record])


def _rate_and_judge(
    store: Store,
    trace_id: str,
    session: str,
    user: str,
    *,
    reason: str,
    comment: str,
    evaluator: str,
    reasoning: str,
) -> None:
    store.upsert_score(
        score_id=score_id_for(trace_id), trace_id=trace_id, name=SCORE_NAME, value=0.0, data_type="BOOLEAN",
        source="user", session_id=session, user_id=user, reason=reason, note=comment,
    )  # fmt: skip
    judge_id = eval_score_id(evaluator, "v1", "turn", trace_id)
    store.upsert_score(
        score_id=judge_id, trace_id=trace_id, name=evaluator, value=0.1, data_type="NUMERIC", source="EVAL",
        session_id=session, user_id=user, note=reasoning, keep_note=False,
    )  # fmt: skip
    store.upsert_score(
        score_id=eval_score_id(evaluator, "v1", "verdict", trace_id), trace_id=trace_id, name=evaluator + " verdict",
        value=None, string_value=reasoning, data_type="CATEGORICAL", source="EVAL", session_id=session, user_id=user,
    )  # fmt: skip
    with store.transaction() as db:
        db.execute(
            text(
                """INSERT INTO eval_jobs (id, evaluator, version, kind, target_kind, target_id, revision, trigger,
                       status, created, finished, score_id, reasoning)
                   VALUES (:id, :e, 'v1', 'llm', 'turn', :t, '', 'new', 'completed', 1, 2, :s, :r)"""
            ),
            {"id": uuid.uuid4().hex, "e": evaluator, "t": trace_id, "s": judge_id, "r": reasoning},
        )


def _run(store: Store, name: str, created: float, answers: list[str]) -> None:
    with store.transaction() as db:
        db.execute(
            text(
                "INSERT INTO dataset_runs (name, dataset, model, created, updated) VALUES (:n, :n, :n, :t, :t)"
            ),
            {"n": name, "t": created},
        )
        for n, answer in enumerate(answers):
            db.execute(
                text(
                    """INSERT INTO dataset_results (run, item_id, input, expected, answer, strict, flexible,
                           has_number, error, latency_ms, created)
                       VALUES (:r, :i, :q, '42', :a, :s, :s, 1, NULL, 900, :t)"""
                ),
                {"r": name, "i": f"item-{n}", "q": name, "a": answer, "s": int(answer == "42"), "t": created},
            )


@dataclass
class Filled:
    traces: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)


def fill(store: Store, *, huge: bool = True, crowd: int = 0) -> Filled:
    """The victim's turn, a turn whose every field is hostile, a huge one, hostile run names,
    and `crowd` ordinary turns spread over 30 days (for timing)."""
    filled = Filled()
    _turn(
        store, VICTIM_TRACE, NOW - 7200, question=VICTIM_TEXTS["question"], answer=VICTIM_TEXTS["answer"],
        user=VICTIM_USER, session=VICTIM_SESSION, model="gpt-4o-mini", tags=["smolagents-chat"],
        attribute=VICTIM_TEXTS["attribute"], span_name="ChatAgent.run", status_message=f"boom {SECRET}",
    )  # fmt: skip
    _rate_and_judge(
        store, VICTIM_TRACE, VICTIM_SESSION, VICTIM_USER, reason=VICTIM_TEXTS["reason"],
        comment=VICTIM_TEXTS["comment"], evaluator="helpfulness", reasoning=VICTIM_TEXTS["reasoning"],
    )  # fmt: skip
    _turn(
        store, HOSTILE_TRACE, NOW - 3600, question=hostile("question"), answer=hostile("answer"),
        user=HOSTILE_USER, session=HOSTILE_SESSION, model=HOSTILE_MODEL, tags=["smolagents-chat", HOSTILE_TAG],
        attribute=hostile("attribute"), span_name=hostile("span"), status_message=hostile("status"),
    )  # fmt: skip
    _rate_and_judge(
        store, HOSTILE_TRACE, HOSTILE_SESSION, HOSTILE_USER, reason=hostile("reason")[:200],
        comment=hostile("comment"), evaluator=HOSTILE_EVALUATOR, reasoning=hostile("reasoning"),
    )  # fmt: skip
    filled.traces += [VICTIM_TRACE, HOSTILE_TRACE]
    if huge:
        big = "\u202e<b>" * (HUGE // 4)
        _turn(
            store, HUGE_TRACE, NOW - 1800, question=big, answer=big, user=big, session=big, model=big,
            tags=[big], attribute=big, span_name=big, status_message=big, messages=20,
        )  # fmt: skip
        _rate_and_judge(
            store, HUGE_TRACE, big, big, reason=big[:200], comment=big, evaluator=big[:2000], reasoning=big
        )
        filled.traces.append(HUGE_TRACE)
    records = []
    for n in range(crowd):
        trace_id = f"{n:032x}"
        start = NOW - 30 * DAY * (n + 1) / (crowd + 1)
        records.append(
            TraceRecord(
                id=trace_id, name="Smolagent-Trace", input=f"q{n}", output=f"a{n}", user_id=f"user-{n % 50}",
                session_id=f"s-{n % 300}", status="ERROR" if n % 17 == 0 else "OK", status_message=None,
                start_time=start, end_time=start + 1 + n % 5, model=["m1", "m2", "m3"][n % 3],
                tags=["smolagents-chat", f"t{n % 7}"], metadata={},
            )
        )  # fmt: skip
        filled.traces.append(trace_id)
    for start in range(0, len(records), 500):
        store.write_spans([], records[start : start + 500])
    for n in range(0, crowd, 10):
        store.upsert_score(
            score_id=score_id_for(f"{n:032x}"), trace_id=f"{n:032x}", name=SCORE_NAME, value=float(n % 20 == 0),
            data_type="BOOLEAN", source="user", session_id=f"s-{n % 300}", user_id=f"user-{n % 50}",
            reason="Incorrect", note="c",
        )  # fmt: skip
    for n, name in enumerate([VICTIM_RUN, *HOSTILE_RUNS]):
        _run(store, name, NOW - DAY * (n + 1), ["42", "41", "42"] if n % 2 else ["41", "41", "42"])
        filled.runs.append(name)
    return filled


# ----- what may come out ------------------------------------------------------------------------

# What the trace viewer writes itself (tests/test_dashboard_view.py holds it to the same list).
ALLOWED_TAGS = {"style", "div", "span", "pre", "table", "tr", "td", "th", "details", "summary", "b", "code",
                "h3", "p", "a"}  # fmt: skip
ALLOWED_ATTRIBUTES = {"class", "style", "id", "title", "href", "target", "rel", "data-status", "open"}
STYLE = re.compile(r"^(padding-left:\d+px|left:[\d.]+%;width:[\d.]+%)$")
# The page may be large for a trace full of long texts, never as large as the texts.
MAX_TRACE_PAGE = 3_000_000


class Page(HTMLParser):
    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.comments: list[str] = []
        self.feed(source)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)


def assert_no_bidi(value: str, where: str) -> None:
    found = sorted({f"U+{ord(c):04X}" for c in value if c in BIDI})
    assert not found, f"raw bidirectional controls {found} reach {where}"


def assert_inert_html(source: str, where: str = "the trace page") -> Page:
    """Only the viewer's own tags and attributes, numeric styles, https links, no comment."""
    page = Page(source)
    assert not page.comments, page.comments[:1]
    for tag, attrs in page.tags:
        assert tag in ALLOWED_TAGS, (where, tag)
        for name, value in attrs.items():
            assert name in ALLOWED_ATTRIBUTES, (where, tag, name)
            if name == "style":
                assert STYLE.match(value or ""), (where, value)
            if name == "href":
                assert (value or "").startswith("https://"), (where, value)
    # A <style> element is the viewer's own stylesheet, once, first.
    assert source.lower().count("<style") == 1 and source.lower().count("</style") == 1, where
    assert_no_bidi(source, where)
    return page


# Gradio's Markdown renders HTML, links, images and $$...$$ (its default LaTeX delimiters).
MARKDOWN_SPECIALS = re.compile(r"[<>\[\]!`\\]|\$\$")


def assert_plain_markdown(value: Any, where: str) -> None:
    """What goes into a gr.Markdown: nothing a user wrote, nothing Markdown or HTML would act on."""
    assert isinstance(value, str), where
    assert "HOSTILE" not in value and SECRET not in value, where
    assert not MARKDOWN_SPECIALS.search(value), (where, value)


def assert_cells_inert(frame: pd.DataFrame, where: str) -> None:
    """Table cells are shown as text by Gradio (datatype "str"); still: short and no bidi."""
    for row in frame.itertuples(index=False):
        for cell in row:
            if isinstance(cell, str):
                assert len(cell) <= charts.CELL_CHARS, (where, len(cell))
                assert_no_bidi(cell, where)


def owner_request() -> Any:
    return SimpleNamespace(
        client=SimpleNamespace(host="127.0.0.1"), headers=Headers({"host": "127.0.0.1:7860"})
    )


def stranger_request() -> Any:
    return SimpleNamespace(
        client=SimpleNamespace(host="203.0.113.9"), headers=Headers({"host": "app.hf.space"})
    )


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Filled, Any]]:
    """One SQLite store for the handler-level probes (filled once: the huge turn takes a while)."""
    folder = tmp_path_factory.mktemp("attacks")
    settings = settings_from_env({"DATA_DIR": str(folder), "EVALUATORS_FILE": "off"})
    store = Store(settings.store_url)
    filled = fill(store, crowd=3000)
    yield store, filled, settings
    store.close()


@pytest.fixture
def owner_handlers(hostile_store) -> DashboardHandlers:
    store, _filled, settings = hostile_store
    return DashboardHandlers(store, settings, Access(settings, oauth_real=False))


REFRESH_ALL = ("Last 30 days", "(all)", "(all)", "(all)", "")


# ----- stored XSS: every dashboard output, rendered from hostile rows ---------------------------


def test_every_overview_output_is_inert(owner_handlers):
    """Headline (Markdown), the eight charts' frames, the worst-answers table, the runs table and
    the dropdown choices, from a store whose every text field is hostile."""
    out = owner_handlers.refresh(*REFRESH_ALL, None, owner_request(), None)
    assert out[0].startswith("Dashboard · the owner"), out[0]
    assert_plain_markdown(out[0], "the gate")
    assert_plain_markdown(out[3], "the headline")
    for n, frame in enumerate(out[4:12]):
        assert isinstance(frame, pd.DataFrame), n
        assert_cells_inert(frame, f"chart {n}")
    worst, ids = out[12], out[13]
    assert HOSTILE_TRACE in ids and VICTIM_TRACE in ids, "the hostile and victim turns are disliked"
    assert_cells_inert(worst, "worst answers")
    shown = " ".join(str(c) for c in worst.to_numpy().ravel())
    assert "<script>window.__pwned=1</script>" in shown, "injections are shown as text, not dropped"
    runs = out[17]
    assert_cells_inert(runs, "dataset runs")
    for update in out[14:17] + out[18:]:
        for choice in update.get("choices") or []:
            label = choice[0] if isinstance(choice, tuple | list) else choice
            assert len(str(label)) <= queries.FILTER_TEXT_LIMIT
            assert_no_bidi(str(label), "a dropdown")


@pytest.mark.parametrize("trace_id", [HOSTILE_TRACE, VICTIM_TRACE, HUGE_TRACE])
def test_the_trace_page_is_inert_and_bounded(owner_handlers, trace_id):
    page_html = owner_handlers.open_trace(trace_id, None, owner_request(), None)
    assert len(page_html) < MAX_TRACE_PAGE, len(page_html)
    page = assert_inert_html(page_html)
    shown = "".join(page.text)
    assert "tv-waterfall" in page_html, page_html[:500]
    if trace_id == HOSTILE_TRACE:
        for label in ("question", "answer", "attribute", "span", "status", "comment", "reasoning", "model"):
            assert f"HOSTILE-{label} <script>window.__pwned=1</script>" in shown, label


# ----- the trace viewer, the filters and the run comparison with hostile input -----------------

HOSTILE_IDS = [
    "../../../../etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "' OR '1'='1",
    "5e5e5e5e' OR 1=1 --",
    "%",
    "_" * 32,
    "5e" * 15 + "%",
    ("5e" * 16).upper(),
    "5e" * 16 + "\x00",
    "\x00",
    "\u202e" + "5e" * 16,
    "<script>alert(1)</script>",
    "a" * 10_000_000,
    "🙂" * 100,
    "\ud800",
]


def test_hostile_trace_ids_get_a_sentence_and_no_other_trace(owner_handlers):
    for trace_id in HOSTILE_IDS:
        started = time.perf_counter()
        page = owner_handlers.open_trace(trace_id, None, owner_request(), None)
        assert time.perf_counter() - started < 1.0, trace_id[:40]
        parsed = assert_inert_html(page, f"the page for {trace_id[:40]!r}")
        shown = "".join(parsed.text)
        assert "tv-waterfall" not in page and SECRET not in shown, trace_id[:40]
        assert "No trace with the id" in shown or "That is not a trace id" in shown, shown[-300:]
        assert len(page) < 10_000, len(page)
    for odd in (None, 42, ["5e" * 16], {"id": "5e" * 16}, b"5e", 1e308):
        page = owner_handlers.open_trace(odd, None, owner_request(), None)
        assert "Pick an answer" in page and SECRET not in page


def _ids(out: list[Any]) -> list[str]:
    return list(out[13])


@pytest.mark.parametrize(
    "model, user, tag, session",
    [
        ("%", "(all)", "(all)", ""),
        ("_%", "(all)", "(all)", ""),
        ("(all)", "%", "(all)", ""),
        ("(all)", "victim-user-%", "(all)", ""),
        ("(all)", "victim_user_victim_8c1f0e", "(all)", ""),
        ("(all)", "(all)", "%", ""),
        ("(all)", "(all)", "smolagents%", ""),
        ("(all)", "(all)", 'smolagents-chat", "', ""),
        ("(all)", "(all)", "t_", ""),
        ("(all)", "(all)", "(all)", "%"),
        ("(all)", "(all)", "(all)", "victim-session-%"),
        ("(all)", "(all)", "(all)", "' OR '1'='1"),
        ("(all)", "(all)", "(all)", VICTIM_SESSION + "x" * 1000),
        ("(all)", VICTIM_USER + "x" * 10_000_000, "(all)", ""),
        ("m1" + "\x00", "(all)", "(all)", ""),
    ],
)
def test_filters_with_wildcards_or_huge_values_match_nothing(owner_handlers, model, user, tag, session):
    """A filter is a value, never a pattern: %, _, quotes, a prefix or a longer value match nothing."""
    started = time.perf_counter()
    out = owner_handlers.refresh("Last 30 days", model, user, tag, session, None, owner_request(), None)
    elapsed = time.perf_counter() - started
    assert out[0].startswith("Dashboard · "), out[0]
    assert _ids(out) == [], _ids(out)
    assert out[3].startswith("Nothing to show"), out[3]
    assert all(len(frame) == 0 for frame in out[4:12])
    # 3,000 turns: a hostile filter costs no more than an ordinary refresh (about 0.1 s here).
    assert elapsed < 2.0, elapsed


def test_a_filter_longer_than_the_limit_does_not_match_a_value_it_starts_with(hostile_store):
    """Cutting a long filter to FILTER_TEXT_LIMIT made it match another user whose id is that cut."""
    store, _filled, _settings = hostile_store
    long_user = "u" * queries.FILTER_TEXT_LIMIT
    since, until = NOW - 40 * DAY, NOW + 60
    exact = queries.Filters(since, until, user_id=long_user)
    longer = queries.Filters(since, until, user_id=long_user + "-someone-else")
    with _extra_turn(store, long_user):
        assert queries.overview(store, exact)["totals"]["turns"] == 1
        assert queries.overview(store, longer)["totals"]["turns"] == 0
        assert queries.worst_answers(store, longer) == []


@contextmanager
def _extra_turn(store: Store, user: str) -> Iterator[str]:
    trace_id = uuid.uuid4().hex
    record = TraceRecord(
        id=trace_id, name="Smolagent-Trace", input="q", output="a", user_id=user, session_id=user,
        status="OK", status_message=None, start_time=NOW - 60, end_time=NOW - 59, model="m1",
        tags=["smolagents-chat"], metadata={},
    )  # fmt: skip
    store.write_spans([], [record])
    store.upsert_score(
        score_id=score_id_for(trace_id), trace_id=trace_id, name=SCORE_NAME, value=0.0,
        data_type="BOOLEAN", source="user", session_id=user, user_id=user,
    )  # fmt: skip
    try:
        yield trace_id
    finally:
        with store.transaction() as db:
            db.execute(text("DELETE FROM scores WHERE trace_id = :t"), {"t": trace_id})
            db.execute(text("DELETE FROM traces WHERE id = :t"), {"t": trace_id})


def test_worst_answers_limit_is_bounded(hostile_store):
    store, _filled, _settings = hostile_store
    every = queries.Filters(NOW - 40 * DAY, NOW + 60)
    started = time.perf_counter()
    assert len(queries.worst_answers(store, every, limit=10**12)) <= queries.WORST_LIMIT
    assert time.perf_counter() - started < 2.0
    assert len(queries.worst_answers(store, every, limit=10)) == 10
    assert len(queries.worst_answers(store, every, limit=-(10**12))) == 1
    for odd in (True, 1.5, "10", None, float("inf")):
        with pytest.raises(ValueError, match="whole number"):
            queries.worst_answers(store, every, limit=odd)  # type: ignore[arg-type]


def test_run_comparison_with_hostile_run_names(owner_handlers):
    """Names with HTML, $...$ (matplotlib reads them as math: "$$" fails to draw and "${{{...$"
    recursed without end), quotes, wildcards and bidi controls; the chart is drawn as Gradio does."""
    import gradio as gr

    hostile_names = [*HOSTILE_RUNS, "$$", "$\\sqrt{x$", "$" + "{" * 150 + "$"]
    for name in hostile_names[len(HOSTILE_RUNS) :]:
        _run(owner_handlers.store, name, NOW - 3 * DAY, ["42"])
    try:
        for name in hostile_names:
            comparison, figure = owner_handlers.compare_runs(VICTIM_RUN, name, None, owner_request(), None)
            assert comparison.startswith(f"{VICTIM_RUN}: "), comparison[:200]
            assert_no_bidi(comparison, "the comparison text")
            gr.Plot().postprocess(figure)  # the PNG Gradio sends: must not raise
        for name in ("%", "_" * 10, "victim-run-%", VICTIM_RUN + "x" * 10_000_000):
            assert owner_handlers.compare_runs(name, VICTIM_RUN, None, owner_request(), None) == (
                f"No dataset run is named {name[:200]!r}.",
                None,
            )
    finally:
        with owner_handlers.store.transaction() as db:
            for name in hostile_names[len(HOSTILE_RUNS) :]:
                db.execute(text("DELETE FROM dataset_results WHERE run = :n"), {"n": name})
                db.execute(text("DELETE FROM dataset_runs WHERE name = :n"), {"n": name})
