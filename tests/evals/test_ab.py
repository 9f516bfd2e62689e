"""evals.ab: an experiment's results per variant, from a store of scripted turns and votes.

Turns are written as the app writes them (a root and an LLM span with its cost; the trace's
variant and experiment columns and its metadata `variant` / `experiment` / `assigned`), votes as
feedback.votes writes them, judge scores as evals.worker does, calibration items and labels
through feedback.review_queue. Every expected figure is computed here from the scripted list of
turns with plain Python (loops, numpy's covariance, statsmodels' Newcombe interval), never by
calling evals.ab's own helpers; the statistics themselves are evals.experiment_stats' (tested in
test_experiment_stats.py): what is checked is that the right numbers reach them."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from statsmodels.stats.proportion import confint_proportions_2indep

from evals import ab
from evals.ab import Experiment, VariantSpec, describe, results
from evals.config import Evaluator
from evals.estimate import ppi_mean
from evals.experiment_stats import BETTER, NO_DIFFERENCE, STOP, Looks, compare_metric
from feedback.review_queue import Label, NewItem, ReviewQueue, item_id
from feedback.store import BY_DEMO_JUDGE, BY_JUDGE, SpanRecord, Store, TraceRecord
from feedback.votes import SCORE_NAME, score_id_for

DAY = 86400.0
NOW = time.time()
TODAY = NOW // DAY
# Two ended UTC days (kept in memory by evals.ab) and today (read from the rows each time).
DAYS = [(TODAY - 2) * DAY + 3600, (TODAY - 1) * DAY + 3600, NOW - 1800]

HELPFUL = Evaluator(name="helpful", data_type="NUMERIC", prompt="Helpful? {input} {output}")
SLOPPY = Evaluator(name="sloppy", data_type="BOOLEAN", prompt="Sloppy? {input} {output}")
TONE = Evaluator(name="tone", data_type="NUMERIC", prompt="Tone? {input} {output}")  # the demo judge's


@pytest.fixture(autouse=True)
def _fresh_memory():
    ab.forget_cached()
    yield
    ab.forget_cached()


@pytest.fixture
def store(store_url: str):
    s = Store(store_url)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path):
    s = Store(tmp_path / "data" / "feedback.sqlite3")
    yield s
    s.close()


@pytest.fixture
def checks(tmp_path: Path) -> Evaluator:
    (tmp_path / "checks.py").write_text("def has_number(turn):\n    return True\n")
    return Evaluator(
        name="has_number", kind="code", data_type="BOOLEAN", function="checks.py:has_number",
        source=tmp_path / "evaluators.toml",
    )  # fmt: skip


@dataclass
class Turn:
    id: str
    user: str
    start: float
    variant: str | None  # served
    experiment: str | None = "exp"
    assigned: str | None = None  # set when the user's variant is paused
    latency: float = 1.0
    cost: float | None = 0.001
    error: bool = False
    vote: float | None = None
    reason: str | None = None
    tags: tuple[str, ...] = ("smolagents-chat",)
    judges: dict[str, float] | None = None  # helpful, sloppy, has_number
    demo: float | None = None  # the demo judge's "tone"
    calibration_label: float | None = None

    @property
    def arm(self) -> str | None:
        """The arm the turn counts in (None: in no arm)."""
        return None if self.assigned else self.variant


def write(store: Store, turns: list[Turn], code_version: str = "code") -> None:
    for t in turns:
        end = t.start + t.latency
        meta: dict[str, object] = {"model_id": "m"}
        if t.variant is not None:
            meta.update(variant=t.variant, experiment=t.experiment)
        if t.assigned:
            meta["assigned"] = t.assigned
        status = "ERROR" if t.error else "OK"
        tags = [*t.tags, *([f"variant:{t.variant}"] if t.variant else [])]
        store.write_spans(
            [
                SpanRecord(t.id, t.id[:15] + "r", None, "chat-turn", "AGENT", t.start, end, status, None, {}),
                SpanRecord(
                    t.id,
                    t.id[:15] + "l",
                    t.id[:15] + "r",
                    "generate",
                    "LLM",
                    t.start,
                    end,
                    "OK",
                    None,
                    {},
                    prompt_tokens=10,
                    completion_tokens=5,
                    total_tokens=15,
                    cost=t.cost,
                ),
            ],  # fmt: skip
            [
                TraceRecord(
                    t.id,
                    "chat-turn",
                    "q",
                    "a",
                    t.user,
                    f"s-{t.user}",
                    status,
                    None,
                    t.start,
                    end,
                    "m",
                    tags,
                    meta,
                    variant=t.variant,
                    experiment=t.experiment if t.variant else None,
                )  # fmt: skip
            ],
        )
        if t.vote is not None:
            store.upsert_score(
                score_id=score_id_for(t.id), trace_id=t.id, name=SCORE_NAME, value=t.vote, data_type="BOOLEAN",
                source="user", user_id=t.user, session_id=f"s-{t.user}", reason=t.reason,
            )  # fmt: skip
        for name, value in (t.judges or {}).items():
            version = {"helpful": HELPFUL.version, "sloppy": SLOPPY.version}.get(name, code_version)
            store.upsert_score(
                score_id=f"{name}-{t.id}", trace_id=t.id, name=name, value=value,
                data_type="NUMERIC" if name == "helpful" else "BOOLEAN", source="EVAL", scored_by=BY_JUDGE,
                metadata={"evaluator": name, "evaluator_version": version, "target_kind": "turn"},
            )  # fmt: skip
        if t.demo is not None:
            store.upsert_score(
                score_id=f"tone-{t.id}", trace_id=t.id, name="tone", value=t.demo, data_type="NUMERIC",
                source="EVAL", scored_by=BY_DEMO_JUDGE, metadata={"evaluator": "tone", "evaluator_version": TONE.version, "demo_judge": True},
            )  # fmt: skip
        if t.calibration_label is not None:
            q = ReviewQueue(store)
            q.add([NewItem(t.id, "calibration", "random sample", calibration=True, sample_rate=0.2)])
            q.save(item_id(t.id, "calibration"), "rita", [Label("helpful", "NUMERIC", t.calibration_label)])


EXPERIMENT = Experiment(
    "exp", "A", (VariantSpec("A", 50), VariantSpec("B", 30), VariantSpec("C", 20, paused=True))
)


def scripted() -> list[Turn]:
    """Users of A (30), B (20) and C (10; C paused after the first day, its users then served A),
    1 to 3 turns a day over three days; plus turns that are in no experiment's results."""
    rng = random.Random(26)
    turns: list[Turn] = []
    users = [(f"a{i:02d}", "A") for i in range(30)] + [(f"b{i:02d}", "B") for i in range(20)]
    users += [(f"c{i:02d}", "C") for i in range(10)]
    like_p = {"A": 0.5, "B": 0.7, "C": 0.6}
    n = 0
    for day, base in enumerate(DAYS):
        for user, arm in users:
            served, assigned = arm, None
            if arm == "C" and day > 0:
                served, assigned = "A", "C"
            if arm == "C" and day == 0 and user == "c09":
                continue  # c09 only ever gets the control: assigned C, in no arm
            for k in range(1 + (int(user[1:]) + day) % 3):
                n += 1
                voted = rng.random() < 0.6
                vote = float(rng.random() < like_p[arm]) if voted else None
                reason = None
                if vote == 0.0:
                    reason = rng.choice(["Incorrect", "Not helpful", None, " Incorrect "])
                judged = {"sloppy": float(rng.random() < 0.3), "has_number": float(rng.random() < 0.8)}
                if n % 2 == 0:
                    judged["helpful"] = rng.randrange(11) / 10
                turns.append(
                    Turn(
                        id=f"{n:032x}",
                        user=user,
                        start=base + 60 * k + n,
                        variant=served,
                        assigned=assigned,
                        latency=round(0.5 + rng.random() * (3 if arm == "B" else 2), 3),
                        cost=None if n % 7 == 0 else round(0.001 + rng.random() / 1000, 6),
                        error=n % 11 == 0,
                        vote=vote,
                        reason=reason,
                        judges=judged,
                        demo=rng.randrange(11) / 10 if n % 5 == 0 else None,
                        calibration_label=(
                            round(min(1.0, judged["helpful"] + rng.choice([-0.2, 0.0, 0.1])), 1)
                            if "helpful" in judged and n % 3 == 0 and assigned is None
                            else None
                        ),
                    )  # fmt: skip
                )
    # Not in the results: another experiment's turn with a variant of the same name, a dataset
    # item and a judge's own trace of the experiment, a turn outside any experiment.
    turns.append(Turn("f" * 32, "a00", DAYS[1], "A", experiment="other", vote=0.0))
    turns.append(Turn("e" * 32, "a01", DAYS[1], "A", tags=("dataset",), vote=0.0))
    turns.append(Turn("d" * 32, "a02", DAYS[1], "A", tags=("evaluation",), vote=0.0))
    turns.append(Turn("c" * 32, "zz", DAYS[1], None, vote=0.0))
    return turns


