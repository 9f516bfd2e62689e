"""evals.experiment_stats: the A/B statistics, by hand and by simulation.

By hand: Newcombe's interval against his published examples, Welch's interval, the mSPRT's
likelihood ratio and confidence sequence, the chi-square. By simulation (seeded, vectorised;
the whole file runs in a few seconds): an A/A experiment checked after every 50 votes keeps its
false alarms under 5% where a naive z-test checked as often alarms in about a third of
experiments; a 90/10 assignment bug is caught within 2,000 users; a 10-point lift in like rate
is decided "better" within N_STATED = 750 votes per arm in 80% of experiments (the measured 80th
percentile: 663 votes per arm over 10,000 experiments).

Sizes: the issue's 1,000 experiments by default; EXPERIMENT_STATS_FULL=1 runs 10,000 (about ten
times slower, still under a minute) for tighter figures.
"""

from __future__ import annotations

import json
import math
import os
from functools import cache

import numpy as np
import pytest
from scipy.stats import ttest_ind
from statsmodels.stats.proportion import confint_proportions_2indep

from evals.experiment_stats import (
    BETTER,
    COST,
    ERRORS,
    GREATER,
    GUARDRAIL,
    LATENCY,
    LESS,
    LIKE_RATE,
    NEWCOMBE,
    NO_DIFFERENCE,
    STOP,
    TWO_SIDED,
    WELCH,
    WORSE,
    Arm,
    Looks,
    always_valid_arrays,
    boundary,
    compare_metric,
    log_mixture_lr,
    mean_difference,
    proportion_difference,
    sample_ratio_mismatch,
    sequential_test,
    verdict,
)

FULL = os.environ.get("EXPERIMENT_STATS_FULL") == "1"
RUNS = 10_000 if FULL else 1_000
ALPHA = 0.05


def three_se(p: float, runs: int) -> float:
    """Three standard errors of a simulated rate p over `runs` runs."""
    return 3 * math.sqrt(p * (1 - p) / runs)


def dumps(obj) -> str:
    """JSON with no NaN or infinity anywhere (the dashboard and --json read it)."""
    return json.dumps(obj.as_dict(), allow_nan=False)


# ----- by hand -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "counts, published",
    [
        # Newcombe (1998), Table II, method 10 (hybrid score), his examples (a) to (d).
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((6, 7, 2, 7), (0.0582, 0.8062)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ],
)
def test_newcombe_interval_matches_the_published_examples(counts, published):
    d = proportion_difference(*counts)
    assert d.method == NEWCOMBE
    assert d.estimate == pytest.approx(counts[0] / counts[1] - counts[2] / counts[3])
    assert (round(d.low, 4), round(d.high, 4)) == published
    # And statsmodels' implementation of the same method.
    low, high = confint_proportions_2indep(*counts, method="newcomb", compare="diff")
    assert (d.low, d.high) == pytest.approx((low, high))


def test_newcombe_at_the_edges_has_a_width_where_wald_has_none():
    # All likes against all dislikes: Wald's interval would be 1 +- 0; Newcombe's is 0.61 to 1.
    d = proportion_difference(10, 10, 0, 10)
    assert d.estimate == 1.0 and d.low == pytest.approx(0.6075, abs=1e-4) and d.high == 1.0
    # No likes anywhere: the difference is 0, the interval symmetric and inside [-1, 1].
    d = proportion_difference(0, 10, 0, 10)
    assert d.estimate == 0.0 and d.low == pytest.approx(-d.high) and -1 < d.low < 0 < d.high < 1
    assert d.relative is None  # no relative difference against a rate of 0
    dumps(d)


def test_welch_interval_worked_by_hand():
    # variant 1 2 3 4: mean 2.5, variance 5/3; control 2 4 6: mean 4, variance 4.
    # difference -1.5; s^2 = (5/3)/4 + 4/3 = 1.75, s = 1.32288
    # Welch-Satterthwaite df = 1.75^2 / ((5/12)^2/3 + (4/3)^2/2) = 3.0625 / 0.946759 = 3.23472
    # t(0.975, 3.23472) = 3.05571 -> half width 4.04233: -5.54233 to 2.54233
    d = mean_difference(Arm.of([1, 2, 3, 4]), Arm.of([2, 4, 6]))
    assert d.method == WELCH and d.estimate == pytest.approx(-1.5)
    assert (d.low, d.high) == pytest.approx((-5.54233, 2.54233), abs=1e-5)
    assert d.relative == pytest.approx(-1.5 / 4)
    ci = ttest_ind([1, 2, 3, 4], [2, 4, 6], equal_var=False).confidence_interval()
    assert (d.low, d.high) == pytest.approx((ci.low, ci.high))


