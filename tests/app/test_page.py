"""What the chat page says about itself: the demo model's note and Gradio's footer."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from app import build_app
from chat.model_note import SPACE_README, model_note
from llms.models import ModelChoice
from tests.helpers import serve

BUNDLED = ModelChoice("local", "SmolLM2-135M-Instruct.Q4_1.gguf", "nothing is configured")


def test_the_bundled_model_is_called_a_tiny_demo_with_a_link_to_the_settings(make_settings):
    note = model_note(make_settings(SPACE_ID="someone/smolagent-chat"), BUNDLED)
    assert "Tiny demo model" in note and "SmolLM2-135M" in note and "\n" not in note
    assert "`HF_TOKEN`" in note and "`OPENAI_BASE_URL`" in note
    link = SPACE_README.format(space_id="someone/smolagent-chat")
    assert f"[Settings]({link})" in note
    # The anchor is the README's own section.
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert link.endswith("#settings") and re.search(r"^## Settings$", readme, re.M)
    # Run from a checkout, the README is the file next to app.py.
    assert "Settings in README.md" in model_note(make_settings(), BUNDLED)


def test_no_note_for_a_model_someone_chose(make_settings):
    assert model_note(make_settings(LOCAL_MODEL_PATH="/models/big.gguf"), BUNDLED) == ""
    hosted = ModelChoice("hf", "Qwen/Qwen2.5-Coder-32B-Instruct", "HF_TOKEN is set")
    assert model_note(make_settings(), hosted) == ""


def test_the_page_shows_the_note_for_the_bundled_model(make_settings, make_runtime):
    runtime = make_runtime(make_settings())
    assert 'id="model-note"' not in str(build_app(runtime=runtime).config)
    runtime.choice = BUNDLED
    notes = [
        c["props"]["value"]
        for c in build_app(runtime=runtime).config["components"]
        if c.get("props", {}).get("elem_id") == "model-note"
    ]
    assert len(notes) == 1 and "Tiny demo model" in notes[0]


def test_gradios_footer_leads_nowhere_misleading_and_keeps_no_run_history(make_settings, make_runtime):
    with serve(make_runtime(make_settings())) as url:
        config = httpx.get(f"{url}config").json()
    # No "Use via API" (it cannot rate), no "Settings" (Gradio's theme panel), no "Runs".
    assert config["footer_links"] == ["gradio"]
    assert config["run_history"] is False
    assert 'button[aria-label="Dislike"]' in config["css"]
