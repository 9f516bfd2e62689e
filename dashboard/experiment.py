"""The dashboard's Experiment tab: the A/B experiment's results per variant (evals.ab).

Shown only when VARIANTS_FILE configures an experiment. From the top: the verdict per variant
(better, worse, no difference yet, or stop: assignment is broken) with its reason; the check of
the split of users against the weights; each variant's figures (turns, users, like rate with its
95% interval and the share of turns rated, dislike reasons, each judge's mean and corrected
estimate, cost per turn, latency p50 / p95, errors); then each variant against the control,
metric by metric: the difference with its fixed-horizon 95% interval (for reading), the
always-valid interval and p-value (for deciding), and whether that metric counts in the verdict.

Everything that came from a file, a person or the store (names, reasons, judge names, sentences
that quote them) is hostile text: it reaches the page only through `_text` (bidirectional
controls made visible, html.escape with quotes), inside elements, never in a tag or attribute;
numbers are formatted here. The judges' verdicts (verified or not) come from
dashboard.judges.judge_trust_labels, kept as the Judges panel keeps them.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from dashboard.bidi import visible_controls
from dashboard.judges import judge_trust_labels
from evals.ab import Experiment, Results, VariantComparison, VariantFigures, results
from evals.config import Evaluator
from evals.experiment_stats import BETTER, NO_DIFFERENCE, STOP, WORSE, MetricComparison
from feedback.store import Store

__all__ = ["EXPERIMENT_CSS", "experiment_data", "experiment_html", "experiment_page", "no_experiment_html"]

NAME_CHARS = 200
REASON_CHARS = 2000

EXPERIMENT_CSS = """
<style>
.xp { font-size: 14px; line-height: 1.45; }
.xp p { margin: 4px 0; }
.xp h4 { margin: 14px 0 6px; }
.xp table.xp-table { border-collapse: collapse; width: 100%; margin-bottom: 8px; }
.xp table.xp-table th, .xp table.xp-table td { border-bottom: 1px solid rgba(127,127,127,.25);
  padding: 5px 6px; text-align: left; vertical-align: top; }
