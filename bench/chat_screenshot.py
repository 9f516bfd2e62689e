"""The README's chat screenshot, from a real run: `python app.py` as a newcomer starts it (the
bundled model, nothing configured), two questions asked in Chromium, each answer rated as it
deserves (a right one liked, a wrong one disliked with a reason). Nothing is staged. Emoji need a
colour emoji font in the system (Debian: fonts-noto-color-emoji).

    python -m bench.chat_screenshot docs/screenshot.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import stop_app, wait_ready  # noqa: E402
from tests.helpers import free_port  # noqa: E402

QUESTIONS = [("What is the capital of France?", "Paris"), ("What is 12 times 3?", "36")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "OPENAI_", "HF_", "MODEL_"))}
    env.update(DATA_DIR=tempfile.mkdtemp(prefix="chat-shot-"), GRADIO_SERVER_PORT=str(port))
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_ready(proc, url, "the app")
        chromium = shutil.which("chromium") or "/usr/bin/chromium"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url)
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
                answer = page.locator("#chat .message-row").last.inner_text()
                if right in answer:
                    page.locator('#chat button[aria-label^="Like"]').nth(n).click()
                else:
                    page.locator('#chat button[aria-label="Feedback"]').nth(n).click()
                    page.locator("#chat .extra-feedback-option:visible", has_text="Incorrect").click()
                page.wait_for_timeout(1000)
                print(
                    f"{question!r}: {answer.strip()[-80:]!r} ({'liked' if right in answer else 'disliked'})"
                )
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        stop_app(proc)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
