"""The dashboard's figures as tables for Gradio's plots, and its headline as text.

Pure functions from what dashboard.queries returns to pandas DataFrames (one per chart) and
Markdown made of numbers only. Unknown stays unknown: a cost the store does not know is left
out of a sum and said next to it, never drawn as zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from dashboard.bidi import visible_controls
from dashboard.queries import NAME_LIMIT, wilson

__all__ = [
    "WORST_COLUMNS",
    "cost_per_day",
    "dislike_reasons",
    "error_rate_per_day",
    "evaluator_means",
    "headline",
    "latency_per_day",
    "like_rate_per_day",
    "money",
    "runs_frame",
    "tokens_per_day",
    "turns_per_day",
    "worst_frame",
]

UNKNOWN_MODEL = "unknown model"
# Characters of a question, answer or reasoning shown in a table cell (the trace shows all).
CELL_CHARS = 300
WORST_COLUMNS = ["When", "Question", "Answer", "Rating", "Reason", "Comment", "Judges", "Judge reasoning"]
RUN_COLUMNS = [
    "Run",
    "Dataset",
    "Model",
    "Items",
    "Graded",
    "Correct",
    "Accuracy",
    "95% interval",
    "Errors",
    "Updated",
]


def _label(value: Any) -> str:
    """A name drawn on a chart (a model, reason or evaluator): bidirectional controls visible."""
    return _cell(value, NAME_LIMIT)


def _model(value: Any) -> str:
    return _label(value) if value else UNKNOWN_MODEL


def _frame(rows: list[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(columns))
    if "day" in frame.columns:
        # A time axis: Gradio's plots label it by week or month instead of one label per day.
        frame["day"] = pd.to_datetime(frame["day"], format="%Y-%m-%d")
    return frame


def _by_day(per_day: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per-day sums over the models."""
    days: dict[str, dict[str, float]] = {}
    for row in per_day:
        day = days.setdefault(str(row["day"]), {"turns": 0, "errors": 0, "likes": 0, "dislikes": 0})
        for key in day:
            day[key] += int(row.get(key) or 0)
    return dict(sorted(days.items()))