.xp table.xp-table th { font-weight: 600; }
.xp .xp-name { font-weight: 600; overflow-wrap: break-word; }
.xp table.xp-compare td:first-child { min-width: 110px; }
.xp .xp-muted { color: #6b7280; font-size: 12px; }
.xp .xp-badge { display: inline-block; font-size: 12px; font-weight: 700; padding: 0 6px;
  border-radius: 4px; border: 1px solid currentColor; text-transform: uppercase; }
.xp .xp-better { color: #15803d; }
.xp .xp-worse { color: #b91c1c; }
.xp .xp-none { color: #6b7280; }
.xp .xp-stop { color: #fff; background: #b91c1c; border-color: #b91c1c; }
.xp .xp-srm { border-left: 3px solid #15803d; padding-left: 8px; }
.xp .xp-srm.xp-flagged { border-left-color: #b91c1c; background: rgba(185,28,28,.07); }
.xp tr.xp-uncounted td { color: #6b7280; }
.xp .xp-verdict { border: 1px solid rgba(127,127,127,.3); border-radius: 6px; padding: 6px 8px; margin: 6px 0; }
</style>
"""

_BADGE = {BETTER: "xp-better", WORSE: "xp-worse", NO_DIFFERENCE: "xp-none", STOP: "xp-stop"}


def _text(value: Any, limit: int = NAME_CHARS) -> str:
    """Any value as inert HTML text, at most `limit` characters of it."""
    shown = "" if value is None else str(value)
    if len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return html.escape(visible_controls(shown), quote=True)


def _pct(v: float | None) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{100 * v:.1f}%"


def _num(v: float | None, digits: int = 3) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _ms(v: float | None) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:,.0f} ms"


def _usd(v: float | None, sign: bool = False) -> str:
    """Dollars with the cents' digits a turn's cost needs (a local model's turn costs
    thousandths of a cent)."""
    if v is None or not math.isfinite(v):
        return "–"
    digits = 4 if abs(v) >= 0.01 or v == 0 else min(8, 3 - math.floor(math.log10(abs(v))))
    text = f"${abs(v):.{digits}f}"
    return (("+" if v >= 0 else "-") + text) if sign else ("-" + text if v < 0 else text)


def _when(epoch: float | None) -> str:
    return "–" if epoch is None else datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def experiment_data(
    store: Store,
    experiment: Any,
    evaluators: Iterable[Evaluator] = (),
    *,
    now: float | None = None,
) -> Results:
    """The page's figures: evals.ab.results with the judges' verdicts kept by the Judges panel.
    `experiment`: the app's (config.variants.Experiment) or an evals.ab.Experiment. StoreError
    when the store cannot be read."""
    evaluators = list(evaluators)
    trust = trust_of(judge_trust_labels(store, evaluators))
    return results(store, Experiment.of(experiment), evaluators=evaluators or None, trust=trust, now=now)


def _badge(status: str) -> str:
    return f'<span class="xp-badge {_BADGE.get(status, "xp-none")}">{_text(status)}</span>'


def _verdicts_html(r: Results) -> str:
    if not r.comparisons:
        return "<p>The experiment has no variant besides the control: nothing to compare.</p>"
    out = []
    for c in r.comparisons:
        v = c.verdict
        when = f" (decided on {_text(c.decided_on)})" if c.decided_on else ""
        out.append(
            f'<div class="xp-verdict" id="xp-verdict-{len(out)}"><span class="xp-name">{_text(c.variant)}</span> '
            f"against {_text(r.experiment.control)}: {_badge(v.status)}{when}"
            f"<p>{_text(v.reason, REASON_CHARS)}</p></div>"
        )
    return "".join(out)


def _srm_html(r: Results) -> str:
    s = r.srm
    klass = "xp-srm xp-flagged" if s.flagged else "xp-srm"
    head = "<strong>Stop: assignment is broken.</strong> " if s.flagged else "<strong>Assignment:</strong> "
    counts = ", ".join(f"{_text(v.name)} {v.assigned_users:,}" for v in r.variants)
    reason = s.reason[:1].upper() + s.reason[1:] if s.flagged else s.reason
    return (
        f'<div class="{klass}" id="xp-srm"><p>{head}{_text(reason, REASON_CHARS)}.</p>'
        f'<p class="xp-muted">Users per variant they were assigned to (a paused variant\'s users '
        f"count for it): {counts}. Checked with a chi-square test against the weights, flagged "
        f"below p = {s.threshold:g}.</p></div>"
    )


def _like_cell(v: VariantFigures) -> str:
    if not v.rated:
        return '<span class="xp-muted">no rated turn yet</span>'
    low, high = v.like_interval
    return (
        f"<strong>{_pct(v.like_rate)}</strong> (95% interval {_pct(low)} to {_pct(high)})"
        f'<div class="xp-muted">{v.likes:,} likes of {v.rated:,} rated turns by {v.voters:,} users; '
        f"{_pct(v.rated_share)} of turns rated; design effect {v.design_effect:.2f} "
        f"({v.effective_votes:,.0f} effective votes)</div>"
    )


def _reasons_cell(v: VariantFigures) -> str:
    if not v.reasons:
        return '<span class="xp-muted">none</span>'
    return "<br>".join(f"{_text(reason)}: {n:,}" for reason, n in v.reasons)


def _judge_cell(v: VariantFigures, name: str) -> str:
    j = next((j for j in v.judges if j.name == name), None)
    if j is None or not j.n:
        return '<span class="xp-muted">not scored</span>'
    out = f"mean {_num(j.mean)} over {j.n:,} turns"
    est = j.estimate
    if est is not None and est.estimate is not None:
        out += (
            f"<div>corrected {_num(est.estimate)} (95% interval {_num(est.low)} to {_num(est.high)}; "
            f"{est.n:,} reviewed)</div>"
        )
    elif j.estimate_note:
        out += f'<div class="xp-muted">{_text(j.estimate_note, REASON_CHARS)}</div>'
    if j.note:
        out += f'<div class="xp-muted">{_text(j.note, REASON_CHARS)}</div>'
    return out


def _figures_html(r: Results) -> str:
    head = "".join(
        f'<th><span class="xp-name">{_text(v.name)}</span><div class="xp-muted">'
        f"{'control' if v.control else 'variant'} · weight {100 * v.weight:.3g}%"
        f"{' · paused' if v.paused else ''}</div></th>"
        for v in r.variants
    )
    rows: list[tuple[str, list[str]]] = [
        ("Turns", [f"{v.turns:,}" for v in r.variants]),
        ("Users", [f"{v.users:,}" for v in r.variants]),
        ("Like rate", [_like_cell(v) for v in r.variants]),
        ("Dislike reasons", [_reasons_cell(v) for v in r.variants]),
        (
            "Cost per turn",
            [
                _usd(v.cost_per_turn)
                + (
                    f'<div class="xp-muted">{v.cost_unknown:,} turns of unknown cost</div>'
                    if v.cost_unknown
                    else ""
                )
                for v in r.variants
            ],
        ),
        ("Latency p50 / p95", [f"{_ms(v.latency_p50)} / {_ms(v.latency_p95)}" for v in r.variants]),
        ("Errors", [f"{v.errors:,} ({_pct(v.error_rate)})" for v in r.variants]),
    ]
    names = list(dict.fromkeys(j.name for v in r.variants for j in v.judges))
    for name in names:
        rows.append((f"Judge {_text(name)}", [_judge_cell(v, name) for v in r.variants]))
    redirected = sum(v.redirected_turns for v in r.variants)
    body = "".join(
        f"<tr><th>{label}</th>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"
        for label, cells in rows
    )
    note = ""
    if redirected:
        note = (
            f'<p class="xp-muted">{redirected:,} turns were served the control to users of a paused variant: '
            "they are in no arm.</p>"
        )
    return (
        f'<table class="xp-table" id="xp-figures"><thead><tr><th></th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>{note}"
    )


def _value(m: MetricComparison, v: float | None) -> str:
    if v is None:
        return "–"
    if m.kind in ("like_rate", "errors"):
        return _pct(v)
    if m.kind == "cost":
        return _usd(v)
    if m.kind == "latency":
        return _ms(v)
    return _num(v)


def _delta(m: MetricComparison, d: float | None) -> str:
    if d is None or not math.isfinite(d):
        return "–"
    if m.kind in ("like_rate", "errors"):
        return f"{100 * d:+.1f} pts"
    if m.kind == "cost":
        return _usd(d, sign=True)
    if m.kind == "latency":
        return f"{d:+,.0f} ms"
    return f"{d:+.3f}"


def _metric_row(r: Results, m: MetricComparison, counted: bool) -> str:
    f, s = m.fixed, m.sequential
    fixed = _delta(m, f.estimate)
    if f.low is not None and f.high is not None:
        fixed += f' <span class="xp-muted">({_delta(m, f.low)} to {_delta(m, f.high)})</span>'
    elif f.reason:
        fixed += f'<div class="xp-muted">{_text(f.reason, REASON_CHARS)}</div>'
    if s.low is not None and s.high is not None:
        valid = f"{_delta(m, s.low)} to {_delta(m, s.high)}"
    elif s.low is not None:
        valid = f"at least {_delta(m, s.low)}"
    elif s.high is not None:
        valid = f"at most {_delta(m, s.high)}"
    else:
        valid = "–"
    p = "–" if not s.tested_looks else ("p &lt; 0.0001" if s.p_value < 0.0001 else f"p = {s.p_value:.4f}")
    role = "primary" if m.role == "primary" else "guardrail" if counted else "shown, not counted"
    when = r.decided_on(m)
    # The interval is the intersection over every look: a decision stays, the figures move on.
    decided = f' <span class="xp-muted">decided at the look of {_text(when)}</span>' if when else ""
    klass = "" if counted else ' class="xp-uncounted"'
    cells = [
        f'<span class="xp-name">{_text(m.name)}</span><div class="xp-muted">{_text(role)}</div>',
        f"{_value(m, m.variant.mean if m.variant.n else None)}"
        f'<div class="xp-muted">effective n {m.variant.n:,}</div>',
        f"{_value(m, m.control.mean if m.control.n else None)}"
        f'<div class="xp-muted">effective n {m.control.n:,}</div>',
        fixed,
        f'{valid}<div class="xp-muted">{p}</div>',
        f"{_badge(m.status)}{decided}<div>{_text(m.reason, REASON_CHARS)}</div>",
    ]
    return f"<tr{klass}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _comparison_html(r: Results, c: VariantComparison) -> str:
    v = c.verdict
    rows = []
    if v.primary is not None:
        rows.append(_metric_row(r, v.primary, True))
    rows += [_metric_row(r, g, True) for g in v.guardrails]
    rows += [_metric_row(r, g, False) for g in c.shown_only]
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "Metric",
            "Variant",
            "Control",
            "Difference (95% interval, one look)",
            "Always-valid 95% interval",
            "Decision",
        )
    )
    return (
        f"<h4>{_text(c.variant)} against {_text(r.experiment.control)}</h4>"
        f'<table class="xp-table xp-compare"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


_GUIDE = (
    '<p class="xp-muted">How to read it: the like rate decides (two-sided: better or worse); '
    "judges, cost, latency and errors are guardrails, tested only for getting worse. The "
    "always-valid intervals and p-values stay valid however often this page is opened: a verdict is "
    "reached when the always-valid interval leaves 0 behind (p ≤ 0.05), and stays reached. The "
    "difference's 95% interval is the usual one-look interval, for reading only: it is narrower, "
    "and checking it every day would raise false alarms. n is the effective number of votes or "
    "turns: one user's votes are alike, so the counts are divided by the design effect (at least "
    "1). An unverified judge's row is shown but never counted.</p>"
)


def experiment_html(r: Results) -> str:
    """The tab as HTML for gr.HTML (its own <style>; every text escaped)."""
    e = r.experiment
    since = f", counted since {_when(e.since)}" if e.since else ""
    intro = (
        f'<p>Experiment <span class="xp-name">{_text(e.name)}</span>, control '
        f'<span class="xp-name">{_text(e.control)}</span>: turns from {_when(r.first_turn)} to '
        f"{_when(r.last_turn)}{since}; {r.looks:,} looks (one per UTC day).</p>"
    )
    comparisons = "".join(_comparison_html(r, c) for c in r.comparisons)
    return (
        f'{EXPERIMENT_CSS}<div class="xp" id="dash-experiment">{intro}<h4>Verdicts</h4>{_verdicts_html(r)}'
        f"{_srm_html(r)}<h4>Each variant</h4>{_figures_html(r)}{comparisons}{_GUIDE}</div>"
    )


def no_experiment_html(message: str) -> str:
    """A sentence in the tab's place (refused, busy, the store unreadable)."""
    return f'{EXPERIMENT_CSS}<div class="xp" id="dash-experiment"><p>{_text(message, REASON_CHARS)}</p></div>'


def experiment_page(
    store: Store, experiment: Any, evaluators: Iterable[Evaluator] = (), *, now: float | None = None
) -> str:
    """`experiment_html(experiment_data(...))`: the tab's HTML in one call."""
    return experiment_html(experiment_data(store, experiment, evaluators, now=now))


def trust_of(labels: Mapping[str, tuple[bool, str]]) -> dict[str, bool]:
    """{judge: verified} of dashboard.judges.judge_trust_labels' answer."""
    return {name: verified for name, (verified, _) in labels.items()}
