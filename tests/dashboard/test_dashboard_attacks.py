"""The owner-only dashboard attacked the way a visitor of a public Hugging Face Space would.

Anyone can open the app and call every Gradio endpoint (gradio_client, raw HTTP, by fn_index,
with any session_hash and any State value they like), and the store is full of text an
attacker wrote: questions, the model's answers, span names and attributes, dislike reasons,
comments, judge reasoning (and, to be safe, model names, tags, user ids and run names too).
Each probe is a regression test; its docstring says what it tries and, where it found a
weakness, what was wrong before the fix in dashboard/. The one known hole that dashboard/
cannot close (a stolen session_hash) is a strict xfail with the reason.
"""

from __future__ import annotations

import json
import re
import threading
import time
import unicodedata
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from types import SimpleNamespace
from typing import Any

import httpx
import pandas as pd
import pytest
from sqlalchemy import text
from starlette.datastructures import Headers

from config.settings import settings_from_env
from dashboard import charts, queries, ui
from dashboard.access import MAX_PASSWORD_CHARS, Access, PasswordGate
from dashboard.trace_view import trace_html
from dashboard.ui import DashboardHandlers
from evals.jobs import eval_score_id
from feedback.store import SpanRecord, Store, TraceRecord
from feedback.votes import SCORE_NAME, score_id_for
from tests.gradio_queue import QueueClient
from tests.helpers import serve

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

# What the trace viewer writes itself (tests/dashboard/test_dashboard_view.py holds it to the same list).
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
    the dropdown choices, from a store whose every text field is hostile. Found: bidirectional
    controls reached table cells, chart labels and dropdowns raw (now visible marks)."""
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
    # The judges' panel (the output before the filters bar): HTML of our own tags only.
    assert "dash-judges" in out[-2]["value"]
    assert_inert_html(out[-2]["value"])


@pytest.mark.parametrize("trace_id", [HOSTILE_TRACE, VICTIM_TRACE, HUGE_TRACE])
def test_the_trace_page_is_inert_and_bounded(owner_handlers, trace_id):
    """Only the viewer's own tags, attributes and numeric styles; injections shown as text.
    Found: bidirectional controls were shown raw (the model's code, a summary's numbers could
    read reversed), and span, model, user, session, tag and score names were never cut: a trace
    with 1 MB fields gave a 39 MB page (now 2.5 MB, most of it 20 LLM messages of 20,000)."""
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
    """Traversal, SQL, wildcards, case, NUL, bidi, HTML, 10 MB, emoji, a lone surrogate: each a
    sentence, never another trace. Found: the lone surrogate raised UnicodeEncodeError."""
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


# ----- the live app, played as a public deployment ---------------------------------------------


@contextmanager
def live_app(make_settings, make_runtime, **env: str) -> Iterator[str]:
    """The real app (tests.helpers.serve) over a store holding the victim's and hostile turns."""
    runtime = make_runtime(make_settings(**env))
    fill(runtime.feedback.store, huge=False)
    with serve(runtime) as url:
        yield url


LEAKS = [SECRET, VICTIM_TRACE, "HOSTILE-", "4111 1111"]
# What only the store holds (a caller's own inputs may name the victim's ids, and come back).
STORED = [*(t.split(" ", 1)[0] for t in VICTIM_TEXTS.values()), "HOSTILE-", "4111 1111", "tv-waterfall"]


def assert_nothing_leaks(output: Any, where: str, leaks: list[str] = LEAKS) -> None:
    body = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
    for leak in leaks:
        assert leak not in body, (where, leak, body[:300])


