"""The dashboard's Judges panel (dashboard.judges), on SQLite and Postgres: trust per judge from
reviewer labels (verified, unverified and why, drift), quality over the page's range (raw judge
mean, users' like rate, the PPI++ corrected estimate from the random calibration sample only),
every figure checked against values computed here from the scripted data, kept days that
follow changes, and hostile names and reasons escaped.

Data is written as the app writes it: turns and votes as tests.dashboard.day_one does, judge
scores as evals.worker does (metadata with the evaluator's version), calibration items and
labels through feedback.review_queue.ReviewQueue (add, save)."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

import pytest
from statsmodels.stats.proportion import proportion_confint

from dashboard import judges as panel_module
from dashboard.judges import (
    judge_trust_labels,
    judges_data,
    judges_html,
    judges_panel,
    trust_marker,
)
from dashboard.queries import Filters
from evals.config import Evaluator
from evals.estimate import ppi_mean
from evals.judge_trust import judge_trust
from evals.trust import UNVERIFIED, Thresholds, TrustVerdict, cohen_kappa
from feedback.review_queue import Label, NewItem, ReviewQueue, item_id, label_score_id
from feedback.store import BY_JUDGE, Store
from tests.dashboard.day_one import turn, vote

DAY = 86400.0
# Set at import; every range ends at the real clock instead (until=time.time() + 60): a score is
# created when written, minutes after collection in the full suite.
NOW = time.time()
# Noon (UTC) 20 days ago and 2 days ago: whole days inside a 30-day range (kept in memory).
OLD = (NOW // DAY - 20) * DAY + DAY / 2
RECENT = (NOW // DAY - 2) * DAY + DAY / 2
TURNS = 120
OTHER_MODEL = "other-model"

HELPFUL = Evaluator(name="helpful", data_type="BOOLEAN", prompt="Helpful? {input} {output}")
SLOPPY = Evaluator(name="sloppy", data_type="BOOLEAN", prompt="Sloppy? {input} {output}")
FRESH = Evaluator(name="fresh", data_type="NUMERIC", prompt="Rate it: {input} {output}")
WHY = Evaluator(
    name="why", data_type="CATEGORICAL", categories=("wrong", "long", "other"), prompt="Why? {input} {output}"
)
GOAL = Evaluator(name="goal", target="conversation", data_type="BOOLEAN", prompt="Goal? {conversation}")


@pytest.fixture(autouse=True)
def _fresh_memory():
    panel_module.forget_cached()
    yield
    panel_module.forget_cached()


@pytest.fixture
def store(store_url: str):
    s = Store(store_url)
    yield s
    s.close()


def tid(i: int) -> str:
    return f"{i:032d}"


def judged(store: Store, e: Evaluator, trace_id: str, value: object, *, session: str = "s1") -> None:
    """A judge's score as evals.worker writes it (its evaluator's version in the metadata)."""
    conversation = e.target == "conversation"
    categorical = isinstance(value, str)
    store.upsert_score(
        score_id=f"judge-{e.name}-{trace_id or session}-{e.version}",
        trace_id="" if conversation else trace_id,
        session_id=session,
        user_id="ann",
        name=e.name,
        value=None if categorical else float(value),  # type: ignore[arg-type]
        string_value=value if categorical else None,  # type: ignore[arg-type]
        data_type=e.data_type,
        source="EVAL",
        scored_by=BY_JUDGE,
        metadata={"evaluator": e.name, "evaluator_version": e.version, "target_kind": e.target},
    )


def review(store: Store, trace_id: str, queue: str, labels: list[Label], *, calibration: bool) -> None:
    """A reviewer labels a turn of a queue (the random calibration sample, or a rule's queue)."""
    q = ReviewQueue(store)
    reason = "random calibration sample (25% of turns)" if calibration else "disliked"
    q.add(
        [NewItem(trace_id, queue, reason, calibration=calibration, sample_rate=0.25 if calibration else None)]
    )
    q.save(item_id(trace_id, queue), "rita", labels)


# The scripted data: 120 turns, 60 at OLD and 60 at RECENT (turns 100-119 of another model).
def truth(i: int) -> int:
    return int(i % 3 != 0)


def helpful_judge(i: int) -> int:
    return 1 - truth(i) if i in (5, 50, 95) else truth(i)


def fresh_judge(i: int) -> float:
    return (i % 5) / 4


def fresh_label(i: int) -> float:
    return ((4 * i) % 5) / 4  # unrelated to the judge's


SAMPLE = [i for i in range(TURNS) if i % 4 == 1]  # the random calibration sample: 30 turns
DISLIKED = [i for i in range(40) if i % 4 == 3]  # reviewed from the dislike queue: 10 turns
VOTED = list(range(60, 90))  # users' thumbs: like when the answer is good


def start(i: int) -> float:
    return (OLD if i < 60 else RECENT) + i * 60


def fill(store: Store) -> None:
    for i in range(TURNS):
        turn(store, f"{i}", start(i), model=OTHER_MODEL if i >= 100 else "m")
        judged(store, HELPFUL, tid(i), helpful_judge(i))
        judged(store, SLOPPY, tid(i), i % 2)
        judged(store, FRESH, tid(i), fresh_judge(i))
        if i < 30:
            judged(store, WHY, tid(i), ("wrong", "long", "other")[i % 3])
    for i in VOTED:
        vote(store, tid(i), float(truth(i)))
    for i in sorted(SAMPLE + DISLIKED):
        labels = [
            Label("helpful", "BOOLEAN", float(truth(i))),
            Label("fresh", "NUMERIC", fresh_label(i)),
        ]
        if i in SAMPLE and i < 48:
            labels.append(Label("sloppy", "BOOLEAN", float(i % 2)))  # 12 labels only
        if i < 30:
            labels.append(Label("why", "CATEGORICAL", string_value=("wrong", "long", "other")[i % 3]))
        review(store, tid(i), "calibration" if i in SAMPLE else "dislikes", labels, calibration=i in SAMPLE)
    # A conversation judge: three sessions, one judged again (the latest counts).
    judged(store, GOAL, "", 1, session="c1")
    judged(store, GOAL, "", 0, session="c2")
    time.sleep(0.01)  # judged again later (a score's time is kept to the millisecond)
    store.upsert_score(
        score_id="judge-goal-c2-again", trace_id="", session_id="c2", name="goal", value=1.0, data_type="BOOLEAN",
        source="EVAL", scored_by=BY_JUDGE, metadata={"evaluator": "goal", "evaluator_version": GOAL.version},
    )  # fmt: skip
    judged(store, GOAL, "", 1, session="c3")


def kappa_by_hand(pairs: list[tuple[int, int]]) -> float:
    n = len(pairs)
    po = sum(1 for j, h in pairs if j == h) / n
    pj, ph = sum(j for j, _ in pairs) / n, sum(h for _, h in pairs) / n
    pe = pj * ph + (1 - pj) * (1 - ph)
    return (po - pe) / (1 - pe)


def row_of(page: str, name: str) -> str:
    """The table row of one judge in the panel's HTML."""
    for row in page.split('<tr class="jp-row')[1:]:
        if f'<div class="jp-name">{html.escape(name)}</div>' in row:
            return row.split("</tr>")[0]
    raise AssertionError(f"no row for {name}")


def last_30_days() -> Filters:
    return Filters(since=NOW - 30 * DAY, until=time.time() + 60)


def test_verified_and_unverified_judges_with_their_agreement_and_reasons(store):
    fill(store)
    panel = judges_data(store, [HELPFUL, SLOPPY, FRESH, WHY, GOAL], last_30_days())
    page = judges_html(panel)
    rows = {r.name: r for r in panel.rows}
    assert list(rows) == ["helpful", "sloppy", "fresh", "why", "goal"]

    # helpful: 40 labels (30 from the sample, 10 from the dislike queue), one disagreement (turn 5).
    helpful = rows["helpful"]
    reviewed = sorted(SAMPLE + DISLIKED)
    overall = helpful.reviewers.overall
    assert overall.n == 40
    assert overall.value == pytest.approx(kappa_by_hand([(helpful_judge(i), truth(i)) for i in reviewed]))
    assert overall.low is not None and overall.low >= 0.4 and overall.high is not None
    assert helpful.verified
    own = row_of(page, "helpful")
    assert own.startswith(' jp-verified">') and "jp-unverified" not in own and "unverified" not in own
    assert ">Verified</span>" in own
    assert (
        html.escape(
            f"Cohen's kappa {overall.value:.2f} (95% interval {overall.low:.2f} to {overall.high:.2f}, n=40)"
        )
        in own
    )
    assert "The last window needs more than 50 labels; there are 40." in own
    assert (
        "Drift is not measured yet: drift needs two windows of 50 labels (100 in all); there are 40." in own
    )

    # sloppy: 12 labels only.
    sloppy = row_of(page, "sloppy")
    assert not rows["sloppy"].verified
    assert sloppy.startswith(' jp-unverified">')
    # Said in words, not by colour alone: the badge, and beside the judge's own figure.
    assert ">Unverified</span>" in sloppy and "uncorrected; this judge is unverified)" in sloppy
    assert "Only 12 reviewer labels; at least 30 are needed before its scores count." in sloppy
    assert "gates and alerts ignore them" in sloppy

    # fresh: 40 labels that have nothing to do with its scores.
    fresh = rows["fresh"]
    assert not fresh.verified and fresh.reviewers.overall.metric == "pearson"
    assert "lower bound is under 0.50" in fresh.reason
    assert html.escape(fresh.reason) in row_of(page, "fresh")
    assert "Mean difference, judge minus reviewer" in row_of(page, "fresh")

    # The verdicts are the gates' own.
    gates = judge_trust(store, [HELPFUL, SLOPPY, FRESH, WHY, GOAL])
    assert {name: (v.status, v.reason) for name, v in gates.items()} == {
        r.name: (r.verdict.status, r.reason) for r in panel.rows
    }
    assert judge_trust_labels(store, [HELPFUL, SLOPPY, FRESH]) == {
        "helpful": (True, gates["helpful"].reason),
        "sloppy": (False, gates["sloppy"].reason),
        "fresh": (False, gates["fresh"].reason),
    }
    labels = panel.trust_labels()
    assert trust_marker("sloppy", labels) == " (unverified)"
    assert trust_marker("sloppy (demo judge)", labels) == " (unverified)"  # the overview's label
    assert trust_marker("helpful", labels) == "" and trust_marker("a-code-check", labels) == ""

    # A categorical judge: agreement only.
    why = row_of(page, "why")
    assert "Cohen&#x27;s kappa" in why and "Categories have no mean or rate" in why
    assert rows["why"].quality.estimate is None and rows["why"].quality.judge_mean is None


def test_quality_figures_equal_plain_means_and_evals_estimate(store):
    fill(store)
    panel = judges_data(store, [HELPFUL, FRESH, GOAL], last_30_days())
    page = judges_html(panel)
    rows = {r.name: r for r in panel.rows}

    # Raw judge figures: plain means over every judged turn of the range.
    helpful = rows["helpful"].quality
    assert helpful.judged == TURNS
    assert helpful.judge_mean == pytest.approx(sum(helpful_judge(i) for i in range(TURNS)) / TURNS)
    assert f"True on {100 * helpful.judge_mean:.1f}% of 120 judged turns" in row_of(page, "helpful")
    fresh = rows["fresh"].quality
    assert fresh.judge_mean == pytest.approx(sum(fresh_judge(i) for i in range(TURNS)) / TURNS)
    assert f"Mean {fresh.judge_mean:.3f} over 120 judged turns" in row_of(page, "fresh")

    # The corrected estimate: PPI++ over every judge value and the calibration sample's pairs
    # only (the ten turns reviewed from the dislike queue are not a random sample).
    expected = ppi_mean(
        [helpful_judge(i) for i in range(TURNS)],
        [helpful_judge(i) for i in SAMPLE],
        [truth(i) for i in SAMPLE],
    )
    got = helpful.estimate
    assert got is not None and got.n == len(SAMPLE) == 30 and got.N == TURNS
    assert (got.estimate, got.low, got.high) == pytest.approx(
        (expected.estimate, expected.low, expected.high)
    )
    cell = row_of(page, "helpful").split('class="jp-corrected jp-keep">')[1]
    assert (
        f"<strong>Rate of true {100 * expected.estimate:.1f}%</strong> (95% interval "
        f"{100 * expected.low:.1f}% to {100 * expected.high:.1f}%), from 30 reviewed calibration turns (n) "
        "and 120 judged turns (N)"
    ) in cell
    expected_fresh = ppi_mean(
        [fresh_judge(i) for i in range(TURNS)],
        [fresh_judge(i) for i in SAMPLE],
        [fresh_label(i) for i in SAMPLE],
    )
    assert (fresh.estimate.estimate, fresh.estimate.low, fresh.estimate.high) == pytest.approx(
        (expected_fresh.estimate, expected_fresh.low, expected_fresh.high)
    )
    assert f"<strong>Mean {expected_fresh.estimate:.3f}</strong>" in row_of(page, "fresh")

    # Users' thumbs on the turns the judge scored: a like rate with its Wilson interval, and the
    # judge's kappa against them (for information).
    likes = sum(truth(i) for i in VOTED)
    low, high = proportion_confint(likes, len(VOTED), alpha=0.05, method="wilson")
    thumbs = helpful.thumbs
    assert (thumbs.rated, thumbs.liked) == (30, likes) and thumbs.interval == pytest.approx((low, high))
    assert (
        f"Users liked {100 * likes / 30:.1f}% (95% interval {100 * low:.1f}% to {100 * high:.1f}%) of the "
        "30 rated turns this judge scored."
    ) in row_of(page, "helpful")
    assert thumbs.agreement.value == pytest.approx(
        cohen_kappa([(helpful_judge(i), truth(i)) for i in VOTED], categories=(0, 1)).value
    )
    assert "Thumbs never verify a judge" in row_of(page, "helpful")

    # The sample's progress: 30 turns drawn, all reviewed.
    assert (panel.sample.drawn, panel.sample.reviewed, panel.sample.waiting) == (30, 30, 0)
    assert "The random calibration sample holds 30 turns of this range: 30 reviewed, 0 waiting" in page

    # A conversation judge: the latest score per session (c2 was judged again: 0, then 1).
    goal = rows["goal"].quality
    assert (goal.judged, goal.judge_mean, goal.estimate) == (3, 1.0, None)
    assert "draws turns, not conversations" in row_of(page, "goal")


def test_the_range_and_filters_choose_the_turns_and_a_small_sample_says_so(store):
    fill(store)
    # The last 7 days: the 60 recent turns, 15 of the sample.
    week = judges_data(store, [HELPFUL], Filters(since=NOW - 7 * DAY, until=time.time() + 60))
    q = week.rows[0].quality
    recent = range(60, TURNS)
    sample = [i for i in SAMPLE if i >= 60]
    assert q.judged == 60 and q.judge_mean == pytest.approx(sum(helpful_judge(i) for i in recent) / 60)
    expected = ppi_mean(
        [helpful_judge(i) for i in recent], [helpful_judge(i) for i in sample], [truth(i) for i in sample]
    )
    assert q.estimate.n == 15 and q.estimate.estimate == pytest.approx(expected.estimate)
    assert (q.estimate.low, q.estimate.high) == pytest.approx((expected.low, expected.high))
    # Agreement still counts every label: the verdict does not move with the range.
    assert week.rows[0].reviewers.overall.n == 40

    # One model: 20 turns, 5 of them in the sample: too few for an estimate, said in a sentence.
    other = judges_data(
        store, [HELPFUL], Filters(since=NOW - 30 * DAY, until=time.time() + 60, model=OTHER_MODEL)
    )
    q = other.rows[0].quality
    assert q.judged == 20 and q.judge_mean == pytest.approx(
        sum(helpful_judge(i) for i in range(100, TURNS)) / 20
    )
    assert q.estimate is None and q.pairs == 5
    page = judges_html(other)
    assert (
        "No corrected estimate yet: it needs at least 10 reviewed calibration turns that this judge also "
        "scored; 5 so far."
    ) in row_of(page, "helpful")
    assert "(model other-model)" in page

    # Nothing in the range: no sample, said so.
    empty = judges_panel(store, [HELPFUL], Filters(since=NOW - 3600, until=time.time() + 60))
    assert "No turn of this range is in the random calibration sample" in empty
    assert "No turn of this range was scored by this judge" in empty


def test_kept_days_follow_changed_scores_and_new_sample_items(store):
    fill(store)
    judges = [HELPFUL]
    first = judges_data(store, judges, last_30_days()).rows[0].quality
    assert first.pairs == 30
    assert panel_module._DAYS  # the whole days of the range are kept
    # All time (no filters) is the same turns.
    assert judges_data(store, judges).rows[0].quality == first
    # Turn 2 is on a whole day kept in memory; its judge changes its mind (1 -> 0).
    assert helpful_judge(2) == 1
    judged(store, HELPFUL, tid(2), 0)
    again = judges_data(store, judges, last_30_days()).rows[0].quality
    assert again.judge_mean == pytest.approx((sum(helpful_judge(i) for i in range(TURNS)) - 1) / TURNS)
    # A labelled turn joins the calibration sample (no score changes): it counts from now on.
    ReviewQueue(store).add([NewItem(tid(3), "calibration", "random calibration sample", calibration=True)])
    assert judges_data(store, judges, last_30_days()).rows[0].quality.pairs == 31
    # A new label on a kept day: the verdict and the sample follow at once.
    turn(store, "500", OLD + 5000)
    judged(store, HELPFUL, tid(500), 1)
    review(store, tid(500), "calibration", [Label("helpful", "BOOLEAN", 0.0)], calibration=True)
    latest = judges_data(store, judges, last_30_days()).rows[0]
    assert latest.quality.pairs == 32 and latest.reviewers.overall.n == 41


def test_drift_is_shown_with_its_figures(store):
    # 40 labels, window 20: the judge agrees on the first 20 and gets every later one wrong.
    for i in range(40):
        turn(store, f"{i}", RECENT + i * 60)
        judged(store, HELPFUL, tid(i), truth(i) if i < 20 else 1 - truth(i))
        review(store, tid(i), "calibration", [Label("helpful", "BOOLEAN", float(truth(i)))], calibration=True)
    thresholds = Thresholds(window=20)
    panel = judges_data(store, [HELPFUL], last_30_days(), thresholds=thresholds)
    row = panel.rows[0]
    drift = row.reviewers.drift
    assert drift is not None and drift.flagged
    assert drift.previous.value == pytest.approx(1.0)
    assert drift.last.value == pytest.approx(kappa_by_hand([(1 - truth(i), truth(i)) for i in range(20, 40)]))
    assert not row.verified and drift.sentence in row.reason
    own = row_of(judges_html(panel), "helpful")
    assert '<p class="jp-drift"><strong>Drift.</strong> ' + html.escape(drift.sentence) in own
    assert f"Drop {drift.drop:.2f} (95% interval {drift.drop_low:.2f} to {drift.drop_high:.2f})" in own
    assert html.escape(f"Previous window: Cohen's kappa {drift.previous.text()}") in own
    assert "Over the last 20 labels: Cohen&#x27;s kappa" in own


def test_code_checks_are_not_judges_and_no_judge_says_so(store, tmp_path: Path):
    (tmp_path / "checks.py").write_text("def ok(turn):\n    return True\n")
    check = Evaluator(
        name="ok", kind="code", data_type="BOOLEAN", function="checks.py:ok", source=tmp_path / "e.toml"
    )
    page = judges_panel(store, [check])
    assert "The evaluators file has no LLM judge" in page and 'class="jp-row' not in page
    assert judge_trust_labels(store, [check]) == {}


def test_hostile_names_reasons_and_filters_are_escaped(store, monkeypatch):
    hostile = Evaluator(name="x", data_type="BOOLEAN", prompt="Is it? {input} {output}")
    # Names are checked when the evaluators file is read; the page does not rely on it.
    name = '<img src=x onerror=alert(1)>"\u202eevil'
    object.__setattr__(hostile, "name", name)
    turn(store, "1", RECENT)
    judged(store, hostile, tid(1), 1)
    reason = '<script>alert("reason")</script> & <b>bold</b>'
    monkeypatch.setattr(
        panel_module,
        "_verdicts",
        lambda store, judges, thresholds: {name: TrustVerdict(UNVERIFIED, (reason,))},
    )
    page = judges_panel(
        store,
        [hostile],
        Filters(since=NOW - 7 * DAY, until=time.time() + 60, model="<i>m</i>", tag='"><svg onload=1>'),
    )
    assert "<img" not in page and "<script" not in page and "<b>" not in page and "<svg" not in page
    assert "<i>" not in page and "\u202e" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;&quot;⟨U+202E⟩evil" in page
    assert "&lt;script&gt;alert(&quot;reason&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "model &lt;i&gt;m&lt;/i&gt;" in page
    # Only the panel's own tags are in the page.
    tags = set(re.findall(r"<([a-z]+)[ >]", page))
    assert tags <= {
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
        "code",
    }


def test_a_kept_verdict_follows_labels_at_once_and_judge_scores_within_the_recheck(store, monkeypatch):
    fill(store)
    assert judges_data(store, [HELPFUL]).rows[0].verified
    # The judge scores a labelled turn again, the opposite way, on 25 of the 40 labelled turns:
    # no label changed, so the verdict kept is shown until TRUST_RECHECK_S has passed...
    for i in sorted(SAMPLE + DISLIKED)[:25]:
        judged(store, HELPFUL, tid(i), 1 - truth(i))
    assert judges_data(store, [HELPFUL]).rows[0].verified
    # ...then the pairs are read again and the verdict follows.
    monkeypatch.setattr(panel_module, "TRUST_RECHECK_S", 0.0)
    row = judges_data(store, [HELPFUL]).rows[0]
    assert not row.verified and row.verdict.status == judge_trust(store, [HELPFUL])["helpful"].status
    # A label written is seen at once, whatever the time.
    monkeypatch.setattr(panel_module, "TRUST_RECHECK_S", 3600.0)
    before = judges_data(store, [HELPFUL]).rows[0].reviewers.overall.n
    turn(store, "700", RECENT + 9000)
    judged(store, HELPFUL, tid(700), 1)
    review(store, tid(700), "dislikes", [Label("helpful", "BOOLEAN", 1.0)], calibration=False)
    assert judges_data(store, [HELPFUL]).rows[0].reviewers.overall.n == before + 1
    # Deleting a label too.
    store.delete_score(label_score_id(tid(700), "helpful"))
    assert judges_data(store, [HELPFUL]).rows[0].reviewers.overall.n == before
