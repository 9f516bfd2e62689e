"""Load: many users chatting and voting at once through the running app, over HTTP.

Starts `python app.py` (a scripted OpenAI-compatible model, a Langfuse stand-in, both local)
and drives it through Gradio's queue API like browsers do: chat turns, and votes sent with
their event data. Prints, measured in this one run:

- misattributed votes (must be 0) and lost votes (must be 0), checked in the local store
  and in the Langfuse stand-in, by score id and trace;
- turn throughput and the p95 latency the app adds over the scripted model;
- a concurrency figure: 8 users whose model takes 1 s finish 8 turns within 1.5 s, and a vote
  cast while those 8 turns run is recorded within 100 ms;
- the memory of the app and its agent processes while 500 sessions come and go with
  SESSION_TTL_S eviction;
- the app against plain Gradio: the same users and turns (no votes) through the same client,
  in rounds rotating between the app and a bare `gr.ChatInterface` (bench/plain_chat.py, its
  own process) that streams as many chatbot updates per turn as the app (counted in the run)
  with no agent, no tracing and no store; both p95s, both throughputs and the ratio app p95 / plain p95.

Both are timed from Enter to the complete answer, as the user waits: for the app its one
streaming event; for the plain chat the calls its page chains before the answer is complete
(save the text, append it to the chatbot, the streaming event); the calls the page makes after
(state sync, textbox unlock, conversation save) run before the user's next message, untimed.
A stricter baseline is measured and printed too: a lean client of the same plain chat that
makes only the streaming event (and, untimed, the two direct calls that set its inputs), which
is Gradio's queue, SSE and chatbot streaming alone.

    python -m bench.load [--users 20] [--turns 5] [--sessions 500]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import start_app, start_fake_langfuse, start_plain, stop_app  # noqa: E402
from feedback.votes import score_id_for  # noqa: E402
from tests.fakes import FakeOpenAIProcess  # noqa: E402
from tests.gradio_queue import QueueClient, Result  # noqa: E402
from tests.helpers import child_processes, rss_mb  # noqa: E402

VALUES = {True: 1.0, False: 0.0, "Incorrect": 0.0, "Too slow": 0.0, "": None}


def agent_processes(pid: int) -> list[int]:
    """The app's agent processes (runtime.agent_host), where a hosted model's agents live."""
    return child_processes(pid, "runtime.agent_host")


def family_rss_mb(pid: int) -> float:
    """The app and its agent processes together: the memory the sessions cost."""
    return rss_mb(pid) + sum(rss_mb(kid) for kid in agent_processes(pid))


def answer_index(history: list[dict]) -> int:
    """LikeData.index of the last answer: the first message of the last assistant group."""
    i = len(history) - 1
    while i > 0 and history[i - 1]["role"] == "assistant":
        i -= 1
    return i


def user_run(url: str, user: int, turns: int, rng: random.Random, out: dict) -> None:
    q = QueueClient(url)
    q.load()  # the page opens
    history: list = []
    latencies = []
    for turn in range(turns):
        question = f"user {user} turn {turn}"
        start = time.perf_counter()
        result = q.chat(question, history)
        latencies.append(time.perf_counter() - start)
        assert result.success, result.message
        history = result.output[1]
        index = answer_index(history)
        clicks = [rng.choice(list(VALUES)) for _ in range(rng.randint(1, 4))]
        for liked in clicks:
            assert q.vote(index, liked).success
        out["final"][question] = VALUES[clicks[-1]]
        out["clicks"] += len(clicks)
    # Change some earlier votes at the end, as people do.
    for turn in rng.sample(range(turns), k=min(2, turns)):
        question = f"user {user} turn {turn}"
        liked = rng.choice(list(VALUES))
        index_of = [
            i for i, m in enumerate(history) if m["role"] == "user" and question in str(m["content"])
        ][0]
        assert q.vote(index_of + 1, liked).success
        out["final"][question] = VALUES[liked]
        out["clicks"] += 1
    out["latencies"].extend(latencies)
    q.close()


class PlainChatClient(QueueClient):
    """bench/plain_chat.py's gr.ChatInterface, driven as its page drives it for a message.

    The page chains six calls per message: save the text (direct), append it to the chatbot
    (direct), stream the answer (queued), copy the chatbot into its state (direct), unlock the
    textbox (queued) and save the conversation (direct), plus two direct textbox updates. The
    user waits from Enter until the answer is complete: save, append and stream; the next
    message can be sent once the textbox is unlocked.
    """

    def __init__(self, url: str, lean: bool = False) -> None:
        # lean: only the streaming event and, untimed before it, the two direct calls that set
        # its inputs (the text and the chat so far): Gradio's queue, SSE and streaming alone.
        self.lean = lean
        # What QueueClient sets up, without its lookups of the app's own events.
        self.url = url.rstrip("/")
        self.session_hash = uuid.uuid4().hex[:12]
        self.http = httpx.Client(timeout=60.0)
        config = self.http.get(f"{self.url}/config", params={"page": ""}).json()
        self.api_prefix = config.get("api_prefix", "/gradio_api")
        kinds = {c["id"]: c["type"] for c in config["components"]}
        deps = config["dependencies"]

        def after(dep: dict, *, queued: bool | None = None, inputs: list[str] | None = None) -> list[dict]:
            return [
                d
                for d in deps
                if d.get("trigger_after") == dep["id"]
                and (queued is None or bool(d.get("queue")) == queued)
                and (inputs is None or [kinds[i] for i in d["inputs"]] == inputs)
            ]

        save = next(d for d in deps if d.get("api_name") == "_clear_and_save_textbox")
        append = next(d for d in after(save) if not d.get("trigger_only_on_success"))
        stream = after(append, queued=True)[0]
        sync = after(stream, inputs=["chatbot"])[0]
        unlock = after(sync, queued=True)[0]
        store = after(unlock)[0]
        self.save, self.append, self.stream, self.sync, self.unlock, self.store = (
            d["id"] for d in (save, append, stream, sync, unlock, store)
        )
        # The small textbox updates the page also sends (after the save, after the stream).
        self.extras = [d["id"] for d in after(save) if d.get("trigger_only_on_success")] + [
            d["id"] for d in after(stream, inputs=[])
        ]
        assert kinds[save["inputs"][0]] == "textbox" and stream.get("api_name") == "_submit_fn", stream

    def direct(self, fn_index: int, data: list) -> dict:
        """A `queue=False` call, made as the page makes it (one POST, no queue)."""
        body = {"data": data, "fn_index": fn_index, "session_hash": self.session_hash, "event_data": None}
        response = self.http.post(f"{self.url}{self.api_prefix}/run/predict", json=body)
        response.raise_for_status()
        return response.json()

    def load(self) -> None:
        return None  # a bare ChatInterface (no saved history) has nothing to set up on page load

    def turn(self, message: str, history: list) -> tuple[Result, float, float]:
        """(result, s from Enter to the complete answer, s of the streaming event alone)."""
        if self.lean:
            self.direct(self.save, [message])
            self.direct(self.sync, [history])
            start = time.perf_counter()
            result = self.call(self.stream, [None, None])
            seconds = time.perf_counter() - start
            return result, seconds, seconds
        start = time.perf_counter()
        self.direct(self.save, [message])
        self.direct(self.append, [None, history])
        streaming = time.perf_counter()
        result = self.call(self.stream, [None, None])
        end = time.perf_counter()
        # What the page does next, before the textbox takes the next message (untimed).
        for fn in self.extras:
            self.direct(fn, [])
        self.direct(self.sync, [result.output[1] if result.success else history])
        self.call(self.unlock, [])
        self.direct(self.store, [None, None, []])
        return result, end - start, end - streaming


def updates_per_turn(url: str, probes: int = 5) -> int:
    """How many updates the app streams for one scripted turn (what the plain chat then streams).

    The most over a few turns: an update already superseded when it is due is skipped, so a
    turn may show one fewer; the plain chat streams what the app streams at most.
    """
    return max(_updates_of_one_turn(url) for _ in range(probes))


def _updates_of_one_turn(url: str) -> int:
    q = QueueClient(url)
    q.load()
    data = ["count my updates", [], None, q.session_hash]
    body = {"data": data, "fn_index": q.fn_by_name["respond"], "session_hash": q.session_hash}
    q.http.post(f"{q.url}{q.api_prefix}/queue/join", json=body).raise_for_status()
    updates = 0
    with q.http.stream(
        "GET", f"{q.url}{q.api_prefix}/queue/data", params={"session_hash": q.session_hash}
    ) as s:
        for line in s.iter_lines():
            msg = json.loads(line[5:]) if line.startswith("data:") else {}
            updates += msg.get("msg") == "process_generating"
            if msg.get("msg") == "process_completed":
                break
    q.close()
    return updates


def chat_run(url: str, user: int, turns: int, plain: bool, out: dict, lean: bool = False) -> None:
    """One user's turns, timed like user_run's (Enter to complete answer), without votes (a
    bare ChatInterface has none)."""
    q: QueueClient = PlainChatClient(url, lean) if plain else QueueClient(url)
    q.load()
    history: list = []
    latencies = []
    for turn in range(turns):
        question = f"user {user} turn {turn}"
        if isinstance(q, PlainChatClient):
            result, waited, _ = q.turn(question, history)
        else:
            start = time.perf_counter()
            result = q.chat(question, history)
            waited = time.perf_counter() - start
        assert result.success, result.message
        latencies.append(waited)
        history = result.output[1]
    out["latencies"].extend(latencies)
    q.close()


def chat_load(url: str, users: int, turns: int, plain: bool, lean: bool = False) -> tuple[list[float], float]:
    """(sorted turn latencies, elapsed s) for `users` chatting at once; lean: see PlainChatClient."""
    out: dict = {"latencies": []}
    start = time.perf_counter()
    with ThreadPoolExecutor(users) as pool:
        for f in [pool.submit(chat_run, url, 1000 + u, turns, plain, out, lean) for u in range(users)]:
            f.result()
    return sorted(out["latencies"]), time.perf_counter() - start


def interleaved_rounds(app_url: str, plain_url: str, args: argparse.Namespace) -> dict[str, Sample]:
    """`args.rounds` rounds of chat_load for the app, the plain chat's page and the lean plain
    client, in rotating order.

    Both servers are up, the idle one costs nothing, and whatever else the shared machine does
    meanwhile falls on all alike; a p95 over a few hundred turns, not the 5th-worst of 100.
    """
    samples = {kind: Sample() for kind in ("app", "page", "lean")}
    order = list(samples)
    for n in range(args.rounds):
        first = n % len(order)
        for kind in order[first:] + order[:first]:
            sample = samples[kind]
            lat, seconds = chat_load(
                app_url if kind == "app" else plain_url,
                args.users,
                args.turns,
                plain=kind != "app",
                lean=kind == "lean",
            )
            sample.latencies += lat
            sample.elapsed += seconds
    return samples


@dataclass
class Sample:
    """One client's turns over all rounds: latencies (Enter to complete answer) and seconds."""

    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed


def p95_of(lat: list[float]) -> float:
    return lat[int(0.95 * (len(lat) - 1))]


def check_votes(db: Path, langfuse_url: str, final: dict[str, float | None]) -> tuple[int, int, int]:
    """(misattributed, lost in the store, lost in Langfuse) by score id and trace."""
    con = sqlite3.connect(db)
    traces = {
        row[0]: (row[1], row[2], row[3])
        for row in con.execute("SELECT input, id, user_id, session_id FROM traces")
    }
    scores = {
        row[0]: row[1:]
        for row in con.execute("SELECT id, trace_id, value, deleted, user_id, session_id FROM scores")
    }
    con.close()
    state = json.load(urllib.request.urlopen(f"{langfuse_url}/_control/state", timeout=10))
    lf = state["scores"]
    by_trace = {tid: q for q, (tid, _u, _s) in traces.items()}
    misattributed = lost_store = lost_lf = 0
    for sid, (trace_id, _value, _deleted, user_id, session_id) in scores.items():
        question = by_trace.get(trace_id)
        t = traces.get(question) if question else None
        if t is None or sid != score_id_for(trace_id) or (t[1], t[2]) != (user_id, session_id):
            misattributed += 1
    for question, value in final.items():
        trace_id = traces[question][0]
        row = scores.get(score_id_for(trace_id))
        if value is None:
            if row is not None and not row[2]:
                lost_store += 1  # an undone vote still present counts as wrong too
            if score_id_for(trace_id) in lf:
                lost_lf += 1
        else:
            if row is None or row[2] or row[1] != value:
                lost_store += 1
            got = lf.get(score_id_for(trace_id))
            if got is None or got["value"] != value or got["traceId"] != trace_id:
                lost_lf += 1
    misattributed += sum(1 for v in lf.values() if by_trace.get(v["traceId"]) is None)
    return misattributed, lost_store, lost_lf


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the comparison with plain Gradio")
    parser.add_argument(
        "--agent-processes", default="", help="AGENT_PROCESSES for the app (default: the app's own default)"
    )
    args = parser.parse_args()
    rng = random.Random(42)

    fake_lf, langfuse_url = start_fake_langfuse()
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIProcess() as llm:
        data_dir = Path(tmp) / "data"
        extra = {"AGENT_PROCESSES": args.agent_processes} if args.agent_processes else {}
        proc, url = start_app(
            data_dir, llm.url, langfuse_url, MAX_CONCURRENT_TURNS="20", SESSION_TTL_S="3", **extra
        )
        try:
            # 1. Load: users chatting and voting at once.
            out: dict = {"final": {}, "clicks": 0, "latencies": []}
            start = time.perf_counter()
            with ThreadPoolExecutor(args.users) as pool:
                futures = [
                    pool.submit(user_run, url, u, args.turns, random.Random(rng.random()), out)
                    for u in range(args.users)
                ]
                for f in futures:
                    f.result()
            elapsed = time.perf_counter() - start
            lat = sorted(out["latencies"])
            p95 = lat[int(0.95 * (len(lat) - 1))]
            # The scripted model answers in about a millisecond: nearly all of a turn is the app.
            service_ms = llm.service_ms
            model_ms = statistics.median(service_ms) if service_ms else 0.0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                mis, lost_store, lost_lf = check_votes(
                    data_dir / "feedback.sqlite3", langfuse_url, out["final"]
                )
                if lost_lf == 0:
                    break
                time.sleep(0.5)

            # 1b. Plain Gradio: the same users and turns (no votes) against a bare
            # gr.ChatInterface in its own process, in rounds rotating with the app's; a few
            # turns first so both are measured warm.
            updates = updates_per_turn(url)
            plain, plain_url = start_plain(Path(tmp), concurrency=20, updates=updates)
            try:
                chat_load(plain_url, 2, 2, plain=True)
                samples = interleaved_rounds(url, plain_url, args)
            finally:
                stop_app(plain)

            # 2. Concurrency: 8 users whose model takes 1 s per call, and a vote meanwhile.
            voter = QueueClient(url)
            voter.load()
            history = voter.chat("voter question").output[1]
            clients = [QueueClient(url) for _ in range(8)]
            for client in clients:
                client.load()  # their pages are open; then all eight ask at once
            results: list[float] = []

            def slow_turn(n: int) -> None:
                t0 = time.perf_counter()
                assert clients[n].chat(f"[delay=1.0] slow user {n}").success
                results.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            threads = [threading.Thread(target=slow_turn, args=(n,)) for n in range(8)]
            for t in threads:
                t.start()
            time.sleep(0.3)  # the 8 turns are running now
            v0 = time.perf_counter()
            assert voter.vote(answer_index(history), True).success
            vote_ms = (time.perf_counter() - v0) * 1000
            for t in threads:
                t.join()
            wall_8 = time.perf_counter() - t0

            # 3. Memory: sessions come and go; idle ones are evicted after SESSION_TTL_S.
            hosts = len(agent_processes(proc.pid))
            rss = [(0, family_rss_mb(proc.pid))]

            def one_session(n: int) -> None:
                q = QueueClient(url)
                q.load()
                q.chat(f"visitor {n}")
                q.close()

            done = 0
            while done < args.sessions:
                with ThreadPoolExecutor(20) as pool:
                    list(pool.map(one_session, range(done, done + 100)))
                done += 100
                time.sleep(4)  # longer than SESSION_TTL_S: the batch's sessions expire
                rss.append((done, family_rss_mb(proc.pid)))
        finally:
            stop_app(proc)
    fake_lf.terminate()

    print(f"users {args.users} x turns {args.turns}: {len(lat)} turns, {out['clicks']} vote clicks")
    print(f"misattributed votes: {mis}  (must be 0)")
    print(f"lost votes: local store {lost_store}, Langfuse {lost_lf}  (must be 0)")
    print(f"turn throughput: {len(lat) / elapsed:.1f} turns/s over {elapsed:.1f} s")
    print(
        f"turn latency p50 {statistics.median(lat) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms; "
        f"model {model_ms:.1f} ms; p95 added by the app {p95 * 1000 - model_ms:.1f} ms"
    )
    print(
        f"8 users, 1 s model: 8 turns in {wall_8:.2f} s wall (target <= 1.5 s): "
        f"{'MET' if wall_8 <= 1.5 else 'NOT MET'}; ratio to target {wall_8 / 1.5:.2f}"
    )
    print(
        f"vote during those 8 turns recorded in {vote_ms:.1f} ms (target < 100 ms): "
        f"{'MET' if vote_ms < 100 else 'NOT MET'}; ratio to target {vote_ms / 100:.2f}"
    )
    app, page, lean = samples["app"], samples["page"], samples["lean"]
    app_p95, page_p95, lean_p95 = (p95_of(x.latencies) for x in (app, page, lean))
    ratio = app_p95 / page_p95
    print(
        f"vs plain Gradio, {args.rounds} rounds each (rotating) of {args.users} users x {args.turns} turns, "
        f"no votes, same client; a bare gr.ChatInterface streaming the same {updates} updates per turn:"
    )
    for name, sample in (
        ("app", app),
        ("plain, driven as its page drives it (Enter to complete answer)", page),
        ("plain, its streaming event alone (lean client)", lean),
    ):
        lat_ = sample.latencies
        print(
            f"  {name}: {sample.rate:5.1f} turns/s over {sample.elapsed:.1f} s; latency "
            f"p50 {statistics.median(lat_) * 1000:.1f} ms, p95 {p95_of(lat_) * 1000:.1f} ms"
        )
    print(
        f"  app p95 / plain page p95 = {ratio:.2f} (target <= 1.3): {'MET' if ratio <= 1.3 else 'NOT MET'}; "
        f"p50 ratio {statistics.median(app.latencies) / statistics.median(page.latencies):.2f}; "
        f"throughput app / plain page = {app.rate / page.rate:.2f}; "
        f"with votes (above) app p95 / plain page p95 = {p95 / page_p95:.2f}"
    )
    print(
        f"  stricter, app p95 / lean plain p95 = {app_p95 / lean_p95:.2f} "
        f"({'MET' if app_p95 / lean_p95 <= 1.3 else 'NOT MET'}); "
        f"p50 ratio {statistics.median(app.latencies) / statistics.median(lean.latencies):.2f}; "
        "throughput app / lean plain = "
        f"{app.rate / lean.rate:.2f}"
    )
    print(
        f"memory of the app and its {hosts} agent processes (sessions -> RSS MB): "
        + ", ".join(f"{n}: {m:.0f}" for n, m in rss)
    )
    steps = [b[1] - a[1] for a, b in zip(rss, rss[1:], strict=False)]
    half = len(steps) // 2
    first = sum(steps[:half]) / max(half, 1)
    last = sum(steps[half:]) / max(len(steps) - half, 1)
    print(
        f"growth per 100 sessions: first half {first:+.1f} MB, second half {last:+.1f} MB "
        f"(ratio {last / first if first > 0 else float('nan'):.2f}); "
        f"{'slowing' if last < first else 'not slowing'}"
    )


if __name__ == "__main__":
    main()
