"""The true rate of a judged score over all turns: the judge on every turn, corrected by people.

A judge scores every turn but may be biased; people label few turns. Prediction-powered
inference (Angelopoulos, Bates, Fannjiang, Jordan, Zrnic, "Prediction-powered inference",
Science 382, 2023) combines both: the judge's mean over the turns nobody reviewed, minus the
judge's average error (judge - human, the "rectifier") measured on the reviewed turns. Its 95%
interval is valid whatever the judge's bias, and narrower than the reviewed turns alone give
when the judge tracks people.

We use the power-tuned form, PPI++ (Angelopoulos, Duchi, Zrnic, "PPI++: Efficient
Prediction-Powered Inference", 2023, the mean estimator): the judge's part is weighted by
lambda = Cov(human, judge) / ((1 + n/M) Var(judge)), clipped to [0, 1]. lambda = 1 is plain PPI;
a judge uncorrelated with people gets lambda near 0 and the estimate falls back to the reviewed
turns' own mean. Plain PPI with such a judge is *wider* than ignoring the judge (its rectifier
carries the judge's noise), which is exactly the local demo judge's case; PPI++ is never wider
(asymptotically), and stays valid. `power_tuning=False` gives plain PPI.

With n reviewed turns and M = N - n unreviewed ones (disjoint, as in the paper, so the two
means are independent):

    estimate = lambda * mean_M(judge) + mean_n(human - lambda * judge)
    variance = lambda^2 Var_M(judge) / M + Var_n(human - lambda * judge) / n

and the interval is estimate +- q * sqrt(variance). The paper's q is the normal quantile; we take
Student's t quantile with n - 1 degrees of freedom, because the variance is dominated by the
rectifier's, estimated from the n reviewed turns: identical for large n, and honest for small n
(1.98 instead of 1.96 at n = 100, 2.26 at n = 10). Measured by simulation (tests/evals/
test_estimate.py): 95% intervals cover the truth in about 94.5% of runs with 100 reviewed turns.

THE ASSUMPTION: the reviewed turns are a uniform random sample of the judged turns. Turns chosen
by a rule (every dislike, a judge and a user who disagree, a low judge score) are NOT a random
sample and must not be passed here: they would make the correction describe the turns people
chose, not all turns. So the API takes the random-sample labels explicitly (`judge_sample`,
`human_sample`). When the calibration sample is uniform only within a group (say, liked and
unrated turns, while every dislike is reviewed), estimate each group on its own and combine
them with `combine_strata` (a stratified estimate, weighted by each group's size). Drawn items
that reviewers skip break the assumption too if the skipped ones differ (the hard ones): count
only labelled items, and treat many skips as a reason to doubt the interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.stats import t as student_t

PPI = "ppi"
PPI_PP = "ppi++"
# Under this many reviewed turns the normal interval is not to be believed (and under 2 there is
# no variance at all): the estimate is withheld and `reason` says why.
MIN_REVIEWED = 10


@dataclass(frozen=True)
class QualityEstimate:
    """The corrected rate with its interval, beside the raw judge mean and the reviews alone.

    `estimate`/`low`/`high` are None when the sample is too small (`reason` says why);
    `judge_mean` and its naive interval (judge_low/judge_high: as if the judge were right) are
    there whenever some turn was judged, for comparison only."""

    estimate: float | None
    low: float | None
    high: float | None
    std_error: float | None
    n: int
    N: int
    judge_mean: float | None
    judge_low: float | None
    judge_high: float | None
    reviewed_mean: float | None
    reviewed_low: float | None
    reviewed_high: float | None
    lam: float | None
    method: str
    reason: str | None = None

    def text(self) -> str:
        raw = "-" if self.judge_mean is None else f"{self.judge_mean:.3f}"
        if self.estimate is None:
            return f"no corrected estimate ({self.reason}); raw judge mean {raw} over {self.N} turns"
        return (
            f"{self.estimate:.3f} (95% interval {self.low:.3f} to {self.high:.3f}; {self.n} reviewed of "
            f"{self.N} judged); raw judge mean {raw}"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=256)
def _q(confidence: float, df: int) -> float:
    """Student's t quantile of a two-sided `confidence` interval."""
    return float(student_t.ppf(1 - (1 - confidence) / 2, max(1, df)))


def _clip(v: float, bounds: tuple[float, float] | None) -> float:
    return v if bounds is None else min(bounds[1], max(bounds[0], v))


def _array(values: Sequence[float], what: str) -> np.ndarray:
    a = np.asarray(values, dtype=float).ravel()
    if np.isnan(a).any():
        raise ValueError(f"{what} has a missing value (NaN): leave such turns out")
    return a