def test_msprt_worked_by_hand():
    # 325 likes of 500 against 275 of 500: d = 0.10,
    # s^2 = 0.65 * 0.35 / 500 + 0.55 * 0.45 / 500 = 0.00095, z = 0.1 / 0.0308221 = 3.24443
    # tau^2 = 0.2^2 * (0.2275 + 0.2475) / 2 = 0.0095, r = tau^2 / s^2 = 10
    # log Lambda = -log(11)/2 + z^2 * (10/11) / 2 = -1.198948 + 4.784689 = 3.585741
    # p = 1 / Lambda = exp(-3.585741) = 0.027717
    # z*^2 = (11/10) * (log 11 + 2 log 20) = 1.1 * 8.389360 = 9.228296, z* = 3.037811;
    # half width z* s = 3.037811 * 0.0308221 = 0.0936316
    s = sequential_test((Arm.of_counts(325, 500), Arm.of_counts(275, 500)))
    assert s.alternative == TWO_SIDED and s.estimate == pytest.approx(0.1)
    assert s.tau == pytest.approx(math.sqrt(0.0095))
    assert s.p_value == pytest.approx(math.exp(-3.585741), rel=1e-5)
    assert (s.low, s.high) == pytest.approx((0.1 - 0.0936316, 0.1 + 0.0936316), abs=1e-6)
    assert s.rejected and s.direction == 1 and s.decided_at == 0
    # The interval excludes 0 exactly when p <= alpha: at the boundary z = z*, Lambda = 1/alpha.
    assert float(log_mixture_lr(boundary(10.0), 10.0)) == pytest.approx(math.log(20))
    # The same data as one SQL aggregate row per arm.
    arm = Arm.of_sums(500, 325.0, 325.0)
    assert (arm.n, arm.mean) == (500, 0.65) and arm.var == pytest.approx(0.65 * 0.35 * 500 / 499)


def test_one_sided_test_looks_only_one_way_and_is_more_sensitive_that_way():
    # One-sided boundary: 2 Phi(.) * Lambda reaches 1/alpha, between the two-sided z* at 2 alpha and alpha.
    r = np.array([0.5, 10.0, 1000.0])
    z1 = boundary(r, 0.05, one_sided=True)
    assert np.all(boundary(r, 0.10) < z1) and np.all(z1 < boundary(r, 0.05))
    assert log_mixture_lr(z1, r, one_sided=True) == pytest.approx(np.full(3, math.log(20)))
    cost_up = (Arm(400, 1.18, 1.0), Arm(400, 1.0, 1.0))  # z = 2.55 in favour of "higher"
    up, two, down = (sequential_test(cost_up, alternative=a) for a in (GREATER, TWO_SIDED, LESS))
    assert up.p_value < two.p_value < 1.0 and down.p_value == 1.0
    assert up.high is None and up.low is not None and down.low is None and down.high is not None
    assert up.low > two.low  # a one-sided bound is tighter than the two-sided interval's
    # Mirror image: LESS on (a, b) is GREATER on (b, a).
    mirrored = sequential_test((cost_up[1], cost_up[0]), alternative=LESS)
    assert mirrored.p_value == pytest.approx(up.p_value) and mirrored.high == pytest.approx(-up.low)


