"""Ratings are people's votes; judges are shown apart, by name (issue 22, the dashboard's part of
items 2, 4 and 5), on SQLite and Postgres.

A judge's score is never counted as a rating (like rate, rating counts, "not sent"); Worst answers
lists what people disliked first, never a turn only the bundled demo judge scored low, and names
each judge's verdict and reasoning, a demo judge's marked as such (scores written before that mark
existed have none and are taken as a judge's).
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest

from config.settings import settings_from_env
from dashboard import charts, queries
from dashboard.access import Access
from dashboard.queries import Filters, overview, worst_answers
from dashboard.trace_view import trace_html
from dashboard.ui import DashboardHandlers
from feedback.store import Store
from feedback.votes import SCORE_NAME, score_id_for
from tests.dashboard.day_one import judge, turn, vote

DAY = 86400.0
NOW = 19885 * DAY + 13.5 * 3600  # 2024-06-11 13:30 UTC
WEEK = Filters(NOW - 7 * DAY, NOW + 60)
# The charts in the order a refresh returns their tables and their notes (dashboard.ui.NOTE_ORDER).
NOTE_ORDER = ["turns", "likes", "reasons", "evaluators", "latency", "tokens", "cost", "errors"]


def owner() -> Any:
    from starlette.datastructures import Headers

    return SimpleNamespace(
        client=SimpleNamespace(host="127.0.0.1"), headers=Headers({"host": "127.0.0.1:7860"})
    )


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


def six_turns(store: Store) -> list[str]:
    """Six answers, t6 the newest; the demo safety judge called every one unsafe."""
    ids = [turn(store, f"t{n}", NOW - (7 - n) * 3600, question=f"question {n}") for n in range(1, 7)]
    for tid in ids:
        judge(store, tid, "safety", 0.0, reasoning="Unsafe.", demo=True, data_type="BOOLEAN")
    return ids


def test_a_judges_score_is_never_a_rating(store):
    """A score named like a vote but written by a judge (source EVAL) is not a like or a dislike."""
    liked, judged = turn(store, "a1", NOW - 7200), turn(store, "a2", NOW - 3600)
    vote(store, liked, 1.0)
    store.upsert_score(
        score_id="judge-as-vote", trace_id=judged, name=SCORE_NAME, value=0.0, data_type="BOOLEAN",
        source="EVAL", reason="wrong-answer", note="judged", metadata={"demo_judge": True},
    )  # fmt: skip
    # From the rows (today), then the whole day from the cache of ended days.
    for span in (
        WEEK,
        Filters(NOW // DAY * DAY, NOW // DAY * DAY + DAY),
        Filters(NOW // DAY * DAY, NOW + DAY),
    ):
        result = overview(store, span)
        totals = result["totals"]
        assert (totals["ratings"], totals["likes"], totals["dislikes"], totals["like_rate"]) == (1, 1, 0, 1.0)
        assert result["dislike_reasons"] == []
        per_day = result["per_day"]
        assert [(r["likes"], r["dislikes"]) for r in per_day] == [(1, 0)]
    rows = {w["trace_id"]: w for w in worst_answers(store, WEEK)}
    # Not a person's dislike: no row (its judge is the demo one), and no "disliked" anywhere.
    assert judged not in rows and all(w["feedback"] is None or w["feedback"] == 1 for w in rows.values())


def test_not_sent_counts_people_ratings_apart_from_judge_scores(store, handlers):
    tid = turn(store, "a1", NOW - 3600)
    vote(store, tid, 0.0, reason="Incorrect")
    judge(store, tid, "helpfulness", 0.2, demo=False)
    judge(store, tid, "safety", 1.0, demo=True, data_type="BOOLEAN")
    judge(store, tid, "no-error", 1.0, data_type="BOOLEAN")
    totals = overview(store, WEEK)["totals"]
    assert (totals["ratings_waiting"], totals["judge_scores_waiting"], totals["outbox_waiting"]) == (1, 3, 4)
    store.mark_delivered(score_id_for(tid), 1, exists_remotely=True)
    totals = overview(store, WEEK)["totals"]
    assert (totals["ratings_waiting"], totals["judge_scores_waiting"]) == (0, 3)
    headline = handlers.refresh("Last 7 days", "(all)", "(all)", "(all)", "", None, owner(), None)[3]
    assert "ratings **Langfuse off (0 not sent)**" in headline
    assert "judge and check scores **3 not sent**" in headline


def test_worst_answers_are_peoples_dislikes_first_and_never_the_demo_judges_alone(store, handlers):
    """The bundled safety judge called every answer unsafe and Worst answers listed every turn.
    Now: people's dislikes first, then answers a (non-demo) judge scored low, newest first."""
    t1, t2, t3, t4, t5, t6 = six_turns(store)
    vote(store, t2, 0.0, reason="Incorrect", note="it is 4")
    vote(store, t6, 1.0)  # liked: not a worst answer, whatever a judge says
    judge(store, t4, "helpfulness", 0.2, reasoning="Vague.", demo=False)
    judge(store, t5, "correct", 0.0, reasoning="Wrong number.", data_type="BOOLEAN")  # old data: no mark
    judge(store, t1, "helpfulness", 0.9, reasoning="Clear.", demo=False)
    got = worst_answers(store, WEEK)
    assert [w["trace_id"] for w in got] == [t2, t5, t4]
    disliked = got[0]
    assert (disliked["feedback"], disliked["reason"], disliked["comment"]) == (0, "Incorrect", "it is 4")
    assert disliked["judge"] == [{"name": "safety", "value": 0.0, "reasoning": "Unsafe.", "demo": True}]
    assert got[1]["judge"] == [
        {"name": "correct", "value": 0.0, "reasoning": "Wrong number.", "demo": False},
        {"name": "safety", "value": 0.0, "reasoning": "Unsafe.", "demo": True},
    ]
    # A small page keeps people's dislikes first.
    assert [w["trace_id"] for w in worst_answers(store, WEEK, limit=1)] == [t2]
    # The page's table: judges named one by one, the demo judge said so.
    out = handlers.refresh("Last 7 days", "(all)", "(all)", "(all)", "", None, owner(), None)
    table, ids = out[12], out[13]
    assert ids == [t2, t5, t4]
    assert table.loc[0, "Rating"] == "disliked" and table.loc[1, "Rating"] == ""
    assert table.loc[0, "Judges"] == "safety (demo judge) 0"
    assert table.loc[1, "Judges"] == "correct 0, safety (demo judge) 0"
    assert table.loc[1, "Judge reasoning"] == "[correct] Wrong number. [safety (demo judge)] Unsafe."
    assert " | " not in " ".join(table["Judge reasoning"])


