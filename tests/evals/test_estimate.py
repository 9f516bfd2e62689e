"""evals.estimate: the corrected quality estimate (prediction-powered inference), by hand and by
simulation: with a known truth and a judge biased by +15 points, the interval covers the truth
about 95% of the time and the raw judge mean's does not."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from evals.estimate import PPI, PPI_PP, combine_strata, ppi_mean

T_3 = 3.182446305284263  # Student's t, 97.5% quantile, 3 degrees of freedom


def test_plain_ppi_worked_by_hand():
    # Ten judged turns; the first four reviewed (judge 1 1 1 0, people 1 0 1 0).
    # Unreviewed judge values: 1 1 0 1 1 1 -> mean 5/6, sample variance ((5 * (1/6)^2 + (5/6)^2) / 5) = 1/6
    # Rectifier judge - human on the reviewed: 0 1 0 0 -> mean 1/4, sample variance
    #   (3 * (1/4)^2 + (3/4)^2) / 3 = 0.75 / 3 = 1/4
    # estimate = 5/6 - 1/4 = 0.583333...
    # variance = (1/6) / 6 + (1/4) / 4 = 1/36 + 1/16 = 0.0902777..., se = 0.300463
    # 95% interval = estimate +- t(3) * se (t(3) = 3.1824): 0.583333 +- 0.956194
    judge_all = [1, 1, 1, 0, 1, 1, 0, 1, 1, 1]
    est = ppi_mean(judge_all, [1, 1, 1, 0], [1, 0, 1, 0], power_tuning=False, min_reviewed=2, bounds=None)
    assert est.method == PPI and est.lam == 1.0 and (est.n, est.N) == (4, 10)
    assert est.estimate == pytest.approx(5 / 6 - 1 / 4)
    se = math.sqrt(1 / 36 + 1 / 16)
    assert est.std_error == pytest.approx(se)
    assert est.low == pytest.approx(5 / 6 - 1 / 4 - T_3 * se)
    assert est.high == pytest.approx(5 / 6 - 1 / 4 + T_3 * se)
    assert est.judge_mean == pytest.approx(0.8) and est.reviewed_mean == pytest.approx(0.5)
    # Clipped to the 0..1 scale by default.
    clipped = ppi_mean(judge_all, [1, 1, 1, 0], [1, 0, 1, 0], power_tuning=False, min_reviewed=2)
    assert (clipped.low, clipped.high) == (0.0, 1.0)


def test_power_tuned_ppi_worked_by_hand():
    # Same turns. lambda = Cov(human, judge) / ((1 + n/M) Var(judge)):
    #   Var(judge) over all ten (eight 1s): 10 * 0.8 * 0.2 / 9 = 0.177778
    #   Cov on the reviewed: human 1 0 1 0 (mean .5), judge 1 1 1 0 (mean .75):
    #     (.5)(.25) + (-.5)(.25) + (.5)(.25) + (-.5)(-.75) = .5, / 3 = 0.166667
    #   lambda = 0.166667 / ((1 + 4/6) * 0.177778) = 0.5625
    # estimate = lambda * mean_unreviewed(judge) + mean(human - lambda * judge)
    #          = 0.5625 * 5/6 + (2 - 0.5625 * 3) / 4 = 0.46875 + 0.078125 = 0.546875
    est = ppi_mean([1, 1, 1, 0, 1, 1, 0, 1, 1, 1], [1, 1, 1, 0], [1, 0, 1, 0], min_reviewed=2, bounds=None)
    assert est.method == PPI_PP
    assert est.lam == pytest.approx(0.5625)
    assert est.estimate == pytest.approx(0.546875)


def test_too_few_reviews_give_no_estimate_but_a_reason_and_the_raw_means():
    judged = [1.0, 0.0, 1.0, 1.0] * 10
    for n, words in (
        (0, "no turn of the random sample is reviewed yet"),
        (1, "only 1 turn"),
        (5, "only 5 turns"),
    ):
        est = ppi_mean(judged, judged[:n], [1.0] * n)
        assert est.estimate is None and est.low is None and words in est.reason
        assert est.judge_mean == pytest.approx(0.75)
        json.dumps(est.as_dict(), allow_nan=False)
    assert ppi_mean(judged, judged[:5], [1.0, 0.0] * 2 + [1.0], min_reviewed=5).estimate is not None
    assert ppi_mean([], [], []).judge_mean is None


def test_every_turn_reviewed_is_the_peoples_mean_and_bad_input_is_refused():
    est = ppi_mean([1, 0, 1, 1] * 5, [1, 0, 1, 1] * 5, [0, 0, 1, 1] * 5)
    assert est.lam == 0.0 and est.estimate == pytest.approx(0.5) and est.low < 0.5 < est.high
    with pytest.raises(ValueError, match="pair up"):
        ppi_mean([1, 0, 1], [1, 0], [1])
    with pytest.raises(ValueError, match="must include"):
        ppi_mean([1], [1, 0], [1, 0])
    with pytest.raises(ValueError, match="NaN"):
        ppi_mean([1, float("nan")], [1], [1])


def simulate(runs: int, turns: int, seed: int, *, reviewed: float = 0.05, truth: float = 0.6):
    """`runs` worlds of `turns` turns: people's truth ~ Bernoulli(truth); the judge says 1 with
    probability 0.95 on a good turn and 0.45 on a bad one (mean 0.6*0.95 + 0.4*0.45 = 0.75: +15
    points, and correlated with the truth); `reviewed` of the turns drawn uniformly at random."""
    rng = np.random.default_rng(seed)
    y = rng.random((runs, turns)) < truth
    f = np.where(y, rng.random((runs, turns)) < 0.95, rng.random((runs, turns)) < 0.45).astype(float)
    k = int(turns * reviewed)
    sample = np.argpartition(rng.random((runs, turns)), k, axis=1)[:, :k]  # k distinct turns per run
    return y.astype(float), f, sample


def coverage(runs: int, turns: int, seed: int, truth: float = 0.6) -> dict[str, float]:
    y, f, sample = simulate(runs, turns, seed, truth=truth)
    hits = {"ppi++": 0, "ppi": 0, "judge": 0}
    for r in range(runs):
        s = sample[r]
        tuned = ppi_mean(f[r], f[r, s], y[r, s])
        plain = ppi_mean(f[r], f[r, s], y[r, s], power_tuning=False)
        hits["ppi++"] += tuned.low <= truth <= tuned.high
        hits["ppi"] += plain.low <= truth <= plain.high
        hits["judge"] += tuned.judge_low <= truth <= tuned.judge_high
    return {k: v / runs for k, v in hits.items()}


def test_the_interval_covers_the_truth_despite_a_judge_biased_by_15_points():
    # The check: 500 seeded runs, 10,000 turns each, 5% (500) reviewed at random.
    y, f, _ = simulate(20, 10_000, seed=1)
    assert f.mean() - y.mean() == pytest.approx(0.15, abs=0.01)  # the judge's bias, as promised
    found = coverage(500, 10_000, seed=1)
    print("coverage with 500 reviewed turns:", found)
    assert found["ppi++"] >= 0.93 and found["ppi"] >= 0.93
    assert found["judge"] <= 0.05  # the raw judge mean's naive interval misses nearly always


def test_the_interval_still_covers_with_100_reviewed_turns():
    # Smaller samples: 2,000 turns, 100 reviewed; 2,000 runs so that the measured coverage is
    # within about 0.005 of the true one (about 0.945 here: the normal approximation with 100
    # binary labels, and lambda estimated from them, cost a little).
    found = coverage(2000, 2000, seed=2)
    print("coverage with 100 reviewed turns:", found)
    assert found["ppi++"] >= 0.93 and found["ppi"] >= 0.93
    assert found["judge"] <= 0.05


def test_power_tuning_never_lets_a_useless_judge_widen_the_interval():
    rng = np.random.default_rng(4)
    runs, turns, n = 200, 2000, 100
    widths = {"ppi++": 0.0, "ppi": 0.0, "reviews": 0.0}
    for _ in range(runs):
        y = (rng.random(turns) < 0.6).astype(float)
        noise = (rng.random(turns) < 0.75).astype(float)  # a judge that ignores the answer
        s = rng.choice(turns, n, replace=False)
        tuned, plain = ppi_mean(noise, noise[s], y[s]), ppi_mean(noise, noise[s], y[s], power_tuning=False)
        widths["ppi++"] += (tuned.high - tuned.low) / runs
        widths["ppi"] += (plain.high - plain.low) / runs
        widths["reviews"] += (tuned.reviewed_high - tuned.reviewed_low) / runs
    assert widths["ppi++"] <= 1.05 * widths["reviews"]  # falls back to the reviews alone
    assert widths["ppi"] >= 1.2 * widths["reviews"]  # plain PPI pays for the judge's noise

    # A judge that tracks people narrows the interval below the reviews alone.
    y, f, sample = simulate(50, 2000, seed=6)
    tuned = [ppi_mean(f[r], f[r, sample[r]], y[r, sample[r]]) for r in range(50)]
    assert np.mean([e.high - e.low for e in tuned]) < 0.9 * np.mean(
        [e.reviewed_high - e.reviewed_low for e in tuned]
    )


def test_rule_selected_reviews_are_a_stratum_of_their_own_not_a_random_sample():
    # Every dislike is reviewed (a rule), plus a 5% random sample of the other turns. Taken as one
    # random sample, the dislikes (mostly bad turns) drag the estimate down; estimated per group
    # and combined by size (combine_strata), it covers the truth.
    rng = np.random.default_rng(8)
    runs, turns, truth = 300, 4000, 0.6
    y = rng.random((runs, turns)) < truth
    f = np.where(y, rng.random((runs, turns)) < 0.95, rng.random((runs, turns)) < 0.45).astype(float)
    disliked = np.where(y, rng.random((runs, turns)) < 0.02, rng.random((runs, turns)) < 0.3)
    y = y.astype(float)
    right = wrong = 0
    for r in range(runs):
        d = np.flatnonzero(disliked[r])
        rest = np.flatnonzero(~disliked[r])
        calib = rng.choice(rest, int(len(rest) * 0.05), replace=False)
        groups = [
            ppi_mean(f[r, d], f[r, d], y[r, d]),  # reviewed in full
            ppi_mean(f[r, rest], f[r, calib], y[r, calib]),
        ]
        both = combine_strata(groups)
        assert both.N == turns and both.n == len(d) + len(calib)
        right += both.low <= truth <= both.high
        chosen = np.concatenate([d, calib])
        pooled = ppi_mean(f[r], f[r, chosen], y[r, chosen])  # the mistake the docstring warns of
        wrong += pooled.low <= truth <= pooled.high
    assert right / runs >= 0.9
    assert wrong / runs <= 0.2


def test_combine_strata_by_hand():
    a = ppi_mean([1, 0] * 50, [1, 0] * 10, [1, 0] * 10, power_tuning=False)  # N=100, estimate 0.5
    b = ppi_mean([1, 1, 1, 0] * 75, [1, 1, 1, 0] * 5, [1, 1, 1, 1] * 5, power_tuning=False)  # N=300
    # b: unreviewed judge mean 0.75; rectifier judge - human: 0 0 0 -1 -> mean -0.25: 0.75 + 0.25 = 1.0
    assert a.estimate == pytest.approx(0.5) and b.estimate == pytest.approx(1.0)
    both = combine_strata([a, b])
    assert both.estimate == pytest.approx((100 * 0.5 + 300 * 1.0) / 400)
    assert both.std_error == pytest.approx(math.sqrt((0.25 * a.std_error) ** 2 + (0.75 * b.std_error) ** 2))
    withheld = combine_strata([a, ppi_mean([1, 0], [], [])])
    assert withheld.estimate is None and "a group has no estimate" in withheld.reason
