"""The README's Phoenix screenshot, from a real run: a throwaway Arize Phoenix (the real `phoenix
serve`, tests/phoenix_server.py), `python app.py` as a newcomer starts it (the bundled model, nothing
configured but PHOENIX_COLLECTOR_ENDPOINT and PHOENIX_PROJECT_NAME), two questions asked in Chromium
and each answer rated as it deserves (a right one liked, a wrong one disliked with a reason), then
Phoenix's own UI on the rated trace: its spans, and its `user-feedback` annotation in the trace's
header, hovered so that its label shows (the explanation, the dislike's reason, is not in this view:
the annotation popover of the traces table shows it). Nothing is staged. Needs Phoenix as .ci/run installs it (or
PHOENIX_BIN) and Chromium.

    python -m bench.phoenix_screenshot docs/phoenix.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import stop_app, wait_ready  # noqa: E402
from tests.helpers import free_port  # noqa: E402
from tests.phoenix_server import PhoenixServer, find_phoenix_bin  # noqa: E402

QUESTIONS = [("What is the capital of France?", "Paris"), ("What is 12 times 3?", "36")]
PROJECT = "smolagents-chat"
RATING = "user-feedback"
VIEWPORT = {"width": 1400, "height": 900}


def chat_and_rate(page: Any, url: str) -> list[tuple[str, str, bool]]:
    """Ask QUESTIONS in the chat page and rate each answer; (question, answer, liked) of each."""
    page.goto(url)
    rated = []
    for n, (question, right) in enumerate(QUESTIONS):
        page.fill("#msg textarea", question)
        page.keyboard.press("Enter")
        # The turn is over: the input is enabled again and nothing is being written.
        page.wait_for_function(
            """(n) => !document.querySelector('#msg textarea').disabled
                && !/writing…|Working on it/.test(document.querySelector('#chat').innerText)
                && document.querySelectorAll('#chat button[aria-label^="Like"]').length > n""",
            arg=n,
            timeout=120_000,
        )
        page.wait_for_timeout(500)
        answer = page.locator("#chat .message-row").last.inner_text().strip()
        liked = right in answer
        if liked:
            page.locator('#chat button[aria-label^="Like"]').nth(n).click()
        else:
            page.locator('#chat button[aria-label="Feedback"]').nth(n).click()
            page.locator("#chat .extra-feedback-option:visible", has_text="Incorrect").click()
        page.wait_for_timeout(1000)
        print(f"{question!r}: {answer[-80:]!r} ({'liked' if liked else 'disliked'})")
        rated.append((question, answer, liked))
    return rated


def turn_traces(phoenix: PhoenixServer) -> dict[str, str]:
    """Question -> trace id of its turn, from the root spans Phoenix holds (judges' traces left out)."""
    traces = {}
    for span in phoenix.spans(PROJECT, parent_id="null"):
        text = str(span["attributes"].get("input.value", ""))
        for question, _ in QUESTIONS:
            if question in text and span["name"] == "Smolagent-Trace":
                traces[question] = span["context"]["trace_id"]
    return traces


def wait_for_ratings(phoenix: PhoenixServer, rated: list[tuple[str, str, bool]]) -> dict[str, dict[str, Any]]:
    """Question -> its `user-feedback` annotation, once Phoenix has every turn's spans and rating."""
    deadline = time.monotonic() + 120
    while True:
        traces = turn_traces(phoenix)
        found: dict[str, dict[str, Any]] = {}
        if len(traces) == len(rated):
            rows = phoenix.trace_annotations(
                PROJECT, list(traces.values()), include_annotation_names=[RATING]
            )
            by_trace = {row["trace_id"]: row for row in rows}
            for question, _, liked in rated:
                row = by_trace.get(traces[question])
                if row and row["result"].get("label") == ("like" if liked else "dislike"):
                    found[question] = {**row, "trace_id": traces[question]}
        if len(found) == len(rated):
            return found
        if time.monotonic() > deadline:
            raise SystemExit(f"Phoenix did not get every rating in 120 s: traces {traces}, ratings {found}")
        time.sleep(1)


def wait_for_checks(phoenix: PhoenixServer, trace_id: str, timeout_s: float = 90) -> list[str]:
    """The names annotating the trace once the code checks' (CODE) annotations are there too and
    no new name came for 3 s: they follow the turn by a moment, and the trace's header shows them
    beside the rating. None within timeout_s is no error (evaluation may be off)."""
    deadline = time.monotonic() + timeout_s
    names: set[str] = set()
    since = time.monotonic()
    while time.monotonic() < deadline:
        rows = phoenix.trace_annotations(PROJECT, [trace_id])
        if {row["name"] for row in rows} != names:
            names, since = {row["name"] for row in rows}, time.monotonic()
        elif any(row["annotator_kind"] == "CODE" for row in rows) and time.monotonic() - since >= 3:
            break
        time.sleep(0.5)
    return sorted(names)


def show_trace(page: Any, phoenix: PhoenixServer, trace_id: str, label: str, out: Path) -> None:
    """Phoenix's UI on the trace: its span tree, the root span's input and output, and the trace's
    annotations in the header, the `user-feedback` one hovered so that its label shows."""
    # Phoenix's own link for an OTel trace id: it opens /projects/<project>/traces/<trace id>.
    page.goto(f"{phoenix.base_url}/redirects/traces/{trace_id}")
    page.wait_for_url("**/traces/**", timeout=30_000)
    page.get_by_text("LocalLlamaModel").first.wait_for(timeout=30_000)  # the tree's deepest span
    # The trace header sums each annotation name up (mean score); hovering one shows its labels.
    summary = page.locator(
        f"xpath=//h3[normalize-space()='{RATING}']/following-sibling::*[@role='button']"
    ).last
    summary.wait_for(timeout=30_000)
    page.wait_for_timeout(2500)  # the summaries' rings are drawn with an animation
    tooltip = page.get_by_role("tooltip").filter(has_text=label)
    for _ in range(20):
        box = summary.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] - 20, box["y"] + box["height"] / 2)
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
        if tooltip.is_visible():
            break
        page.wait_for_timeout(500)
    tooltip.wait_for(timeout=5_000)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    phoenix_bin = find_phoenix_bin()
    if phoenix_bin is None:
        raise SystemExit("Arize Phoenix not found: run the Phoenix step of .ci/run, or set PHOENIX_BIN")
    with PhoenixServer(phoenix_bin) as phoenix:
        print(f"Phoenix at {phoenix.base_url} (started in {phoenix.start_seconds[0]:.0f} s)")
        port = free_port()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LANGFUSE_", "OPENAI_", "HF_", "MODEL_", "PHOENIX_", "OTEL_"))
        }
        data_dir = tempfile.mkdtemp(prefix="phoenix-shot-")
        env.update(
            DATA_DIR=data_dir,
            GRADIO_SERVER_PORT=str(port),
            PHOENIX_COLLECTOR_ENDPOINT=phoenix.base_url,
            PHOENIX_PROJECT_NAME=PROJECT,
        )
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env)
        url = f"http://127.0.0.1:{port}/"
        try:
            wait_ready(proc, url, "the app")
            chromium = shutil.which("chromium") or "/usr/bin/chromium"
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
                rated = chat_and_rate(browser.new_page(viewport=VIEWPORT), url)
                ratings = wait_for_ratings(phoenix, rated)
                # The disliked turn when there is one: a wrong answer and its dislike, side by side.
                question = next((q for q, _, liked in rated if not liked), rated[-1][0])
                shown = ratings[question]
                print(f"showing {question!r}: trace {shown['trace_id']}, {RATING} {shown['result']}")
                print(f"annotations on it: {', '.join(wait_for_checks(phoenix, shown['trace_id']))}")
                page = browser.new_page(viewport=VIEWPORT)
                show_trace(page, phoenix, shown["trace_id"], shown["result"]["label"], args.out)
                browser.close()
        finally:
            stop_app(proc)
            shutil.rmtree(data_dir, ignore_errors=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
