"""The dashboard's Experiment tab (dashboard.experiment, DashboardHandlers.experiment_tab): the
figures and verdicts of evals.ab on the page, the tab only with an experiment and only for
admins, and every name, reason and sentence from a file, a person or the store inert."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pytest

from config.settings import settings_from_env
from dashboard import judges as judges_module
from dashboard.access import Access
from dashboard.experiment import experiment_data, experiment_html, experiment_page
from dashboard.ui import DashboardHandlers, build_dashboard
from evals import ab
from evals.ab import Experiment, VariantSpec, results
from evals.config import Evaluator
from feedback.store import BY_JUDGE, Store
from tests.evals.test_ab import DAYS, Turn, one_vote_each, write

TWO = Experiment("exp", "A", (VariantSpec("A", 1), VariantSpec("B", 1)))
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
PAYLOADS = [
    "<script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=2">',
    '" style="background:url(https://evil.example/css)" x="',
    "' onmouseover='window.__pwned=5",
    "</style><style>*{display:none}</style>",
    "</td></tr></table></div>",
    "<svg/onload=window.__pwned=8>",
    "\u202eevil-reversed\u202c and \u2066isolated\u2069 0.1",
    "{{7*7}} ${7*7} %_%' OR '1'='1",
]
ALLOWED_TAGS = {
    "style",
    "div",
    "p",
    "span",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "strong",
    "h4",
    "br",
}
ALLOWED_ATTRIBUTES = {"class", "id"}


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

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(autouse=True)
def _fresh_memory():
    ab.forget_cached()
    judges_module.forget_cached()
    yield
    ab.forget_cached()
    judges_module.forget_cached()


@pytest.fixture
def store(store_url: str):
    s = Store(store_url)
    yield s
    s.close()


def owner_request() -> Any:
    from starlette.datastructures import Headers

    return SimpleNamespace(
        client=SimpleNamespace(host="127.0.0.1"), headers=Headers({"host": "127.0.0.1:7860"})
    )


def stranger_request() -> Any:
    from starlette.datastructures import Headers

    return SimpleNamespace(
        client=SimpleNamespace(host="203.0.113.9"), headers=Headers({"host": "space.example"})
    )


def test_the_page_shows_each_variants_figures_and_verdict(store):
    write(store, one_vote_each({"A": 300, "B": 300}, {"A": 0.45, "B": 0.75}, {"A": 1, "B": 3}))
    r = experiment_data(store, TWO)
    page = experiment_html(r)
    text = "".join(Page(page).text)
    a, b = r.figures("A"), r.figures("B")
    # The like rate with its interval, as evals.ab computed them, in each variant's column.
    for v in (a, b):
        low, high = v.like_interval
        assert f"{100 * v.like_rate:.1f}% (95% interval {100 * low:.1f}% to {100 * high:.1f}%)" in text
        assert f"{v.likes:,} likes of {v.rated:,} rated turns by {v.voters:,} users" in text
    # The verdict with its reason, the guardrail that went worse, the split's check.
    assert re.search(r"B against A: better \(decided on \d{4}-\d\d-\d\d\)", text)
    assert "Guardrails that went worse: latency." in text
    assert "the split of users matches the weights" in text
    assert "Latency p50 / p95" in text and f"{a.latency_p50:,.0f} ms / {a.latency_p95:,.0f} ms" in text
    # Each metric against the control: the one-look interval and the always-valid one.
    compare = page[page.index('class="xp-table xp-compare"') :]
    assert compare.count("<tr>") + compare.count("<tr ") >= 5  # header + like rate + 3 guardrails
    p = r.comparisons[0].verdict.primary
    assert f"{100 * p.fixed.estimate:+.1f} pts" in text
    assert f"{100 * p.sequential.low:+.1f} pts to {100 * p.sequential.high:+.1f} pts" in text


def test_a_broken_split_says_stop_first(store):
    write(store, one_vote_each({"A": 180, "B": 20}, {"A": 0.5, "B": 0.9}, {"A": 1, "B": 1}))
    page = experiment_page(store, TWO)
    text = "".join(Page(page).text)
    assert "B against A: stop: assignment is broken" in text
    assert "Stop: assignment is broken. The split of users does not match the weights" in text
    assert 'class="xp-srm xp-flagged"' in page


def test_hostile_names_reasons_and_judges_are_inert(store):
    hostile = " ".join(PAYLOADS) + BIDI
    control, variant = f"A {hostile}", f"B {hostile}"
    e = Experiment(f"exp {hostile}", control, (VariantSpec(control, 1), VariantSpec(variant, 1, paused=True)))
    turns = []
    for i in range(40):
        arm = control if i % 2 else variant
        judges = {f"judge {hostile}": 0.5}
        turns.append(
            Turn(
                f"{i:032x}",
                f"user {hostile} {i}",
                DAYS[i % 3] + i,
                arm,
                experiment=e.name,
                vote=float(i % 3 == 0),
                reason=f"reason {hostile}",
                judges=judges,
            )  # fmt: skip
        )
    # An unverified judge named in the evaluators file the same hostile way (names are checked
    # when the file is read; the page does not rely on it).
    judge = Evaluator(name="x", data_type="NUMERIC", prompt="Is it? {input} {output}")
    object.__setattr__(judge, "name", f"judge {hostile}")
    write(store, turns, judge.version)
    page = experiment_html(results(store, e, evaluators=[judge], trust={f"judge {hostile}": False}))
    parsed = Page(page)
    assert {tag for tag, _ in parsed.tags} <= ALLOWED_TAGS
    assert {key for _, attrs in parsed.tags for key in attrs} <= ALLOWED_ATTRIBUTES
    assert "__pwned" not in "".join(str(attrs) for _, attrs in parsed.tags)
    for ch in BIDI:
        assert ch not in page
    text = "".join(parsed.text)
    assert "<script>window.__pwned=1</script>" in text  # shown as text, where it was written
    assert "⟨U+202E⟩evil-reversed" in text
    assert text.count("reason <script>") >= 1 and "judge <script>" in text
    assert "unverified against reviewers" in text


def test_the_tab_is_for_admins_and_only_with_an_experiment(store, tmp_path):
    write(store, one_vote_each({"A": 40, "B": 40}, {"A": 0.5, "B": 0.6}, {"A": 1, "B": 1}))
    settings = settings_from_env(
        {"DATA_DIR": str(tmp_path), "EVALUATORS_FILE": "off", "ADMIN_PASSWORD": "correct horse battery"}
    )
    handlers = DashboardHandlers(store, settings, Access(settings, oauth_real=False))
    handlers.experiment = None
    assert "No experiment" in handlers.experiment_tab(None, owner_request(), None)
    handlers.experiment = TWO
    page = handlers.experiment_tab(None, owner_request(), None)
    assert 'id="dash-experiment"' in page and "B against A" in page
    # Someone else gets the refusal sentence and nothing of the experiment.
    refused = handlers.experiment_tab(None, stranger_request(), None)
    assert "B against A" not in refused and "like rate" not in refused.lower()
    assert handlers.access.refusal() in " ".join(Page(refused).text)
    # A reviewer's page hides the Experiment tab with the other admin tabs.
    assert handlers.admin_tabs == 5


def _tab_ids(demo: gr.Blocks) -> set[str]:
    return {c.get("props", {}).get("elem_id") for c in demo.config["components"]} - {None}


def test_the_experiment_tab_is_built_only_with_an_experiment(store, tmp_path):
    settings = settings_from_env({"DATA_DIR": str(tmp_path), "EVALUATORS_FILE": "off"})
    built = []
    for experiment in (None, TWO):
        handlers = DashboardHandlers(store, settings, Access(settings, oauth_real=False))
        handlers.experiment = experiment
        with gr.Blocks() as demo:
            gr.Markdown("chat")
        build_dashboard(demo, handlers)
        built.append(_tab_ids(demo))
    assert "dash-tab-experiment" not in built[0] and "dash-tab-experiment" in built[1]
    assert "dash-experiment-box" in built[1]


def test_judge_scores_without_an_evaluators_file_are_shown_never_counted(store):
    turns = one_vote_each({"A": 40, "B": 40}, {"A": 0.5, "B": 0.5}, {"A": 1, "B": 1})
    for t in turns:
        t.judges = {"helpful": 0.2 if t.variant == "B" else 0.9}
    write(store, turns)
    r = experiment_data(store, TWO)  # no evaluators: the dashboard's EVALUATORS_FILE is off
    b = r.comparisons[0]
    assert [m.name for m in b.shown_only] == ["helpful"] and b.shown_only[0].status == "worse"
    assert "helpful" not in [g.name for g in b.verdict.guardrails]
    assert BY_JUDGE == "judge"
