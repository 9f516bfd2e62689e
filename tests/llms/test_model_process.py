"""The offline model in its supervised process: safe weight layouts, crashes survived, restarts.

Real llama.cpp and the real bundled GGUF, always in a child process: a native crash here
fails one test with a clear message instead of ending pytest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from feedback.store import Store
from llms import model_process
from llms.local_llm import LocalLlamaModel, LocalModelError, packaged_gguf_path
from llms.model_process import CRASHED, ModelCrashed, ModelProcess, ModelProcessError
from tests.helpers import child_processes, free_port, text_of, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
HELLO = [{"role": "user", "content": "Say hello."}]
STORY = [{"role": "user", "content": "Tell a very long story about a cat who travels the world."}]


def _request(messages: list[dict[str, str]], max_tokens: int = 16) -> dict[str, object]:
    return {
        "op": "generate",
        "request": {"messages": messages, "max_tokens": max_tokens, "temperature": 0.0},
    }


def _answer(runner: ModelProcess, messages: list[dict[str, str]], max_tokens: int = 16) -> str:
    return "".join(str(e.get("text", "")) for e in runner.call(_request(messages, max_tokens)))


@pytest.fixture
def runner():
    process = ModelProcess(str(packaged_gguf_path()), 2048)
    try:
        yield process
    finally:
        process.close()


@pytest.fixture(scope="module")
def q4_0_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model requantized to Q4_0, a type llama.cpp repacks on most x86-64 CPUs
    (CPU_REPACK with AVX2 or AVX-512; AMX on Sapphire Rapids): proof that the setting reaches
    llama.cpp on any machine, not only one with AMX. Done in a child process (native code)."""
    out = tmp_path_factory.mktemp("gguf") / "q4_0.gguf"
    script = (
        "import ctypes, sys, llama_cpp\n"
        "p = llama_cpp.llama_model_quantize_default_params()\n"
        "p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0; p.allow_requantize = True; p.nthread = 2\n"
        "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(packaged_gguf_path()), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and out.is_file(), done.stderr[-2000:]
    return out


def test_the_bundled_model_runs_in_its_own_process_without_repacked_weights(runner):
    assert _answer(runner, HELLO)
    assert runner.pid not in (None, os.getpid())
    # llama.cpp says "AMX model buffer size" (and CPU_REPACK for its other layouts) when it repacks.
    assert runner.buffer_types and not [b for b in runner.buffer_types if "AMX" in b or "REPACK" in b]


def test_the_model_process_gets_no_secrets_of_the_app(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-in-the-model-process")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-never-in-the-model-process")
    process = ModelProcess(str(packaged_gguf_path()), 2048)
    try:
        process.ensure_started()
        environ = Path(f"/proc/{process.pid}/environ").read_bytes()
    finally:
        process.close()
    assert b"never-in-the-model-process" not in environ and b"PATH=" in environ


def test_repacked_layouts_are_off_unless_the_setting_turns_them_on(q4_0_gguf):
    plain = ModelProcess(str(q4_0_gguf), 2048)
    repacked = ModelProcess(str(q4_0_gguf), 2048, repack=True)
    try:
        plain.ensure_started()
        repacked.ensure_started()
        assert not [b for b in plain.buffer_types if "AMX" in b or "REPACK" in b], plain.buffer_types
        if repacked.buffer_types == plain.buffer_types:
            pytest.skip(f"llama.cpp has no repacked layout for Q4_0 on this CPU ({plain.buffer_types})")
        assert [b for b in repacked.buffer_types if "AMX" in b or "REPACK" in b], repacked.buffer_types
    finally:
        plain.close()
        repacked.close()


def test_the_setting_reaches_the_model_and_defaults_off(make_settings):
    from llms.models import build_model

    model, _ = build_model(make_settings())
    assert isinstance(model, LocalLlamaModel) and not model.repack and not model.in_process
    model, _ = build_model(make_settings(LOCAL_MODEL_REPACK="1", LOCAL_MODEL_IN_PROCESS="1"))
    assert model.repack and model.in_process


def test_a_crash_mid_reply_ends_that_call_with_a_sentence_and_the_model_comes_back(runner):
    assert _answer(runner, HELLO)
    first = runner.pid
    events = runner.call(_request(STORY, max_tokens=300))
    assert next(events)["ev"] == "text"  # the model is writing
    os.kill(first, signal.SIGSEGV)
    with pytest.raises(ModelCrashed) as crashed:
        for _ in events:
            pass
    assert str(crashed.value) == CRASHED
    # Calls made while it restarts wait for it; the next one answers from a new process.
    assert _answer(runner, HELLO)
    assert runner.pid not in (None, first) and runner.restarts == 1
    assert runner.health() == ""


def test_every_call_in_flight_gets_the_sentence(runner):
    assert _answer(runner, HELLO)
    pid = runner.pid
    os.kill(pid, signal.SIGSTOP)  # frozen: both calls are sent and wait for it
    outcomes: list[BaseException | str] = []

    def ask() -> None:
        try:
            outcomes.append(_answer(runner, HELLO))
        except ModelProcessError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    os.kill(pid, signal.SIGSEGV)
    os.kill(pid, signal.SIGCONT)
    for thread in threads:
        thread.join(60)
    assert len(outcomes) == 2 and all(isinstance(o, ModelCrashed) for o in outcomes), outcomes


def test_repeated_crashes_leave_it_down_and_the_page_says_so(make_settings, monkeypatch):
    from app import ChatHandlers, create_runtime
    from tests.helpers import turn

    monkeypatch.setattr(model_process, "RESTART_DELAYS_S", (0.05, 0.05, 0.05))
    model = LocalLlamaModel(n_ctx=1536, max_tokens=16)  # a model process of its own (its own key)
    runner = model.runner
    try:
        for crash in range(model_process.MAX_CRASHES + 1):
            model.load()  # waits for the restart
            os.kill(runner.pid, signal.SIGKILL)  # the OOM killer's signal
            wait_for(lambda n=crash: len(runner.crashes) == n + 1, timeout=30)
        with pytest.raises(ModelProcessError) as down:
            model.generate(HELLO)
        assert "crashed 4 times" in str(down.value) and "restarted" in str(down.value)
        assert runner.pid is None
        runtime = create_runtime(make_settings(), model=model)
        try:
            handlers = ChatHandlers(runtime)
            history, _session, _ = turn(handlers, None, [], "What is 2 plus 3?")
            assert "The local model crashed 4 times" in text_of(history[-1])
            assert handlers.status().startswith("⚠️ The local model crashed 4 times")
        finally:
            runtime.feedback.close()
    finally:
        runner.close()
        model_process._registry.pop((model.model_path, 1536, False, False), None)


def test_a_closed_stream_frees_the_model_for_the_next_caller():
    model = LocalLlamaModel(n_ctx=2048, max_tokens=400)
    stream = model.generate_stream(STORY)
    next(stream)
    stream.close()  # a chat closed mid-answer
    started = time.perf_counter()
    reply = LocalLlamaModel(n_ctx=2048, max_tokens=8).generate(HELLO)
    waited = time.perf_counter() - started
    assert reply.content
    # Without the stop the story's 400 tokens would be written first (several seconds).
    assert waited < 2.5, f"the next caller waited {waited:.2f} s"


def test_a_file_that_is_not_a_model_is_a_clear_sentence_not_a_crash_loop(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all" * 100)
    model = LocalLlamaModel(str(bad), n_ctx=2048)
    with pytest.raises(LocalModelError) as exc:
        model.generate(HELLO)
    assert "could not be loaded" in str(exc.value) and "LOCAL_MODEL_PATH" in str(exc.value)
    assert not model.runner.crashes and model.runner.health() == ""


# --- through the live app: `python app.py` with the offline model, killed mid-turn


def _app_env(tmp_path: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "OPENAI_", "HF_", "MODEL_"))}
    env.update(
        {
            "DATA_DIR": str(tmp_path / "data"),
            "GRADIO_ANALYTICS_ENABLED": "False",
            "EVALUATORS_FILE": "off",
            "GRADIO_SERVER_PORT": str(port),
        }
    )
    return env


