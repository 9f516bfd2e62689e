"""The dashboard's figures as tables for Gradio's plots, and its headline as text.

Pure functions from what dashboard.queries returns to pandas DataFrames (one per chart) and
Markdown made of numbers only. Unknown stays unknown: a cost the store does not know is left
out of a sum and said next to it, never drawn as zero.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from dashboard.bidi import visible_controls
from dashboard.queries import DEMO_LABEL, NAME_LIMIT, wilson

__all__ = [
    "RUN_ITEM_COLUMNS",
    "WORST_COLUMNS",
    "chart_notes",
    "cost_per_day",
    "dislike_reasons",
    "error_rate_per_day",
    "evaluator_means",
    "headline",
    "latency_per_day",
    "like_rate_per_day",
    "model_labels",
    "money",
    "run_items_frame",
    "runs_frame",
    "runs_note",
    "short_model",
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
RUN_ITEM_COLUMNS = ["Item", "Result", "Question", "Expected", "Answer", "Error", "Latency"]
# A model's name in a legend: Vega cuts labels at 160 px (about 30 characters), so a long name
# and its " p95" came out as the same "SmolLM2-135M-Instruct.Q4_1.gguf …" twice.
MODEL_LABEL_CHARS = 24


def _label(value: Any) -> str:
    """A name drawn on a chart (a model, reason or evaluator): bidirectional controls visible."""
    return _cell(value, NAME_LIMIT)


def _model(value: Any) -> str:
    return _label(value) if value else UNKNOWN_MODEL


def short_model(name: str, limit: int = MODEL_LABEL_CHARS) -> str:
    """A model's name for a legend: without its organisation or folder and ".gguf"; when still
    too long, its start cut at a separator, and its end kept when that tells versions apart
    (a quantisation such as "Q4_1", not a word such as "Instruct")."""
    base = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or name
    if base.lower().endswith(".gguf") and len(base) > 5:
        base = base[:-5]
    if len(base) <= limit:
        return base
    tail = re.split(r"[-.]", base)[-1]
    if not (0 < len(tail) <= limit // 3 and any(c.isdigit() for c in tail)):
        tail = ""
    room = limit - 1 - len(tail)
    head = base[:room]
    cut = max(head.rfind(c) for c in "-._ ")
    if cut >= room // 2:
        head = head[:cut]
    return f"{head}…{tail}"


def model_labels(names: Iterable[Any]) -> dict[Any, str]:
    """Each model's legend label: short, and never the same for two models (those that would be
    are given their longer names)."""
    models = sorted({n for n in names}, key=lambda n: (not n, str(n or "")))
    labels = {n: _label(short_model(str(n))) if n else UNKNOWN_MODEL for n in models}
    for longer in (lambda n: _label(short_model(str(n), 60)), _model):
        taken: dict[str, list[Any]] = {}
        for n, label in labels.items():
            taken.setdefault(label, []).append(n)
        clashes = [n for same in taken.values() if len(same) > 1 for n in same]
        if not clashes:
            return labels
        for n in clashes:
            labels[n] = longer(n)
    seen: dict[str, int] = {}
    for n in models:  # still equal (names that differ only past NAME_LIMIT): numbered
        seen[labels[n]] = seen.get(labels[n], 0) + 1
        if seen[labels[n]] > 1:
            labels[n] = f"{labels[n]} #{seen[labels[n]]}"
    return labels


def _frame(rows: list[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(columns))
    if "day" in frame.columns:
        # A time axis: Gradio's plots label it by week or month instead of one label per day.
        # A day is "2024-03-01"; an hour (ranges of a day or less) "2024-03-01 13:00".
        frame["day"] = pd.to_datetime(frame["day"], format="ISO8601")
    return frame


def _by_day(per_day: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per-day sums over the models."""
    days: dict[str, dict[str, float]] = {}
    for row in per_day:
        day = days.setdefault(str(row["day"]), {"turns": 0, "errors": 0, "likes": 0, "dislikes": 0})
        for key in day:
            day[key] += int(row.get(key) or 0)
    return dict(sorted(days.items()))


def _labels(per_day: Sequence[Mapping[str, Any]]) -> dict[Any, str]:
    return model_labels(r.get("model") for r in per_day)


