"""Two dataset runs side by side, with statistics that say whether a difference is real.

Per run: accuracy with its 95% Wilson interval, error rate, latency p50/p95, tokens and cost per
item (unknown prices counted, never taken as zero).
On the items both runs have: the paired table, the difference in accuracy, an exact McNemar test
(statsmodels), and the items that improved (wrong in A, right in B) and regressed.
"""

from __future__ import annotations

import statistics
from typing import Any

from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from feedback.store import Store


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def results_of(store: Store, run: str) -> dict[str, dict[str, Any]]:
    rows = store.rows(
        """SELECT r.item_id, r.strict, r.graded, r.error, r.latency_ms, t.prompt_tokens, t.completion_tokens,
                  t.cost
           FROM dataset_results r LEFT JOIN traces t ON t.id = r.trace_id WHERE r.run = :run""",
        {"run": run},
    )
    return {r["item_id"]: r for r in rows}


def run_figures(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    graded = [r for r in rows.values() if r["graded"]]
    g = len(graded)
    correct = sum(int(r["strict"]) for r in graded)
    low, high = proportion_confint(correct, g, alpha=0.05, method="wilson") if g else (0.0, 0.0)
    latencies = [float(r["latency_ms"]) for r in rows.values() if r["latency_ms"] is not None]
    tokens = [
        int(r["prompt_tokens"] or 0) + int(r["completion_tokens"] or 0)
        for r in rows.values()
        if r["prompt_tokens"] is not None
    ]
    costs = [float(r["cost"]) for r in rows.values() if r["cost"] is not None]
    return {
        "items": n,
        "graded": g,
        "correct": correct,
        "accuracy": correct / g if g else None,
        "accuracy_95ci": [float(low), float(high)] if g else None,
        "errors": sum(1 for r in rows.values() if r["error"]),
        "error_rate": sum(1 for r in rows.values() if r["error"]) / n if n else None,
        "latency_ms_p50": _percentile(latencies, 0.5),
        "latency_ms_p95": _percentile(latencies, 0.95),
        "tokens_per_item": statistics.mean(tokens) if tokens else None,
        # Dollars per item over the items whose price is known; how many are unknown, beside it.
        "cost_per_item": statistics.mean(costs) if costs else None,
        "cost_unknown_items": n - len(costs),
    }


def compare(store: Store, run_a: str, run_b: str) -> dict[str, Any]:
    a, b = results_of(store, run_a), results_of(store, run_b)
    # Paired on the items both ran and both could grade.
    shared = sorted(k for k in set(a) & set(b) if a[k]["graded"] and b[k]["graded"])
    table = [[0, 0], [0, 0]]  # rows: A right/wrong; columns: B right/wrong
    improved, regressed = [], []
    for item in shared:
        right_a, right_b = bool(a[item]["strict"]), bool(b[item]["strict"])
        table[0 if right_a else 1][0 if right_b else 1] += 1
        if right_b and not right_a:
            improved.append(item)
        elif right_a and not right_b:
            regressed.append(item)
    n = len(shared)
    paired: dict[str, Any] = {"items": n, "table": table, "improved": improved, "regressed": regressed}
    if n:
        paired["accuracy_a"] = (table[0][0] + table[0][1]) / n
        paired["accuracy_b"] = (table[0][0] + table[1][0]) / n
        paired["difference"] = paired["accuracy_b"] - paired["accuracy_a"]
        # Exact (binomial) McNemar on the discordant pairs: is B's change more than chance?
        paired["mcnemar_p"] = float(mcnemar(table, exact=True).pvalue)
    return {"run_a": run_a, "run_b": run_b, "a": run_figures(a), "b": run_figures(b), "paired": paired}


def _money(cost: float | None, unknown: int) -> str:
    if cost is None:
        return "cost unknown"
    text = f"${cost:.6f}".rstrip("0").rstrip(".") if cost else "$0"
    return text + (f" ({unknown} items of unknown price)" if unknown else "")


def describe(result: dict[str, Any]) -> str:
    lines = []
    for key in ("a", "b"):
        f = result[key]
        p50 = "-" if f["latency_ms_p50"] is None else f"{f['latency_ms_p50']:.0f}"
        p95 = "-" if f["latency_ms_p95"] is None else f"{f['latency_ms_p95']:.0f}"
        tokens = "-" if f["tokens_per_item"] is None else f"{f['tokens_per_item']:.0f}"
        if f["accuracy"] is None:
            graded = f"{f['items']} items, none graded"
        else:
            low, high = f["accuracy_95ci"]
            graded = (
                f"{f['correct']}/{f['graded']} right, accuracy {f['accuracy']:.1%} "
                f"(95% CI {low:.1%} to {high:.1%})"
            )
        lines.append(
            f"{result['run_' + key]}: {graded}, errors {f['errors']}, latency p50 {p50} ms p95 {p95} ms, "
            f"tokens per item {tokens}, cost per item {_money(f['cost_per_item'], f['cost_unknown_items'])}"
        )
    p = result["paired"]
    if p["items"]:
        verdict = "a real difference" if p["mcnemar_p"] < 0.05 else "not distinguishable from chance"
        lines.append(
            f"on the {p['items']} items both ran: {p['accuracy_a']:.1%} -> {p['accuracy_b']:.1%} "
            f"({p['difference']:+.1%}); {len(p['improved'])} improved, {len(p['regressed'])} regressed; "
            f"exact McNemar p = {p['mcnemar_p']:.3g} ({verdict} at 5%)"
        )
        if p["regressed"]:
            lines.append("regressed: " + ", ".join(p["regressed"]))
        if p["improved"]:
            lines.append("improved: " + ", ".join(p["improved"]))
    else:
        lines.append("the two runs share no graded item: nothing to pair")
    return "\n".join(lines)
