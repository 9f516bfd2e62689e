"""`python app.py` as a new user runs it: real process, real port, signals, no keys."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gradio_client import Client

from feedback.store import Store
from tests.fakes import FakeOpenAI
from tests.helpers import text_of

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "OPENAI_", "HF_", "MODEL_"))}
    env.update({"DATA_DIR": str(tmp_path / "data"), "GRADIO_ANALYTICS_ENABLED": "False"})
    env.update(extra)
    return env


def _start(env: dict[str, str], tmp_path: Path) -> subprocess.Popen:
    log = open(tmp_path / "app.log", "w")
    return subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"app exited early with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("app did not start")


def test_unwritable_data_dir_stops_the_start_naming_the_path(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    done = subprocess.run(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env=_env(tmp_path, DATA_DIR=str(blocker / "data")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert f"{blocker}/data" in done.stderr and "not writable" in done.stderr


def test_no_keys_end_to_end_then_sigterm_flushes(tmp_path, fake_langfuse):
    port = _free_port()
    with FakeOpenAI() as llm:
        env = _env(
            tmp_path,
            MODEL_PROVIDER="openai",
            OPENAI_BASE_URL=llm.url,
            OPENAI_API_KEY="sk-openai-never-logged",
            MODEL_ID="fake-gpt",
            GRADIO_SERVER_PORT=str(port),
        )
        proc = _start(env, tmp_path)
        try:
            url = f"http://127.0.0.1:{port}/"
            _wait_ready(url, proc)
            client = Client(url, verbose=False)
            _, history, _ = client.predict("hello offline", [], "b1", api_name="/respond")
            assert text_of(history[-1]) == "Answer to: hello offline"
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
    log = (tmp_path / "app.log").read_text()
    assert "provider=openai model=fake-gpt (because MODEL_PROVIDER is set)" in log
    assert "Langfuse: off (no keys)" in log and "Flushing" in log
    assert "sk-openai-never-logged" not in log
    store = Store(tmp_path / "data" / "feedback.sqlite3")
    (trace,) = store.list_traces()
    assert trace["input"] == "hello offline" and trace["output"] == "Answer to: hello offline"
    assert trace["prompt_tokens"] == 21 and trace["completion_tokens"] == 9
    store.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_flushes_pending_langfuse_traffic(tmp_path, fake_langfuse, sig):
    port = _free_port()
    with FakeOpenAI() as llm:
        env = _env(
            tmp_path,
            MODEL_PROVIDER="openai",
            OPENAI_BASE_URL=llm.url,
            GRADIO_SERVER_PORT=str(port),
            LANGFUSE_PUBLIC_KEY="pk-lf-proc",
            LANGFUSE_SECRET_KEY="sk-lf-proc-secret",
            LANGFUSE_BASE_URL=fake_langfuse.url,
        )
        proc = _start(env, tmp_path)
        try:
            url = f"http://127.0.0.1:{port}/"
            _wait_ready(url, proc)
            Client(url, verbose=False).predict("flush me", [], "b1", api_name="/respond")
        finally:
            proc.send_signal(sig)
            assert proc.wait(timeout=60) == 0
    roots = [r for r in fake_langfuse.roots() if r.name == "Smolagent-Trace"]
    assert [r.attributes["langfuse.observation.input"] for r in roots] == ["flush me"]
    log = (tmp_path / "app.log").read_text()
    assert "Langfuse: connected" in log and "sk-lf-proc-secret" not in log