def turns_per_day(per_day: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    label = _labels(per_day)
    rows = [{"day": r["day"], "model": label[r.get("model")], "turns": int(r["turns"])} for r in per_day]
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
    model = _labels(per_day)
    for r in per_day:
        for label, key in (("p50", "latency_p50_ms"), ("p95", "latency_p95_ms")):
            if r.get(key) is not None:
                rows.append(
                    {"day": r["day"], "series": f"{model[r.get('model')]} {label}", "ms": float(r[key])}
                )
    return _frame(rows, ["day", "series", "ms"])


def tokens_per_day(per_day: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    model = _labels(per_day)
    rows = [
        {
            "day": r["day"],
            "model": model[r.get("model")],
            "tokens": int(r["tokens"]),
            "per turn": round(int(r["tokens"]) / int(r["turns"]), 1) if r.get("turns") else 0.0,
        }
        for r in per_day
    ]
    return _frame(rows, ["day", "model", "tokens", "per turn"])


def cost_per_day(per_day: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Known costs only: a day and model whose every cost is unknown has no bar (not a zero one)."""
    model = _labels(per_day)
    rows = [
        {
            "day": r["day"],
            "model": model[r.get("model")],
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
    # People's ratings only; judges' and checks' scores waiting are counted apart.
    waiting = int(totals.get("ratings_waiting") or 0)
    others = int(totals.get("judge_scores_waiting") or 0)
    delivery = f"{waiting:,} waiting for Langfuse" if langfuse else f"Langfuse off ({waiting:,} not sent)"
    delivery_others = f"{others:,} {'waiting' if langfuse else 'not sent'}"
    backlog = int(totals.get("eval_backlog") or 0)
    # With evaluation off nothing ever takes the traces in: a count would only grow.
    evaluation_text = f"evaluation backlog **{backlog:,}**" if evaluation else "evaluation **off**"
    lines = [
        f"**{turns:,}** turns · like rate **{like}** · errors **{_percent(totals.get('error_rate'))}**",
        f"latency p50 **{_ms(totals.get('latency_p50_ms'))}**, p95 **{_ms(totals.get('latency_p95_ms'))}** · "
        f"tokens **{int(totals.get('tokens') or 0):,}**"
        + (f" ({float(tokens_per_turn):,.0f} per turn)" if tokens_per_turn is not None else ""),
        f"cost **{cost}** · per turn **{per_turn}** · ratings **{delivery}** · "
        f"judge and check scores **{delivery_others}** · {evaluation_text}",
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


def _judge_name(judge: Mapping[str, Any]) -> str:
    """Who scored: the evaluator's name, and "demo judge" when the bundled demo model did."""
    name = str(judge.get("name") or "")
    return f"{name} ({DEMO_LABEL})" if judge.get("demo") else name


def judge_reasoning(judges: Sequence[Mapping[str, Any]]) -> str:
    """Each judge's reasoning after its name ("[helpfulness] … [safety (demo judge)] …"), each
    given its share of the cell so that a long one does not hide the next judge's name."""
    said = [(_judge_name(j), " ".join(str(j["reasoning"]).split())) for j in judges if j.get("reasoning")]
    if not said:
        return ""
    share = max(40, CELL_CHARS // len(said))
    parts = [_cell(f"[{name}] {text}", share) for name, text in said]
    return _cell(" ".join(parts))


def worst_frame(worst: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, list[str]]:
    """The worst-answers table and the trace id of each row (kept on the server, in order).
    Rating, reason and comment are the person's; judges' verdicts are named one by one."""
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
                "Judges": _cell(", ".join(f"{_judge_name(j)} {_judge_value(j['value'])}" for j in judges)),
                "Judge reasoning": judge_reasoning(judges),
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


def runs_note(runs: Sequence[Mapping[str, Any]]) -> str:
    """What the Dataset runs tab can do with the runs there are (none, one, several)."""
    command = "python -m evals dataset run gsm8k --run-name NAME --limit 20"
    if not runs:
        return (
            f"No dataset runs yet. Run the agent over a dataset with `{command}`; "
            "each run is listed here, and two can be compared."
        )
    if len(runs) == 1:
        return (
            "One run so far: click it to see its items. Comparing needs a second run "
            f"(`{command}` with another name, or after a change)."
        )
    return "Click a run to see its items; pick two different runs to compare them."


def run_items_frame(items: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A run item by item, as `python -m evals dataset show` lists it."""
    rows = [
        {
            "Item": _cell(r.get("item_id"), NAME_LIMIT),
            "Result": {True: "right", False: "wrong"}.get(r.get("correct"), "not graded"),
            "Question": _cell(r.get("question")),
            "Expected": _cell(r.get("expected")),
            "Answer": _cell(r.get("answer")),
            "Error": _cell(r.get("error")),
            "Latency": _ms(r.get("latency_ms")),
        }
        for r in items
    ]
    return _frame(rows, RUN_ITEM_COLUMNS)


def chart_notes(data: Mapping[str, Any], *, evaluation: bool = True) -> list[str]:
    """A sentence under each chart of the overview that has nothing (or nothing visible) to draw,
    in the order of the page: turns, like rate, dislike reasons, evaluators, latency, tokens,
    cost, errors. Empty where the chart speaks for itself."""
    totals = data.get("totals") or {}
    turns = int(totals.get("turns") or 0)
    ratings = int(totals.get("ratings") or 0)
    evaluators = data.get("evaluators") or []
    no_turns = "No chat turns in this range yet."
    notes = [no_turns if not turns else ""]
    if not ratings:
        notes.append(
            "No ratings from people in this range yet: the like rate starts with the first 👍 or 👎."
        )
    else:
        notes.append("")
    notes.append("" if int(totals.get("dislikes") or 0) else "No dislikes in this range.")
    if evaluators:
        demo = any(str(e.get("evaluator", "")).endswith(f"({DEMO_LABEL})") for e in evaluators)
        notes.append(
            f"Scores marked ({DEMO_LABEL}) are the bundled demo model's: a demo of the machinery, "
            "not verdicts to trust."
            if demo
            else ""
        )
    elif not evaluation:
        notes.append("Evaluation is off: no judge or check scores.")
    else:
        notes.append("No judge or check scores in this range yet.")
    notes.append(no_turns if not turns else "")
    if turns and not int(totals.get("tokens") or 0):
        notes.append("No token counts were recorded for these turns.")
    else:
        notes.append(no_turns if not turns else "")
    known = int(totals.get("cost_known_turns") or 0) if totals.get("cost") is not None else 0
    if not turns:
        notes.append(no_turns)
    elif not known:
        notes.append("The cost of these turns is unknown: their models have no known price.")
    elif not float(totals.get("cost") or 0):
        notes.append("Every turn with a known price cost $0 (a local model is free): the bars are flat.")
    else:
        notes.append("")
    notes.append(no_turns if not turns else "")
    return notes