class Raw:
    """Every way Gradio offers to run a handler, for one session_hash and one set of headers."""

    def __init__(self, url: str, session_hash: str | None = None, headers: dict[str, str] | None = None):
        self.url = url.rstrip("/")
        self.headers = headers or {}
        self.queue = QueueClient(url, session_hash=session_hash)
        self.queue.http.headers.update(self.headers)
        self.session_hash = self.queue.session_hash
        self.http = httpx.Client(timeout=30, headers=self.headers)
        config = self.http.get(f"{self.url}/config").json()
        self.config = config
        self.components = {c["id"]: c for c in config["components"]}
        self.deps = {d["id"]: d for d in config["dependencies"]}

    def close(self) -> None:
        self.queue.close()
        self.http.close()

    def fn(self, api_name: str) -> int:
        return next(d["id"] for d in self.deps.values() if d.get("api_name") == api_name)

    def via_queue(self, fn: int, data: list[Any], event_data: Any = None) -> Any:
        dep = self.deps[fn]
        trigger = dep["targets"][0][0] if dep["targets"] else None
        return self.queue.call(fn, data, event_data, trigger_id=trigger).message

    def via_predict(self, fn: int, data: list[Any], event_data: Any = None) -> Any:
        body = {"fn_index": fn, "data": data, "session_hash": self.session_hash, "event_data": event_data}
        return self.http.post(f"{self.url}/gradio_api/run/predict", json=body).text

    def via_run(self, api_name: str, data: list[Any]) -> Any:
        body = {"data": data, "session_hash": self.session_hash}
        return self.http.post(f"{self.url}/gradio_api/run/{api_name}", json=body).text

    def via_call(self, api_name: str, data: list[Any]) -> Any:
        posted = self.http.post(f"{self.url}/gradio_api/call/{api_name}", json={"data": data})
        try:
            event_id = posted.json()["event_id"]
        except (ValueError, KeyError):
            return posted.text
        return self.http.get(f"{self.url}/gradio_api/call/{api_name}/{event_id}").text

    def via_call_v2(self, api_name: str, data: list[Any]) -> Any:
        """The named-parameter route: it finds an endpoint in /gradio_api/info (never a hidden one)."""
        return self.http.post(f"{self.url}/gradio_api/call/v2/{api_name}", json={"data": data}).text

    def every_way(self, fn: int, data: list[Any], event_data: Any = None) -> list[tuple[str, Any]]:
        name = self.deps[fn].get("api_name") or ""
        return [
            ("queue", self.via_queue(fn, data, event_data)),
            ("run/predict", self.via_predict(fn, data, event_data)),
            ("run/", self.via_run(name, data)),
            ("call/", self.via_call(name, data)),
            ("call/v2/", self.via_call_v2(name, data)),
        ]


def _hostile_inputs(raw: Raw, dep: dict[str, Any]) -> list[Any]:
    """What an attacker sends: the victim's trace, user, session and run, a wrong password."""
    values = []
    for component_id in dep["inputs"]:
        component = raw.components[component_id]
        props = component.get("props", {})
        by_elem = {
            "dash-password": "a wrong guess",
            "dash-trace-id": VICTIM_TRACE,
            "dash-run-a": VICTIM_RUN,
            "dash-run-b": HOSTILE_RUNS[0],
            "dash-range": "Last 90 days",
            "msg": "hello",
            "comment": "a comment",
        }
        by_label = {"User": VICTIM_USER, "Session id": VICTIM_SESSION, "Model": "gpt-4o-mini", "Tag": "%"}
        if props.get("elem_id") in by_elem:
            values.append(by_elem[props["elem_id"]])
        elif props.get("label") in by_label:
            values.append(by_label[props["label"]])
        elif component["type"] == "state":
            values.append(None)
        else:
            values.append(props.get("value"))
    return values


