"""Is a variant better than the control? Statistics that stay valid however often you look.

Pure functions: per-arm counts, means and variances in, dataclasses out (each with a reason
sentence where a number cannot be had, never NaN). The store and the pages read the data.

FIXED-HORIZON INTERVALS (for display: "the difference, 95% interval"). Valid for one look at a
sample size fixed in advance; shown beside the sequential result, never used for a decision.

- A difference of proportions (like rate, error rate): Newcombe's hybrid score interval
  (Newcombe, "Interval estimation for the difference between independent proportions:
  comparison of eleven methods", Stat Med 17:873-890, 1998, method 10): Wilson's interval per
  arm, combined. Chosen over Wald (even with a continuity correction) because its coverage is
  close to 95% with small arms and rates near 0 or 1, it stays inside [-1, 1], and it does not
  collapse to a zero width when an arm is all likes.
- A difference of means (judge scores, cost per turn, latency): Welch's t interval with the
  Welch-Satterthwaite degrees of freedom, which does not assume equal variances in the arms.

THE SEQUENTIAL TEST (for decisions). A mixture sequential probability ratio test, mSPRT (Johari,
Koomen, Pekelis, Walsh, "Always valid inference: continuous monitoring of A/B tests", Operations
Research 70(3), 2022; KDD 2017 "Peeking at A/B tests"), on the difference of the arms' means
(a proportion is the mean of 0/1 values). With the difference d = mean_variant - mean_control,
its squared standard error s^2 = var_v / n_v + var_c / n_c, z = (d - theta0) / s, and a normal
mixture N(theta0, tau^2) over the true difference, the likelihood ratio is

    Lambda = (1 + r)^(-1/2) * exp(z^2 r / (2 (1 + r))),    r = tau^2 / s^2.

Under "no difference" it is (for Gaussian data with the variance known) a nonnegative martingale
with mean 1, so by Ville's inequality it ever reaches 1/alpha with probability at most alpha,
over any number of looks at any times. Hence:

- the always-valid p-value is the running minimum of min(1, 1/Lambda) over the looks;
- the always-valid 95% interval (a confidence sequence) is, at each look, the set of theta0 the
  test does not reject, d +- z*(r) s with z*(r)^2 = (1 + r)/r * (log(1 + r) + 2 log(1/alpha)),
  intersected over the looks. It covers the true difference at every look at once with
  probability 1 - alpha. p <= alpha exactly when that interval excludes 0.

One-sided (guardrails, which only ask "did it get worse?"): the mixture over the harmful side
only (a half-normal), Lambda_1 = 2 Phi(z sqrt(r / (1 + r))) * Lambda, a valid test of "no worse"
(H0: the difference is 0 or better) whose interval is a single bound (Howard, Ramdas,
McAuliffe, Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann.
Statist. 49(2), 2021, the one-sided normal mixture).

Why this and not e-values / betting confidence sequences (Waudby-Smith & Ramdas, JRSS B 2024):
those are exact for BOUNDED outcomes, but cost per turn and latency have no natural bound; the
mSPRT needs only each arm's count, mean and variance (SQL aggregates), and one method serves
every metric. Its price: with the variance estimated (the plug-in of Johari et al.) and
non-Gaussian data the guarantee is asymptotic (a CLT). The simulations in
tests/evals/test_experiment_stats.py check it where we use it: 0/1 like rates, rare errors, and
skewed (log-normal, gamma) cost-like data. Looks are taken only once each arm has `min_per_arm`
values (30), so the variance exists.

THE MIXING VARIANCE. tau is set in units of the metric's own spread: tau = effect_size * sigma,
with sigma^2 the mean of the two arms' variances, so one default fits a like rate, dollars and
milliseconds alike (and r = effect_size^2 * n / 2 with equal arms: the test depends only on z and
the sample size). The boundary is tightest where r = log(1 + r) + 2 log(1/alpha), r about 8.2 at
alpha = 0.05, which puts the mixture's standard deviation at about 0.94 times the difference it
finds fastest (tau^2 = 0.89 theta^2). Johari et al. advise matching tau to the effects one
expects; with no past experiments we match it to the one the issue names, 10 points of like
rate around 55-65% (sigma about 0.49): effect_size = 0.2 (tau about 0.1), Cohen's "small"
effect. Power is flat around it (bench.ab_power, 10,000 experiments): the votes per arm by
which 80% of experiments decide a 10-point lift are 712, 675, 691 and 733 for effect_size 0.1,
0.2, 0.3 and 0.5; for 5- and 15-point lifts 0.2 is within 6% of the best. It never affects
validity.

ASSUMPTIONS the caller must keep: the unit is a rated turn (or a turn), independent across
units. Votes of one user are correlated, which makes every interval here somewhat too narrow
when users differ a lot; passing one value per user (their like rate) instead removes that. The
split between the arms must be steady (the sample-ratio check watches it), and an experiment's
data must start when its weights were last set.

SAMPLE-RATIO MISMATCH. Pearson's chi-square goodness of fit of users per variant against the
configured weights, flagged at p < 0.001, the threshold of Fabijan, Gupchup, Gupta, Omhover,
Qin, Vermeer, Dmitriev, "Diagnosing sample ratio mismatch in online controlled experiments"
(KDD 2019). It is a fixed-horizon test checked repeatedly, so 0.001 is the false-alarm rate of
ONE look; over many looks alarms add up, but slowly because successive looks share their users:
simulated with a correct 50/50 split over the first 2,000 users, checked after every 20 users
(100 looks), about 1.3% of experiments are flagged at some look (2.5% checked after every user),
far under the union bound of 100 x 0.1%. A chance flag does not persist (the next users pull the
ratio back), while a real bug's p-value only shrinks: a 90/10 split when the weights say 50/50 is
flagged within about 50 users. Under 5 expected users in some variant (Cochran's rule for the
chi-square approximation) nothing is checked yet.

THE VERDICT per variant against the control: "stop: assignment is broken" when the
sample-ratio check flags (it overrides everything: with broken assignment the arms are not
comparable), else the primary metric's (two-sided) decision: "better", "worse" or "no
difference yet"; plus the guardrails whose one-sided test says they went worse. Each guardrail
is tested at alpha on its own: with k guardrails an A/A experiment raises some guardrail alarm
with probability up to k x alpha, an acceptable price for a check whose alarm asks for a look,
not a rollback.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.special import log_ndtr
from scipy.stats import chisquare, norm
from scipy.stats import t as student_t

ALPHA = 0.05
EFFECT_SIZE = 0.2
MIN_PER_ARM = 30
SRM_THRESHOLD = 0.001
SRM_MIN_EXPECTED = 5.0

TWO_SIDED = "two-sided"
GREATER = "greater"  # the variant's mean is higher
LESS = "less"  # the variant's mean is lower
ALTERNATIVES = (TWO_SIDED, GREATER, LESS)

BETTER = "better"
WORSE = "worse"
NO_DIFFERENCE = "no difference yet"
STOP = "stop: assignment is broken"

PRIMARY = "primary"
GUARDRAIL = "guardrail"

NEWCOMBE = "newcombe"
WELCH = "welch"

# Bisection steps for the one-sided boundary: the bracket is under 1 wide, 2^-60 is exact.
_BISECT = 60


# ----- metric kinds --------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """What a metric is: which direction is good, and whether it is a rate of 0/1 values."""

    name: str
    label: str
    higher_is_better: bool
    proportion: bool

    @property
    def harm(self) -> str:
        """The alternative a guardrail tests: the direction in which it gets worse."""
        return LESS if self.higher_is_better else GREATER


LIKE_RATE = "like_rate"
JUDGE = "judge"
COST = "cost"
LATENCY = "latency"
ERRORS = "errors"
KINDS: dict[str, Kind] = {
    # Likes among rated turns: higher is better (the primary metric).
    LIKE_RATE: Kind(LIKE_RATE, "like rate", higher_is_better=True, proportion=True),
    # A judge's score (0..1, or 0/1 for a BOOLEAN judge): higher is better.
    JUDGE: Kind(JUDGE, "judge score", higher_is_better=True, proportion=False),
    # Dollars per turn: lower is better.
    COST: Kind(COST, "cost per turn", higher_is_better=False, proportion=False),
    # Milliseconds per turn: lower is better.
    LATENCY: Kind(LATENCY, "latency", higher_is_better=False, proportion=False),
    # Share of turns that ended in an error: lower is better.
    ERRORS: Kind(ERRORS, "error rate", higher_is_better=False, proportion=True),
}


def _kind(kind: str) -> Kind:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}") from None


# ----- per-arm statistics --------------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    """One arm's values: how many, their mean and their variance.

    For 0/1 values (`of_counts`) the variance is the binomial p(1 - p); otherwise the sample
    variance (ddof = 1), 0 with fewer than two values."""

    n: int
    mean: float
    var: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Arm:
        a = np.asarray(values, dtype=float).ravel()
        if np.isnan(a).any():
            raise ValueError("a value is missing (NaN): leave such turns out")
        n = len(a)
        return cls(n, float(a.mean()) if n else 0.0, float(a.var(ddof=1)) if n > 1 else 0.0)

    @classmethod
    def of_counts(cls, successes: int, n: int) -> Arm:
        if n < 0 or not 0 <= successes <= max(n, 0):
            raise ValueError(f"need 0 <= successes <= n, not {successes} of {n}")
        p = successes / n if n else 0.0
        return cls(int(n), p, p * (1 - p))

    @classmethod
    def of_sums(cls, n: int, total: float, total_sq: float) -> Arm:
        """From SQL aggregates: COUNT(x), SUM(x), SUM(x * x)."""
        if n <= 0:
            return cls(0, 0.0, 0.0)
        mean = total / n
        var = max(0.0, (total_sq - total * mean) / (n - 1)) if n > 1 else 0.0
        return cls(int(n), mean, var)

    @property
    def successes(self) -> int:
        """The count of 1s, for an arm of 0/1 values."""
        return int(round(self.mean * self.n))


@dataclass(frozen=True)
class Looks:
    """Each arm's cumulative statistics at each look, oldest look last on the last axis.

    Arrays of one shape; a leading axis holds many experiments at once (simulations)."""

    n_variant: np.ndarray
    mean_variant: np.ndarray
    var_variant: np.ndarray
    n_control: np.ndarray
    mean_control: np.ndarray
    var_control: np.ndarray

    @classmethod
    def of_arms(cls, pairs: Sequence[tuple[Arm, Arm]]) -> Looks:
        """From (variant, control) pairs, one per look, oldest first."""
        if not pairs:
            raise ValueError("at least one look is needed")

        def col(i: int, attr: str) -> np.ndarray:
            return np.array([getattr(p[i], attr) for p in pairs], dtype=float)

        return cls(col(0, "n"), col(0, "mean"), col(0, "var"), col(1, "n"), col(1, "mean"), col(1, "var"))

    @classmethod
    def from_sums(
        cls,
        n_variant: Any, sum_variant: Any, sumsq_variant: Any,
        n_control: Any, sum_control: Any, sumsq_control: Any,
        *, proportion: bool = False,
    ) -> Looks:  # fmt: skip
        """From cumulative counts, sums and sums of squares (arrays of any one shape)."""

        def arm(n: Any, s: Any, q: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            n, s, q = (np.asarray(v, dtype=float) for v in (n, s, q))
            safe = np.where(n > 0, n, 1.0)
            mean = np.where(n > 0, s / safe, 0.0)
            if proportion:
                var = mean * (1 - mean)
            else:
                var = np.where(n > 1, (q - s * mean) / np.where(n > 1, n - 1, 1.0), 0.0)
            return n, mean, np.maximum(var, 0.0)

        return cls(*arm(n_variant, sum_variant, sumsq_variant), *arm(n_control, sum_control, sumsq_control))

    @classmethod
    def of_stream(
        cls,
        is_variant: Sequence[bool],
        values: Sequence[float],
        *,
        every: int = 1,
        proportion: bool = False,
    ) -> Looks:
        """From the values in arrival order with their arm (True: the variant), looking after
        every `every` values (and after the last one)."""
        arm = np.asarray(is_variant, dtype=bool).ravel()
        y = np.asarray(values, dtype=float).ravel()
        if arm.shape != y.shape:
            raise ValueError(f"is_variant and values must pair up: {arm.size} arms, {y.size} values")
        if every < 1:
            raise ValueError("every must be at least 1")
        if np.isnan(y).any():
            raise ValueError("a value is missing (NaN): leave such turns out")
        if y.size == 0:
            zero = np.zeros(1)
            return cls(zero, zero, zero, zero, zero, zero)
        at = np.arange(every - 1, y.size, every)
        if at.size == 0 or at[-1] != y.size - 1:
            at = np.append(at, y.size - 1)
        v, c = np.where(arm, y, 0.0), np.where(arm, 0.0, y)

        def cum(a: np.ndarray) -> np.ndarray:
            return np.cumsum(a)[at]

        return cls.from_sums(
            cum(arm.astype(float)), cum(v), cum(v * v),
            cum((~arm).astype(float)), cum(c), cum(c * c),
            proportion=proportion,
        )  # fmt: skip

    def last(self) -> tuple[Arm, Arm]:
        """The (variant, control) arms at the last look (one experiment)."""

        def arm(n: np.ndarray, m: np.ndarray, v: np.ndarray) -> Arm:
            return Arm(int(n.ravel()[-1]), float(m.ravel()[-1]), float(v.ravel()[-1]))

        return (
            arm(self.n_variant, self.mean_variant, self.var_variant),
            arm(self.n_control, self.mean_control, self.var_control),
        )


# ----- fixed-horizon intervals ---------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """variant - control at one look, with a fixed-horizon interval (for display only).

    `estimate` is None when an arm is empty, `low`/`high` None when no interval can be had;
    `reason` says why. `relative` is the difference over the control's mean."""

    method: str
    estimate: float | None
    low: float | None
    high: float | None
    confidence: float
    relative: float | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in ("method", "estimate", "low", "high", "confidence", "relative", "reason")
        }