def test_chi_square_worked_by_hand():
    # 60 and 40 users where 50/50 was configured: (10^2 / 50) * 2 = 4, p = P(chi2_1 > 4) = 0.0455
    srm = sample_ratio_mismatch({"control": 60, "b": 40}, {"control": 1, "b": 1})
    assert srm.statistic == pytest.approx(4.0) and srm.p_value == pytest.approx(0.0455003, abs=1e-6)
    assert not srm.flagged and "matches" in srm.reason and "chi-square 4.0" in srm.reason
    # Three variants, weights 2:1:1 (any scale): expected 50/25/25 for 50/30/20 users,
    # chi2 = 0 + 25/25 + 25/25 = 2 on 2 df, p = exp(-2/2) = 0.367879
    srm = sample_ratio_mismatch({"control": 50, "b": 30, "c": 20}, {"control": 2, "b": 1, "c": 1})
    assert srm.statistic == pytest.approx(2.0) and srm.p_value == pytest.approx(math.exp(-1))
    assert srm.weights == {"control": 0.5, "b": 0.25, "c": 0.25}
    assert srm.expected == {"control": 50.0, "b": 25.0, "c": 25.0}
    # 1,812 and 188: chi2 = 2 * 812^2 / 1000 = 1318.7, p far under 0.001.
    srm = sample_ratio_mismatch({"control": 1812, "b": 188}, {"control": 50, "b": 50})
    assert srm.flagged and srm.statistic == pytest.approx(1318.688)
    assert "1,812" in srm.reason and "188" in srm.reason and "p < 0.0001" in srm.reason
    dumps(srm)


def test_sample_ratio_check_degenerate_inputs_give_reasons():
    weights = {"control": 1, "b": 1}
    assert sample_ratio_mismatch({}, weights).reason == "no users assigned yet"
    few = sample_ratio_mismatch({"control": 3, "b": 2}, weights)
    assert not few.flagged and few.p_value is None and "too few users" in few.reason and "10" in few.reason
    one = sample_ratio_mismatch({"control": 40}, {"control": 1, "b": 0})
    assert not one.flagged and "only one variant" in one.reason
    # Users in a paused (weight 0) or unknown variant: broken whatever the counts.
    stray = sample_ratio_mismatch({"control": 500, "b": 480, "old": 3}, weights)
    assert stray.flagged and "old: 3" in stray.reason and stray.weights["old"] == 0.0
    for bad in (
        ({"control": -1}, weights),
        ({"control": 1}, {"control": 0}),
        ({"control": 1}, {"control": -1}),
    ):
        with pytest.raises(ValueError):
            sample_ratio_mismatch(*bad)
    for r in (few, one, stray):
        dumps(r)


def test_degenerate_arms_give_a_reason_never_nan():
    cases = {
        "no votes": (Arm.of_counts(0, 0), Arm.of_counts(0, 0), "no rated turns in either arm yet"),
        "variant empty": (Arm.of_counts(0, 0), Arm.of_counts(30, 50), "the variant has no rated turns yet"),
        "control empty": (Arm.of_counts(30, 50), Arm.of_counts(0, 0), "the control has no rated turns yet"),
        "all likes": (Arm.of_counts(80, 80), Arm.of_counts(90, 90), "every value is the same"),
        "too few": (Arm.of_counts(5, 8), Arm.of_counts(40, 60), "too few values to test: 8 in the variant"),
    }
    for name, (v, c, words) in cases.items():
        m = compare_metric((v, c), kind=LIKE_RATE)
        assert m.status == NO_DIFFERENCE, name
        assert words in m.reason or words in (m.fixed.reason or ""), (name, m.reason)
        assert m.sequential.p_value == 1.0 and m.sequential.low is None and m.sequential.high is None
        dumps(m)
    # All likes against all likes still has a Newcombe interval (0 +- a width), just no test.
    m = compare_metric((Arm.of_counts(80, 80), Arm.of_counts(90, 90)), kind=LIKE_RATE)
    assert m.fixed.estimate == 0.0 and m.fixed.low < 0 < m.fixed.high
    # All likes in one arm only: tested on the other arm's spread.
    m = compare_metric((Arm.of_counts(200, 200), Arm.of_counts(100, 200)), kind=LIKE_RATE)
    assert m.status == BETTER and m.sequential.high == pytest.approx(
        0.5 + float(boundary(0.04 * 0.125 / 0.00125)) * 0.0353553, abs=1e-6
    )
    # Means: a single value, no spread.
    one = mean_difference(Arm.of([3.0]), Arm.of([1.0, 2.0]))
    assert one.estimate == 1.5 and one.low is None and "single value" in one.reason
    flat = mean_difference(Arm.of([2.0] * 5), Arm.of([1.0] * 5))
    assert flat.estimate == 1.0 and flat.low is None and "no spread" in flat.reason
    assert mean_difference(Arm.of([]), Arm.of([1.0])).reason == "the variant has no values yet"
    m = compare_metric((Arm.of([]), Arm.of([])), kind=COST, role=GUARDRAIL)
    assert m.status == NO_DIFFERENCE and "no turns in either arm" in m.reason
    dumps(verdict("b", "control", m))
    with pytest.raises(ValueError, match="NaN"):
        Arm.of([1.0, float("nan")])
    with pytest.raises(ValueError, match="kind"):
        compare_metric((Arm.of([1.0]), Arm.of([1.0])), kind="vibes")
    with pytest.raises(ValueError, match="alternative"):
        sequential_test((Arm.of([1.0]), Arm.of([1.0])), alternative="sideways")