def counted(turns: list[Turn]) -> list[Turn]:
    return [
        t
        for t in turns
        if t.experiment == "exp" and t.variant and set(t.tags).isdisjoint({"dataset", "evaluation"})
    ]


def expected_like(turns: list[Turn], arm: str) -> dict[str, float]:
    """Like rate, design effect and effective votes of an arm, by the textbook delta method
    (Deng et al. 2018: Var(x/n) from the per-user means, variances and covariance)."""
    per_user: dict[str, list[float]] = {}
    for t in turns:
        if t.arm == arm and t.vote is not None:
            per_user.setdefault(t.user, []).append(t.vote)
    x = np.array([sum(v) for v in per_user.values()])
    n = np.array([len(v) for v in per_user.values()], dtype=float)
    users = len(x)
    rate = x.sum() / n.sum()
    cov = np.cov(np.vstack([x, n]), ddof=1)
    var_rate = (cov[0, 0] - 2 * rate * cov[0, 1] + rate**2 * cov[1, 1]) / (users * n.mean() ** 2)
    # Against the per-vote variance with n - 1: one vote per user is a design effect of 1.
    deff = max(1.0, var_rate / (rate * (1 - rate) / (n.sum() - 1)))
    return {
        "rate": rate,
        "votes": n.sum(),
        "users": users,
        "deff": deff,
        "eff": n.sum() / deff,
        "likes": x.sum(),
    }