@lru_cache(maxsize=64)
def _z(confidence: float) -> float:
    return float(norm.ppf(1 - (1 - confidence) / 2))


def _relative(diff: float, control_mean: float) -> float | None:
    return diff / control_mean if control_mean != 0 else None


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval of one proportion (Wilson 1927), n > 0."""
    z = _z(confidence)
    p = successes / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return max(0.0, (centre - half) / scale), min(1.0, (centre + half) / scale)


def _empty_arm_reason(n_variant: int, n_control: int, what: str) -> str | None:
    if n_variant == 0 and n_control == 0:
        return f"no {what} in either arm yet"
    if n_variant == 0:
        return f"the variant has no {what} yet"
    if n_control == 0:
        return f"the control has no {what} yet"
    return None


def proportion_difference(
    successes_variant: int,
    n_variant: int,
    successes_control: int,
    n_control: int,
    *,
    confidence: float = 0.95,
    what: str = "rated turns",
) -> Difference:
    """p_variant - p_control with Newcombe's hybrid score interval (method 10, 1998).

    `what` names the units in the reason when an arm is empty."""
    for s, n in ((successes_variant, n_variant), (successes_control, n_control)):
        if n < 0 or not 0 <= s <= n:
            raise ValueError(f"need 0 <= successes <= n, not {s} of {n}")
    if (reason := _empty_arm_reason(n_variant, n_control, what)) is not None:
        return Difference(NEWCOMBE, None, None, None, confidence, reason=reason)
    p1, p2 = successes_variant / n_variant, successes_control / n_control
    l1, u1 = wilson(successes_variant, n_variant, confidence)
    l2, u2 = wilson(successes_control, n_control, confidence)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Difference(NEWCOMBE, d, low, high, confidence, relative=_relative(d, p2))


def mean_difference(
    variant: Arm, control: Arm, *, confidence: float = 0.95, what: str = "values"
) -> Difference:
    """mean_variant - mean_control with Welch's t interval (Welch-Satterthwaite df)."""
    if (reason := _empty_arm_reason(variant.n, control.n, what)) is not None:
        return Difference(WELCH, None, None, None, confidence, reason=reason)
    d = variant.mean - control.mean
    rel = _relative(d, control.mean)
    if variant.n < 2 or control.n < 2:
        which = "the variant" if variant.n < 2 else "the control"
        return Difference(
            WELCH, d, None, None, confidence, rel,
            reason=f"{which} has a single value; an interval needs at least two per arm",
        )  # fmt: skip
    a, b = variant.var / variant.n, control.var / control.n
    se2 = a + b
    if se2 <= 0:
        return Difference(
            WELCH, d, None, None, confidence, rel,
            reason="every value is the same within each arm, so there is no spread to build an interval from",
        )  # fmt: skip
    df = se2**2 / (a * a / (variant.n - 1) + b * b / (control.n - 1))
    half = float(student_t.ppf(1 - (1 - confidence) / 2, df)) * math.sqrt(se2)
    return Difference(WELCH, d, d - half, d + half, confidence, rel)