def test_looks_from_a_stream_are_the_cumulative_arms():
    rng = np.random.default_rng(5)
    arm = rng.random(1234) < 0.5
    y = rng.lognormal(size=1234)
    looks = Looks.of_stream(arm, y, every=100)
    assert len(looks.n_variant) == 13  # after 100, 200, ..., 1200 values, and the last one
    for k, end in enumerate([*range(100, 1201, 100), 1234]):
        v, c = Arm.of(y[:end][arm[:end]]), Arm.of(y[:end][~arm[:end]])
        assert looks.n_variant[k] == v.n and looks.n_control[k] == c.n
        assert (looks.mean_variant[k], looks.var_variant[k]) == pytest.approx((v.mean, v.var))
        assert (looks.mean_control[k], looks.var_control[k]) == pytest.approx((c.mean, c.var))
    assert Looks.of_stream([], []).last() == (Arm(0, 0.0, 0.0), Arm(0, 0.0, 0.0))
    with pytest.raises(ValueError, match="pair up"):
        Looks.of_stream([True], [1.0, 2.0])


def test_a_decision_once_made_stays_made_and_the_interval_only_narrows():
    # Strong early evidence, then the variant regresses towards the control.
    looks = Looks.of_arms(
        [
            (Arm.of_counts(330, 500), Arm.of_counts(260, 500)),
            (Arm.of_counts(640, 1000), Arm.of_counts(580, 1000)),
        ]
    )
    s = sequential_test(looks)
    now = sequential_test(looks.last())
    assert s.decided_at == 0 and s.rejected and s.direction == 1 and s.looks == 2
    assert not now.rejected  # the last look alone no longer rejects ...
    assert s.p_value < now.p_value and s.low >= now.low and s.high <= now.high  # ... the history does
    # Successive intervals that stop overlapping: a warning and the last look's interval.
    jump = Looks.of_arms(
        [
            (Arm.of_counts(400, 500), Arm.of_counts(200, 500)),
            (Arm.of_counts(200, 5000), Arm.of_counts(4000, 5000)),
        ]
    )
    s = sequential_test(jump)
    assert "no longer overlap" in s.reason and s.low < s.high < 0
    assert "no longer overlap" in compare_metric(jump, kind=LIKE_RATE).reason