@pytest.mark.parametrize(
    "env",
    [{"SPACE_ID": "someone/space", "ADMIN_PASSWORD": PASSWORD}, {"GRADIO_SERVER_NAME": "0.0.0.0"}],
    ids=["space", "exposed"],
)
def test_every_endpoint_by_every_route_gives_a_stranger_nothing(make_settings, make_runtime, env):
    """Each dependency of /config (the hidden dashboard ones too) by fn_index over the queue and
    /run/predict, by name over /run/ and /call/, with the victim's ids as inputs; the endpoints
    of /gradio_api/info through gradio_client; then the pages and configs a stranger can read."""
    from gradio_client import Client

    with live_app(make_settings, make_runtime, **env) as url:
        raw = Raw(url)
        info = raw.http.get(f"{url}gradio_api/info").json()
        public = set(info["named_endpoints"])
        assert public and not public & {
            f"/{d.get('api_name')}" for d in raw.deps.values() if d.get("api_visibility") == "private"
        }
        hidden = [d for d in raw.deps.values() if d.get("api_visibility") == "private"]
        assert {"refresh", "open_trace", "pick_worst", "compare_runs", "sign_in", "link"} <= {
            d.get("api_name") for d in hidden
        }
        for dep in raw.deps.values():
            event = (
                {"index": [0, 0], "value": "x", "row_value": [VICTIM_TRACE]}
                if "select" in str(dep["targets"])
                else None
            )
            for route, output in raw.every_way(dep["id"], _hostile_inputs(raw, dep), event):
                assert_nothing_leaks(output, f"{dep.get('api_name')} via {route}")
                if dep.get("api_name") in ("refresh", "open_trace", "compare_runs") and route == "queue":
                    assert "is only for the app" in json.dumps(output), (dep.get("api_name"), output)
        client = Client(url, verbose=False)
        for name in sorted(public):
            if name.startswith("/on_load"):
                output = client.predict(raw.session_hash, api_name=name)
            elif name == "/respond":
                output = client.predict("hello", [], raw.session_hash, api_name=name)
            elif name.startswith("/on_comment"):
                output = client.predict("a comment", api_name=name)
            elif name.startswith("/on_new_chat"):
                output = client.predict(raw.session_hash, api_name=name)
            else:
                continue  # the vote needs event data (gradio_client cannot send it): sent above
            assert_nothing_leaks(output, f"{name} via gradio_client")
        # Where stored text is shown, it is shown as text: tables of "str" cells (not "markdown" or
        # "html"), sanitized Markdown for the sentences, a plain Textbox for the comparison.
        kinds = {c["props"].get("elem_id"): c for c in raw.components.values() if "props" in c}
        for table in ("dash-worst", "dash-runs"):
            assert kinds[table]["type"] == "dataframe" and kinds[table]["props"]["datatype"] == "str", table
        for markdown in ("dash-gate", "dash-headline", "dash-login-note"):
            assert kinds[markdown]["props"]["sanitize_html"] is True, markdown
        assert kinds["dash-comparison"]["type"] == "textbox"
        # What a stranger can read without calling anything, and the session the probes used.
        for path in ("config", "config?deep_link=x", "gradio_api/info", "gradio_api/openapi.json",
                     "dashboard", "", "gradio_api/startup-events"):  # fmt: skip
            assert_nothing_leaks(raw.http.get(f"{url}{path}").text, path)
        link = raw.http.get(f"{url}gradio_api/deep_link", params={"session_hash": raw.session_hash}).json()
        own = raw.http.get(f"{url}config", params={"deep_link": link}).text
        assert_nothing_leaks(own, "own deep link", STORED)
        # Gradio's traffic monitor: its key goes to the server's console, never to the caller,
        # and its summary names no session.
        assert "/monitoring/" not in raw.http.get(f"{url}monitoring").text
        summary = raw.http.get(f"{url}monitoring/summary").text
        assert raw.session_hash not in summary
        assert_nothing_leaks(summary, "monitoring summary")
        raw.close()


FORGED_GRANTS = [
    {"expires_at": 1e12, "client": "127.0.0.1"},
    "Grant(...)",
    ["Grant", 1e12],
    True,
    1,
    "x" * 100_000,
    {"__type__": "update", "value": {"expires_at": 1e12}},
]


def test_a_forged_state_value_is_no_grant(make_settings, make_runtime):
    """The grant lives in a gr.State, which only the server writes: what a caller sends in its
    place is not used (and a dict or a string would never pass PasswordGate.valid anyway)."""
    with live_app(make_settings, make_runtime, SPACE_ID="someone/space", ADMIN_PASSWORD=PASSWORD) as url:
        raw = Raw(url)
        refresh, trace, compare = raw.fn("refresh"), raw.fn("open_trace"), raw.fn("compare_runs")
        for forged in FORGED_GRANTS:
            for fn, data in (
                (refresh, ["Last 90 days", "(all)", VICTIM_USER, "(all)", "", forged]),
                (trace, [VICTIM_TRACE, forged]),
                (compare, [VICTIM_RUN, HOSTILE_RUNS[0], forged]),
            ):
                for route, output in (
                    ("queue", raw.via_queue(fn, data)),
                    ("run/predict", raw.via_predict(fn, data)),
                ):
                    assert_nothing_leaks(
                        output, f"{raw.deps[fn]['api_name']} via {route} with {str(forged)[:30]}"
                    )
                    assert "is only for the app" in json.dumps(output)
        # A forged list of trace ids for the worst-answers table: the server's own State is used.
        pick = raw.fn("pick_worst")
        event = {"index": [0, 0], "value": "x", "row_value": [VICTIM_TRACE]}
        assert_nothing_leaks(raw.via_queue(pick, [[VICTIM_TRACE], {"expires_at": 1e12}], event), "pick_worst")
        raw.close()