# ----- the sequential test -------------------------------------------------------------------


def log_mixture_lr(z: Any, r: Any, one_sided: bool = False) -> np.ndarray:
    """log Lambda of the normal-mixture SPRT at standardised difference z and r = tau^2 / s^2.

    Two-sided: the symmetric mixture. One-sided: the half-normal mixture over z > 0 (pass -z for
    the other side)."""
    z = np.asarray(z, dtype=float)
    r = np.asarray(r, dtype=float)
    k2 = r / (1 + r)
    two = -0.5 * np.log1p(r) + 0.5 * z * z * k2
    if not one_sided:
        return two
    return math.log(2) + log_ndtr(z * np.sqrt(k2)) + two


def boundary(r: Any, alpha: float = ALPHA, one_sided: bool = False) -> np.ndarray:
    """z*(r): the |z| (two-sided) or z (one-sided) at which Lambda reaches 1/alpha; r > 0."""
    r = np.asarray(r, dtype=float)

    def closed(a: float) -> np.ndarray:
        return np.sqrt((1 + r) / r * (np.log1p(r) + 2 * math.log(1 / a)))

    if not one_sided:
        return closed(alpha)
    # 2 Phi(.) lies in [1, 2] for z >= 0, so the one-sided boundary lies between the two-sided
    # ones at 2 alpha and alpha; log Lambda_1 increases with z: bisect.
    lo, hi = closed(2 * alpha), closed(alpha)
    target = math.log(1 / alpha)
    for _ in range(_BISECT):
        mid = (lo + hi) / 2
        above = log_mixture_lr(mid, r, one_sided=True) >= target
        hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
    return hi


