"""The model's code stays in its sandbox; secrets stay out of pages and logs; votes can't be aimed."""

from __future__ import annotations

import logging

import pytest

from app import ChatHandlers
from config.settings import SettingsError
from feedback.votes import score_id_for
from tests.fakes import ScriptedModel, code_reply
from tests.helpers import answer_index, like, turn

ATTEMPTS = {
    "import os": "import os\nfinal_answer(os.environ)",
    "import subprocess": "import subprocess\nfinal_answer(subprocess.run(['id']))",
    "import socket": "import socket\nfinal_answer(socket.socket())",
    "environment": "final_answer(__import__('os').environ['LANGFUSE_SECRET_KEY'])",
    "read /etc/passwd": "final_answer(open('/etc/passwd').read())",
    "escape the folder": "final_answer(open('../../secret.txt').read())",
    "dunder escape": "final_answer(().__class__.__base__.__subclasses__())",
}


def _attacker(code_by_task):
    def respond(messages):
        from tests.fakes import last_task

        task = last_task(messages)
        if task in code_by_task:
            return code_reply(code_by_task[task], thought="Let me try.")
        return code_reply("final_answer('I could not do that.')")

    return ScriptedModel(respond)


@pytest.mark.parametrize("attempt", list(ATTEMPTS))
def test_model_code_cannot_reach_the_machine(attempt, make_settings, make_runtime, tmp_path):
    (tmp_path / "secret.txt").write_text("TOPSECRET")
    settings = make_settings(MAX_STEPS="1", AGENT_FILES_DIR=str(tmp_path / "data" / "agent_files"))
    runtime = make_runtime(settings, _attacker({attempt: ATTEMPTS[attempt]}))
    handlers = ChatHandlers(runtime)
    history, session, _ = turn(handlers, None, [], attempt)
    shown = "\n".join(str(m["content"]) for m in history)
    assert "TOPSECRET" not in shown and "root:" not in shown and "sk-lf" not in shown
    refusal = [m for m in history if "error" in m.get("metadata", {}).get("title", "")]
    assert refusal, "the refusal must be visible in the chat"
    text = str(refusal[0]["content"])
    assert any(word in text for word in ("not allowed", "Forbidden", "outside the agent's folder")), text
    runtime.feedback.telemetry.flush()
    (trace,) = runtime.feedback.store.list_traces()
    spans = runtime.feedback.store.spans_of(trace["id"])
    recorded = " ".join(f"{s['status_message']} {s['attributes']}" for s in spans)
    assert any(word in recorded for word in ("not allowed", "Forbidden", "outside the agent's folder"))


def test_files_inside_the_agent_folder_can_be_used(make_settings, make_runtime, tmp_path):
    folder = tmp_path / "data" / "agent_files"
    code = "with open('notes.txt', 'w') as f:\n    f.write('kept')\nfinal_answer(open('notes.txt').read())"
    runtime = make_runtime(make_settings(AGENT_FILES_DIR=str(folder)), _attacker({"write a note": code}))
    history, session, _ = turn(ChatHandlers(runtime), None, [], "write a note")
    # Each session has a folder of its own under AGENT_FILES_DIR.
    assert (
        history[-1]["content"] == "kept" and (folder / session.session_id / "notes.txt").read_text() == "kept"
    )


@pytest.mark.parametrize(
    "imports", ["math,os", "subprocess", "socket", "os.path", "*", "sys,json", "pathlib"]
)
def test_dangerous_imports_cannot_be_allowed(make_settings, imports):
    with pytest.raises(SettingsError, match="ALLOWED_IMPORTS may not include"):
        make_settings(ALLOWED_IMPORTS=imports)


def test_allowed_imports_setting_is_honoured(make_settings, make_runtime):
    # smolagents always allows its own safe base modules (math, statistics, ...); json is not one.
    code = "import json\nfinal_answer(json.dumps([1, 2]))"
    runtime = make_runtime(
        make_settings(ALLOWED_IMPORTS="math", MAX_STEPS="1"), _attacker({"json please": code})
    )
    history, _, _ = turn(ChatHandlers(runtime), None, [], "json please")
    assert any("Import of json is not allowed" in str(m["content"]) for m in history)
    runtime2 = make_runtime(make_settings(ALLOWED_IMPORTS="json"), _attacker({"json please": code}))
    history, _, _ = turn(ChatHandlers(runtime2), None, [], "json please")
    assert history[-1]["content"] == "[1, 2]"


def test_browser_cannot_choose_the_trace_of_a_vote(make_settings, make_runtime):
    handlers = ChatHandlers(make_runtime(make_settings()))
    history, session, _ = turn(handlers, None, [], "mine")
    history, session, _ = turn(handlers, session, history, "other")
    handlers.rt.feedback.telemetry.flush()
    traces = {t["input"]: t["id"] for t in handlers.rt.feedback.store.list_traces()}
    import gradio as gr

    # Whatever the browser puts in the event, the trace comes from the server-side map.
    forged = {"index": answer_index(history, 0), "value": {"trace_id": traces["other"]}, "liked": True}
    handlers.on_vote(session, gr.LikeData(None, {**forged, "trace_id": traces["other"]}))
    (score,) = handlers.rt.feedback.store.scores()
    assert score.trace_id == traces["mine"] and score.id == score_id_for(traces["mine"])


def test_secrets_never_reach_the_logs(make_settings, make_runtime, fake_langfuse, caplog):
    caplog.set_level(logging.DEBUG)
    settings = make_settings(fake_langfuse, HF_TOKEN="hf_NEVERLOGGED", OPENAI_API_KEY="sk-NEVERLOGGED")
    runtime = make_runtime(settings)
    handlers = ChatHandlers(runtime)
    runtime.feedback.check_langfuse()
    history, session, _ = turn(handlers, None, [], "log everything")
    like(handlers, session, answer_index(history, 0), True)
    runtime.feedback.telemetry.flush()
    runtime.feedback.outbox.flush(5)
    for secret in (settings.langfuse_secret_key, "hf_NEVERLOGGED", "sk-NEVERLOGGED"):
        assert secret not in caplog.text
        assert secret not in repr(settings)
