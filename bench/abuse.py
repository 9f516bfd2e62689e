"""Abuse: what the memory budget costs and what it holds against strangers, measured in one run.

    python -m bench.abuse [--steps 300] [--attackers 30] [--levels 50,100,150,200,300,400] [--no-unbounded]
    python -m bench.abuse --only bookkeeping --profile     # part 1 alone, with its cProfile

Prints, measured in this one run (issue 23, item 5):

1. Bookkeeping per code step: MemoryBudget.admit + release timed inside real code steps of a
   real confined worker, with 0, 50, 300 and 1000 idle workers in the ledger (stand-in workers
   whose pid is one real small process, so `release` reads a real /proc/PID/statm); µs per step
   (p50/p95) and the share of the step's whole time (target: under 1 ms). Also what an admit
   costs when it must stop an idle worker (SIGKILL and waiting for the process to be gone).
2. The 30-session attack of the issue: `python app.py` (a scripted OpenAI-compatible model that
   writes the code it is asked for), 30 fresh sessions from 30 addresses each running
   `held = b"x" * (400 * 1024 * 1024)`; the app's whole process tree (the app, its agent
   processes, their zygotes and code workers) sampled every 0.1 s, its largest size, and a new
   user's plain turn during and after the attack; once with CODE_TOTAL_MEMORY_MB=2000, once
   with no budget to speak of (100000).
3. Sessions served at once with the default settings (budget: half of this host's memory):
   K sessions, each with a live worker holding a few MB of variables; at each K the memory per
   session (worker and app side) and the latency of plain turns sent by the K users at one turn
   per user every 30 s; the largest K before the budget stops a worker or a turn's p95 passes
   5 s, and the K the memory per session allows.

Every app runs behind TRUSTED_PROXY_HOPS=1 (as on a Space) and each simulated person sends its
own X-Forwarded-For address, so the per-user limits count people as they would there, not the
whole benchmark as one visitor. Every process started is stopped at the end (checked by pid).
"""

# Profile of part 1 (cProfile over 20,000 admit+release pairs on one real worker's slot, with
# the run's largest ledger, 1,000 idle workers, in place; `--profile` prints it again):
#   - release() is nearly all of it: its read of /proc/PID/statm (resident_mb), and there the
#     `open` (procfs path lookup) is over half of the pair's whole time, the read a tenth; about
#     30 µs a step whatever the ledger's size. An fd kept open per worker and re-read with
#     os.pread(fd, 64, 0) would save the open.
#   - admit() is a few µs and constant since it stopped scanning the idle ledger when the step
#     fits (a version that built the list of evictable workers and summed them at every admit
#     cost ~90 µs at 1,000 idle workers: 20 million generator steps in the same profile).
#   - the Condition: release()'s notify_all also wakes the reaper thread, which waits on the
#     same Condition, so the reaper runs a round (stop_idle, a forced refresh_fixed reading the
#     fixed part's /proc files) after nearly every step instead of every FIXED_REFRESH_S: the
#     "reaper rounds per step" column. Off the step's path, but CPU, lock and GIL per step.
# The pair is 30-50 µs (p50-p95), 4-6% of a ~0.8 ms trivial code step and 1/20 of the 1 ms
# target; the model's real code makes the share smaller still.

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import start_app, start_fake_langfuse, stop_app  # noqa: E402
from tests.fakes import _OpenAIHandler, code_reply, echo_reply, last_task  # noqa: E402

CODE = "x = sum(i * i for i in range(100))\nprint(x)\nx"
# A typical chat's variables: a few MB (a dict of notes and a table of rows).
STATE_CODE = (
    "notes = {i: f'note {i}' for i in range(20_000)}\n"
    "rows = [[i, i * 0.5] for i in range(20_000)]\n"
    "final_answer(f'{len(notes)} notes, {len(rows)} rows kept')"
)
PLAIN = "What is 6 times 7?"
TARGET_P95_S = 5.0
THINK_S = 30.0  # in part 3 each user sends a turn every THINK_S seconds
UNBOUNDED_MB = 100_000  # "no budget": far above what 30 x 400 MB needs


