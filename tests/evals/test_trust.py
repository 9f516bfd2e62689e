"""evals.trust: agreement of a judge with people, worked by hand; intervals; verdicts; drift.

Every figure here is checked against a computation written out in a comment, so a wrong
formula cannot hide behind "the library says so"; statsmodels is a second opinion.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from statsmodels.stats.inter_rater import cohens_kappa as sm_kappa

from evals import trust
from evals.trust import (
    BOOLEAN,
    CATEGORICAL,
    KAPPA,
    NUMERIC,
    PEARSON,
    UNVERIFIED,
    VERIFIED,
    WEIGHTED_KAPPA,
    Thresholds,
    agreement,
    assess,
    cohen_kappa,
    pearson,
    verdict,
    weighted_kappa,
)


def table_pairs(cells: dict[tuple[object, object], int]) -> list[tuple[object, object]]:
    """(judge, human) pairs from {(human, judge): count}, in a deterministic order."""
    return [(judge, human) for (human, judge), count in cells.items() for _ in range(count)]


# Human x judge, n = 50:            judge 1   judge 0
#                      human 1        20         5      (25)
#                      human 0        10        15      (25)
#                                    (30)      (20)
# p_o = (20 + 15) / 50 = 0.70
# p_e = P(h=1) P(j=1) + P(h=0) P(j=0) = 0.5 * 0.6 + 0.5 * 0.4 = 0.50
# kappa = (0.70 - 0.50) / (1 - 0.50) = 0.40
BINARY = table_pairs({(1, 1): 20, (1, 0): 5, (0, 1): 10, (0, 0): 15})

# Three nominal categories, n = 20, rows human, columns judge:
#            a   b   c   (human margin)
#     a      6   1   1   8  -> 0.40
#     b      1   5   0   6  -> 0.30
#     c      0   1   5   6  -> 0.30
#   judge    7   7   6      -> 0.35, 0.35, 0.30
# p_o = (6 + 5 + 5) / 20 = 0.80
# p_e = 0.40*0.35 + 0.30*0.35 + 0.30*0.30 = 0.14 + 0.105 + 0.09 = 0.335
# kappa = (0.80 - 0.335) / (1 - 0.335) = 0.465 / 0.665 = 0.699248...
THREE = {
    ("a", "a"): 6, ("a", "b"): 1, ("a", "c"): 1,
    ("b", "a"): 1, ("b", "b"): 5,
    ("c", "b"): 1, ("c", "c"): 5,
}  # fmt: skip


def test_cohens_kappa_on_a_binary_table_worked_by_hand():
    m = cohen_kappa(BINARY)
    assert m.metric == KAPPA and m.n == 50
    assert m.value == pytest.approx(0.40)
    assert m.observed == pytest.approx(0.70)
    assert sm_kappa([[15, 10], [5, 20]]).kappa == pytest.approx(0.40)  # statsmodels agrees
    assert m.low is not None and m.high is not None and m.low <= m.value <= m.high


def test_cohens_kappa_on_nominal_categories_worked_by_hand():
    pairs = table_pairs(THREE)
    m = agreement(pairs, CATEGORICAL, categories=["a", "b", "c"]).overall
    assert m.metric == KAPPA and m.n == 20
    assert m.value == pytest.approx(0.465 / 0.665)
    assert m.observed == pytest.approx(0.80)
    # Unweighted: the order of the categories does not matter.
    assert cohen_kappa(pairs, categories=["c", "a", "b"]).value == pytest.approx(0.465 / 0.665)


def test_quadratic_weighted_kappa_worked_by_hand():
    # The same table on ordered levels 0, 0.5, 1 (a=0, b=0.5, c=1), bucketed to 3 levels.
    # Agreement weights w = 1 - d^2 / (k-1)^2: d=0 -> 1, d=1 -> 0.75, d=2 -> 0.
    # p_o,w = 16/20 + 0.75 * (1 + 1 + 1)/20 (cells a-b, b-a, c-b) + 0 * 1/20 (a-c) = 0.80 + 0.1125 = 0.9125
    # p_e,w = sum_ij w_ij r_i c_j, r = (.4, .3, .3), c = (.35, .35, .3):
    #   row a: .4 * (.35 + .75*.35 + 0) = .4 * .6125 = .245
    #   row b: .3 * (.75*.35 + .35 + .75*.3) = .3 * .8375 = .25125
    #   row c: .3 * (0 + .75*.35 + .3) = .3 * .5625 = .16875     -> p_e,w = .665
    # kappa_w = (.9125 - .665) / (1 - .665) = .2475 / .335 = 0.738806...
    level = {"a": 0.0, "b": 0.5, "c": 1.0}
    pairs = [(level[j], level[h]) for j, h in table_pairs(THREE)]
    m = weighted_kappa(pairs, levels=3)
    assert m.metric == WEIGHTED_KAPPA and m.value == pytest.approx(0.2475 / 0.335)
    table = np.array([[6, 1, 1], [1, 5, 0], [0, 1, 5]])
    assert sm_kappa(table, wt="quadratic").kappa == pytest.approx(0.2475 / 0.335)
    # The NUMERIC agreement reports it beside the correlation (on 5 levels by default).
    assert agreement(pairs, NUMERIC, thresholds=Thresholds(levels=3)).secondary.value == pytest.approx(
        0.2475 / 0.335
    )


def test_pearson_worked_by_hand_and_the_offset_it_cannot_see():
    # judge x = 0, .5, .5, 1; human y = 0, 0, 1, 1; both means .5
    # centred: x = -.5, 0, 0, .5; y = -.5, -.5, .5, .5
    # Sxy = .25 + 0 + 0 + .25 = .5; Sxx = .5; Syy = 1 -> r = .5 / sqrt(.5 * 1) = 0.7071...
    pairs = [(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (1.0, 1.0)]
    m = pearson(pairs)
    assert m.metric == PEARSON and m.n == 4
    assert m.value == pytest.approx(1 / math.sqrt(2))
    assert m.bias == pytest.approx(0.0)
    # A judge 0.2 more generous on every turn: the same r, but the bias says so.
    moved = pearson([(x + 0.2, y) for x, y in pairs])
    assert moved.value == pytest.approx(1 / math.sqrt(2)) and moved.bias == pytest.approx(0.2)
    assert np.corrcoef([0, 0.5, 0.5, 1], [0, 0, 1, 1])[0, 1] == pytest.approx(m.value)


def test_the_bootstrap_interval_holds_the_estimate_is_reproducible_and_narrows_with_n():
    small = cohen_kappa(BINARY)
    large = cohen_kappa(BINARY * 4)  # the same proportions, n = 200
    assert large.value == pytest.approx(small.value)
    for m in (small, large):
        assert m.low <= m.value <= m.high
    width_small, width_large = small.high - small.low, large.high - large.low
    # Four times the pairs: about half the width (1/sqrt(4)).
    assert 0.35 < width_large / width_small < 0.65
    # Seeded: the same labels always give the same interval; another seed another one.
    again = cohen_kappa(BINARY)
    assert (again.low, again.high) == (small.low, small.high)
    other = cohen_kappa(BINARY, thresholds=Thresholds(seed=7))
    assert (other.low, other.high) != (small.low, small.high)

    rng = np.random.default_rng(3)
    x = rng.random(400)
    y = x + rng.normal(0, 0.3, 400)
    few, many = pearson(list(zip(x[:50], y[:50], strict=True))), pearson(list(zip(x, y, strict=True)))
    for m in (few, many):
        assert m.low <= m.value <= m.high
    assert (many.high - many.low) < 0.6 * (few.high - few.low)


def test_the_verdict_needs_enough_labels():
    perfect = [(1, 1)] * 10 + [(0, 0)] * 10
    v = assess(perfect, BOOLEAN)
    assert v.status == UNVERIFIED and not v.verified
    assert v.reasons == ("Only 20 reviewer labels; at least 30 are needed before its scores count.",)
    # The caller's thresholds: 20 labels may be enough for someone.
    assert assess(perfect, BOOLEAN, thresholds=Thresholds(min_labels=20)).status == VERIFIED
    none = assess([], BOOLEAN)
    assert none.status == UNVERIFIED and none.reasons[0].startswith("No reviewer labels yet")


def test_the_verdict_wants_the_lower_bound_over_the_threshold():
    v = assess(BINARY, BOOLEAN)  # kappa 0.40: its interval reaches well under 0.4
    assert v.status == UNVERIFIED
    assert len(v.reasons) == 1 and "lower bound is under 0.40" in v.reasons[0]
    assert "Cohen's kappa is 0.40 (95% interval" in v.reasons[0] and "n=50" in v.reasons[0]

    # 90 of 100 agree, balanced: kappa 0.8 (p_o .9, p_e .5), the lower bound near 0.68.
    good = table_pairs({(1, 1): 45, (1, 0): 5, (0, 1): 5, (0, 0): 45})
    v = assess(good, BOOLEAN)
    assert v.status == VERIFIED and v.reasons == ()
    assert v.agreement.overall.value == pytest.approx(0.8) and v.agreement.overall.low > 0.6
    assert v.reason.startswith("Verified against reviewer labels: Cohen's kappa 0.80 (95% interval")
    # A stricter owner: a lower bound of 0.75 is not reached.
    assert assess(good, BOOLEAN, thresholds=Thresholds(kappa_lower=0.75)).status == UNVERIFIED


def test_numeric_judges_are_held_to_the_correlation_threshold():
    rng = np.random.default_rng(11)
    truth = rng.random(200)
    close = [(float(t + rng.normal(0, 0.1)), float(t)) for t in truth]
    loose = [(float(t + rng.normal(0, 0.6)), float(t)) for t in truth]
    assert assess(close, NUMERIC).status == VERIFIED
    v = assess(loose, NUMERIC)
    assert v.status == UNVERIFIED and "Pearson's r is" in v.reasons[0] and "under 0.50" in v.reasons[0]


def pairs_at(agree: float, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """n balanced binary pairs, the judge agreeing with the human with probability `agree`."""
    human = rng.integers(0, 2, n)
    judge = np.where(rng.random(n) < agree, human, 1 - human)
    return list(zip(judge.tolist(), human.tolist(), strict=True))


def test_a_drop_between_the_last_two_windows_is_drift_and_unverifies():
    rng = np.random.default_rng(5)
    before = pairs_at(0.95, 50, rng)  # kappa about 0.9
    after = pairs_at(0.55, 50, rng)  # kappa about 0.1
    a = agreement(before + after, BOOLEAN)
    assert a.drift is not None and a.drift.flagged
    assert a.drift.previous.n == 50 and a.drift.last.n == 50
    assert a.drift.drop > 0.5 and a.drift.drop_low > 0
    assert a.drift.overlap is False  # here even the two intervals are apart
    assert a.drift.sentence.startswith("Drift: Cohen's kappa went from")
    v = verdict(a)
    assert v.status == UNVERIFIED and any(r.startswith("Drift:") for r in v.reasons)

    # Stable agreement: no drift, verified.
    steady = agreement(pairs_at(0.92, 100, rng), BOOLEAN)
    assert steady.drift is not None and not steady.drift.flagged
    assert steady.drift.sentence.startswith("No drift")
    assert verdict(steady).status == VERIFIED


def test_drift_needs_two_windows_and_the_window_is_the_callers():
    rng = np.random.default_rng(9)
    a = agreement(pairs_at(0.9, 60, rng), BOOLEAN)
    assert (
        a.drift is None
        and a.drift_reason == "drift needs two windows of 50 labels (100 in all); there are 60"
    )
    assert a.last is not None and a.last.n == 50
    b = agreement(pairs_at(0.9, 60, rng), BOOLEAN, thresholds=Thresholds(window=30))
    assert b.drift is not None and b.drift.previous.n == 30 and b.last.n == 30


def test_a_bad_recent_window_unverifies_even_without_a_drift_flag():
    # Long good history, then 50 bad labels: the overall figure still looks fine, the last
    # window does not (drift would flag it too; it is switched off here to see the other rule).
    rng = np.random.default_rng(2)
    pairs = pairs_at(0.97, 400, rng) + pairs_at(0.5, 50, rng)
    a = agreement(pairs, BOOLEAN)
    assert a.overall.low > 0.6
    v = verdict(a, Thresholds(unverified_on_drift=False))
    assert v.status == UNVERIFIED and len(v.reasons) == 1
    assert v.reasons[0].startswith("Over the last 50 reviewer labels, Cohen's kappa is")
    assert "even its upper bound is under 0.40" in v.reasons[0]


@pytest.mark.parametrize(
    ("pairs", "data_type", "expected"),
    [
        ([], BOOLEAN, "no pairs"),
        ([(1, 1)], BOOLEAN, "a single pair"),
        ([(1, 1), (0, 1), (1, 1), (0, 1)], BOOLEAN, "every human value is the same (1)"),
        ([(1, 1), (1, 0), (1, 1)], BOOLEAN, "every judge value is the same (1)"),
        ([(1, 1), (1, 1), (1, 1)], BOOLEAN, "every human value is the same (1)"),
        ([("x", "y"), ("z", "y")], CATEGORICAL, "every human value is the same ('y')"),
        ([(0.5, 0.1), (0.5, 0.9), (0.5, 0.4)], NUMERIC, "every judge value is the same (0.5)"),
        ([(0.1, 0.3), (0.9, 0.3)], NUMERIC, "every human value is the same (0.3)"),
        ([(None, 1), (1, float("nan"))], BOOLEAN, "no pairs"),
    ],
)
def test_degenerate_cases_give_a_reason_never_nan_or_a_crash(pairs, data_type, expected):
    a = agreement(pairs, data_type)
    assert a.overall.value is None and expected in a.overall.reason
    v = verdict(a)
    assert v.status == UNVERIFIED and v.reasons
    assert all(r.endswith(".") for r in v.reasons)
    # Nothing NaN anywhere in what the CLI and the dashboard read.
    json.dumps({"a": a.as_dict(), "v": v.as_dict()}, allow_nan=False)


def test_a_tiny_sample_gets_a_figure_but_no_interval_when_resamples_are_mostly_degenerate():
    m = pearson([(0.1, 0.2), (0.3, 0.5)])
    assert m.value == pytest.approx(1.0) and m.low is None and "resamples" in m.reason
    v = verdict(agreement([(0.1, 0.2), (0.3, 0.5)], NUMERIC))
    assert any("has no interval" in r for r in v.reasons)


def test_values_are_read_as_the_data_type_says():
    # A NUMERIC judge against thumbs: judge >= 0.5 is a like.
    assert trust.clean_pairs([(0.7, 1), (0.2, 0.0), (0.5, 0), (None, 1)], BOOLEAN) == [(1, 1), (0, 0), (1, 0)]
    # Labels outside the evaluator's categories are still counted (appended), not dropped.
    m = cohen_kappa([("a", "a"), ("b", "b"), ("other", "a"), ("b", "b")], categories=["a", "b"])
    assert m.n == 4 and m.value is not None
    with pytest.raises(ValueError):
        agreement([(1, 1)], "TEXT")
