"""How far to believe a judge: its agreement with people, an interval around it, and a verdict.

Pure functions over (judge value, human value) pairs, oldest first, so this module knows nothing
of the store: `evals.judge_trust` reads the pairs. Reviewers' labels and users' thumbs are
different evidence (a reviewer labels the judge's own criterion; a thumb says whether a user
was pleased, and thumbs come mostly from unhappy users), so callers pass them separately and
only reviewer labels should decide a verdict; everything here serves both.

The measure follows the judge's data type:

- BOOLEAN (and a judge's score against a thumb): Cohen's kappa, agreement beyond chance.
- CATEGORICAL: Cohen's kappa, unweighted, because categories are nominal (a "wrong-answer"
  mistaken for "too-long" is not nearer than one mistaken for "unsafe").
- NUMERIC: Pearson's correlation. Spearman's would forgive any monotone distortion, but what the
  corrected estimate (`evals.estimate`) gains from a judge is its *linear* covariance with the
  people's scores, and judges and reviewers both use a handful of levels (0, 0.5, 1), where rank
  ties make Spearman's coarse. A correlation is blind to a constant offset, so the mean
  difference (judge - human, `bias`) is reported beside it, and the quadratic weighted kappa on
  the values bucketed to `levels` steps of the 0..1 scale, which an offset does lower, as a
  second figure.

Each figure has a percentile bootstrap interval resampling pairs (`resamples`, seeded, so the
same labels always give the same interval; percentile rather than BCa because it needs no
jackknife and behaves at kappa near 1, where BCa's acceleration is unstable with few labels).
Kappa's bootstrap draws whole contingency tables from a multinomial, which is exactly resampling
pairs and costs nothing with thousands of labels.

The default thresholds (all in `Thresholds`, all the caller's to change):

- `min_labels = 30`: below it a kappa interval is about +-0.3 wide, too wide to tell moderate
  agreement from none.
- `kappa_lower = 0.4`: the interval's lower bound must reach "moderate" agreement (Landis & Koch
  1977: 0.41-0.60 moderate, 0.61-0.80 substantial), i.e. at least moderate with 95% confidence.
- `correlation_lower = 0.5`: a "large" correlation (Cohen 1988); the judge explains at least a
  quarter of the variance of people's scores, with 95% confidence.
- `window = 50` labels; drift compares the last window with the window before it. It is flagged
  when the bootstrap interval of the drop (previous - last, the two windows resampled
  independently) lies wholly above zero *and* the drop is at least `drift_min_drop = 0.1` (a
  tenth of the scale; smaller drops are not worth an alarm). The interval of the difference is
  the sound test; "the two intervals do not overlap" is far more conservative (it is reported
  too, as `overlap`).

The verdict is "unverified", with one sentence per reason, when there are fewer than
`min_labels` pairs, the figure cannot be measured, its lower bound is under the threshold, the
last window alone is clearly under it (its upper bound too), or drift is flagged; "verified"
otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BOOLEAN = "BOOLEAN"
CATEGORICAL = "CATEGORICAL"
NUMERIC = "NUMERIC"
DATA_TYPES = (BOOLEAN, CATEGORICAL, NUMERIC)

KAPPA = "kappa"
PEARSON = "pearson"
WEIGHTED_KAPPA = "weighted_kappa"
METRIC_NAMES = {KAPPA: "Cohen's kappa", PEARSON: "Pearson's r", WEIGHTED_KAPPA: "quadratic weighted kappa"}

VERIFIED = "verified"
UNVERIFIED = "unverified"

# A resample in which the figure is undefined (both sides constant) is left out; past this share
# left out, the interval would describe a different population of resamples: none is given.
_MAX_UNDEFINED = 0.1
# Bootstrap work per chunk of index resampling (replicates x pairs), to bound memory.
_CHUNK = 1_000_000


@dataclass(frozen=True)
class Thresholds:
    """When a judge counts as verified, and how its intervals are computed (see the module)."""

    min_labels: int = 30
    kappa_lower: float = 0.4
    correlation_lower: float = 0.5
    window: int = 50
    drift_min_drop: float = 0.1
    unverified_on_drift: bool = True
    confidence: float = 0.95
    resamples: int = 2000
    seed: int = 0
    levels: int = 5

    def lower_for(self, metric: str) -> float:
        return self.correlation_lower if metric == PEARSON else self.kappa_lower


DEFAULT = Thresholds()


@dataclass(frozen=True)
class Measure:
    """One agreement figure over n pairs: value, interval (None when it cannot be had, `reason`
    says why), plus the raw agreement rate (kappa) or the mean judge - human difference (numeric)."""

    metric: str
    n: int
    value: float | None
    low: float | None = None
    high: float | None = None
    reason: str | None = None
    observed: float | None = None
    bias: float | None = None
    replicates: Any = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return METRIC_NAMES[self.metric]

    def text(self) -> str:
        """'0.62 (95% interval 0.41 to 0.80, n=40)', or why there is no figure."""
        if self.value is None:
            return f"undefined, n={self.n} ({self.reason})"
        if self.low is None or self.high is None:
            return f"{self.value:.2f}, n={self.n} (no interval: {self.reason})"
        return f"{self.value:.2f} (95% interval {self.low:.2f} to {self.high:.2f}, n={self.n})"

    def as_dict(self) -> dict[str, Any]:
        fields = ("metric", "n", "value", "low", "high", "reason", "observed", "bias")
        return {**{k: getattr(self, k) for k in fields}, "name": self.name}


@dataclass(frozen=True)
class Drift:
    """The last window against the one before it."""

    previous: Measure
    last: Measure
    drop: float | None
    drop_low: float | None
    drop_high: float | None
    overlap: bool | None
    flagged: bool
    sentence: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "previous": self.previous.as_dict(),
            "last": self.last.as_dict(),
            "drop": self.drop,
            "drop_low": self.drop_low,
            "drop_high": self.drop_high,
            "overlap": self.overlap,
            "flagged": self.flagged,
            "sentence": self.sentence,
        }


@dataclass(frozen=True)
class Agreement:
    """A judge against one kind of human label: overall, over the last window, and drift."""

    data_type: str
    overall: Measure
    last: Measure | None
    drift: Drift | None
    drift_reason: str | None
    window: int
    secondary: Measure | None = None  # NUMERIC: the quadratic weighted kappa

    @property
    def n(self) -> int:
        return self.overall.n

    def as_dict(self) -> dict[str, Any]:
        return {
            "data_type": self.data_type,
            "metric": self.overall.metric,
            "n": self.n,
            "overall": self.overall.as_dict(),
            "window": self.window,
            "last_window": None if self.last is None else self.last.as_dict(),
            "drift": None if self.drift is None else self.drift.as_dict(),
            "drift_reason": self.drift_reason,
            "secondary": None if self.secondary is None else self.secondary.as_dict(),
        }


@dataclass(frozen=True)
class TrustVerdict:
    """Whether a judge's scores may be believed (gates, alerts, the dashboard), and why."""

    status: str
    reasons: tuple[str, ...]
    agreement: Agreement | None = None
    basis: str = "reviewer labels"

    @property
    def verified(self) -> bool:
        return self.status == VERIFIED

    @property
    def reason(self) -> str:
        """One paragraph: every reason it is unverified, or what verified it."""
        if self.reasons:
            return " ".join(self.reasons)
        overall = self.agreement.overall if self.agreement else None
        if overall is None:
            return "Verified."
        return f"Verified against {self.basis}: {overall.name} {overall.text()}."

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "reasons": list(self.reasons),
            "basis": self.basis,
        }