def ppi_mean(
    judge_all: Sequence[float],
    judge_sample: Sequence[float],
    human_sample: Sequence[float],
    *,
    power_tuning: bool = True,
    confidence: float = 0.95,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    min_reviewed: int = MIN_REVIEWED,
) -> QualityEstimate:
    """The mean of the human score over all judged turns, estimated by (power-tuned) PPI.

    judge_all: the judge's value on every judged turn, the reviewed ones included (they are
        taken out here to form the unreviewed set).
    judge_sample, human_sample: the judge's and the people's values on the turns of the UNIFORM
        RANDOM calibration sample, in the same order. Rule-selected reviews must not be in it.
    bounds: the scale (0..1 for our scores); the interval is clipped to it (None: not clipped).
    min_reviewed: under this many reviewed turns no estimate is given (at least 2).
    """
    f_all = _array(judge_all, "judge_all")
    f_l = _array(judge_sample, "judge_sample")
    y_l = _array(human_sample, "human_sample")
    if len(f_l) != len(y_l):
        raise ValueError(
            f"judge_sample and human_sample must pair up: {len(f_l)} judge values, {len(y_l)} labels"
        )
    n, N = len(y_l), len(f_all)
    if n > N:
        raise ValueError(f"judge_all ({N} turns) must include the {n} reviewed turns")
    method = PPI_PP if power_tuning else PPI

    judge_mean = judge_low = judge_high = None
    if N:
        judge_mean = float(f_all.mean())
        half = _q(confidence, N - 1) * float(f_all.std(ddof=1)) / math.sqrt(N) if N > 1 else 0.0
        judge_low, judge_high = _clip(judge_mean - half, bounds), _clip(judge_mean + half, bounds)
    reviewed_mean = reviewed_low = reviewed_high = None
    if n:
        reviewed_mean = float(y_l.mean())
        if n > 1:
            half = _q(confidence, n - 1) * float(y_l.std(ddof=1)) / math.sqrt(n)
            reviewed_low, reviewed_high = (
                _clip(reviewed_mean - half, bounds),
                _clip(reviewed_mean + half, bounds),
            )

    def withheld(reason: str) -> QualityEstimate:
        return QualityEstimate(
            estimate=None, low=None, high=None, std_error=None, n=n, N=N,
            judge_mean=judge_mean, judge_low=judge_low, judge_high=judge_high, reviewed_mean=reviewed_mean,
            reviewed_low=reviewed_low, reviewed_high=reviewed_high, lam=None, method=method, reason=reason,
        )  # fmt: skip

    need = max(2, min_reviewed)
    if n == 0:
        return withheld(f"no turn of the random sample is reviewed yet ({need} needed)")
    if n < need:
        return withheld(
            f"only {n} turn{'s' if n != 1 else ''} of the random sample reviewed; at least {need} are "
            "needed for an interval to mean anything"
        )

    M = N - n
    # The unreviewed turns' judge values, by difference of sums (judge_all holds the sample too).
    if M > 0:
        mean_u = (f_all.sum() - f_l.sum()) / M
        if M > 1:
            ss_u = (f_all**2).sum() - (f_l**2).sum() - M * mean_u**2
            var_u = max(0.0, float(ss_u) / (M - 1))
        else:
            var_u = 0.0
    else:
        mean_u, var_u = 0.0, 0.0
    if M == 0:
        lam = 0.0  # every turn reviewed: the people's mean is the answer
    elif not power_tuning:
        lam = 1.0
    else:
        var_f = float(f_all.var(ddof=1)) if N > 1 else 0.0
        cov = float(np.cov(y_l, f_l, ddof=1)[0, 1])
        lam = 0.0 if var_f <= 0 else min(1.0, max(0.0, cov / ((1 + n / M) * var_f)))
    rect = y_l - lam * f_l
    estimate = lam * mean_u + float(rect.mean())
    variance = (lam**2 * var_u / M if M else 0.0) + float(rect.var(ddof=1)) / n
    half = _q(confidence, n - 1) * math.sqrt(variance)
    return QualityEstimate(
        estimate=_clip(estimate, bounds), low=_clip(estimate - half, bounds),
        high=_clip(estimate + half, bounds), std_error=math.sqrt(variance), n=n, N=N,
        judge_mean=judge_mean, judge_low=judge_low, judge_high=judge_high, reviewed_mean=reviewed_mean,
        reviewed_low=reviewed_low, reviewed_high=reviewed_high, lam=lam, method=method,
    )  # fmt: skip


def combine_strata(
    parts: Sequence[QualityEstimate],
    *,
    confidence: float = 0.95,
    bounds: tuple[float, float] | None = (0.0, 1.0),
) -> QualityEstimate:
    """One estimate over groups of turns sampled at different rates (each `ppi_mean` over its own
    group's judged turns and its own uniform sample): the groups' estimates weighted by their
    sizes N_h, variances by N_h^2. Withheld if any group's estimate is. A group reviewed
    in full (every dislike) is a group whose sample is all of it."""
    if not parts:
        raise ValueError("combine_strata needs at least one group")
    N = sum(p.N for p in parts)
    n = sum(p.n for p in parts)
    judged = [p for p in parts if p.judge_mean is not None]
    judge_mean = sum(p.N * p.judge_mean for p in judged) / N if judged and N else None  # type: ignore[operator]
    method = parts[0].method if len({p.method for p in parts}) == 1 else "mixed"
    missing = [p for p in parts if p.estimate is None]
    if missing or N == 0:
        reason = missing[0].reason if missing else "no judged turn"
        return QualityEstimate(
            estimate=None, low=None, high=None, std_error=None, n=n, N=N, judge_mean=judge_mean,
            judge_low=None, judge_high=None, reviewed_mean=None, reviewed_low=None, reviewed_high=None,
            lam=None, method=method, reason=f"a group has no estimate: {reason}",
        )  # fmt: skip
    estimate = sum(p.N * p.estimate for p in parts) / N  # type: ignore[operator]
    variance = sum((p.N / N) ** 2 * p.std_error**2 for p in parts)  # type: ignore[operator]
    # Conservative degrees of freedom: those of the smallest group's sample.
    half = _q(confidence, min(p.n for p in parts) - 1) * math.sqrt(variance)
    return QualityEstimate(
        estimate=_clip(estimate, bounds), low=_clip(estimate - half, bounds),
        high=_clip(estimate + half, bounds), std_error=math.sqrt(variance), n=n, N=N,
        judge_mean=judge_mean, judge_low=None, judge_high=None, reviewed_mean=None, reviewed_low=None,
        reviewed_high=None, lam=None, method=method,
    )  # fmt: skip