def turns_per_day(per_day: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = [{"day": r["day"], "model": _model(r.get("model")), "turns": int(r["turns"])} for r in per_day]
    return _frame(rows, ["day", "model", "turns"])


def like_rate_per_day(per_day: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The share of likes among ratings each day (%), with its 95% Wilson interval as two lines."""
    rows = []
    for day, sums in _by_day(per_day).items():
        likes, n = int(sums["likes"]), int(sums["likes"] + sums["dislikes"])
        if not n:
            continue
        low, high = wilson(likes, n)
        for series, value in (("like rate", likes / n), ("95% low", low), ("95% high", high)):
            rows.append(
                {"day": day, "series": series, "percent": round(100 * float(value or 0), 2), "ratings": n}
            )
    return _frame(rows, ["day", "series", "percent", "ratings"])


def dislike_reasons(reasons: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = [{"reason": _label(r["reason"]), "dislikes": int(r["count"])} for r in reasons]
    return _frame(rows, ["reason", "dislikes"])


def evaluator_means(evaluators: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = [
        {
            "day": r["day"],
            "evaluator": _label(r["evaluator"]),
            "mean": round(float(r["mean"]), 4),
            "scores": int(r["n"]),
        }
        for r in evaluators
    ]
    return _frame(rows, ["day", "evaluator", "mean", "scores"])


def latency_per_day(per_day: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """p50 and p95 per day and model (percentiles do not add up across models, so no total)."""
    rows = []
    for r in per_day:
        for label, key in (("p50", "latency_p50_ms"), ("p95", "latency_p95_ms")):
            if r.get(key) is not None:
                rows.append(
                    {"day": r["day"], "series": f"{_model(r.get('model'))} {label}", "ms": float(r[key])}
                )
    return _frame(rows, ["day", "series", "ms"])


def tokens_per_day(per_day: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = [
        {
            "day": r["day"],
            "model": _model(r.get("model")),
            "tokens": int(r["tokens"]),
            "per turn": round(int(r["tokens"]) / int(r["turns"]), 1) if r.get("turns") else 0.0,
        }
        for r in per_day
    ]
    return _frame(rows, ["day", "model", "tokens", "per turn"])


def cost_per_day(per_day: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Known costs only: a day and model whose every cost is unknown has no bar (not a zero one)."""
    rows = [
        {
            "day": r["day"],
            "model": _model(r.get("model")),
            "usd": float(r["cost"]),
            "per turn": float(r["cost_per_turn"]) if r.get("cost_per_turn") is not None else None,
            "turns of unknown cost": int(r.get("cost_unknown_turns") or 0),
        }
        for r in per_day
        if r.get("cost") is not None
    ]
    return _frame(rows, ["day", "model", "usd", "per turn", "turns of unknown cost"])


def error_rate_per_day(per_day: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = [
        {"day": day, "percent": round(100 * sums["errors"] / sums["turns"], 2), "turns": int(sums["turns"])}
        for day, sums in _by_day(per_day).items()
        if sums["turns"]
    ]
    return _frame(rows, ["day", "percent", "turns"])


def money(value: Any) -> str:
    """US dollars; None is unknown, never $0."""
    if value is None:
        return "unknown"
    value = float(value)
    if value == 0:
        return "$0"
    if abs(value) < 0.01:
        return f"${value:.6f}".rstrip("0")
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.4f}"


def _percent(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"


def _ms(value: Any) -> str:
    if value is None:
        return "–"
    value = float(value)
    return f"{value / 1000:.1f} s" if value >= 10_000 else f"{value:,.0f} ms"


def headline(totals: Mapping[str, Any], *, langfuse: bool, evaluation: bool = True) -> str:
    """The numbers above the charts, as Markdown (numbers only: nothing a user wrote)."""
    turns = int(totals.get("turns") or 0)
    ratings = int(totals.get("ratings") or 0)
    if ratings:
        like = (
            f"{_percent(totals.get('like_rate'))} (95% interval {_percent(totals.get('like_rate_low'))}"
            f" to {_percent(totals.get('like_rate_high'))}) from {ratings:,} rating{'s' if ratings != 1 else ''}"
        )
    else:
        like = "no ratings yet"
    unknown = int(totals.get("cost_unknown_turns") or 0)
    cost = money(totals.get("cost"))
    if unknown and totals.get("cost") is not None:
        cost += f" for {int(totals.get('cost_known_turns') or 0):,} turns + unknown for {unknown:,}"
    elif unknown:
        cost = f"unknown ({unknown:,} turn{'s' if unknown != 1 else ''} without a price)"
    per_turn = money(totals.get("cost_per_turn")) if totals.get("cost_per_turn") is not None else "unknown"
    tokens_per_turn = totals.get("tokens_per_turn")
    waiting = int(totals.get("outbox_waiting") or 0)
    delivery = f"{waiting:,} waiting for Langfuse" if langfuse else f"Langfuse off ({waiting:,} not sent)"
    backlog = int(totals.get("eval_backlog") or 0)
    # With evaluation off nothing ever takes the traces in: a count would only grow.
    evaluation_text = f"evaluation backlog **{backlog:,}**" if evaluation else "evaluation **off**"
    lines = [
        f"**{turns:,}** turns · like rate **{like}** · errors **{_percent(totals.get('error_rate'))}**",
        f"latency p50 **{_ms(totals.get('latency_p50_ms'))}**, p95 **{_ms(totals.get('latency_p95_ms'))}** · "
        f"tokens **{int(totals.get('tokens') or 0):,}**"
        + (f" ({float(tokens_per_turn):,.0f} per turn)" if tokens_per_turn is not None else ""),
        f"cost **{cost}** · per turn **{per_turn}** · ratings **{delivery}** · {evaluation_text}",
    ]
    return "\n\n".join(lines)


def _cell(value: Any, limit: int = CELL_CHARS) -> str:
    if value is None:
        return ""
    text = visible_controls(" ".join(str(value).split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(epoch: Any) -> str:
    try:
        return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def _judge_value(value: Any) -> str:
    if isinstance(value, int | float):
        return f"{float(value):g}"
    return str(value)


def worst_frame(worst: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, list[str]]:
    """The worst-answers table and the trace id of each row (kept on the server, in order)."""
    rows, ids = [], []
    for w in worst:
        feedback = w.get("feedback")
        judges = w.get("judge") or []
        rows.append(
            {
                "When": _when(w.get("start_time")),
                "Question": _cell(w.get("question")),
                "Answer": _cell(w.get("answer")),
                "Rating": {0: "disliked", 1: "liked"}.get(feedback, "") if feedback is not None else "",
                "Reason": _cell(w.get("reason")),
                "Comment": _cell(w.get("comment")),
                "Judges": _cell(", ".join(f"{j['name']} {_judge_value(j['value'])}" for j in judges)),
                "Judge reasoning": _cell(
                    " | ".join(str(j["reasoning"]) for j in judges if j.get("reasoning"))
                ),
            }
        )
        ids.append(str(w["trace_id"]))
    return _frame(rows, WORST_COLUMNS), ids


def runs_frame(runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for r in runs:
        low, high = r.get("accuracy_low"), r.get("accuracy_high")
        rows.append(
            {
                "Run": _cell(r["name"]),
                "Dataset": _cell(r.get("dataset")),
                "Model": _cell(r.get("model")),
                "Items": int(r["items"]),
                "Graded": int(r.get("graded", r["items"]) or 0),
                "Correct": int(r["correct"]),
                "Accuracy": _percent(r.get("accuracy")),
                "95% interval": f"{_percent(low)} to {_percent(high)}" if low is not None else "–",
                "Errors": int(r["errors"]),
                "Updated": _when(r.get("updated")),
            }
        )
    return _frame(rows, RUN_COLUMNS)