# ----- cleaning the pairs --------------------------------------------------------------------


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def clean_pairs(pairs: Iterable[tuple[Any, Any]], data_type: str) -> list[tuple[Any, Any]]:
    """The pairs with both values present, as the measure for `data_type` reads them: BOOLEAN
    values as 0/1 (a score >= 0.5 is 1, as a judge's NUMERIC score against a thumb), CATEGORICAL
    as strings, NUMERIC as floats."""
    if data_type not in DATA_TYPES:
        raise ValueError(f"data_type must be one of {', '.join(DATA_TYPES)}, not {data_type!r}")
    out = []
    for judge, human in pairs:
        if _missing(judge) or _missing(human):
            continue
        if data_type == BOOLEAN:
            out.append((int(float(judge) >= 0.5), int(float(human) >= 0.5)))
        elif data_type == CATEGORICAL:
            out.append((str(judge), str(human)))
        else:
            out.append((float(judge), float(human)))
    return out


# ----- kappa ---------------------------------------------------------------------------------


def _kappas(tables: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Kappa of each k x k table in `tables` (..., k, k) with agreement `weights` (identity:
    Cohen's; 1 - d^2/(k-1)^2: quadratic). NaN where chance agreement is 1 (both constant)."""
    n = tables.sum(axis=(-2, -1))
    p = tables / np.where(n == 0, 1, n)[..., None, None]
    rows, cols = p.sum(axis=-1), p.sum(axis=-2)
    po = (p * weights).sum(axis=(-2, -1))
    pe = np.einsum("...i,ij,...j->...", rows, weights, cols)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = (po - pe) / (1.0 - pe)
    return np.where(np.isclose(pe, 1.0) | (n == 0), np.nan, k)


def _quantiles(reps: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    low, high = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _interval(
    metric: str, n: int, value: float, reps: np.ndarray, confidence: float, **extra: Any
) -> Measure:
    defined = reps[~np.isnan(reps)]
    if len(defined) < (1 - _MAX_UNDEFINED) * len(reps) or len(defined) == 0:
        share = 1 - len(defined) / max(1, len(reps))
        return Measure(
            metric, n, value, None, None,
            reason=f"in {share:.0%} of the resamples one side never varied, so the interval is not "
            "reliable; more labels of the rarer kind are needed",
            replicates=reps, **extra,
        )  # fmt: skip
    low, high = _quantiles(defined, confidence)
    # The interval always holds the point: rounding in a degenerate interval (all resamples at
    # kappa 1) or a very skewed one must not show a figure outside its own interval.
    return Measure(metric, n, value, min(low, value), max(high, value), replicates=reps, **extra)


def _constant_reason(side: str, value: Any) -> str:
    """side: "human" or "judge"."""
    return (
        f"every {side} value is the same ({value!r}), so agreement beyond chance cannot be "
        f"measured; pairs with more than one {side} value are needed"
    )


def _too_few(metric: str, n: int) -> Measure | None:
    if n == 0:
        return Measure(metric, 0, None, reason="no pairs: no turn has both a judge score and a label")
    if n == 1:
        return Measure(metric, 1, None, reason="a single pair: agreement needs at least two")
    return None


def cohen_kappa(
    pairs: Sequence[tuple[Any, Any]],
    *,
    categories: Sequence[Any] | None = None,
    weights: str | None = None,
    thresholds: Thresholds = DEFAULT,
    rng: np.random.Generator | None = None,
) -> Measure:
    """Cohen's kappa of (judge, human) pairs of labels, with a bootstrap interval.

    `categories`: the label order (needed for weights; labels outside it are appended).
    `weights`: None (nominal categories) or "quadratic" (ordered levels, e.g. bucketed numbers).
    """
    metric = KAPPA if weights is None else WEIGHTED_KAPPA
    n = len(pairs)
    if (few := _too_few(metric, n)) is not None:
        return few
    seen = list(dict.fromkeys(v for pair in pairs for v in pair))
    order = list(categories or [])
    labels = order + [v for v in seen if v not in order] if order else sorted(seen, key=str)
    index = {v: i for i, v in enumerate(labels)}
    k = len(labels)
    table = np.zeros((k, k), dtype=np.int64)
    for judge, human in pairs:
        table[index[human], index[judge]] += 1
    observed = float(np.trace(table) / n)
    judges, humans = {j for j, _ in pairs}, {h for _, h in pairs}
    if len(humans) == 1 or len(judges) == 1:
        side, values = ("human", humans) if len(humans) == 1 else ("judge", judges)
        return Measure(metric, n, None, reason=_constant_reason(side, next(iter(values))), observed=observed)
    if weights is None:
        w = np.eye(k)
    elif weights == "quadratic":
        d = np.subtract.outer(np.arange(k), np.arange(k))
        w = 1.0 - d**2 / (k - 1) ** 2
    else:
        raise ValueError(f"weights must be None or 'quadratic', not {weights!r}")
    value = float(_kappas(table.astype(float), w))
    rng = rng or np.random.default_rng(thresholds.seed)
    # Resampling n pairs with replacement is drawing the table from a multinomial on its cells.
    draws = rng.multinomial(n, (table / n).ravel(), size=thresholds.resamples).reshape(-1, k, k)
    reps = _kappas(draws.astype(float), w)
    return _interval(metric, n, value, reps, thresholds.confidence, observed=observed)


def weighted_kappa(
    pairs: Sequence[tuple[float, float]],
    *,
    levels: int = 5,
    thresholds: Thresholds = DEFAULT,
    rng: np.random.Generator | None = None,
) -> Measure:
    """Quadratic weighted kappa of 0..1 scores bucketed to `levels` steps (5: 0, .25, .5, .75, 1).

    Unlike a correlation it is lowered by a constant offset between judge and people."""
    if levels < 2:
        raise ValueError("levels must be at least 2")

    def bucket(v: float) -> int:
        return int(round(min(1.0, max(0.0, v)) * (levels - 1)))

    bucketed = [(bucket(j), bucket(h)) for j, h in pairs]
    return cohen_kappa(
        bucketed, categories=list(range(levels)), weights="quadratic", thresholds=thresholds, rng=rng
    )


# ----- correlation ---------------------------------------------------------------------------


def _r_from_sums(n: Any, sx: Any, sy: Any, sxx: Any, syy: Any, sxy: Any) -> np.ndarray:
    """Pearson's r from sums (arrays: one per resample); NaN where one side has no variance."""
    vx = n * sxx - sx * sx
    vy = n * syy - sy * sy
    # Relative test: a constant column leaves rounding dust, not an exact zero.
    flat = (vx <= 1e-10 * np.maximum(n * sxx, 1e-300)) | (vy <= 1e-10 * np.maximum(n * syy, 1e-300))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (n * sxy - sx * sy) / np.sqrt(np.where(flat, 1.0, vx * vy))
    return np.where(flat, np.nan, np.clip(r, -1.0, 1.0))


# Up to this many distinct (judge, human) pairs, resample counts of the distinct pairs (a
# multinomial, as for kappa: fast); beyond it (continuous scores) resample indices.
_MAX_CELLS = 256


def pearson(
    pairs: Sequence[tuple[float, float]],
    *,
    thresholds: Thresholds = DEFAULT,
    rng: np.random.Generator | None = None,
) -> Measure:
    """Pearson's r of (judge, human) numbers with a bootstrap interval, and the mean difference."""
    n = len(pairs)
    if (few := _too_few(PEARSON, n)) is not None:
        return few
    x = np.array([p[0] for p in pairs], dtype=float)
    y = np.array([p[1] for p in pairs], dtype=float)
    bias = float((x - y).mean())
    # Centred first, so that the sums' rounding is that of the spread, not of the level.
    xc, yc = x - x.mean(), y - y.mean()
    value = float(_r_from_sums(n, xc.sum(), yc.sum(), (xc * xc).sum(), (yc * yc).sum(), (xc * yc).sum()))
    if math.isnan(value):
        side, v = ("human", y[0]) if np.ptp(y) == 0 else ("judge", x[0])
        return Measure(PEARSON, n, None, reason=_constant_reason(side, float(v)), bias=bias)
    rng = rng or np.random.default_rng(thresholds.seed)
    cells, counts = np.unique(np.column_stack([xc, yc]), axis=0, return_counts=True)
    if len(cells) <= _MAX_CELLS:
        draws = rng.multinomial(n, counts / n, size=thresholds.resamples).astype(float)
        cx, cy = cells[:, 0], cells[:, 1]
        sums = draws @ np.column_stack([cx, cy, cx * cx, cy * cy, cx * cy])
        reps = _r_from_sums(n, *sums.T)
    else:
        chunk = max(1, _CHUNK // n)
        parts = []
        for start in range(0, thresholds.resamples, chunk):
            idx = rng.integers(0, n, size=(min(chunk, thresholds.resamples - start), n))
            bx, by = xc[idx], yc[idx]
            parts.append(
                _r_from_sums(n, bx.sum(1), by.sum(1), (bx * bx).sum(1), (by * by).sum(1), (bx * by).sum(1))
            )
        reps = np.concatenate(parts)
    return _interval(PEARSON, n, value, reps, thresholds.confidence, bias=bias)


# ----- one figure, windows, drift ------------------------------------------------------------


def measure(
    pairs: Sequence[tuple[Any, Any]],
    data_type: str,
    *,
    categories: Sequence[Any] | None = None,
    thresholds: Thresholds = DEFAULT,
    rng: np.random.Generator | None = None,
) -> Measure:
    """The figure for `data_type` over cleaned pairs (see `clean_pairs`)."""
    if data_type == NUMERIC:
        return pearson(pairs, thresholds=thresholds, rng=rng)
    cats = categories if data_type == CATEGORICAL else (0, 1)
    return cohen_kappa(pairs, categories=cats, thresholds=thresholds, rng=rng)


def _drift(
    previous_pairs: Sequence[tuple[Any, Any]],
    last_pairs: Sequence[tuple[Any, Any]],
    data_type: str,
    categories: Sequence[Any] | None,
    t: Thresholds,
) -> Drift:
    previous = measure(
        previous_pairs, data_type, categories=categories, thresholds=t,
        rng=np.random.default_rng([t.seed, 2]),
    )  # fmt: skip
    last = measure(
        last_pairs, data_type, categories=categories, thresholds=t, rng=np.random.default_rng([t.seed, 3])
    )
    name = METRIC_NAMES[previous.metric]
    if previous.value is None or last.value is None:
        which = previous if previous.value is None else last
        return Drift(
            previous, last, None, None, None, None, False,
            f"Drift cannot be measured: in one window {which.reason}.",
        )  # fmt: skip
    drop = previous.value - last.value
    drop_low = drop_high = None
    if previous.replicates is not None and last.replicates is not None:
        diffs = previous.replicates - last.replicates
        diffs = diffs[~np.isnan(diffs)]
        if len(diffs) >= (1 - _MAX_UNDEFINED) * len(previous.replicates):
            drop_low, drop_high = _quantiles(diffs, t.confidence)
    overlap = None
    if None not in (previous.low, previous.high, last.low, last.high):
        overlap = bool(last.high >= previous.low and previous.high >= last.low)  # type: ignore[operator]
    flagged = drop_low is not None and drop_low > 0 and drop >= t.drift_min_drop
    span = "" if drop_low is None else f", 95% interval {drop_low:.2f} to {drop_high:.2f}"
    change = f"a drop of {drop:.2f}{span}" if drop >= 0 else f"a rise of {-drop:.2f}"
    sentence = (
        f"{name} went from {previous.value:.2f} over the previous {previous.n} labels to "
        f"{last.value:.2f} over the last {last.n} ({change})"
    )
    if flagged:
        sentence = f"Drift: {sentence}: the judge agrees with people less than it did."
    elif drop > 0:
        sentence = f"No drift: {sentence}, within what chance explains or under {t.drift_min_drop:.2f}."
    else:
        sentence = f"No drift: {sentence}."
    return Drift(previous, last, drop, drop_low, drop_high, overlap, flagged, sentence)


def agreement(
    pairs: Iterable[tuple[Any, Any]],
    data_type: str,
    *,
    categories: Sequence[Any] | None = None,
    thresholds: Thresholds = DEFAULT,
) -> Agreement:
    """A judge against one kind of human label: `pairs` of (judge value, human value), oldest
    first (the order the windows are cut in). Pairs with a missing value are left out."""
    t = thresholds
    clean = clean_pairs(pairs, data_type)
    overall = measure(
        clean, data_type, categories=categories, thresholds=t, rng=np.random.default_rng([t.seed, 0])
    )
    secondary = None
    if data_type == NUMERIC and len(clean) >= 2:
        secondary = weighted_kappa(
            clean, levels=t.levels, thresholds=t, rng=np.random.default_rng([t.seed, 4])
        )
    w = max(1, t.window)
    last = None
    if len(clean) > w:
        last = measure(
            clean[-w:], data_type, categories=categories, thresholds=t, rng=np.random.default_rng([t.seed, 1])
        )
    drift, drift_reason = None, None
    if len(clean) >= 2 * w:
        drift = _drift(clean[-2 * w : -w], clean[-w:], data_type, categories, t)
    else:
        drift_reason = f"drift needs two windows of {w} labels ({2 * w} in all); there are {len(clean)}"
    return Agreement(data_type, overall, last, drift, drift_reason, w, secondary)


def verdict(
    found: Agreement, thresholds: Thresholds = DEFAULT, *, basis: str = "reviewer labels"
) -> TrustVerdict:
    """Verified or unverified, each reason a sentence (the module docstring gives the rules)."""
    t = thresholds
    o = found.overall
    lower = t.lower_for(o.metric)
    band = "moderate agreement, Landis & Koch" if o.metric != PEARSON else "a large correlation"
    reasons: list[str] = []
    if o.n == 0:
        reasons.append(
            f"No {basis} yet: nothing shows whether this judge agrees with people "
            f"({t.min_labels} are needed)."
        )
    elif o.n < t.min_labels:
        reasons.append(f"Only {o.n} {basis}; at least {t.min_labels} are needed before its scores count.")
    if o.n > 0 and o.value is None:
        reasons.append(f"{o.name} cannot be measured: {o.reason}.")
    elif o.value is not None and (o.low is None or o.high is None):
        reasons.append(f"{o.name} is {o.value:.2f} but has no interval: {o.reason}.")
    elif o.value is not None and o.low is not None and o.low < lower:
        reasons.append(
            f"{o.name} is {o.text()}: its lower bound is under {lower:.2f} ({band}), so the "
            "agreement could be lower than that."
        )
    last = found.last
    if last is not None and last.high is not None and last.value is not None and last.high < lower:
        reasons.append(
            f"Over the last {last.n} {basis}, {last.name} is {last.text()}: even its upper bound is "
            f"under {lower:.2f}."
        )
    if t.unverified_on_drift and found.drift is not None and found.drift.flagged:
        reasons.append(found.drift.sentence)
    return TrustVerdict(UNVERIFIED if reasons else VERIFIED, tuple(reasons), found, basis)


def assess(
    pairs: Iterable[tuple[Any, Any]],
    data_type: str,
    *,
    categories: Sequence[Any] | None = None,
    thresholds: Thresholds = DEFAULT,
    basis: str = "reviewer labels",
) -> TrustVerdict:
    """`verdict(agreement(...))`: the one call a gate needs."""
    found = agreement(pairs, data_type, categories=categories, thresholds=thresholds)
    return verdict(found, thresholds, basis=basis)