def test_verdict_sentences_and_srm_overrides_everything():
    like = compare_metric((Arm.of_counts(325, 500), Arm.of_counts(275, 500)), kind=LIKE_RATE)
    assert like.status == BETTER
    assert like.reason == (
        "Like rate is better in the variant: 65.0% (n=500) vs 55.0% (n=500), +10.0 points; "
        "always-valid 95% interval +0.6 points to +19.4 points, always-valid p = 0.028."
    )
    cost = compare_metric((Arm(500, 0.0031, 4e-6), Arm(500, 0.0025, 4e-6)), kind=COST, role=GUARDRAIL)
    assert cost.status == WORSE and cost.sequential.alternative == GREATER
    assert "$0.0031" in cost.reason and "+24%" in cost.reason and "at least +$0.0" in cost.reason
    faster = compare_metric((Arm(500, 900.0, 1e5), Arm(500, 1500.0, 1e5)), kind=LATENCY, role=GUARDRAIL)
    assert faster.status == NO_DIFFERENCE and "no evidence yet that it got worse" in faster.reason
    assert "900 ms" in faster.reason and "-600 ms" in faster.reason

    v = verdict("b", "control", like, [cost, faster])
    assert v.status == BETTER and v.guardrails_worse == (cost,)
    assert v.reason.endswith("Guardrails that went worse: cost per turn.")
    ok = sample_ratio_mismatch({"control": 1010, "b": 990}, {"control": 1, "b": 1})
    assert verdict("b", "control", like, [cost], ok).status == BETTER
    broken = sample_ratio_mismatch({"control": 1800, "b": 200}, {"control": 1, "b": 1})
    stop = verdict("b", "control", like, [cost], broken)
    assert stop.status == STOP and stop.reason.startswith("Stop: the split of users does not match")
    assert "1,800" in stop.reason and stop.guardrails_worse == (cost,)
    out = json.loads(dumps(stop))
    assert out["status"] == STOP and out["guardrails_worse"][0]["name"] == "cost per turn"
    assert verdict("b", "control", None).status == NO_DIFFERENCE

    worse = compare_metric((Arm.of_counts(250, 500), Arm.of_counts(325, 500)), kind=LIKE_RATE)
    assert worse.status == WORSE and worse.reason.startswith("Like rate is worse in the variant: 50.0%")
    errors = compare_metric((Arm.of_counts(40, 500), Arm.of_counts(10, 500)), kind=ERRORS, role=GUARDRAIL)
    assert errors.status == WORSE and "8.0%" in errors.reason and errors.fixed.method == NEWCOMBE


# ----- simulations ---------------------------------------------------------------------------


def simulate_votes(rng, runs: int, votes: int, every: int, p_variant: float, p_control: float) -> Looks:
    """`runs` experiments of `votes` rated turns, each a like with the arm's probability, split
    50/50 at random, looked at after every `every` votes."""
    k = votes // every
    arm = rng.random((runs, votes)) < 0.5
    like = rng.random((runs, votes)) < np.where(arm, p_variant, p_control)

    def cum(a):
        return np.cumsum(a.reshape(runs, k, every).sum(axis=2), axis=1)

    n_v, x_v = cum(arm), cum(arm & like)
    n_c, x_c = cum(~arm), cum(~arm & like)
    return Looks.from_sums(n_v, x_v, x_v, n_c, x_c, x_c, proportion=True)


def naive_alarms(looks: Looks) -> np.ndarray:
    """A fixed-horizon two-proportion z-test (|z| > 1.96) applied at every look."""
    se = np.sqrt(looks.var_variant / looks.n_variant + looks.var_control / looks.n_control)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (looks.mean_variant - looks.mean_control) / se
    return (np.abs(np.nan_to_num(z)) > 1.959964).any(axis=1)


def test_aa_false_alarms_stay_under_five_percent_when_checked_every_50_votes():
    # No true difference (like rate 0.6 in both arms), checked after every 50 votes up to 5,000
    # votes (100 looks), RUNS experiments. Measured (seed 26): 1,000 experiments: 2.0% (the
    # naive z-test 40.8%); 10,000: 2.45% (naive 39.1%). The guarantee is 5% at any horizon: at a
    # finite one the mSPRT uses part of its budget.
    looks = simulate_votes(np.random.default_rng(26), RUNS, 5000, 50, 0.6, 0.6)
    p, low, high, _ = always_valid_arrays(looks)
    alarms = p[:, -1] <= ALPHA
    rate = alarms.mean()
    assert rate <= ALPHA + three_se(ALPHA, RUNS), f"A/A false alarm rate {rate:.3f}"
    # The interval and the p-value agree: an alarm is exactly an interval that left 0 behind.
    assert np.array_equal(alarms, (low[:, -1] > 0) | (high[:, -1] < 0))
    naive = naive_alarms(looks).mean()
    assert naive > 0.2 and naive > 5 * rate, f"naive {naive:.3f} vs sequential {rate:.3f}"

    # The array path is the one the dashboard takes: the same decisions one experiment at a time.
    for i in range(20):
        one = Looks(*(np.asarray(a)[i] for a in vars(looks).values()))
        m = compare_metric(one, kind=LIKE_RATE)
        assert m.sequential.p_value == pytest.approx(p[i, -1]) and (m.status != NO_DIFFERENCE) == alarms[i]