def test_figures_per_variant_match_the_scripted_turns(store, checks):
    turns = scripted()
    write(store, turns, checks.version)
    r = results(
        store, EXPERIMENT, evaluators=[HELPFUL, SLOPPY, TONE, checks], trust={"helpful": True, "sloppy": False},
        min_reviewed=5,
    )  # fmt: skip
    mine = counted(turns)
    assert [v.name for v in r.variants] == ["A", "B", "C"]
    assert r.looks == len({int(t.start // DAY) for t in mine})
    for v in r.variants:
        arm = [t for t in mine if t.arm == v.name]
        assert v.turns == len(arm)
        assert v.users == len({t.user for t in arm})
        assert v.errors == sum(t.error for t in arm)
        rated = [t for t in arm if t.vote is not None]
        assert v.rated == len(rated) and v.likes == sum(t.vote for t in rated)
        assert v.rated_share == pytest.approx(len(rated) / len(arm))
        e = expected_like(mine, v.name)
        assert v.like_rate == pytest.approx(e["rate"])
        assert v.voters == e["users"]
        assert v.design_effect == pytest.approx(e["deff"])
        assert v.effective_votes == pytest.approx(e["eff"])
        reasons: dict[str, int] = {}
        for t in rated:
            if t.vote == 0.0:
                label = (t.reason or "").strip() or "no reason given"
                reasons[label] = reasons.get(label, 0) + 1
        assert dict(v.reasons) == reasons
        known = [t.cost for t in arm if t.cost is not None]
        assert v.cost_known == len(known) and v.cost_unknown == len(arm) - len(known)
        assert v.cost_per_turn == pytest.approx(sum(known) / len(known))
        latencies = np.array([round(t.latency * 1000, 3) for t in arm])
        assert v.latency_p50 == pytest.approx(np.percentile(latencies, 50, method="inverted_cdf"))
        assert v.latency_p95 == pytest.approx(np.percentile(latencies, 95, method="inverted_cdf"))
        by_name = {j.name: j for j in v.judges}
        assert set(by_name) == {"helpful", "sloppy", "has_number", "tone (demo judge)"}
        for name in ("helpful", "sloppy", "has_number"):
            values = [t.judges[name] for t in arm if t.judges and name in t.judges]
            assert by_name[name].n == len(values) and by_name[name].mean == pytest.approx(np.mean(values))
        tone = [t.demo for t in arm if t.demo is not None]
        assert by_name["tone (demo judge)"].mean == pytest.approx(np.mean(tone))
        assert [by_name[k].counted for k in ("helpful", "sloppy", "has_number", "tone (demo judge)")] == [
            True, False, True, False,
        ]  # fmt: skip
        # The corrected estimate: PPI++ over the arm's judged turns and its reviewed sample.
        judged = [t.judges["helpful"] for t in arm if t.judges and "helpful" in t.judges]
        sample = [(t.judges["helpful"], t.calibration_label) for t in arm if t.calibration_label is not None]
        want = ppi_mean(judged, [j for j, _ in sample], [h for _, h in sample], min_reviewed=5)
        got = by_name["helpful"].estimate
        if want.estimate is None:
            assert got is None or got.estimate is None
        else:
            assert got.estimate == pytest.approx(want.estimate) and got.low == pytest.approx(want.low)
    assert next(j for j in r.figures("A").judges if j.name == "helpful").estimate.estimate is not None
    # The paused variant: its users' later turns were served A and are in no arm.
    a, c = r.figures("A"), r.figures("C")
    redirected = [t for t in mine if t.assigned]
    assert a.redirected_turns == len(redirected) > 0
    assert c.assigned_users == 10 and c.users == 9  # c09 was only ever served the control
    assert a.assigned_users == 30


def test_each_variant_against_the_control(store, checks):
    turns = scripted()
    write(store, turns, checks.version)
    r = results(
        store,
        EXPERIMENT,
        evaluators=[HELPFUL, SLOPPY, TONE, checks],
        trust={"helpful": True, "sloppy": False},
    )
    mine = counted(turns)
    b = next(c for c in r.comparisons if c.variant == "B")
    assert [c.variant for c in r.comparisons] == ["B", "C"]
    # The fixed-horizon difference: Newcombe's interval with the effective votes of each arm.
    eb, ea = expected_like(mine, "B"), expected_like(mine, "A")
    p = b.verdict.primary
    assert p.fixed.estimate == pytest.approx(eb["rate"] - ea["rate"])
    nb, na = eb["eff"], ea["eff"]
    low, high = confint_proportions_2indep(
        eb["rate"] * nb, nb, ea["rate"] * na, na, method="newcomb", compare="diff"
    )
    assert (p.fixed.low, p.fixed.high) == (pytest.approx(low), pytest.approx(high))
    # The sequential test sees one look per day, each cumulative, built here with loops.
    days = sorted({int(t.start // DAY) for t in mine})
    looks = []
    for d in days:
        upto = [t for t in mine if int(t.start // DAY) <= d]
        v, c = expected_like(upto, "B"), expected_like(upto, "A")
        looks.append((v["eff"], v["rate"], c["eff"], c["rate"]))
    arr = np.array(looks)
    want = compare_metric(
        Looks(
            arr[:, 0],
            arr[:, 1],
            arr[:, 1] * (1 - arr[:, 1]),
            arr[:, 2],
            arr[:, 3],
            arr[:, 3] * (1 - arr[:, 3]),
        ),
        kind="like_rate",
    )
    assert p.sequential.p_value == pytest.approx(want.sequential.p_value)
    assert p.sequential.looks == len(days)
    # Guardrails that count: errors, cost, latency, the verified judge and the code check;
    # the unverified judge and the demo judge are shown apart.
    assert [g.name for g in b.verdict.guardrails] == [
        "error rate",
        "cost per turn",
        "latency",
        "has_number",
        "helpful",
    ]
    assert [g.name for g in b.shown_only] == ["sloppy", "tone (demo judge)"]
    lat = b.verdict.guardrails[2]
    assert lat.variant.mean == pytest.approx(
        np.mean([round(t.latency * 1000, 3) for t in mine if t.arm == "B"])
    )
    assert b.verdict.status in (BETTER, NO_DIFFERENCE)
    # Users per assigned variant against the weights 50 / 30 / 20: a fair split.
    assert r.srm.users == {"A": 30, "B": 20, "C": 10} and not r.srm.flagged
    # JSON: no NaN anywhere; the text has a verdict line per variant.
    data = json.loads(json.dumps(r.as_dict(), allow_nan=False))
    assert data["comparisons"][0]["variant"] == "B" and data["variants"][2]["assigned_users"] == 10
    text = describe(r)
    assert "VERDICT B:" in text and "VERDICT C:" in text


def one_vote_each(users: dict[str, int], like: dict[str, float], latency: dict[str, float]) -> list[Turn]:
    """Each user one turn and one vote: `like` of each arm's users like it (in a fixed pattern)."""
    turns = []
    n = 0
    for arm, count in users.items():
        for i in range(count):
            n += 1
            vote = float((i * 37 % 100) < like[arm] * 100)
            turns.append(
                Turn(
                    f"{n:032x}",
                    f"{arm}-{i}",
                    DAYS[i % 3] + n,
                    arm,
                    latency=latency[arm] + (i % 10) / 10,
                    vote=vote,
                )
            )
    return turns


def test_a_90_10_split_under_50_50_weights_stops_the_experiment(sqlite_store):
    write(sqlite_store, one_vote_each({"A": 180, "B": 20}, {"A": 0.5, "B": 0.9}, {"A": 1, "B": 1}))
    r = results(sqlite_store, Experiment("exp", "A", (VariantSpec("A", 1), VariantSpec("B", 1))))
    assert r.srm.flagged and r.srm.users == {"A": 180, "B": 20}
    (b,) = r.comparisons
    assert b.verdict.status == STOP and b.verdict.reason.startswith("Stop:")
    assert "VERDICT B: STOP: ASSIGNMENT IS BROKEN" in describe(r)


def test_a_clear_lift_is_better_and_a_slower_variant_is_flagged_beside_it(sqlite_store):
    write(sqlite_store, one_vote_each({"A": 300, "B": 300}, {"A": 0.45, "B": 0.75}, {"A": 1, "B": 3}))
    r = results(sqlite_store, Experiment("exp", "A", (VariantSpec("A", 1), VariantSpec("B", 1))))
    (b,) = r.comparisons
    assert b.verdict.status == BETTER
    assert [g.name for g in b.verdict.guardrails_worse] == ["latency"]
    assert b.verdict.reason.endswith("Guardrails that went worse: latency.")
    assert b.decided_on is not None
    # One vote per user: the design effect is 1 (the per-vote test, exactly).
    assert r.figures("B").design_effect == 1.0 and r.figures("B").effective_votes == 300


def test_correlated_votes_of_one_user_count_as_fewer_votes(sqlite_store):
    # 40 users per arm, each voting 10 times the same way: 400 votes, but about 40 independent.
    turns = []
    for arm in ("A", "B"):
        for u in range(40):
            for k in range(10):
                like = float((u % 2 == 0) if arm == "A" else (u % 4 != 0))
                turns.append(
                    Turn(f"{arm}{u:03d}{k:02d}".ljust(32, "0"), f"{arm}{u}", DAYS[0] + k, arm, vote=like)
                )
    write(sqlite_store, turns)
    r = results(sqlite_store, Experiment("exp", "A", (VariantSpec("A", 1), VariantSpec("B", 1))))
    a = r.figures("A")
    assert a.rated == 400 and a.voters == 40
    assert a.design_effect == pytest.approx(expected_like(turns, "A")["deff"])
    assert 9 < a.design_effect < 11 and a.effective_votes == pytest.approx(400 / a.design_effect)
    # Counted per vote, 75% vs 50% of 400 votes would be decided at once; per user it is not yet.
    assert r.comparisons[0].verdict.status == NO_DIFFERENCE


def test_kept_days_follow_a_changed_vote_and_new_turns(store):
    turns = one_vote_each({"A": 60, "B": 60}, {"A": 0.5, "B": 0.5}, {"A": 1, "B": 1})
    write(store, turns)
    e = Experiment("exp", "A", (VariantSpec("A", 1), VariantSpec("B", 1)))
    before = results(store, e).figures("B")
    # A vote changed on a turn of an ended day (kept in memory): the day is read again.
    old = next(t for t in turns if t.variant == "B" and t.start < DAYS[1] and t.vote == 0.0)
    store.upsert_score(
        score_id=score_id_for(old.id), trace_id=old.id, name=SCORE_NAME, value=1.0, data_type="BOOLEAN",
        source="user",
    )  # fmt: skip
    after = results(store, e).figures("B")
    assert after.likes == before.likes + 1 and after.rated == before.rated
    write(store, [Turn("9" * 32, "new-user", DAYS[0] + 5, "B", vote=1.0)])
    again = results(store, e).figures("B")
    assert again.turns == after.turns + 1 and again.users == after.users + 1


def test_since_leaves_earlier_turns_out_and_no_turn_gives_reasons(sqlite_store):
    e = Experiment("exp", "A", (VariantSpec("A", 1), VariantSpec("B", 1)))
    empty = results(sqlite_store, e)
    assert empty.looks == 0 and empty.figures("A").turns == 0 and empty.figures("A").like_rate is None
    assert empty.comparisons[0].verdict.status == NO_DIFFERENCE
    assert "no rated turn yet" in describe(empty)
    json.dumps(empty.as_dict(), allow_nan=False)
    write(sqlite_store, one_vote_each({"A": 30, "B": 30}, {"A": 0.5, "B": 0.5}, {"A": 1, "B": 1}))
    later = results(sqlite_store, Experiment.of(e, since=DAYS[2] - 60))
    assert later.figures("A").turns == sum(1 for i in range(30) if i % 3 == 2)


def test_the_apps_experiment_definition_is_taken_as_it_is():
    @dataclass
    class V:
        name: str
        weight: float
        paused: bool = False

    @dataclass
    class E:
        name: str
        control: str
        variants: tuple

    e = Experiment.of(E("x", "b", (V("a", 2), V("b", 1, True))))
    assert e == Experiment("x", "b", (VariantSpec("a", 2.0), VariantSpec("b", 1.0, True)))
    with pytest.raises(ValueError, match="control"):
        Experiment("x", "z", (VariantSpec("a", 1),))
    assert math.isclose(sum(Experiment.of(e).weights.values()), 3.0)