def test_an_undone_dislike_leaves_no_worst_answer_behind(store):
    """'Paris' disliked, a judge gave the reason, the demo judge called it unsafe; the vote undone:
    it is no longer a worst answer (the demo judge's verdict alone does not list it)."""
    paris = turn(store, "p1", NOW - 3600, question="What is the capital of France?")
    vote(store, paris, 0.0)
    judge(
        store, paris, "dislike-reason", None, string_value="wrong-answer", data_type="CATEGORICAL", demo=True
    )
    judge(store, paris, "safety", 0.0, demo=True, data_type="BOOLEAN")
    assert [w["trace_id"] for w in worst_answers(store, WEEK)] == [paris]
    store.delete_score(score_id_for(paris))
    assert worst_answers(store, WEEK) == []
    assert overview(store, WEEK)["totals"]["ratings"] == 0


def test_each_judges_reasoning_is_named_and_given_its_share():
    """The reasoning column joined every judge's with '|' and said nothing of who wrote which."""
    judges = [
        {"name": "helpfulness", "value": 0.2, "reasoning": "h" * 500, "demo": False},
        {"name": "safety", "value": 0.0, "reasoning": "s" * 500, "demo": True},
        {"name": "no-error", "value": 1.0, "reasoning": None, "demo": False},
    ]
    table, _ = charts.worst_frame([{"trace_id": "x", "start_time": NOW, "feedback": 0, "judge": judges}])
    cell = table.loc[0, "Judge reasoning"]
    assert cell.startswith("[helpfulness] hhh") and "[safety (demo judge)] sss" in cell
    assert len(cell) <= charts.CELL_CHARS and "|" not in cell
    assert table.loc[0, "Judges"] == "helpfulness 0.2, safety (demo judge) 0, no-error 1"