def test_the_confidence_sequence_covers_the_true_lift_at_every_look_at_once():
    # True lift 0.05 (0.60 -> 0.65): the always-valid interval must hold 0.05 at all 100 looks
    # at once in >= 95% of experiments. Measured: 97.8% (1,000 experiments), 97.25% (10,000).
    looks = simulate_votes(np.random.default_rng(27), RUNS, 5000, 50, 0.65, 0.60)
    _, low, high, _ = always_valid_arrays(looks)
    covered = ((low <= 0.05) & (0.05 <= high)).all(axis=1).mean()
    assert covered >= 1 - ALPHA - three_se(ALPHA, RUNS), f"coverage {covered:.3f}"


# The stopping time of a 10-point lift (0.55 -> 0.65), checked after every 50 votes: the votes
# per arm (the larger arm at the deciding look) when "better" is first decided. Measured with
# seed 28: the 80th percentile is 663 votes per arm over 10,000 experiments (695 over the
# default 1,000; median 402), and 85.7% of experiments are decided within N_STATED = 750 per
# arm (82.9% of the default 1,000), a margin of 5 standard errors of the 1,000-run figure over
# 80%. A fixed-horizon test with 80% power needs 373 per arm, decided once: the price of
# looking as often as you like is about 1.8 times the votes (bench.ab_power).
N_STATED = 750


def test_a_ten_point_lift_is_decided_better_within_n_stated_votes_per_arm():
    looks = simulate_votes(np.random.default_rng(28), RUNS, 4000, 50, 0.65, 0.55)
    p, low, _, _ = always_valid_arrays(looks)
    decided = p <= ALPHA
    assert not (decided & (low <= 0)).any()  # every decision is "better", none "worse"
    first = np.where(decided.any(axis=1), decided.argmax(axis=1), -1)
    rows = np.arange(RUNS)
    per_arm = np.maximum(looks.n_variant, looks.n_control)[rows, first]
    stop = np.where(first >= 0, per_arm, np.inf)
    p80 = float(np.percentile(stop, 80))
    assert (stop <= N_STATED).mean() >= 0.80, f"80th percentile {p80:.0f} votes per arm"
    # Not too good to be true either: a test that needed far fewer would be cutting corners
    # (a fixed-horizon test cannot do it under 373 per arm).
    assert p80 >= 0.8 * N_STATED, f"80th percentile {p80:.0f} votes per arm"