def _model_host_of(app_pid: int) -> int | None:
    """The app's model process: its child running llms.model_host."""
    found = child_processes(app_pid, "llms.model_host")
    return found[0] if found else None


def _last_text(result) -> str:
    return text_of(result.output[1][-1])


def test_a_segfault_of_the_model_mid_turn_through_the_live_app(tmp_path):
    """The crash of the issue: the chat in flight gets the sentence, the app lives on."""
    from tests.app.test_app_process import _wait_ready
    from tests.gradio_queue import QueueClient

    port = free_port()
    log = open(tmp_path / "app.log", "w")
    app = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env=_app_env(tmp_path, port),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_ready(url, app)
        first_model = wait_for(lambda: _model_host_of(app.pid), timeout=60)
        alice, bob, carol = (QueueClient(url, timeout=180) for _ in range(3))
        answered = alice.chat("What is 2 plus 3?")
        assert answered.success and not _last_text(answered).startswith("⚠️"), answered.output
        history = answered.output[1]
        rated = len(history) - 1
        earlier = carol.chat("What is the capital of France?")
        assert earlier.success and not _last_text(earlier).startswith("⚠️"), earlier.output

        os.kill(first_model, signal.SIGSTOP)  # frozen mid-turn: the turns' requests wait in it
        results: dict[str, object] = {}
        started = {"alice": threading.Event(), "bob": threading.Event()}

        def chat(name: str, client: QueueClient, text: str, before: list) -> None:
            def seen(message: dict) -> None:
                if message.get("msg") == "process_generating":
                    started[name].set()

            results[name] = client.chat(text, before, on_message=seen)

        threads = [threading.Thread(target=chat, args=("alice", alice, "What is 12 times 3?", history))]
        threads[0].start()
        assert started["alice"].wait(60), "the turn did not start"
        threads.append(threading.Thread(target=chat, args=("bob", bob, "What is 7 times 8?", [])))
        threads[1].start()
        assert started["bob"].wait(60), "the second session's turn did not start"
        time.sleep(1.5)  # both agents have sent their model calls to the frozen process
        assert not results, f"a turn ended while the model was frozen: {results}"
        # A vote while the model is stuck lands like any other (a session's page holds one event
        # stream, so the one voting now is a third session, which asked before the freeze).
        assert carol.vote(len(earlier.output[1]) - 1, False).success
        os.kill(first_model, signal.SIGSEGV)
        os.kill(first_model, signal.SIGCONT)
        for thread in threads:
            thread.join(180)
        # And after it: the answer given before the crash is rated.
        assert alice.vote(rated, True).success
        crashed, other = results["alice"], results["bob"]
        assert crashed.success and CRASHED in _last_text(crashed), _last_text(crashed)
        # The other session's turn ended cleanly: the same sentence, never a traceback or a hang.
        assert other.success and CRASHED in _last_text(other), _last_text(other)

        # The chat goes on: the next turn answers from a restarted model process.
        again = alice.chat("What is 15 plus 27?", crashed.output[1])
        assert again.success and not _last_text(again).startswith("⚠️"), _last_text(again)
        assert app.poll() is None, "the app must survive the model's crash"
        second_model = _model_host_of(app.pid)
        assert second_model not in (None, first_model)
    finally:
        app.send_signal(signal.SIGTERM)
        code = app.wait(timeout=60)
        log.close()
    assert code == 0
    text = (tmp_path / "app.log").read_text()
    assert "Local model process killed by SIGSEGV; restarting it" in text
    store = Store(tmp_path / "data" / "feedback.sqlite3")
    try:
        traces = {t["input"]: t for t in store.list_traces(20)}
        assert traces["What is 2 plus 3?"]["status"] == "OK"
        failed = traces["What is 12 times 3?"]
        assert failed["status"] == "ERROR" and CRASHED in (failed["status_message"] or "")
        assert traces["What is 15 plus 27?"]["status"] == "OK"
        scores = {s.trace_id: s.value for s in store.scores()}
        assert scores == {
            traces["What is 2 plus 3?"]["id"]: 1.0,
            traces["What is the capital of France?"]["id"]: 0.0,
        }
    finally:
        store.close()
