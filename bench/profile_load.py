"""Where the app's time goes under bench.load's chat load: py-spy on the running app, by cost.

Starts the app exactly as bench.load does (scripted OpenAI-compatible model, Langfuse
stand-in), runs the same users x turns chat load (no votes) while `py-spy record` samples the
app process, then prints:

- CPU seconds per turn of every process involved (the app, its code workers, the load
  client with the scripted model, the Langfuse stand-in), from /proc;
- the app's sampled time split into costs (Gradio queue/SSE, chatbot pre/postprocess,
  streaming diffs, our handler, the agent run, the LLM client, tracing, the SQLite store,
  the status line, ...), in ms of CPU per turn and as a share; each sample goes to the
  innermost frame that names a cost, so e.g. JSON encoding under Gradio's SSE is Gradio's;
- the top functions by own samples, and by cumulative samples inside the app's code;
- Gradio's own per-phase timings of the turn event (GRADIO_PROFILING=1).

    pip install py-spy
    python -m bench.profile_load [--users 20] [--turns 5] [--rounds 3] [--rate 250] [--all-threads]

By default only the thread holding the GIL is sampled: what the app's Python is doing, which
all its threads (the event loop included) take turns at; `--all-threads` samples every
running thread instead. `--keep FILE` keeps the raw
collapsed stacks (e.g. for a flame graph).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    start_app,
    start_fake_langfuse,  # noqa: E402
    start_plain,
    stop_app,
)
from bench.load import agent_processes, chat_load, p95_of, updates_per_turn  # noqa: E402
from tests.fakes import FakeOpenAIProcess  # noqa: E402

SP = r"site-packages/"
# (cost, pattern on "function (file:line)" with full file names; the project's files are
# matched by their path below the project folder). A sample is charged to the deepest frame
# that matches one of COSTS, else to the deepest that matches one of GENERIC: so the LLM HTTP
# call under OpenInference's wrapper is the LLM client's, a chatbot postprocess run in a worker
# thread is postprocess, and JSON encoding under Gradio's SSE is Gradio's.
CHATBOT = "gradio: chatbot pre/postprocess"
# Charged whatever runs below them.
WHOLE_STACK: list[tuple[str, str]] = [
    ("code sandbox: fork a session worker (Zygote.spawn)", r"Zygote\.spawn"),
    ("new session: CodeAgent() per page load (on_load)", r"ChatHandlers\.on_load"),
]
COSTS: list[tuple[str, str]] = [
    ("status line: FeedbackBackends.waiting_line -> store.delivery_counts", r"delivery_counts|waiting_line"),
    (
        "tracing: span export to SQLite (StoreSpanExporter, store.write_spans)",
        r"/feedback/exporter\.py|write_spans",
    ),
    (
        "tracing: Langfuse OTLP export (BatchSpanProcessor, protobuf, HTTP)",
        SP
        + r"(opentelemetry/exporter/|opentelemetry/sdk/_shared_internal|opentelemetry/proto|google/protobuf|"
        r"requests/|urllib3/|langfuse/_client/span_(processor|exporter))",
    ),
    ("tracing: Langfuse SDK (observations, propagate_attributes)", SP + r"langfuse/"),
    ("tracing: OpenInference wrappers (span attributes, JSON of inputs)", SP + r"openinference/"),
    ("tracing: OTel SDK (start/end span, context, ids)", SP + r"opentelemetry/"),
    ("tracing: our turn trace (feedback/tracing.py)", r"/feedback/tracing\.py"),
    ("store / outbox / votes (feedback/)", r"/feedback/"),
    ("code sandbox: step IPC (executor.py, protocol.py)", r"/agent/(executor|protocol|code_worker)\.py"),
    ("LLM client (openai SDK, httpx, new TCP connection)", SP + r"openai/"),
    ("smolagents: system prompt (jinja2 compile per run)", SP + r"jinja2/"),
    ("new session: CodeAgent() per page load (on_load)", r"/agent/session\.py|Runtime\.new_session"),
    ("smolagents: agent run (memory, messages, parsing)", SP + r"smolagents/"),
    ("our handler (app.respond, agent/turn.py, agent/steps.py)", r"/app\.py|/agent/"),
    (
        "gradio: gr.update(...) for the textbox (new Textbox per yield)",
        r"postprocess_update_dict|gradio/component_meta\.py|gradio/components/textbox\.py",
    ),
    (CHATBOT, r"gradio/components/chatbot\.py|gradio/data_classes\.py"),
    ("gradio: preprocess (chatbot history in, states)", r"Blocks\.preprocess_data"),
    ("gradio: postprocess (chatbot history out, markdown)", r"Blocks\.postprocess_data"),
    ("gradio: streaming diff", r"handle_streaming_diffs|Blocks\.handle_streaming_outputs"),
    ("gradio: queue analytics (pandas summary)", r"compute_analytics_summary|_get_df"),
    ("gradio: matplotlib backend switch per call (imports)", r"MatplotlibBackendMananger"),
    ("gradio: /config for each new client (deepcopy)", r"get_config \(|safe_deepcopy"),
]
GENERIC: list[tuple[str, str]] = [
    ("gradio: queue, SSE, process_api, JSON", SP + r"gradio/"),
    ("HTTP server (uvicorn, starlette, h11, fastapi)", SP + r"(uvicorn|starlette|h11|fastapi)/"),
    (
        "asyncio loop / anyio thread hand-off",
        r"/asyncio/|" + SP + r"anyio/|/concurrent/futures|/threading\.py|/queue\.py",
    ),
]


def cpu_s(pid: int, *, children: bool = True) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime, stime, cutime, cstime: the children's share counts for reaped workers too.
    return sum(int(f) for f in fields[11 : 15 if children else 13]) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def classify(frames: list[str]) -> str:
    """The cost of one sample (frames root -> leaf): see COSTS."""
    for cost, pattern in WHOLE_STACK:
        if any(re.search(pattern, frame) for frame in frames):
            return cost
    for rules in (COSTS, GENERIC):
        for frame in reversed(frames):
            for cost, pattern in rules:
                if re.search(pattern, frame):
                    if cost == CHATBOT:
                        pre = any("preprocess" in f.split(" (")[0] for f in frames if "gradio/" in f)
                        return (
                            "gradio: preprocess (chatbot history in, states)"
                            if pre
                            else ("gradio: postprocess (chatbot history out, markdown)")
                        )
                    return cost
    return "other (interpreter, C calls)"


def read_samples(path: Path) -> list[tuple[list[str], int]]:
    samples = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f]
        # --threads puts the thread first: keep it out of the frames
        if frames and frames[0].startswith("thread ("):
            frames = frames[1:]
        samples.append((frames, int(count)))
    return samples


def app_updates(data_dir: Path, llm_url: str, langfuse_url: str) -> int:
    """How many updates the app streams per scripted turn (the plain chat streams as many)."""
    proc, url = start_app(data_dir.with_name("count"), llm_url, langfuse_url)
    try:
        return updates_per_turn(url)
    finally:
        stop_app(proc)


def thread_kind(frames: list[str]) -> str:
    if any("run_forever" in f for f in frames):
        return "event loop (asyncio main thread: HTTP, queue, SSE, pre/postprocess glue)"
    if any("WorkerThread.run" in f for f in frames):
        return "anyio worker threads (handler steps, component pre/postprocess)"
    return "other threads (span export, outbox, ...)"


def span_times(db: Path, since: float) -> dict[str, list[float]]:
    """Durations (ms) of the turn's spans that started during the load, by span kind."""
    if not db.exists():
        return {}
    kinds = {
        "turn (root observation)": "name = 'Smolagent-Trace'",
        "agent run (CodeAgent.run)": "name LIKE '%Agent.run'",
        "agent step (Step n)": "name LIKE 'Step %'",
        "LLM call (Model.generate*)": "name LIKE '%Model.generate%'",
    }
    con = sqlite3.connect(db)
    try:
        return {
            kind: [
                (end - start) * 1000
                for start, end in con.execute(
                    f"SELECT start_time, end_time FROM spans WHERE {where} AND start_time >= ?", (since,)
                )
                if end is not None
            ]
            for kind, where in kinds.items()
        }
    except sqlite3.Error:
        return {}
    finally:
        con.close()