def _check(alternative: str, alpha: float, effect_size: float) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, not {alternative!r}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be between 0 and 0.5, not {alpha}")
    if effect_size <= 0:
        raise ValueError(f"effect_size must be positive, not {effect_size}")


def always_valid_arrays(
    looks: Looks,
    *,
    alternative: str = TWO_SIDED,
    alpha: float = ALPHA,
    effect_size: float = EFFECT_SIZE,
    min_per_arm: int = MIN_PER_ARM,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The mSPRT at every look, vectorised: (p, low, high, p_look), each of the looks' shape.

    p: the always-valid p-value, the running minimum over looks (last axis) of p_look =
    min(1, 1/Lambda). low/high: the confidence sequence, the running intersection (-inf/+inf
    where unbounded). A look with fewer than `min_per_arm` values in an arm, or no variance in
    either, is not tested (p_look 1, interval unbounded)."""
    _check(alternative, alpha, effect_size)
    nv, nc = looks.n_variant, looks.n_control
    vv, vc = looks.var_variant, looks.var_control
    tested = _tested_mask(looks, min_per_arm)
    with np.errstate(divide="ignore", invalid="ignore"):
        se2 = vv / np.where(nv > 0, nv, 1) + vc / np.where(nc > 0, nc, 1)
        se = np.sqrt(np.where(tested, se2, 1.0))
        diff = looks.mean_variant - looks.mean_control
        z = np.where(tested, diff / se, 0.0)
        r = np.where(tested, effect_size**2 * (vv + vc) / 2 / np.where(tested, se2, 1.0), 1.0)
    one_sided = alternative != TWO_SIDED
    signed = -z if alternative == LESS else z
    log_lr = log_mixture_lr(signed, r, one_sided)
    p_look = np.where(tested, np.minimum(1.0, np.exp(-np.clip(log_lr, -700.0, 700.0))), 1.0)
    half = boundary(r, alpha, one_sided) * se
    low = np.where(tested & (alternative != LESS), diff - half, -np.inf)
    high = np.where(tested & (alternative != GREATER), diff + half, np.inf)
    return (
        np.minimum.accumulate(p_look, axis=-1),
        np.maximum.accumulate(low, axis=-1),
        np.minimum.accumulate(high, axis=-1),
        p_look,
    )


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


@dataclass(frozen=True)
class Sequential:
    """The always-valid test of variant - control over the looks so far.

    `p_value`: always-valid (1.0 before anything could be tested). `low`/`high`: the confidence
    sequence at 1 - alpha (None: unbounded on that side, as a one-sided test is on one side).
    `decided_at`: the first look (0-based) with p <= alpha, `direction` the sign of the
    difference there (+1 variant higher, -1 lower, 0 undecided). `reason`: why nothing could
    be tested yet, or a warning."""

    alternative: str
    alpha: float
    effect_size: float
    n_variant: int
    n_control: int
    estimate: float | None
    p_value: float
    low: float | None
    high: float | None
    looks: int
    tested_looks: int
    decided_at: int | None
    direction: int
    tau: float | None
    reason: str | None = None

    @property
    def rejected(self) -> bool:
        return self.p_value <= self.alpha

    def as_dict(self) -> dict[str, Any]:
        names = (
            "alternative", "alpha", "effect_size", "n_variant", "n_control", "estimate", "p_value",
            "low", "high", "looks", "tested_looks", "decided_at", "direction", "tau", "reason",
        )  # fmt: skip
        return {**{k: getattr(self, k) for k in names}, "rejected": self.rejected}


def sequential_test(
    data: Looks | tuple[Arm, Arm],
    *,
    alternative: str = TWO_SIDED,
    alpha: float = ALPHA,
    effect_size: float = EFFECT_SIZE,
    min_per_arm: int = MIN_PER_ARM,
) -> Sequential:
    """The always-valid test of one experiment: `data` is its looks (`Looks.of_stream`, or
    `of_arms` of the totals at past looks) or just the (variant, control) totals now.

    Both are valid: each look's 1/Lambda is an always-valid p-value on its own. Passing the
    history takes the running minimum and the running intersection, so a decision once made
    stays made ("stop at the first crossing")."""
    looks = data if isinstance(data, Looks) else Looks.of_arms([data])
    if np.ndim(looks.n_variant) != 1:
        raise ValueError("sequential_test takes one experiment; use always_valid_arrays for many")
    p, low, high, p_look = always_valid_arrays(
        looks, alternative=alternative, alpha=alpha, effect_size=effect_size, min_per_arm=min_per_arm
    )
    variant, control = looks.last()
    k = len(p)
    tested_looks = int(_tested_mask(looks, min_per_arm).sum())
    estimate = variant.mean - control.mean if variant.n and control.n else None
    tau = effect_size * math.sqrt((variant.var + control.var) / 2) if variant.n and control.n else None
    reason = None
    if tested_looks == 0:
        reason = _untestable_reason(variant, control, min_per_arm)
    hits = np.flatnonzero(p_look <= alpha)
    decided_at = int(hits[0]) if hits.size else None
    direction = 0
    if decided_at is not None:
        d = float(looks.mean_variant[decided_at] - looks.mean_control[decided_at])
        direction = 1 if d > 0 else -1
    lo, hi = float(low[-1]), float(high[-1])
    if lo > hi:
        # Only with probability alpha if the assumptions hold; more likely the arms drifted.
        reason = (
            "the intervals of successive looks no longer overlap (the difference changed over time, "
            "or the split between the arms did); the last look's interval is shown"
        )
        _, lo_k, hi_k, _ = always_valid_arrays(
            Looks(*(np.asarray(a)[-1:] for a in _fields(looks))),
            alternative=alternative, alpha=alpha, effect_size=effect_size, min_per_arm=min_per_arm,
        )  # fmt: skip
        lo, hi = float(lo_k[-1]), float(hi_k[-1])
    return Sequential(
        alternative=alternative, alpha=alpha, effect_size=effect_size, n_variant=variant.n,
        n_control=control.n, estimate=estimate, p_value=float(p[-1]), low=_finite(lo), high=_finite(hi),
        looks=k, tested_looks=tested_looks, decided_at=decided_at, direction=direction, tau=tau,
        reason=reason,
    )  # fmt: skip


def _fields(looks: Looks) -> tuple[np.ndarray, ...]:
    return (
        looks.n_variant, looks.mean_variant, looks.var_variant,
        looks.n_control, looks.mean_control, looks.var_control,
    )  # fmt: skip


def _tested_mask(looks: Looks, min_per_arm: int) -> np.ndarray:
    nv, nc = looks.n_variant, looks.n_control
    se2 = looks.var_variant / np.where(nv > 0, nv, 1) + looks.var_control / np.where(nc > 0, nc, 1)
    return (nv >= max(1, min_per_arm)) & (nc >= max(1, min_per_arm)) & (se2 > 0)


def _untestable_reason(variant: Arm, control: Arm, min_per_arm: int) -> str:
    if (reason := _empty_arm_reason(variant.n, control.n, "values")) is not None:
        return reason
    if variant.n < min_per_arm or control.n < min_per_arm:
        return (
            f"too few values to test: {variant.n} in the variant and {control.n} in the control, "
            f"{min_per_arm} needed in each"
        )
    return "every value is the same within each arm so far, so there is no spread to test against"


# ----- one metric: interval, test, status, sentence ------------------------------------------


@dataclass(frozen=True)
class MetricComparison:
    """One metric of a variant against the control: the fixed-horizon difference (display), the
    always-valid test (decision), and the status with a sentence naming the numbers.

    status: "better" / "worse" / "no difference yet" (a guardrail: "worse" or "no difference
    yet", since it is only tested for getting worse)."""

    name: str
    kind: str
    role: str
    variant: Arm
    control: Arm
    fixed: Difference
    sequential: Sequential
    status: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "role": self.role,
            "higher_is_better": KINDS[self.kind].higher_is_better,
            "variant": {"n": self.variant.n, "mean": self.variant.mean if self.variant.n else None},
            "control": {"n": self.control.n, "mean": self.control.mean if self.control.n else None},
            "fixed": self.fixed.as_dict(),
            "sequential": self.sequential.as_dict(),
            "status": self.status,
            "reason": self.reason,
        }


def _value(kind: Kind, v: float) -> str:
    if kind.proportion:
        return f"{100 * v:.1f}%"
    if kind.name == COST:
        return f"${v:.4f}"
    if kind.name == LATENCY:
        return f"{v:,.0f} ms"
    return f"{v:.3f}"


def _delta(kind: Kind, d: float) -> str:
    if kind.proportion:
        return f"{100 * d:+.1f} points"
    if kind.name == COST:
        return f"{'+' if d >= 0 else '-'}${abs(d):.4f}"
    if kind.name == LATENCY:
        return f"{d:+,.0f} ms"
    return f"{d:+.3f}"


def _p(p: float) -> str:
    if p < 0.0001:
        return "p < 0.0001"
    return f"p = {p:.4f}" if p < 0.001 else f"p = {p:.3f}"


def _interval_text(kind: Kind, s: Sequential) -> str:
    conf = f"{1 - s.alpha:.0%}"
    if s.low is not None and s.high is not None:
        return f"always-valid {conf} interval {_delta(kind, s.low)} to {_delta(kind, s.high)}"
    if s.low is not None:
        return f"always-valid {conf} bound: at least {_delta(kind, s.low)}"
    if s.high is not None:
        return f"always-valid {conf} bound: at most {_delta(kind, s.high)}"
    return "no always-valid interval yet"


def compare_metric(
    data: Looks | tuple[Arm, Arm],
    *,
    kind: str,
    name: str | None = None,
    role: str = PRIMARY,
    alpha: float = ALPHA,
    effect_size: float = EFFECT_SIZE,
    min_per_arm: int = MIN_PER_ARM,
    confidence: float = 0.95,
) -> MetricComparison:
    """One metric of the variant against the control.

    kind: like_rate, judge, cost, latency or errors (its direction: see KINDS). role: primary
    (two-sided: better or worse) or guardrail (one-sided, only "did it get worse?")."""
    k = _kind(kind)
    if role not in (PRIMARY, GUARDRAIL):
        raise ValueError(f"role must be {PRIMARY!r} or {GUARDRAIL!r}, not {role!r}")
    label = name or k.label
    looks = data if isinstance(data, Looks) else Looks.of_arms([data])
    variant, control = looks.last()
    what = "rated turns" if kind == LIKE_RATE else "turns"
    if k.proportion:
        fixed = proportion_difference(
            variant.successes, variant.n, control.successes, control.n, confidence=confidence, what=what
        )
    else:
        fixed = mean_difference(variant, control, confidence=confidence, what=what)
    alternative = TWO_SIDED if role == PRIMARY else k.harm
    seq = sequential_test(
        looks, alternative=alternative, alpha=alpha, effect_size=effect_size, min_per_arm=min_per_arm
    )
    status = NO_DIFFERENCE
    if seq.rejected:
        good = (seq.direction > 0) == k.higher_is_better
        status = BETTER if good else WORSE
    head = f"{label[:1].upper()}{label[1:]}"
    if seq.estimate is None or seq.tested_looks == 0:
        # An empty arm: the interval's sentence names the units (rated turns, turns).
        why = (fixed.reason if seq.estimate is None else seq.reason) or "nothing to compare yet"
        numbers = ""
        if variant.n and control.n:
            numbers = f" ({_value(k, variant.mean)} vs {_value(k, control.mean)})"
        reason = f"{head}: no decision yet{numbers}: {why}."
    else:
        rel = ""
        if not k.proportion and fixed.relative is not None:
            rel = f", {fixed.relative:+.0%}"
        numbers = (
            f"{_value(k, variant.mean)} (n={variant.n:,}) vs {_value(k, control.mean)} (n={control.n:,}), "
            f"{_delta(k, seq.estimate)}{rel}; {_interval_text(k, seq)}, always-valid {_p(seq.p_value)}"
        )
        if status == BETTER:
            reason = f"{head} is better in the variant: {numbers}."
        elif status == WORSE:
            reason = f"{head} is worse in the variant: {numbers}."
        elif role == GUARDRAIL:
            reason = f"{head}: no evidence yet that it got worse: {numbers}."
        else:
            reason = f"{head}: no difference shown yet: {numbers}."
        if seq.reason:
            reason += f" Note: {seq.reason}."
    return MetricComparison(label, kind, role, variant, control, fixed, seq, status, reason)


# ----- sample-ratio mismatch -----------------------------------------------------------------


@dataclass(frozen=True)
class SampleRatio:
    """Users per variant against the configured weights (Pearson's chi-square goodness of fit).

    `statistic`/`p_value` are None when nothing could be tested (`reason` says why); `flagged`
    when p < threshold, or when users reached a variant whose weight is 0."""

    users: dict[str, int]
    weights: dict[str, float]
    expected: dict[str, float]
    statistic: float | None
    p_value: float | None
    flagged: bool
    threshold: float
    reason: str

    def as_dict(self) -> dict[str, Any]:
        names = ("users", "weights", "expected", "statistic", "p_value", "flagged", "threshold", "reason")
        return {k: getattr(self, k) for k in names}


def sample_ratio_mismatch(
    users: Mapping[str, int],
    weights: Mapping[str, float],
    *,
    threshold: float = SRM_THRESHOLD,
    min_expected: float = SRM_MIN_EXPECTED,
) -> SampleRatio:
    """Whether users reach the variants in the configured proportions.

    users: distinct users ASSIGNED per variant (everyone who opened the chat, not only those
    who voted: whether a user votes may depend on the variant, which is a result, not a broken
    split), counted since the weights were last set. weights: the configured traffic weights
    (any scale; normalised here). A variant with users but no weight (or weight 0) is broken
    assignment by itself."""
    if any(v < 0 for v in users.values()) or any(w < 0 for w in weights.values()):
        raise ValueError("user counts and weights must not be negative")
    names = list(dict.fromkeys([*weights, *users]))
    total_w = float(sum(weights.values()))
    if total_w <= 0:
        raise ValueError("the weights must add up to more than 0")
    w = {v: float(weights.get(v, 0.0)) / total_w for v in names}
    u = {v: int(users.get(v, 0)) for v in names}
    total = sum(u.values())
    expected = {v: total * w[v] for v in names}

    def result(stat: float | None, p: float | None, flagged: bool, reason: str) -> SampleRatio:
        return SampleRatio(u, w, expected, stat, p, flagged, threshold, reason)

    def split(d: Mapping[str, float], fmt: str, unit: str = "") -> str:
        return " / ".join(f"{v} {format(d[v], fmt)}{unit}" for v in names)

    stray = [v for v in names if w[v] == 0 and u[v] > 0]
    if stray:
        return result(
            None, None, True,
            f"users reached a variant with no traffic weight ({', '.join(f'{v}: {u[v]:,}' for v in stray)}); "
            "assignment is not following the configured weights",
        )  # fmt: skip
    active = [v for v in names if w[v] > 0]
    if len(active) < 2:
        return result(None, None, False, "only one variant has traffic, so there is no split to check")
    if total == 0:
        return result(None, None, False, "no users assigned yet")
    small = min(expected[v] for v in active)
    if small < min_expected:
        need = math.ceil(min_expected / min(w[v] for v in active))
        return result(
            None, None, False,
            f"too few users to check the split yet ({total:,}; about {need:,} are needed for at least "
            f"{min_expected:g} expected in each variant)",
        )  # fmt: skip
    stat, p = chisquare([u[v] for v in active], [expected[v] for v in active])
    stat, p = float(stat), float(p)
    observed = f"users {split(u, ',')} against weights {split({v: 100 * w[v] for v in names}, '.3g', '%')}"
    test = f"chi-square {stat:,.1f}, {_p(p)}, threshold {threshold:g}"
    if p < threshold:
        return result(
            stat, p, True,
            f"the split of users does not match the weights ({observed}; {test}): assignment is "
            "broken, so the arms are not comparable",
        )  # fmt: skip
    return result(stat, p, False, f"the split of users matches the weights ({observed}; {test})")


# ----- the verdict ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """A variant against the control: better, worse, no difference yet, or stop."""

    variant: str
    control: str
    status: str
    reason: str
    primary: MetricComparison | None
    guardrails: tuple[MetricComparison, ...] = ()
    srm: SampleRatio | None = None
    guardrails_worse: tuple[MetricComparison, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "control": self.control,
            "status": self.status,
            "reason": self.reason,
            "primary": None if self.primary is None else self.primary.as_dict(),
            "guardrails": [g.as_dict() for g in self.guardrails],
            "guardrails_worse": [{"name": g.name, "reason": g.reason} for g in self.guardrails_worse],
            "srm": None if self.srm is None else self.srm.as_dict(),
        }


def verdict(
    variant: str,
    control: str,
    primary: MetricComparison | None,
    guardrails: Sequence[MetricComparison] = (),
    srm: SampleRatio | None = None,
) -> Verdict:
    """The variant's verdict: the sample-ratio check first (it overrides everything), then the
    primary metric's decision; the guardrails that went worse are listed beside it."""
    worse = tuple(g for g in guardrails if g.status == WORSE)
    if srm is not None and srm.flagged:
        status = STOP
        reason = f"Stop: {srm.reason}; fix assignment and restart the experiment before reading any result."
    elif primary is None:
        status, reason = NO_DIFFERENCE, "No primary metric to decide on."
    else:
        status, reason = primary.status, primary.reason
    if worse:
        reason += f" Guardrails that went worse: {', '.join(g.name for g in worse)}."
    return Verdict(variant, control, status, reason, primary, tuple(guardrails), srm, worse)
