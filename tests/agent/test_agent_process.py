"""Agent processes: a hosted model's agents run beside the web server, not in it.

Real processes (runtime.agent_host), a real OpenAI-compatible server (tests.fakes.FakeOpenAI) and
the fake Langfuse: what a user sees, what is traced where, and what happens when the process
dies, the browser leaves mid-turn, or the session ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent import agent_process
from agent.agent_process import STOPPED, AgentProcesses, RemoteAgent
from agent.session import close_session
from agent.turn import stream_turn
from app import ChatHandlers, Runtime, create_runtime, isolation_line
from runtime.agent_host import AgentHost
from sandbox import protocol
from tests.fakes import FakeOpenAI
from tests.helpers import answer_index, free_port, like, text_of, turn, wait_for


@pytest.fixture
def llm() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def free_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there


@pytest.fixture
def hosted(make_settings, llm, fake_langfuse) -> Iterator[Callable[..., Runtime]]:
    """A runtime whose agents run in agent processes (no model object passed in)."""
    made: list[Runtime] = []

    def build(**env: Any) -> Runtime:
        values = {
            "MODEL_PROVIDER": "openai",
            "OPENAI_BASE_URL": llm.url,
            "MODEL_ID": "gpt-4o-mini",
            "AGENT_PROCESSES": "1",
            **env,
        }
        runtime = create_runtime(make_settings(fake_langfuse, **values))
        made.append(runtime)
        return runtime

    yield build
    for runtime in made:
        runtime.close()


def _final(runtime: Runtime, session: Any, message: str, history: list | None = None) -> Any:
    updates = list(
        stream_turn(session, message, history or [], runtime.feedback.telemetry, runtime.metadata())
    )
    assert updates[-1].done
    return updates[-1]


def _spans(runtime: Runtime, trace_id: str) -> list[dict[str, Any]]:
    return runtime.feedback.store.rows(
        "SELECT span_id, parent_id, name, kind, cost, attributes FROM spans WHERE trace_id = :t",
        {"t": trace_id},
    )


def test_hosted_agents_run_in_agent_processes_and_answer(hosted):
    runtime = hosted()
    assert isinstance(runtime.make_agent, AgentProcesses)
    pid = runtime.make_agent.pids()[0]
    assert pid != os.getpid()
    assert isolation_line(runtime).startswith("code isolation: process")
    session = runtime.new_session("anon-1")
    assert isinstance(session.agent, RemoteAgent)
    final = _final(runtime, session, "What is 2+2?")
    assert final.error is None
    assert text_of(final.history[-1]) == "Answer to: What is 2+2?"
    # The code step ran and its messages came back collapsed above the answer.
    assert any("final_answer" in text_of(m) for m in final.history[1:-1])


def test_tokens_stream_from_the_agent_process_while_the_model_writes(hosted):
    runtime = hosted()
    session = runtime.new_session("anon-1")
    task = "[chunk_delay=0.06] Please count the words of this rather long question for me"
    updates = list(stream_turn(session, task, [], runtime.feedback.telemetry, runtime.metadata()))
    live = [
        text_of(u.history[-1])
        for u in updates
        if "writing" in str((u.history[-1].get("metadata") or {}).get("title", ""))
    ]
    assert len(live) >= 3, live  # several updates while the reply was being written
    assert all(len(a) < len(b) for a, b in zip(live, live[1:], strict=False)), live
    assert text_of(updates[-1].history[-1]) == f"Answer to: {task}"


def test_agent_spans_are_children_of_the_root_in_the_store_and_in_langfuse(hosted, fake_langfuse):
    runtime = hosted()
    session = runtime.new_session("anon-1")
    trace_id = _final(runtime, session, "What is 2+2?").trace_id
    runtime.feedback.telemetry.flush()
    # Made in the agent process, stored before its turn ended there.
    spans = wait_for(lambda: (s := _spans(runtime, trace_id)) and len(s) >= 4 and s)
    by_id = {s["span_id"]: s for s in spans}
    roots = [s for s in spans if s["parent_id"] is None]
    assert len(roots) == 1 and roots[0]["name"] == runtime.settings.trace_name
    for span in spans:  # every span reaches the root through its parents
        seen = span
        for _ in range(10):
            if seen["parent_id"] is None:
                break
            seen = by_id[seen["parent_id"]]
        assert seen is roots[0], span["name"]
    agent = next(s for s in spans if s["kind"] == "AGENT")
    assert json.loads(agent["attributes"])["output.value"] == "Answer to: What is 2+2?"
    llm = next(s for s in spans if s["kind"] == "LLM")
    assert llm["cost"] and llm["cost"] > 0
    trace = runtime.feedback.store.get_trace(trace_id)
    assert trace["prompt_tokens"] == 21 and trace["cost"] == pytest.approx(llm["cost"])
    # Langfuse: the same spans in the same trace, the root's metadata has the agent's cost.
    wait_for(
        lambda: (
            {s.name for s in fake_langfuse.state.spans if s.trace_id == trace_id}
            >= {s["name"] for s in spans}
        )
    )
    root = next(s for s in fake_langfuse.state.spans if s.trace_id == trace_id and s.parent_id is None)
    assert float(root.attributes["langfuse.trace.metadata.cost_usd"]) == pytest.approx(llm["cost"])
    child = next(s for s in fake_langfuse.state.spans if s.trace_id == trace_id and s.name == llm["name"])
    assert child.attributes.get("session.id") == session.session_id
    assert child.attributes.get("user.id") == "anon-1"


def test_memory_stays_in_the_agent_process_across_turns(hosted):
    runtime = hosted()
    session = runtime.new_session("anon-1")
    first = _final(runtime, session, "My name is Ada.")
    second = _final(runtime, session, "What is my name?", first.history)
    runtime.feedback.telemetry.flush()
    spans = wait_for(lambda: [s for s in _spans(runtime, second.trace_id) if s["kind"] == "LLM"])
    assert "My name is Ada." in json.loads(spans[0]["attributes"])["input.value"]


def test_a_turn_sent_the_moment_the_last_one_ended_is_answered(make_settings, llm, monkeypatch):
    """The next turn's request can reach the agent process while it is still finishing the
    last turn; it must wait there, not be read as a possible cancel and dropped (the chat
    then waited for an answer that never came). Here the app answers each "end" at once."""
    host = AgentHost(make_settings(MODEL_PROVIDER="openai", OPENAI_BASE_URL=llm.url, MODEL_ID="gpt-4o-mini"))
    app_end, host_end = socket.socketpair()
    waiting = [{"op": "turn", "message": "second", "parent": None, "metadata": {}}]
    real_send = protocol.send

    def send(sock: socket.socket, message: dict[str, Any]) -> None:
        real_send(sock, message)
        if sock is host_end and message.get("ev") == "end" and waiting:
            real_send(app_end, waiting.pop())  # before the process reads its channel again

    monkeypatch.setattr(protocol, "send", send)
    threading.Thread(target=host.serve_session, args=("s1", host_end), daemon=True).start()
    try:
        real_send(app_end, {"op": "turn", "message": "first", "parent": None, "metadata": {}})
        answers = []
        for _ in range(2):
            while (event := protocol.recv(app_end, limit=1 << 24, deadline=time.monotonic() + 10))[
                "ev"
            ] != "end":
                pass
            answers.append(event["answer"])
        assert answers == ["Answer to: first", "Answer to: second"]
    finally:
        app_end.close()
        host.close()


def test_votes_land_on_the_trace_of_the_rated_answer(hosted, fake_langfuse):
    runtime = hosted()
    handlers = ChatHandlers(runtime)
    history, session, _ = turn(handlers, None, [], "first question")
    history, session, _ = turn(handlers, session, history, "second question")
    first_trace = session.trace_for(answer_index(history, 0))
    second_trace = session.trace_for(answer_index(history, 1))
    assert first_trace and second_trace and first_trace != second_trace
    like(handlers, session, answer_index(history, 0), True)
    scores = runtime.feedback.store.rows("SELECT trace_id, value FROM scores")
    assert scores == [{"trace_id": first_trace, "value": 1.0}]


def test_a_killed_agent_process_fails_one_turn_with_a_sentence_then_starts_afresh(hosted):
    runtime = hosted()
    session = runtime.new_session("anon-1")
    assert _final(runtime, session, "before").error is None
    pid = runtime.make_agent.pids()[0]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not runtime.make_agent.hosts[0].alive())
    failed = _final(runtime, session, "during")
    assert failed.error == STOPPED
    assert STOPPED in text_of(failed.history[-1])
    assert session.trace_for(len(failed.history) - 1) is None  # an error is not an answer
    again = _final(runtime, session, "after", failed.history)
    assert again.error is None and text_of(again.history[-1]) == "Answer to: after"
    assert runtime.make_agent.pids()[0] != pid


def test_a_process_restarted_by_a_request_thread_outlives_that_thread(hosted):
    # Linux kills a PDEATHSIG child when the *thread* that started it ends; Gradio runs turns
    # in worker threads it retires, so a restart must not be their child.
    runtime = hosted()
    session = runtime.new_session("anon-1")
    os.kill(runtime.make_agent.pids()[0], signal.SIGKILL)
    wait_for(lambda: not runtime.make_agent.hosts[0].alive())
    results: list[Any] = []
    worker = threading.Thread(
        target=lambda: results.extend([_final(runtime, session, "x"), _final(runtime, session, "y")])
    )
    worker.start()
    worker.join(60)
    assert results[1].error is None  # the second turn ran in the restarted process
    time.sleep(1.0)  # the thread that restarted it is gone
    assert runtime.make_agent.hosts[0].alive()
    assert _final(runtime, session, "z").error is None


def test_a_turn_left_mid_way_is_stopped_in_the_agent_process(hosted, llm):
    runtime = hosted(MAX_STEPS="10")
    session = runtime.new_session("anon-1")
    updates = stream_turn(
        session, "[delay=0.4][steps=10] a long task", [], runtime.feedback.telemetry, runtime.metadata()
    )
    first = next(updates)
    while not any("Step 1" in str(m.get("metadata")) for m in next(updates).history):
        pass  # the first step is done; the agent goes on with the next ones
    updates.close()  # the browser went away
    calls = len(llm.service_ms)
    started = time.monotonic()
    final = _final(runtime, session, "quick one")
    assert final.error is None and text_of(final.history[-1]) == "Answer to: quick one"
    # The long task stopped after the step in flight (8 more steps would take over 3 s).
    assert time.monotonic() - started < 2.5
    assert len(llm.service_ms) <= calls + 2
    trace = wait_for(lambda: runtime.feedback.store.get_trace(first.trace_id))
    assert trace["status"] == "ERROR" and "cancelled" in (trace["status_message"] or "")


def test_sessions_spread_over_the_processes_and_end_with_their_session(hosted):
    runtime = hosted(AGENT_PROCESSES="2")
    assert len(set(runtime.make_agent.pids())) == 2
    one, two = runtime.new_session("a"), runtime.new_session("b")
    assert _final(runtime, one, "one").error is None
    assert _final(runtime, two, "two").error is None
    assert [h.sessions for h in runtime.make_agent.hosts] == [1, 1]
    folder = runtime.settings.agent_files_dir.resolve() / one.session_id
    wait_for(folder.exists)  # the code worker's folder, made by the agent process
    close_session(one)
    wait_for(lambda: not folder.exists())  # the process dropped the agent and its folder
    closed = _final(runtime, one, "after the end")
    assert "start a new chat" in closed.error
    assert _final(runtime, two, "still here").error is None


def test_a_model_that_cannot_be_reached_fails_the_turn_with_its_reason(make_settings, free_port_url):
    settings = make_settings(
        MODEL_PROVIDER="openai", OPENAI_BASE_URL=free_port_url, MODEL_ID="gpt-4o-mini", AGENT_PROCESSES="1"
    )
    runtime = create_runtime(settings)
    try:
        session = runtime.new_session("anon-1")
        final = _final(runtime, session, "hello")
        # The model's own error, as in-process: which server, and that it could not be reached.
        assert final.error and f"{free_port_url} could not be reached" in final.error
        assert "Sorry, this turn failed" in text_of(final.history[-1])
        assert session.trace_for(len(final.history) - 1) is None
    finally:
        runtime.close()


class _FailingRemoteAgent(RemoteAgent):
    """An agent process whose turn fails after model calls it priced (what the process sends)."""

    def events(self, message: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        yield {"ev": "live", "text": "Thought: ...", "step": 1, "more": False}
        raise agent_process.AgentProcessError("ValueError: boom", {"total": 0.25, "unknown": False})


def test_a_failed_remote_turn_still_reports_what_its_model_calls_cost(make_settings, make_runtime):
    runtime = make_runtime(make_settings())
    session = runtime.new_session("anon-1")
    session.agent = _FailingRemoteAgent(None, session.session_id)  # type: ignore[arg-type]
    final = _final(runtime, session, "hello")
    assert final.error == "ValueError: boom"
    runtime.feedback.telemetry.flush()
    trace = wait_for(lambda: runtime.feedback.store.get_trace(final.trace_id))
    assert json.loads(trace["metadata"])["cost_usd"] == 0.25


def test_an_agent_process_keeps_its_share_of_the_code_memory_budget(hosted):
    """Issue 23 with a hosted model: the workers live under the agent process, which keeps the
    budget (its own size counted in it); the least recently used holder is stopped and its
    session told so at its next step."""
    from sandbox.budget import CLEARED
    from tests.helpers import child_processes, rss_mb, tree_rss_mb

    runtime = hosted(CODE_TOTAL_MEMORY_MB="1100", CODE_MEMORY_MB="400")
    agent_pid = runtime.make_agent.pids()[0]
    assert "code memory budget: 1,100 MB" in isolation_line(runtime)
    sessions = [runtime.new_session(f"anon-{n}") for n in range(3)]
    peak = 0.0
    for session in sessions:
        final = _final(runtime, session, "[hold=300] keep this")
        assert final.error is None and text_of(final.history[-1]) == "holding"
        peak = max(peak, tree_rss_mb(agent_pid))
    # Three holders of 300 MB and the agent process do not fit in 1,100 MB: one was stopped.
    assert peak <= 1100 + 50, peak
    workers = [k for z in child_processes(agent_pid) for k in child_processes(z)]
    assert len(workers) == 2, workers
    assert all(rss_mb(w) > 300 for w in workers)
    final = _final(runtime, sessions[0], "[check-held] is it there?")
    assert text_of(final.history[-1]) == "gone"
    shown = "\n".join(text_of(m) for m in final.history)
    assert CLEARED in shown
    # The newest holder was not touched.
    final = _final(runtime, sessions[2], "[check-held] is it there?")
    assert text_of(final.history[-1]) == "still held"
    assert CLEARED not in "\n".join(text_of(m) for m in final.history[2:])