def print_wall(samples: list[tuple[list[str], int]], rate: int, turns: int) -> None:
    """Wall time of the turn handler's steps (in its worker threads, waits included), by cost."""
    handler = re.compile(r"ChatHandlers\.respond|^respond \(|app_variant\.py")
    steps = [(frames, n) for frames, n in samples if any(handler.search(f) for f in frames)]
    total = sum(n for _, n in steps)
    if not total:
        print("no samples inside the turn handler")
        return
    sample_ms = 1000 / rate
    print(
        f"\nwall time of the turn handler's steps (worker threads, idle included): "
        f"{total * sample_ms / turns:.1f} ms per turn"
    )
    by_cost: Counter[str] = Counter()
    for frames, n in steps:
        by_cost[classify(frames)] += n
    for cost, n in by_cost.most_common():
        print(f"  {n * sample_ms / turns:6.1f} ms/turn {100 * n / total:5.1f}%  {cost}")
    leaves: Counter[str] = Counter()
    for frames, n in steps:
        leaves[" <- ".join(short(f) for f in reversed(frames[-3:]))] += n
    print("top leaves (innermost 3 frames):")
    for leaf, n in leaves.most_common(15):
        print(f"  {n * sample_ms / turns:6.1f} ms/turn  {leaf}")


def short(frame: str) -> str:
    frame = frame.replace(f"({ROOT}/", "(")
    return re.sub(r"\(/\S*?(site-packages|lib/python3\.\d+)/", "(", frame)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="load rounds sampled (more samples)")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument(
        "--all-threads", action="store_true", help="sample every running thread, not only the GIL holder"
    )
    parser.add_argument("--plain", action="store_true", help="profile bench/plain_chat.py instead of the app")
    parser.add_argument("--burn-ms", type=float, default=0, help="with --plain: CPU per turn in its handler")
    parser.add_argument(
        "--updates",
        type=int,
        default=0,
        help="with --plain: updates per turn (default: counted from the app)",
    )
    parser.add_argument(
        "--wall",
        action="store_true",
        help="sample every thread, idle ones too, and split the wall time of the turn handler's steps",
    )
    parser.add_argument(
        "--variants",
        default="",
        help="run the app through bench/app_variant.py with these proposed changes, e.g. prompt,nostatus",
    )
    parser.add_argument("--no-profile", action="store_true", help="only the load and CPU figures, no py-spy")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keep", type=Path, help="keep py-spy's raw collapsed stacks here")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy")
    if py_spy is None and not args.no_profile:
        raise SystemExit("py-spy is not installed: pip install py-spy (or --no-profile)")
    variant_cmd = [sys.executable, str(ROOT / "bench" / "app_variant.py")] if args.variants else None

    fake_lf, langfuse_url = start_fake_langfuse()
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIProcess() as llm:
        data_dir = Path(tmp) / "data"
        if args.plain:
            updates = args.updates or app_updates(data_dir, llm.url, langfuse_url)
            proc, url = start_plain(
                Path(tmp), 20, updates=updates, GRADIO_PROFILING="1", PLAIN_BURN_MS=str(args.burn_ms)
            )
        else:
            proc, url = start_app(
                data_dir,
                llm.url,
                langfuse_url,
                MAX_CONCURRENT_TURNS="20",
                SESSION_TTL_S="3",
                GRADIO_PROFILING="1",
                command=variant_cmd,
                BENCH_VARIANTS=args.variants,
            )
        raw = Path(tmp) / "pyspy.txt"
        spy = None
        err = b""
        try:
            chat_load(url, 4, 2, plain=args.plain)  # warm: imports, first worker forks, caches
            urllib.request.urlopen(urllib.request.Request(f"{url}gradio_api/profiling/clear", method="POST"))
            if py_spy is not None and not args.no_profile:
                spy_cmd = [
                    py_spy,
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--rate",
                    str(args.rate),
                    "--format",
                    "raw",
                ]
                spy_cmd += ["--output", str(raw), "--nonblocking", "--threads", "--full-filenames"]
                spy_cmd += ["--idle"] if args.wall else [] if args.all_threads else ["--gil"]
                spy = subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                time.sleep(1.0)  # py-spy attached
            pids = {
                ("plain chat" if args.plain else "app (python app.py)"): [proc.pid],
                "agent processes and code workers": descendants(proc.pid),
                "load client + scripted model (this process)": [os.getpid()],
                "Langfuse stand-in": [fake_lf.pid],
            }
            before = {name: sum(cpu_s(p) for p in ps) for name, ps in pids.items()}
            hosts = agent_processes(proc.pid)
            hosts_before = sum(cpu_s(p, children=False) for p in hosts)
            started = time.time()
            lat: list[float] = []
            elapsed = 0.0
            for _ in range(args.rounds):
                round_lat, round_s = chat_load(url, args.users, args.turns, plain=args.plain)
                lat += round_lat
                elapsed += round_s
            pids["agent processes and code workers"] = descendants(proc.pid)
            after = {name: sum(cpu_s(p) for p in ps) for name, ps in pids.items()}
            hosts_used = sum(cpu_s(p, children=False) for p in hosts) - hosts_before
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                _, err = spy.communicate(timeout=60)
            traces = json.load(urllib.request.urlopen(f"{url}gradio_api/profiling/traces"))
        finally:
            stop_app(proc)
        fake_lf.terminate()
        spans = span_times(data_dir / "feedback.sqlite3", started)
        samples: list[tuple[list[str], int]] = []
        if spy is not None:
            if not raw.exists():
                raise SystemExit(f"py-spy wrote nothing: {err.decode(errors='replace')[-2000:]}")
            if args.keep:
                shutil.copy(raw, args.keep)
            samples = read_samples(raw)

    turns = len(lat)
    lat.sort()
    label = (
        f"plain chat (burn {args.burn_ms:g} ms/turn)"
        if args.plain
        else f"app{f' (variants {args.variants})' if args.variants else ''}"
    )
    print(
        f"{label}: {args.rounds} x {args.users} users x {args.turns} turns = {turns} turns in {elapsed:.1f} s "
        f"({turns / elapsed:.1f} turns/s), latency p50 {statistics.median(lat) * 1000:.0f} ms, "
        f"p95 {p95_of(lat) * 1000:.0f} ms"
    )
    print("CPU per turn by process (from /proc; workers counted at the end of the load):")
    for name in before:
        used = after[name] - before[name]
        print(f"  {name:<46} {used * 1000 / turns:6.1f} ms/turn  ({used:.2f} s)")
    if hosts:
        label = f"of which the {len(hosts)} agent processes themselves"
        print(f"    {label:<44} {hosts_used * 1000 / turns:6.1f} ms/turn  ({hosts_used:.2f} s)")

    print(
        "\nGradio's own phases of the turn event (GRADIO_PROFILING=1), ms per turn, summed over its updates:"
    )
    turn_fn = "_submit_fn" if args.plain else "respond"
    turn_traces = [t for t in traces if t.get("fn_name") == turn_fn]
    for phase in ("queue_wait", "preprocess", "fn_call", "postprocess", "streaming_diff", "total"):
        values = sorted(t[f"{phase}_ms"] for t in turn_traces)
        if values:
            print(
                f"  {phase:<15} mean {statistics.mean(values):7.1f}  p50 {statistics.median(values):7.1f}  "
                f"p95 {p95_of(values):7.1f}"
            )
    if spans:
        print("\nwall time inside the turn, from the turn's own trace (spans in the local store), ms:")
        for name, values in spans.items():
            if not values:
                continue
            values.sort()
            print(
                f"  {name:<28} n {len(values):4}  mean {statistics.mean(values):7.1f}  "
                f"p50 {statistics.median(values):7.1f}  p95 {p95_of(values):7.1f}"
            )

    if args.wall:
        print_wall(samples, args.rate, turns)
        return
    total = sum(n for _, n in samples)
    if not total:
        return
    sample_ms = 1000 / args.rate
    mode = "running threads" if args.all_threads else "the thread holding the GIL"
    print(
        f"\n{'plain chat' if args.plain else 'app'} process, py-spy samples of {mode}: {total} samples at "
        f"{args.rate}/s = {total * sample_ms / 1000:.1f} s sampled, {total * sample_ms / turns:.1f} ms per turn"
    )
    by_cost: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    for frames, n in samples:
        by_cost[classify(frames)] += n
        by_thread[thread_kind(frames)] += n
    for cost, n in by_cost.most_common():
        print(f"  {n * sample_ms / turns:6.1f} ms/turn {100 * n / total:5.1f}%  {cost}")
    print("by thread:")
    for kind, n in by_thread.most_common():
        print(f"  {n * sample_ms / turns:6.1f} ms/turn {100 * n / total:5.1f}%  {kind}")

    own: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for frames, n in samples:
        if frames:
            own[short(frames[-1])] += n
        for frame in set(frames):
            if f"({ROOT}/" in frame:
                ours[short(frame)] += n
    print(f"\ntop {args.top} functions by own samples:")
    for frame, n in own.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {frame}")
    print(f"\ntop {args.top} lines of the app's own code by cumulative samples:")
    for frame, n in ours.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