def _refresh_data() -> list[Any]:
    return ["Last 90 days", "(all)", "(all)", "(all)", "", None]


def _shows_the_victim(output: Any) -> bool:
    return VICTIM_TEXTS["question"].split(":")[0] in json.dumps(output, ensure_ascii=False)


def test_replaying_the_owners_session_hash_from_elsewhere_gets_nothing(make_settings, make_runtime):
    """The owner rule is decided from each request, not remembered by the session: a caller who
    learned the owner's session_hash and comes through a proxy (X-Forwarded-For, which uvicorn
    also turns into the peer address) or with a foreign Host or Origin gets nothing, though the
    session's State holds the owner's worst-answers ids."""
    with live_app(make_settings, make_runtime) as url:
        owner = Raw(url)
        refresh, pick, trace = owner.fn("refresh"), owner.fn("pick_worst"), owner.fn("open_trace")
        assert _shows_the_victim(owner.via_queue(refresh, _refresh_data())), "the owner sees the data"
        event = {"index": [0, 0], "value": "x", "row_value": ["x"]}
        assert "tv-waterfall" in json.dumps(owner.via_queue(pick, [None, None], event))
        for headers in (
            {"X-Forwarded-For": "203.0.113.66"},
            {"X-Forwarded-For": "127.0.0.1"},
            {"Host": "evil.example"},
            {"Origin": "https://evil.example"},
            {"Via": "1.1 tunnel"},
        ):
            thief = Raw(url, session_hash=owner.session_hash, headers=headers)
            for fn, data, event_data in (
                (refresh, _refresh_data(), None),
                (pick, [None, None], event),
                (trace, [VICTIM_TRACE, None], None),
            ):
                for route, output in (
                    ("queue", thief.via_queue(fn, data, event_data)),
                    ("run/predict", thief.via_predict(fn, data, event_data)),
                ):
                    assert_nothing_leaks(output, f"{thief.deps[fn]['api_name']} via {route} with {headers}")
            thief.close()
        owner.close()


@pytest.mark.xfail(
    strict=True,
    reason="Gradio: a session_hash is the session's only credential. Whoever learns one can "
    "dump the session's last outputs (GET /gradio_api/deep_link?session_hash=..., then "
    "/config?deep_link=...) and, for a password sign-in, use its grant. The hash is made by "
    "the browser and sent to this server only; the dashboard cannot add a second factor "
    "(a handler sets no cookie) and binding the grant to the peer address would break on a "
    "Space, whose proxy's internal address is every visitor's.",
)
def test_a_stolen_session_hash_reveals_nothing(make_settings, make_runtime):
    with live_app(make_settings, make_runtime, SPACE_ID="someone/space", ADMIN_PASSWORD=PASSWORD) as url:
        admin = Raw(url, headers={"X-Forwarded-For": "198.51.100.7"})
        sign_in, refresh = admin.fn("sign_in"), admin.fn("refresh")
        assert "Signed in." in json.dumps(admin.via_queue(sign_in, [PASSWORD, None]))
        assert _shows_the_victim(admin.via_queue(refresh, _refresh_data()))
        thief = Raw(url, session_hash=admin.session_hash, headers={"X-Forwarded-For": "203.0.113.66"})
        link = thief.http.get(
            f"{url}gradio_api/deep_link", params={"session_hash": admin.session_hash}
        ).json()
        dumped = thief.http.get(f"{url}config", params={"deep_link": link}).text
        replayed = thief.via_predict(refresh, _refresh_data())
        admin.close()
        thief.close()
        assert_nothing_leaks(dumped, "a deep link of the admin's session", STORED)
        assert_nothing_leaks(replayed, "the admin's session replayed")


