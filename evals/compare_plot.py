"""The comparison of two dataset runs as one chart a person reads at a glance.

Left: each run's accuracy with its 95% interval (and the paired McNemar verdict in the title);
right: latency p50 and p95 per item. Built on matplotlib's object API (no pyplot state), so the
dashboard can show the same figure in a page and the CLI can write it to a PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

COLORS = ("#4c72b0", "#dd8452")


def comparison_figure(result: dict[str, Any]) -> Figure:
    """The chart of evals.compare.compare(...)'s result."""
    names = [literal(result["run_a"]), literal(result["run_b"])]
    figures = [result["a"], result["b"]]
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    accuracy, latency = fig.subplots(1, 2)

    for x, (f, color) in enumerate(zip(figures, COLORS, strict=True)):
        if f["accuracy"] is None:
            accuracy.text(x, 0.05, "not graded", ha="center", color="gray")
            continue
        low, high = f["accuracy_95ci"]
        value = f["accuracy"]
        accuracy.bar(x, value, color=color, width=0.6)
        accuracy.errorbar(x, value, yerr=[[value - low], [high - value]], color="black", capsize=10, lw=1.5)
        accuracy.text(
            x, min(high + 0.03, 1.02), f"{value:.1%}\n{f['correct']}/{f['graded']}", ha="center", va="bottom"
        )
    accuracy.set_xticks(range(2), names)
    accuracy.set_ylim(0, 1.15)
    accuracy.set_ylabel("accuracy (95% interval)")
    paired = result["paired"]
    if paired["items"]:
        verdict = "a real difference" if paired["mcnemar_p"] < 0.05 else "could be chance"
        accuracy.set_title(
            f"{paired['items']} shared items: {len(paired['improved'])} improved, "
            f"{len(paired['regressed'])} regressed\nexact McNemar p = {paired['mcnemar_p']:.3g} ({verdict})",
            fontsize=10,
        )
    else:
        accuracy.set_title("no shared graded item to pair", fontsize=10)

    width = 0.38
    for i, label in enumerate(("p50", "p95")):
        values = [(f[f"latency_ms_{label}"] or 0) / 1000 for f in figures]
        bars = latency.bar([x + (i - 0.5) * width for x in range(2)], values, width, label=label,
                           color=[c if i == 0 else _lighter(c) for c in COLORS])  # fmt: skip
        latency.bar_label(bars, labels=[f"{v:.2f} s" for v in values], fontsize=8)
    latency.set_xticks(range(2), names)
    latency.set_ylabel("seconds per item")
    latency.set_title("latency per item (p50, p95)", fontsize=10)
    latency.legend(loc="upper left", fontsize=8)
    return fig


def literal(name: str) -> str:
    """A run name as matplotlib text: every $ escaped, so nothing in it is read as math (a name
    like "${{{x$" would otherwise fail to draw or recurse without end)."""
    return str(name).replace("$", r"\$")


def _lighter(color: str) -> str:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{int(c + (255 - c) * 0.45):02x}" for c in (r, g, b))


def write_plot(result: dict[str, Any], path: str | Path) -> Path:
    """Write the chart as an image (the format follows the file's suffix: .png, .svg, .pdf)."""
    target = Path(path)
    comparison_figure(result).savefig(target, dpi=120)
    return target
