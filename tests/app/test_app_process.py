"""`python app.py` as a new user runs it: real process, real port, signals, no keys."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from gradio_client import Client

from feedback.store import Store
from tests.fakes import FakeOpenAI
from tests.helpers import free_port, text_of

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "OPENAI_", "HF_", "MODEL_"))}
    env.update(
        {"DATA_DIR": str(tmp_path / "data"), "GRADIO_ANALYTICS_ENABLED": "False", "EVALUATORS_FILE": "off"}
    )
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


@contextmanager
def app_process(tmp_path: Path, sig: int = signal.SIGTERM, **env: str) -> Iterator[str]:
    """`python app.py` on a free port with a fake OpenAI-compatible model; stopped by `sig`."""
    port = free_port()
    with FakeOpenAI() as llm:
        full_env = _env(
            tmp_path, MODEL_PROVIDER="openai", OPENAI_BASE_URL=llm.url, GRADIO_SERVER_PORT=str(port), **env
        )
        proc = _start(full_env, tmp_path)
        try:
            url = f"http://127.0.0.1:{port}/"
            _wait_ready(url, proc)
            yield url
        finally:
            proc.send_signal(sig)
            code = proc.wait(timeout=60)
            assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0)


def test_no_keys_end_to_end_then_sigterm_flushes(tmp_path):
    with app_process(tmp_path, OPENAI_API_KEY="sk-openai-never-logged", MODEL_ID="fake-gpt") as url:
        _, history, _ = Client(url, verbose=False).predict("hello offline", [], "b1", api_name="/respond")
        assert text_of(history[-1]) == "Answer to: hello offline"
    log = (tmp_path / "app.log").read_text()
    assert "provider=openai model=fake-gpt (because MODEL_PROVIDER is set)" in log
    assert "Langfuse: off (no keys)" in log and "Flushing" in log
    assert "code isolation: process" in log
    assert "sk-openai-never-logged" not in log
    store = Store(tmp_path / "data" / "feedback.sqlite3")
    (trace,) = store.list_traces()
    assert trace["input"] == "hello offline" and trace["output"] == "Answer to: hello offline"
    assert trace["prompt_tokens"] == 21 and trace["completion_tokens"] == 9
    store.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_flushes_pending_langfuse_traffic(tmp_path, fake_langfuse, sig):
    lf = {
        "LANGFUSE_PUBLIC_KEY": "pk-lf-proc",
        "LANGFUSE_SECRET_KEY": "sk-lf-proc-secret",
        "LANGFUSE_BASE_URL": fake_langfuse.url,
    }
    with app_process(tmp_path, sig, **lf) as url:
        Client(url, verbose=False).predict("flush me", [], "b1", api_name="/respond")
    roots = [r for r in fake_langfuse.roots() if r.name == "Smolagent-Trace"]
    assert [r.attributes["langfuse.observation.input"] for r in roots] == ["flush me"]
    log = (tmp_path / "app.log").read_text()
    assert "Langfuse: connected" in log and "sk-lf-proc-secret" not in log


@pytest.mark.parametrize("first_mode", ["hang", "ok"])
def test_vote_survives_sigkill_and_arrives_exactly_once(tmp_path, fake_langfuse, first_mode):
    from feedback.votes import score_id_for
    from tests.gradio_queue import QueueClient
    from tests.helpers import wait_for

    lf = {
        "LANGFUSE_PUBLIC_KEY": "pk-lf-crash",
        "LANGFUSE_SECRET_KEY": "sk-lf-crash",
        "LANGFUSE_BASE_URL": fake_langfuse.url,
        "LANGFUSE_TIMEOUT_S": "1",
        "LANGFUSE_RETRY_MAX_S": "0.5",
    }
    fake_langfuse.state.mode = first_mode
    fake_langfuse.state.hang_s = 30
    with app_process(tmp_path, signal.SIGKILL, **lf) as url:
        q = QueueClient(url)
        assert q.chat("crash question").success
        assert q.vote(2, True).success
        # app_process sends SIGKILL right after the vote returned.
    store = Store(tmp_path / "data" / "feedback.sqlite3")
    (score,) = store.scores()
    store.close()
    fake_langfuse.state.mode = "ok"
    with app_process(tmp_path, signal.SIGTERM, **lf):
        wait_for(lambda: score.id in fake_langfuse.state.scores, timeout=30)
    assert fake_langfuse.state.scores[score.id]["value"] == 1.0
    assert len(fake_langfuse.state.scores) == 1 and fake_langfuse.state.upsert_violations == []
    store = Store(tmp_path / "data" / "feedback.sqlite3")
    assert store.get_score(score.id).delivery == "delivered"
    assert score.trace_id in {t["id"] for t in store.list_traces()}
    assert score.id == score_id_for(score.trace_id)
    store.close()