def _sign_in(url: str, password: Any, forwarded_for: str) -> str:
    """One sign-in over /gradio_api/run/ from the address uvicorn takes from X-Forwarded-For."""
    response = httpx.post(
        f"{url}gradio_api/run/sign_in",
        json={"data": [password, None], "session_hash": uuid.uuid4().hex[:11]},
        headers={"X-Forwarded-For": forwarded_for},
        timeout=30,
    )
    try:
        return response.json()["data"][2]
    except (ValueError, KeyError, IndexError, TypeError):
        return response.text


def test_password_guessing_from_many_addresses_stops_at_the_overall_limit(make_settings, make_runtime):
    """Every guess from a new X-Forwarded-For address (a fresh per-address budget each time):
    no more than `overall` (20) guesses are ever compared in a window, then even the right
    password is refused, from every address."""
    with live_app(make_settings, make_runtime, SPACE_ID="someone/space", ADMIN_PASSWORD=PASSWORD) as url:
        notes = [_sign_in(url, f"guess number {n}", f"198.18.{n // 250}.{n % 250 + 1}") for n in range(30)]
        wrong = [n for n in notes if n.startswith("Wrong password")]
        paused = [n for n in notes if n.startswith("Password sign-in is paused")]
        assert len(wrong) == 20 and len(paused) == 10, notes
        assert _sign_in(url, PASSWORD, "192.0.2.200").startswith("Password sign-in is paused")
        assert _sign_in(url, PASSWORD, "127.0.0.1").startswith("Password sign-in is paused")


ODD_PASSWORDS = [
    PASSWORD + "\x00",
    "\x00" + PASSWORD,
    PASSWORD.upper(),
    PASSWORD + " ",
    "\u202e" + PASSWORD,
    unicodedata.normalize("NFD", "corréct horse battery staple"),
    "\ud800" * 20,
    "🙂" * 300,
    PASSWORD * 40,  # longer than MAX_PASSWORD_CHARS: a wrong guess, not hashed whole
    "x" * 5_000_000,
]


def test_odd_passwords_are_wrong_guesses_never_errors(make_settings, make_runtime):
    """NUL, case, spaces, bidi, Unicode normalization, lone surrogates, emoji, megabytes: each a
    wrong guess with a sentence (counted), answered quickly; not text at all: not a guess."""
    gate = PasswordGate(PASSWORD, per_client=100, overall=100)
    for n, password in enumerate(ODD_PASSWORDS):
        started = time.perf_counter()
        grant, note = gate.attempt(password, f"client-{n}")
        assert grant is None and note.startswith("Wrong password"), (password[:20], note)
        assert time.perf_counter() - started < 0.5
    for not_text in (None, 0, ["x"], {"password": PASSWORD}, b"x"):
        assert gate.attempt(not_text, "c") == (None, "Type the admin password first.")
    assert len(gate._all) == len(ODD_PASSWORDS)
    assert MAX_PASSWORD_CHARS < len(PASSWORD * 40)
    # The same over HTTP: each from its own address, then the right one still works.
    with live_app(make_settings, make_runtime, SPACE_ID="someone/space", ADMIN_PASSWORD=PASSWORD) as url:
        for n, password in enumerate(ODD_PASSWORDS[:6] + ODD_PASSWORDS[-2:]):
            note = _sign_in(url, password, f"198.51.100.{n + 1}")
            assert note.startswith("Wrong password"), (password[:20], note[:200])
        assert _sign_in(url, None, "198.51.100.99") == "Type the admin password first."
        assert _sign_in(url, "", "198.51.100.99") == "Type the admin password first."
        # Gradio's Textbox makes text of anything else: a guess like any other.
        for not_text in (7, ["x"], {"a": 1}):
            assert _sign_in(url, not_text, f"198.51.100.{120 + len(str(not_text))}").startswith("Wrong")
        assert _sign_in(url, PASSWORD, "198.51.100.100") == "Signed in."