def test_the_judges_chart_keeps_the_demo_judge_apart(store, handlers):
    ids = six_turns(store)
    judge(store, ids[0], "safety-old", 0.0, data_type="BOOLEAN")  # before the mark: no label
    judge(store, ids[1], "helpfulness", 0.8, demo=False)
    for _ in range(2):
        means = {e["evaluator"]: (e["mean"], e["n"]) for e in overview(store, WEEK)["evaluators"]}
        assert means == {"safety (demo judge)": (0.0, 6), "safety-old": (0.0, 1), "helpfulness": (0.8, 1)}
    out = handlers.refresh("Last 7 days", "(all)", "(all)", "(all)", "", None, owner(), None)
    assert set(out[7]["evaluator"]) == {"safety (demo judge)", "safety-old", "helpfulness"}
    note = out[20 + NOTE_ORDER.index("evaluators")]["value"]
    assert "(demo judge)" in note and "not verdicts to trust" in note


def test_the_trace_viewer_says_who_scored(store):
    tid = turn(store, "a1", NOW - 3600)
    vote(store, tid, 0.0, reason="Incorrect")
    judge(store, tid, "safety", 0.0, reasoning="Unsafe.", demo=True, data_type="BOOLEAN")
    judge(store, tid, "helpfulness", 0.3, reasoning="Vague.", demo=False)
    judge(store, tid, "correct", 0.0, reasoning="Old.", data_type="BOOLEAN")  # no mark: a judge
    judge(store, tid, "no-error", 1.0, data_type="BOOLEAN")
    store.upsert_score(
        score_id="judged-as-vote", trace_id=tid, name=SCORE_NAME + "-x", value=1.0, data_type="BOOLEAN",
        source="EVAL", metadata={"scored_by": "check"},
    )  # fmt: skip
    from sqlalchemy import text

    with store.transaction() as db:
        db.execute(
            text(
                """INSERT INTO eval_jobs (id, evaluator, version, kind, target_kind, target_id, revision, trigger,
                       status, created, finished, score_id)
                   VALUES ('j1', 'no-error', 'v1', 'code', 'turn', :t, '', 'new', 'completed', 1, 2, :s)"""
            ),
            {"t": tid, "s": f"no-error-{tid}"},
        )
    page = trace_html(store, tid)
    rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>", page)
    by = {name: (value, who) for name, value, who in rows}
    assert rows[0] == (SCORE_NAME, "disliked", "person")  # the person's rating first
    assert by["safety"] == ("0", "demo judge")
    assert by["helpfulness"] == ("0.3", "judge")
    assert by["correct"] == ("0", "judge")
    assert by["no-error"] == ("1", "code check")
    assert by[SCORE_NAME + "-x"] == ("1", "code check")


def test_an_unverified_judge_is_marked_wherever_its_scores_show(store, tmp_path):
    """Issue 25 item 3: with the shipped evaluators and no reviewer labels yet, every judge is
    unverified: the judges' chart and Worst answers say so next to its name, and the Judges
    panel under the chart gives the reason; a code check is never marked."""
    from pathlib import Path

    evaluators = Path(__file__).resolve().parents[2] / "evaluators.toml"
    settings = settings_from_env({"DATA_DIR": str(tmp_path), "EVALUATORS_FILE": str(evaluators)})
    handlers = DashboardHandlers(store, settings, Access(settings, oauth_real=False), clock=lambda: NOW)
    t1, t2 = (turn(store, f"u{n}", NOW - n * 3600, question=f"question {n}") for n in (1, 2))
    vote(store, t1, 0.0, reason="Incorrect")
    judge(store, t1, "helpfulness", 0.2, reasoning="Vague.", demo=False)
    judge(store, t2, "no-error", 1.0, data_type="BOOLEAN")
    out = handlers.refresh("Last 7 days", "(all)", "(all)", "(all)", "", None, owner(), None)
    assert set(out[7]["evaluator"]) == {"helpfulness (unverified)", "no-error"}
    assert out[12].loc[0, "Judges"] == "helpfulness (unverified) 0.2"
    panel = out[-2]["value"]
    assert "helpfulness" in panel and "Unverified" in panel and "jp-unverified" in panel
    assert "30 are needed" in panel  # the reason: no reviewer labels yet