@pytest.mark.parametrize(
    "metric, kind, draw",
    [
        # Skewed, cost-like: log-normal (sigma 1) and gamma (shape 0.5); rare errors (2%).
        ("cost", COST, lambda rng, size: rng.lognormal(-6.0, 1.0, size)),
        ("latency", LATENCY, lambda rng, size: 1000 * rng.gamma(0.5, 2.0, size)),
        ("errors", ERRORS, lambda rng, size: (rng.random(size) < 0.02).astype(float)),
    ],
)
def test_guardrail_aa_false_alarms_stay_under_five_percent(metric, kind, draw):
    # One-sided test in the harm direction, checked after every 50 turns up to 5,000, 1,000
    # experiments with no true difference. Measured: cost 2.3%, latency 1.5%, errors 2.0%.
    runs, turns, every = 1000, 5000, 50
    rng = np.random.default_rng(29)
    arm = rng.random((runs, turns)) < 0.5
    y = draw(rng, (runs, turns))

    def cum(a):
        return np.cumsum(a.reshape(runs, turns // every, every).sum(axis=2), axis=1)

    v, c = np.where(arm, y, 0.0), np.where(arm, 0.0, y)
    proportion = kind == ERRORS
    looks = Looks.from_sums(
        cum(arm), cum(v), cum(v * v), cum(~arm), cum(c), cum(c * c), proportion=proportion
    )
    p, *_ = always_valid_arrays(looks, alternative=GREATER)
    rate = (p[:, -1] <= ALPHA).mean()
    assert rate <= ALPHA + three_se(ALPHA, runs), f"{metric}: {rate:.3f}"


def test_a_guardrail_catches_harm_and_ignores_improvement():
    # Cost per turn 20% higher in the variant (log-normal costs), 200 experiments of 4,000 turns
    # at one look: caught as "worse" in all 200 (measured); 20% lower: never called worse.
    runs, turns = 200, 4000
    rng = np.random.default_rng(30)
    arm = rng.random((runs, turns)) < 0.5
    base = rng.lognormal(-6.0, 1.0, (runs, turns))
    for factor, caught in ((1.2, True), (1 / 1.2, False)):
        y = np.where(arm, base * factor, base)
        looks = Looks.from_sums(
            arm.sum(1), np.where(arm, y, 0).sum(1), np.where(arm, y * y, 0).sum(1),
            (~arm).sum(1), np.where(arm, 0, y).sum(1), np.where(arm, 0, y * y).sum(1),
        )  # fmt: skip
        p, *_ = always_valid_arrays(looks, alternative=GREATER)
        worse = (p <= ALPHA).mean()
        assert worse >= 0.95 if caught else worse == 0.0, (factor, worse)


@cache
def critical_deviation(n: int) -> float:
    """The smallest |users in b - n/2| that sample_ratio_mismatch flags at n users (50/50
    weights), found by bisection on the real function (the chi-square grows with the deviation
    and is the same either way round); infinite when nothing is flagged."""
    weights = {"control": 1, "b": 1}

    def flagged(b: int) -> bool:
        return sample_ratio_mismatch({"control": n - b, "b": b}, weights).flagged

    if not flagged(n):
        return math.inf
    lo, hi = (n + 1) // 2, n  # the smallest flagged b is in (lo - 1, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if flagged(mid) else (mid + 1, hi)
    return lo - n / 2


def srm_flags(b_users: np.ndarray, looks: np.ndarray) -> np.ndarray:
    """Flags of the real check at each look (users so far in `looks`), vectorised through each
    look's critical deviation (b_users: users in b at each look, runs x looks)."""
    critical = np.array([critical_deviation(int(n)) for n in looks], dtype=float)
    return np.abs(b_users - looks / 2) >= critical


def test_srm_catches_a_90_10_bug_within_2000_users():
    # Weights 50/50, the app sends 90% of users to b; the check run after every user for the
    # first 100, then after every 10 users up to 2,000 (the real function is bisected once per
    # look, so every user up to 2,000 would cost 8 s for nothing: the bug is caught by then).
    # Measured: flagged in every run, at the latest after 52 users (median 15).
    runs, users = 2000, 2000
    rng = np.random.default_rng(31)
    looks = np.concatenate([np.arange(1, 101), np.arange(110, users + 1, 10)])
    b = np.cumsum(rng.random((runs, users)) < 0.9, axis=1)[:, looks - 1]
    flags = srm_flags(b, looks)
    assert flags.any(axis=1).mean() >= 0.99
    first = looks[flags.argmax(axis=1)]
    assert np.percentile(first, 99) <= 100


def test_srm_on_a_correct_split_flags_rarely_and_says_what_repeated_looks_cost():
    # A correct 50/50 split, checked after every 20 users up to 2,000 (100 looks), 20,000 runs.
    # One look: flagged with probability 0.001 (the threshold; the chi-square is close to exact
    # here; measured 0.10% at 2,000 users, 0.11% over all looks, the small arms a little
    # over). Any of 100 looks: at most 100 x 0.001 = 10% by the union bound; measured 1.3%,
    # because successive looks share their users (2.5% checked after every single user).
    runs, users, every = 20_000, 2000, 20
    rng = np.random.default_rng(32)
    looks = np.arange(every, users + 1, every)
    b = np.cumsum(rng.binomial(every, 0.5, (runs, len(looks))), axis=1)
    flags = srm_flags(b, looks)
    at_end = flags[:, -1].mean()
    assert at_end <= 0.001 + three_se(0.001, runs), f"one look: {at_end:.4f}"
    per_look = flags.mean()
    assert per_look <= 0.001 + three_se(0.001, runs), f"average look: {per_look:.4f}"
    ever = flags.any(axis=1).mean()
    assert ever <= 0.02, f"flagged at some look: {ever:.4f}"