SPOOFED = [
    {"X-Forwarded-For": "127.0.0.1"},
    {"x-forwarded-for": "::1"},
    {"X-Forwarded-Host": "127.0.0.1"},
    {"X-Forwarded-Proto": "http"},
    {"X-Forwarded-Port": "7860"},
    {"Forwarded": "for=127.0.0.1;host=localhost;proto=http"},
    {"X-Real-IP": "127.0.0.1"},
    {"True-Client-IP": "127.0.0.1"},
    {"CF-Connecting-IP": "127.0.0.1"},
    {"Via": "1.1 localhost"},
    {"Host": "evil.example"},  # DNS rebinding: a page whose own name resolves to 127.0.0.1
    {"Host": "localhost.evil.example"},
    {"Host": "127.0.0.1.nip.io:7860"},
    {"Host": "2130706433"},  # 127.0.0.1 as one number: a browser sends what the URL says
    {"Host": "0x7f.0.0.1"},
    {"Origin": "https://evil.example"},
    {"Origin": "http://localhost.evil.example"},
    {"Origin": "http://127.0.0.1.evil.example:7860"},
    {"Origin": "null"},
    {"Origin": "file://"},
]


def test_spoofed_headers_never_make_a_local_caller_the_owner(make_settings, make_runtime):
    """On a loopback app every peer is local: a proxy's or a foreign page's headers take the
    owner rule away, whatever they claim (rule 1 of dashboard/access.py), on every route."""
    with live_app(make_settings, make_runtime) as url:
        plain = Raw(url)
        assert _shows_the_victim(plain.via_run("refresh", _refresh_data())), "no header: the owner"
        assert "Dashboard" in plain.via_predict(plain.fn("link"), [])
        plain.close()
        for headers in SPOOFED:
            raw = Raw(url, headers=headers)
            for where, output in (
                ("refresh via queue", raw.via_queue(raw.fn("refresh"), _refresh_data())),
                ("refresh via run/", raw.via_run("refresh", _refresh_data())),
                ("open_trace via run/predict", raw.via_predict(raw.fn("open_trace"), [VICTIM_TRACE, None])),
                ("compare_runs via call/", raw.via_call("compare_runs", [VICTIM_RUN, HOSTILE_RUNS[0], None])),
            ):
                assert_nothing_leaks(output, f"{where} with {headers}")
            # The chat page's link to the dashboard is not shown either.
            assert json.loads(raw.via_predict(raw.fn("link"), []))["data"] == [""], headers
            raw.close()


@pytest.mark.parametrize(
    "env",
    [
        {"SPACE_ID": "someone/space", "ADMIN_PASSWORD": PASSWORD},
        {"GRADIO_SERVER_NAME": "0.0.0.0", "ADMIN_PASSWORD": PASSWORD},
        {"SPACE_ID": "someone/space", "ADMIN_USERS": "alice"},
    ],
    ids=["space", "exposed", "space-admin-users"],
)
def test_the_chat_page_link_is_hidden_from_a_visitor(make_settings, make_runtime, env):
    """Even after a password sign-in: the chat page's link shows only to whoever the chat
    page's own request proves may open the dashboard (the owner here, an HF admin)."""
    with live_app(make_settings, make_runtime, **env) as url:
        raw = Raw(url)
        link = raw.fn("link")
        for route, output in (
            ("run/predict", json.loads(raw.via_predict(link, []))["data"]),
            ("run/", json.loads(raw.via_run("link", []))["data"]),
            ("queue", raw.via_queue(link, [])["output"]["data"]),
        ):
            assert output == [""], (route, output)
        if "ADMIN_PASSWORD" in env:
            assert "Signed in." in json.dumps(raw.via_queue(raw.fn("sign_in"), [PASSWORD, None]))
            assert json.loads(raw.via_predict(link, []))["data"] == [""]
        raw.close()