# --- the scripted model: writes the code it is asked for ([hold=MB], [state]), else answers


def model_reply(messages: list[Any]) -> str:
    task = last_task(messages)
    if "[hold=" in task:
        mb = int(task.split("[hold=", 1)[1].split("]", 1)[0])
        return code_reply(f'held = b"x" * ({mb} * 1024 * 1024)\nfinal_answer("holding {mb} MB")')
    if "[state]" in task:
        return code_reply(STATE_CODE)
    return echo_reply(messages)


class _AbuseModelHandler(_OpenAIHandler):
    """tests.fakes' OpenAI-compatible server, answering with model_reply."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        text = model_reply(body.get("messages", []))
        if body.get("stream"):
            self._stream(body, text)
            return
        self._send(
            200,
            {
                "id": "chatcmpl-abuse",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "scripted"),
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                ],
                "usage": {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30},
            },
        )


def serve_model() -> None:
    """`python -m bench.abuse --model-server`: the scripted model in a process of its own (a model
    is a remote server; in the benchmark's process its replies would wait for the clients' GIL)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AbuseModelHandler)
    server.daemon_threads = True
    server.service_ms = []  # type: ignore[attr-defined]
    print(f"http://127.0.0.1:{server.server_address[1]}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


class ModelProcess:
    def __enter__(self) -> ModelProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.abuse", "--model-server"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url:
            self.proc.kill()
            raise SystemExit("the scripted model did not start")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


# --- small measurements


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def mem_available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    from tests.helpers import child_processes

    return child_processes(pid)


def descendants(pid: int) -> list[int]:
    from tests.helpers import descendants as below

    return below(pid)


def smaps(pid: int) -> tuple[float, float]:
    """(USS, PSS) in MB from /proc/PID/smaps_rollup; (nan, nan) where it cannot be read."""
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[1].isdigit():
                    fields[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        return float("nan"), float("nan")
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return uss / 1024, fields.get("Pss", 0) / 1024


@dataclass
class Tree:
    """An app's processes by role: agent processes (a hosted model's agents run there, each with
    its share of the budget), zygotes (one per agent process) and the code workers they fork."""

    agents: list[int]
    zygotes: list[int]
    workers: list[int]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def tree_of(app_pid: int) -> Tree:
    tree = Tree([], [], [])
    groups = {"agent": tree.agents, "zygote": tree.zygotes, "worker": tree.workers}
    todo = [(app_pid, "app")]
    while todo:
        pid, role = todo.pop()
        for kid in children(pid):
            line = _cmdline(kid)
            if b"sandbox.code_worker" in line:  # a zygote, or a worker it forked (same command)
                kind = "worker" if role in ("zygote", "worker") else "zygote"
            else:
                kind = "agent" if b"runtime.agent_host" in line else "other"
            groups.get(kind, []).append(kid)
            todo.append((kid, kind))
    return tree


def stop_everything(proc: subprocess.Popen) -> int:
    """Stop an app and check its whole tree is gone; kill by pid what is left. Returns leftovers."""
    pids = descendants(proc.pid)
    stop_app(proc)
    deadline = time.monotonic() + 10
    left = pids
    while left and time.monotonic() < deadline:
        left = [p for p in left if Path(f"/proc/{p}").exists() and not _zombie(p)]
        time.sleep(0.1)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(left)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


class Person:
    """One browser tab from its own address (X-Forwarded-For, read behind TRUSTED_PROXY_HOPS=1)."""

    def __init__(self, url: str, address: str) -> None:
        from tests.gradio_queue import QueueClient

        self.q = QueueClient(url, timeout=180.0)
        self.q.http.headers["X-Forwarded-For"] = address
        self.history: list[Any] = []
        self.q.load()

    def say(self, text: str) -> tuple[float, str]:
        """(seconds from Enter to the complete answer, the answer's text)."""
        from tests.helpers import text_of

        started = time.perf_counter()
        result = self.q.chat(text, self.history)
        seconds = time.perf_counter() - started
        if not result.success:
            return seconds, f"ERROR {result.message}"
        self.history = result.output[1]
        return seconds, text_of(self.history[-1]) if self.history else ""

    def close(self) -> None:
        self.q.close()


def address(n: int, block: int) -> str:
    return f"10.{block}.{n // 250}.{n % 250 + 1}"


# --- 1. bookkeeping per code step


class _Stand:
    """A stand-in worker in the ledger: the pid of one real, small process; never really killed."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.dead = False

    def kill(self, wait_s: float = 0.0) -> None:
        self.dead = True


class _Timed:
    """Times the budget's admit and release as the executor calls them (instance attributes)."""

    def __init__(self, budget: Any) -> None:
        self.admit_ns: list[int] = []
        self.release_ns: list[int] = []
        self.real_admit: Callable[[Any], bool] = budget.admit
        self.real_release: Callable[[Any], None] = budget.release
        budget.admit, budget.release = self.admit, self.release
        # Rounds of the budget's reaper thread (it measures the fixed part and stops idle
        # workers in each), counted by its call to refresh_fixed.
        self.reaper_rounds = 0
        refresh = budget.refresh_fixed

        def counted() -> None:
            self.reaper_rounds += 1
            refresh()

        budget.refresh_fixed = counted

    def admit(self, slot: Any) -> bool:
        t = time.perf_counter_ns()
        try:
            return self.real_admit(slot)
        finally:
            self.admit_ns.append(time.perf_counter_ns() - t)

    def release(self, slot: Any) -> None:
        t = time.perf_counter_ns()
        try:
            self.real_release(slot)
        finally:
            self.release_ns.append(time.perf_counter_ns() - t)


def bookkeeping(steps: int, levels: list[int], profile: bool) -> dict[str, Any]:
    from config.settings import settings_from_env
    from sandbox.executor import CodeSandbox, IsolatedExecutor

    data = Path(tempfile.mkdtemp(prefix="bench-abuse-"))
    sandbox = CodeSandbox(settings_from_env({"DATA_DIR": str(data)}))
    sandbox.start()
    budget = sandbox.budget
    timed = _Timed(budget)
    sleeper = subprocess.Popen(["sleep", "3600"])
    stands: list[Any] = []
    executors: list[IsolatedExecutor] = []
    rows = []
    try:
        iso = IsolatedExecutor(sandbox, data / "agent_files" / "measured")
        executors.append(iso)
        iso.send_tools({})
        for _ in range(20):  # warm: the worker, the zygote's size, the fixed part
            iso(CODE)
        for level in levels:
            while len(stands) < level:
                slot = budget.slot(f"idle-{len(stands)}")
                timed.real_admit(slot)
                budget.attach(slot, _Stand(sleeper.pid))
                timed.real_release(slot)
                stands.append(slot)
            assert budget.idle_workers() >= level
            per_step, totals = [], []
            rounds, began = timed.reaper_rounds, time.perf_counter()
            for _ in range(steps):
                t = time.perf_counter_ns()
                iso(CODE)
                totals.append(time.perf_counter_ns() - t)
                per_step.append(timed.admit_ns[-1] + timed.release_ns[-1])
            rows.append(
                (
                    level,
                    pct(per_step, 0.5) / 1000,
                    pct(per_step, 0.95) / 1000,
                    pct(totals, 0.5) / 1e6,
                    pct(timed.admit_ns[-steps:], 0.5) / 1000,
                    pct(timed.release_ns[-steps:], 0.5) / 1000,
                    (timed.reaper_rounds - rounds) / steps,
                    time.perf_counter() - began,
                )
            )
        prof_text = ""
        if profile:
            slot = iso.slot
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(20_000):
                timed.real_admit(slot)
                timed.real_release(slot)
            prof.disable()
            import io

            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
            prof_text = out.getvalue()

        # An admit that must stop an idle worker first: real workers holding 50 MB each, and a
        # budget set so that the measured session's next step needs exactly one of them gone.
        for slot in stands:
            budget.drop(slot)
        holders = []
        for i in range(10):
            holder = IsolatedExecutor(sandbox, data / "agent_files" / f"holder-{i}")
            holder.send_tools({})
            holder('held = b"x" * (50 * 1024 * 1024)\nlen(held)')
            holders.append(holder)
            executors.append(holder)
        saved = budget.total_mb
        evicting = []
        for _ in holders:
            slot = iso.slot
            before = budget.evicted
            budget.total_mb = (
                budget.used_mb() - slot.held_mb + max(slot.size_mb, budget._fresh_mb()) + budget.step_mb - 1
            )
            iso(CODE)
            budget.total_mb = saved
            if budget.evicted == before + 1:
                evicting.append(timed.admit_ns[-1] / 1e6)
        return {"rows": rows, "evicting": evicting, "profile": prof_text, "layers": sandbox.describe()}
    finally:
        for ex in executors:
            ex.cleanup()
        sleeper.kill()
        sleeper.wait()
        sandbox.close()
        sandbox.zygote.close()


# --- 2. the 30-session attack


@dataclass
class Attack:
    total_mb: int
    before_mb: float = 0.0  # the app's tree before the attack (after two plain turns)
    max_mb: float = 0.0
    end_mb: float = 0.0
    holding: int = 0
    refused: int = 0
    other: list[str] = field(default_factory=list)
    attack_s: float = 0.0
    during: list[float] = field(default_factory=list)  # a new user's plain turns meanwhile
    after: float = 0.0
    workers_end: int = 0
    aborted: str = ""
    leftovers: int = 0


def attack(llm_url: str, lf_url: str, tmp: Path, total_mb: int, attackers: int, hold_mb: int) -> Attack:
    from sandbox.budget import CLEARED, REFUSED
    from tests.helpers import tree_rss_mb

    out = Attack(total_mb)
    proc, url = start_app(
        tmp / f"attack-{total_mb}" / "data",
        llm_url,
        lf_url,
        CODE_TOTAL_MEMORY_MB=str(total_mb),
        TRUSTED_PROXY_HOPS="1",
    )
    try:
        newcomers = iter(range(10_000))

        def newcomer() -> tuple[float, str]:
            person = Person(url, address(next(newcomers), 203))
            try:
                return person.say(PLAIN)
            finally:
                person.close()

        for _ in range(2):  # warm: a first worker in each agent process, the page's code paths
            newcomer()
        out.before_mb = tree_rss_mb(proc.pid)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                out.max_mb = max(out.max_mb, tree_rss_mb(proc.pid))
                if mem_available_mb() < 1500 and not out.aborted:
                    out.aborted = "stopped: this host fell under 1.5 GB available"
                    for pid in [proc.pid, *descendants(proc.pid)]:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                stop.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        people = [Person(url, address(n, 198)) for n in range(attackers)]  # pages open
        started = time.perf_counter()
        with ThreadPoolExecutor(attackers) as pool:
            futures = [pool.submit(p.say, f"[hold={hold_mb}] keep this") for p in people]
            time.sleep(0.5)
            while not all(f.done() for f in futures) and not out.aborted:
                seconds, text = newcomer()
                if "Answer to:" not in text:
                    seconds = float("inf")
                out.during.append(seconds)
            answers = [f.result()[1] for f in futures]
        out.attack_s = time.perf_counter() - started
        time.sleep(0.5)
        stop.set()
        sampler.join()
        out.end_mb = tree_rss_mb(proc.pid)
        for text in answers:
            if f"holding {hold_mb} MB" in text:
                out.holding += 1
            elif REFUSED in text:
                out.refused += 1
            else:
                out.other.append(text[:120])
        if not out.aborted:
            seconds, text = newcomer()
            out.after = seconds if "Answer to:" in text and CLEARED not in text else float("inf")
        out.workers_end = len(tree_of(proc.pid).workers)
        for p in people:
            p.close()
    finally:
        out.leftovers = stop_everything(proc)
    return out


# --- 3. sessions served at once with the defaults


@dataclass
class Level:
    k: int
    tree_mb: float  # the app and everything it started
    app_mb: float  # the app's own process
    agents_mb: float  # its agent processes
    fixed_mb: float  # what the budget counts besides workers: agent processes and zygotes
    worker_rss: float
    worker_uss: float
    worker_pss: float
    workers: int
    evicted: int
    p50: float
    p95: float
    turns: int
    failed: int
    seconds: float


def open_sessions(url: str, first: int, last: int) -> list[Person]:
    """People first..last-1, each with a chat whose worker keeps a few MB of variables."""

    def open_one(n: int) -> Person:
        person = Person(url, address(n, 10))
        _seconds, text = person.say("[state] keep a few notes")
        if "notes" not in text:
            raise RuntimeError(f"session {n} did not keep its state: {text[:200]}")
        return person

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(open_one, range(first, last)))


def paced_turns(people: list[Person], per_s: float) -> tuple[list[float], int]:
    """One plain turn from each person, started 1/per_s s apart whatever the answers' pace (open
    loop, as independent people do); (latencies of the turns answered, turns that were not)."""
    latencies: list[float] = []
    failed: list[str] = []
    t0 = time.perf_counter()

    def one(i: int) -> None:
        time.sleep(max(0.0, t0 + i / per_s - time.perf_counter()))
        seconds, text = people[i].say(PLAIN)
        if "Answer to:" in text:  # a refusal for memory or a limit is not an answer
            latencies.append(seconds)
        else:
            failed.append(text)

    with ThreadPoolExecutor(len(people)) as pool:
        list(pool.map(one, range(len(people))))
    return latencies, len(failed)


def capacity(llm_url: str, lf_url: str, tmp: Path, levels: list[int]) -> dict[str, Any]:
    from tests.helpers import rss_mb, tree_rss_mb

    proc, url = start_app(tmp / "capacity" / "data", llm_url, lf_url, TRUSTED_PROXY_HOPS="1")
    log_path = tmp / "capacity" / f"app-{url.rstrip('/').rsplit(':', 1)[1]}.log"
    result: dict[str, Any] = {"levels": []}
    people: list[Person] = []

    def total(pids: list[int]) -> float:
        return sum(rss_mb(p) for p in pids)

    try:
        # Warm: a first turn in each agent process (sessions go where there are fewest).
        probes = [Person(url, address(n, 203)) for n in range(2)]
        for probe in probes:
            probe.say(PLAIN)
            probe.close()
        tree = tree_of(proc.pid)
        result.update(
            app0=rss_mb(proc.pid),
            agents0=total(tree.agents),
            tree0=tree_rss_mb(proc.pid),
            fixed0=total(tree.agents) + total(tree.zygotes),
            zygote_mb=max((rss_mb(z) for z in tree.zygotes), default=0.0),
            agent_processes=len(tree.agents),
            avail_mb=mem_available_mb(),
        )
        rng = random.Random(23)
        for k in levels:
            started = time.perf_counter()
            people += open_sessions(url, len(people), k)
            opened_s = time.perf_counter() - started
            latencies, failed = paced_turns(rng.sample(people, min(k, 80)), k / THINK_S)
            tree = tree_of(proc.pid)
            sizes = [smaps(w) for w in tree.workers]
            rss = [rss_mb(w) for w in tree.workers]
            level = Level(
                k=k,
                tree_mb=tree_rss_mb(proc.pid),
                app_mb=rss_mb(proc.pid),
                agents_mb=total(tree.agents),
                fixed_mb=total(tree.agents) + total(tree.zygotes),
                worker_rss=statistics.mean(rss) if rss else 0.0,
                worker_uss=statistics.mean(s[0] for s in sizes) if sizes else 0.0,
                worker_pss=statistics.mean(s[1] for s in sizes) if sizes else 0.0,
                workers=len(tree.workers),
                # The probes' sessions and every opened one had a live worker; fewer now: stopped.
                evicted=max(0, k + len(probes) - len(tree.workers)),
                p50=pct(latencies, 0.5) if latencies else float("inf"),
                p95=pct(latencies, 0.95) if latencies else float("inf"),
                turns=min(k, 80),
                failed=failed,
                seconds=opened_s,
            )
            result["levels"].append(level)
            print(
                f"  K={k:4d}: opened in {opened_s:5.1f} s; tree {level.tree_mb:7,.0f} MB (app {level.app_mb:,.0f}, "
                f"agent processes {level.agents_mb:,.0f}); {level.workers} workers, each RSS {level.worker_rss:.1f} MB, "
                f"USS {level.worker_uss:.1f} MB, PSS {level.worker_pss:.1f} MB; {level.turns} plain turns at "
                f"{k / THINK_S:.1f}/s: p50 {level.p50:.2f} s, p95 {level.p95:.2f} s, {failed} failed",
                flush=True,
            )
            if failed or level.p95 > TARGET_P95_S:
                break  # past what this machine serves; stopped workers alone are not a reason
        result["refusals_logged"] = log_path.read_text().count("refused: needs")
    finally:
        for person in people:
            person.close()
        result["leftovers"] = stop_everything(proc)
    return result


# --- the report


def report_bookkeeping(args: argparse.Namespace) -> str:
    book = bookkeeping(args.steps, [int(x) for x in args.ledger.split(",")], args.profile)
    print(f"1. Budget bookkeeping per code step ({book['layers']}; {args.steps} steps per row)")
    worst = 0.0
    for level, p50, p95, step_ms, admit, release, rounds, seconds in book["rows"]:
        worst = max(worst, p95)
        print(
            f"  {level:5d} idle workers in the ledger: admit+release p50 {p50:6.1f} µs, p95 {p95:6.1f} µs "
            f"(admit {admit:.1f}, release {release:.1f}); step p50 {step_ms:.2f} ms; "
            f"share of the step {p50 / 1000 / step_ms:.1%}; reaper rounds {rounds:.2f} per step "
            f"({rounds * args.steps / seconds:.0f}/s)"
        )
    ok = worst < 1000
    print(
        f"  worst p95 {worst:.1f} µs (target < 1 ms: {'MET' if ok else 'NOT MET'}; ratio {worst / 1000:.3f})"
    )
    if max(row[6] for row in book["rows"]) > 0.1:
        print(
            "  (the reaper is meant to run every few seconds; release's notify_all on the Condition it "
            "waits on wakes it after every step, and each round reads the fixed part's /proc files)"
        )
    if ev := book["evicting"]:
        print(
            "  an admit that first stops one idle worker holding 50 MB (SIGKILL, wait until it is gone): "
            f"p50 {statistics.median(ev):.1f} ms, max {max(ev):.1f} ms over {len(ev)}"
        )
    if book["profile"]:
        print(book["profile"])
    return f"bookkeeping p95 {worst:.0f} µs per code step ({'MET' if ok else 'NOT MET'}: < 1 ms)"


def report_attack(args: argparse.Namespace, llm_url: str, lf_url: str, tmp: Path) -> list[str]:
    print(
        f"2. {args.attackers} sessions from {args.attackers} addresses each run "
        f'held = b"x" * ({args.hold_mb} * 1024 * 1024) through python app.py, all at once '
        "(tree: the app, its agent processes, their zygotes and workers, RSS summed, sampled every 0.1 s; "
        "a new user sends a plain "
        "turn from a fresh session, one after another, until the attack is answered, then once more)"
    )
    figures: dict[int, Attack] = {}
    for total in [args.budget_mb] + ([] if args.no_unbounded else [UNBOUNDED_MB]):
        need = args.attackers * (args.hold_mb + 60) + 3000
        if total == UNBOUNDED_MB and mem_available_mb() < need:
            print(
                f"  CODE_TOTAL_MEMORY_MB={total}: skipped, {mem_available_mb():,.0f} MB available here "
                f"and it needs about {need:,} MB"
            )
            continue
        a = figures[total] = attack(llm_url, lf_url, tmp, total, args.attackers, args.hold_mb)
        during = [s for s in a.during if s != float("inf")]
        lost = len(a.during) - len(during)
        print(
            f"  CODE_TOTAL_MEMORY_MB={total}: tree before {a.before_mb:,.0f} MB, max {a.max_mb:,.0f} MB "
            f"(+{a.max_mb - a.before_mb:,.0f} MB), at the end {a.end_mb:,.0f} MB; answers: {a.holding} holding, "
            f"{a.refused} refused, {len(a.other)} other; {a.workers_end} workers alive at the end; "
            f"the attack took {a.attack_s:.1f} s"
        )
        turns = (
            f"{len(during)} turns, p50 {statistics.median(during):.2f} s, max {max(during):.2f} s"
            if during
            else ("none answered" if a.during else "none sent (the attack was answered within 0.5 s)")
        )
        print(
            f"    a new user's plain turn during the attack: {turns}"
            + (f", {lost} not answered" if lost else "")
            + f"; after it: {a.after:.2f} s"
            + (f"; {a.aborted}" if a.aborted else "")
            + (f"; {a.leftovers} processes left over, killed" if a.leftovers else "")
        )
        for text in a.other[:3]:
            print(f"    other answer: {text!r}")
        if total == args.budget_mb:
            bound = args.budget_mb + a.before_mb
            print(
                f"    budget {args.budget_mb:,} MB + the app before {a.before_mb:,.0f} MB = {bound:,.0f} MB: max tree "
                f"{'within' if a.max_mb <= bound else 'OVER'} (ratio {a.max_mb / bound:.2f})"
            )
    if len(figures) == 2:
        b, u = figures[args.budget_mb], figures[UNBOUNDED_MB]
        print(
            f"  max tree with the budget / without: {b.max_mb:,.0f} / {u.max_mb:,.0f} MB = {b.max_mb / u.max_mb:.2f}"
        )
    return [
        f"attack with CODE_TOTAL_MEMORY_MB={total}: max tree {a.max_mb:,.0f} MB, a new user's turn during it "
        f"at most {max(a.during, default=float('nan')):.2f} s, after it {a.after:.2f} s"
        for total, a in figures.items()
    ]


def report_capacity(args: argparse.Namespace, llm_url: str, lf_url: str, tmp: Path) -> str:
    from config.settings import Settings
    from sandbox.memory import default_budget_mb

    budget_mb, source = default_budget_mb()
    step_mb = Settings().code_memory_mb
    turns_at_once = Settings().max_concurrent_turns
    print(
        f"3. Sessions served at once with the default settings (budget {budget_mb:,} MB, {source}; "
        "TRUSTED_PROXY_HOPS=1, one address per person): K sessions each keep a worker holding a few MB "
        f"(20,000 notes and 20,000 rows); then plain turns as K people sending one every {THINK_S:.0f} s "
        f"would (min(K, 80) turns, open loop). Served: no worker stopped by the budget, no turn refused "
        f"or failed, plain-turn p95 <= {TARGET_P95_S:.0f} s."
    )
    cap = capacity(llm_url, lf_url, tmp, [int(x) for x in args.levels.split(",")])
    rows: list[Level] = cap["levels"]
    good = [r for r in rows if not r.evicted and not r.failed and r.p95 <= TARGET_P95_S]
    served = good[-1].k if good else 0
    first_evicting = next((r for r in rows if r.evicted), None)
    first_slow = next((r for r in rows if r.failed or r.p95 > TARGET_P95_S), None)
    last = rows[-1]
    # Per session: at the largest level where every session still had its worker.
    base = good[-1] if good else last
    # App side: the app's process and its agent processes (where a hosted model's agents live).
    per_app = (base.app_mb + base.agents_mb - cap["app0"] - cap["agents0"]) / base.k
    per_tree = (base.tree_mb - cap["tree0"]) / base.k
    per_real = per_app + base.worker_uss
    # What the budget counts per session: its idle worker's RSS, and what its agent adds to the
    # agent process (the fixed part). Besides: the fixed part at the start and each running
    # step's reservation (a fresh worker + CODE_MEMORY_MB), up to MAX_CONCURRENT_TURNS at once.
    per_counted = base.worker_rss + (base.fixed_mb - cap["fixed0"]) / base.k
    room = budget_mb - cap["fixed0"] - turns_at_once * (cap["zygote_mb"] + step_mb)
    by_budget = room / per_counted
    by_memory = (cap["avail_mb"] - 1024) / per_real
    print(
        f"  per session at K={base.k}: app side (app + {cap['agent_processes']} agent processes) "
        f"{per_app:.2f} MB; worker RSS {base.worker_rss:.1f} MB, USS {base.worker_uss:.1f} MB (what it alone takes); the budget "
        f"counts {per_counted:.1f} MB (worker RSS + the agent process's growth); the tree's RSS grew "
        f"{per_tree:.1f} MB per session"
    )
    print(
        f"  largest K measured and served: {served}; the budget first stopped idle workers at "
        + (
            f"K={first_evicting.k} ({first_evicting.evicted} stopped)"
            if first_evicting
            else f"no level measured (up to {last.k})"
        )
        + "; plain turns first failed or passed p95 5 s at "
        + (
            f"K={first_slow.k} (p95 {first_slow.p95:.2f} s, {first_slow.failed} failed)"
            if first_slow
            else f"no level measured (up to {last.k})"
        )
    )
    print(
        f"  extrapolated: the budget, less its fixed part at the start ({cap['fixed0']:,.0f} MB: agent processes "
        f"and zygotes) and {turns_at_once} running steps' reservations, holds about {by_budget:,.0f} sessions "
        f"of {per_counted:.1f} MB before it stops the least recent idle worker; this host's memory "
        f"({cap['avail_mb']:,.0f} MB available at the start, 1 GB kept) about {by_memory:,.0f} sessions of {per_real:.1f} MB (app side + worker USS); "
        f"budget limit / memory limit {by_budget / by_memory:.2f}"
    )
    if cap["refusals_logged"]:
        print(f"  code steps refused for memory (the app's log): {cap['refusals_logged']}")
    if cap["leftovers"]:
        print(f"  {cap['leftovers']} processes left over after the app stopped: killed")
    return (
        f"capacity: {served} sessions served at the largest level measured; with the defaults the budget "
        f"starts stopping idle workers at about {by_budget:,.0f} sessions, memory would allow about {by_memory:,.0f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="code steps per ledger size (part 1)")
    parser.add_argument("--ledger", default="0,50,300,1000", help="idle workers in the ledger (part 1)")
    parser.add_argument("--attackers", type=int, default=30)
    parser.add_argument("--hold-mb", type=int, default=400)
    parser.add_argument("--budget-mb", type=int, default=2000, help="CODE_TOTAL_MEMORY_MB under attack")
    parser.add_argument("--levels", default="50,100,150,200,300,400", help="sessions open at once (part 3)")
    parser.add_argument("--no-unbounded", action="store_true", help="skip the attack without a budget")
    parser.add_argument("--only", default="", help="bookkeeping, attack, capacity (comma-separated)")
    parser.add_argument("--profile", action="store_true", help="print part 1's cProfile")
    parser.add_argument("--model-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.model_server:
        serve_model()
        return 0
    for name in list(os.environ):  # a developer's real keys never reach the apps
        if name.startswith(("LANGFUSE_", "OPENAI_", "HF_TOKEN", "MODEL_", "OTEL_")):
            os.environ.pop(name)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    parts = {p.strip() for p in args.only.split(",") if p.strip()} or {"bookkeeping", "attack", "capacity"}
    began = time.monotonic()
    summary: list[str] = []
    if "bookkeeping" in parts:
        summary.append(report_bookkeeping(args))
    if parts & {"attack", "capacity"}:
        fake_lf, lf_url = start_fake_langfuse()
        tmp = Path(tempfile.mkdtemp(prefix="bench-abuse-"))
        try:
            with ModelProcess() as model:
                if "attack" in parts:
                    summary += report_attack(args, model.url, lf_url, tmp)
                if "capacity" in parts:
                    summary.append(report_capacity(args, model.url, lf_url, tmp))
        finally:
            fake_lf.terminate()
            fake_lf.wait(timeout=10)
    print(f"Summary ({time.monotonic() - began:.0f} s):")
    for line in summary:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