def test_refreshes_that_bypass_the_queue_are_still_limited(make_settings, make_runtime, monkeypatch):
    """The dashboard's handlers share a queue of CONCURRENCY (2) workers, so a caller refreshing
    without pause cannot take the chat's threads and database. /gradio_api/run/ and
    /gradio_api/run/predict run a handler at once, outside the queue: without a limit of the
    handlers' own, 8 refreshes sent together ran 8 overview queries at once."""
    active, peak, lock = [0], [0], threading.Lock()
    real_overview = queries.overview

    def slow_overview(*args: Any, **kwargs: Any) -> Any:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.3)
            return real_overview(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(queries, "overview", slow_overview)
    with live_app(make_settings, make_runtime) as url:
        raw = Raw(url)
        refresh = raw.fn("refresh")
        results: list[str] = []

        def hit(n: int) -> None:
            if n >= 8:  # through the queue, each from a session of its own
                own = Raw(url)
                results.append(json.dumps(own.via_queue(refresh, _refresh_data())))
                own.close()
                return
            body = (
                raw.via_run("refresh", _refresh_data())
                if n % 2
                else raw.via_predict(refresh, _refresh_data())
            )
            results.append(body)

        threads = [threading.Thread(target=hit, args=(n,)) for n in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Meanwhile the queue still serves the page: a refresh through it gets the figures.
        assert _shows_the_victim(raw.via_queue(refresh, _refresh_data()))
        raw.close()
    assert peak[0] <= ui.CONCURRENCY, f"{peak[0]} overview queries ran at once"
    served = [r for r in results if _shows_the_victim(r)]
    busy = [r for r in results if "busy" in r]
    assert served and len(served) + len(busy) == 12, [r[:120] for r in results]


def test_nul_and_lone_surrogates_never_reach_the_database(store_url):
    """Postgres refuses NUL in text and UTF-8 cannot hold a lone surrogate: as a trace id or a
    filter they get a sentence or match nothing, on both backends (never a driver error)."""
    store = Store(store_url)
    try:
        fill(store, huge=False)
        for trace_id in ("5e" * 16 + "\x00", "\x00", "\ud800" + "5e" * 15, "5e" * 16 + "\udfff"):
            page = trace_html(store, trace_id)
            assert "That is not a trace id" in page and SECRET not in page, page[-200:]
        since, until = NOW - 40 * DAY, NOW + 60
        for value in ("\x00", VICTIM_USER + "\x00", "\ud800", VICTIM_USER + "\udfff"):
            for name in ("model", "user_id", "tag", "session_id"):
                filters = queries.Filters(since, until, **{name: value})
                assert queries.overview(store, filters)["totals"]["turns"] == 0, (name, value)
                assert queries.worst_answers(store, filters) == [], (name, value)
        victim = queries.Filters(since, until, user_id=VICTIM_USER)
        assert queries.overview(store, victim)["totals"]["turns"] == 1
    finally:
        store.close()


def test_signing_out_leaves_no_conversation_in_the_page(make_settings, make_runtime):
    """After "Sign out" (a shared computer, a screen share), the page and what Gradio keeps for
    the session (what a deep link of it would show) hold none of the conversations seen: the
    overview is emptied by the refresh after it, and the trace and the comparison too."""
    with live_app(make_settings, make_runtime, SPACE_ID="someone/space", ADMIN_PASSWORD=PASSWORD) as url:
        admin = Raw(url)
        assert "Signed in." in json.dumps(admin.via_queue(admin.fn("sign_in"), [PASSWORD, None]))
        assert _shows_the_victim(admin.via_queue(admin.fn("refresh"), _refresh_data()))
        assert "tv-waterfall" in json.dumps(admin.via_queue(admin.fn("open_trace"), [VICTIM_TRACE, None]))
        compared = admin.via_queue(admin.fn("compare_runs"), [VICTIM_RUN, HOSTILE_RUNS[0], None])
        assert VICTIM_RUN in json.dumps(compared)
        sign_out = admin.fn("sign_out")
        admin.via_queue(sign_out, [None])
        then = next(d for d in admin.deps.values() if d["targets"] == [[None, "then"]] and d["id"] > sign_out)
        admin.via_queue(then["id"], _refresh_data())
        link = admin.http.get(
            f"{url}gradio_api/deep_link", params={"session_hash": admin.session_hash}
        ).json()
        kept = admin.http.get(f"{url}config", params={"deep_link": link}).text
        admin.close()
    # Conversation text only: Gradio keeps a stale copy of a dropdown that was both updated and
    # then used as an input under a new id, so earlier run and user names stay in the session's
    # store (not in the page) after an update empties the dropdown.
    assert_nothing_leaks(kept, "the session after signing out", STORED)
