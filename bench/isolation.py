"""What isolating the model's code costs, measured in one run against the in-process executor.

    python -m bench.isolation [--sessions 40] [--steps 300] [--idle 200]

Prints: the first code step of a new session (worker fork + confinement + step) and later steps,
each against smolagents' LocalPythonExecutor in the app's own process (targets: first at most
+300 ms, later at most +20 ms); memory per idle session worker (USS: pages only it holds, PSS:
its fair share of pages shared with the zygote); how many idle workers fit in this machine's
memory, and step latency with that many workers alive.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from smolagents.local_python_executor import LocalPythonExecutor

from config.settings import settings_from_env
from sandbox.executor import CodeSandbox, IsolatedExecutor

CODE = "x = sum(i * i for i in range(100))\nprint(x)\nx"


def _ms(values: list[float]) -> str:
    return f"median {statistics.median(values):7.2f} ms  p95 {sorted(values)[int(len(values) * 0.95) - 1]:7.2f} ms"


def _memory(pid: int) -> tuple[int, int]:
    """(USS, PSS) in KB from /proc/<pid>/smaps_rollup."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1])
    return fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0), fields.get("Pss", 0)


def _mem_available_kb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=40, help="new sessions for the first-step figure")
    parser.add_argument("--steps", type=int, default=300, help="later steps for the later-step figure")
    parser.add_argument("--idle", type=int, default=200, help="idle workers kept alive for the memory figure")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="bench-isolation-"))
    settings = settings_from_env({"DATA_DIR": str(data)})
    sandbox = CodeSandbox(settings)
    started = time.perf_counter()
    sandbox.start()
    print(
        f"{sandbox.describe()}; zygote ready in {(time.perf_counter() - started) * 1000:.0f} ms (once per app)"
    )

    # In-process baseline: a new executor per session, then later steps on one executor.
    base_first, base_later = [], []
    for _ in range(args.sessions):
        t = time.perf_counter()
        ex = LocalPythonExecutor([])
        ex.send_tools({})
        ex(CODE)
        base_first.append((time.perf_counter() - t) * 1000)
    for _ in range(args.steps):
        t = time.perf_counter()
        ex(CODE)
        base_later.append((time.perf_counter() - t) * 1000)

    iso_first, iso_later, workers = [], [], []
    for i in range(args.sessions):
        t = time.perf_counter()
        iso = IsolatedExecutor(sandbox, data / "agent_files" / f"s{i}")
        iso.send_tools({})
        iso(CODE)
        iso_first.append((time.perf_counter() - t) * 1000)
        workers.append(iso)
    iso = workers[0]
    for _ in range(args.steps):
        t = time.perf_counter()
        iso(CODE)
        iso_later.append((time.perf_counter() - t) * 1000)

    first_delta = statistics.median(iso_first) - statistics.median(base_first)
    later_delta = statistics.median(iso_later) - statistics.median(base_later)
    print(f"first code step   in-process {_ms(base_first)} | isolated {_ms(iso_first)}")
    print(
        f"                  added {first_delta:+.2f} ms (target <= +300 ms: "
        f"{'MET' if first_delta <= 300 else 'MISSED'}), ratio {statistics.median(iso_first) / statistics.median(base_first):.1f}x"
    )
    print(f"later code steps  in-process {_ms(base_later)} | isolated {_ms(iso_later)}")
    print(
        f"                  added {later_delta:+.2f} ms (target <= +20 ms: "
        f"{'MET' if later_delta <= 20 else 'MISSED'}), ratio {statistics.median(iso_later) / statistics.median(base_later):.1f}x"
    )

    # Memory: keep many idle workers (each has run one step) and measure them.
    before = _mem_available_kb()
    for i in range(args.sessions, args.idle):
        iso = IsolatedExecutor(sandbox, data / "agent_files" / f"s{i}")
        iso.send_tools({})
        iso(CODE)
        workers.append(iso)
    after = _mem_available_kb()
    sizes = [_memory(w.worker.pid) for w in workers if w.worker is not None]
    uss = statistics.mean(s[0] for s in sizes) / 1024
    pss = statistics.mean(s[1] for s in sizes) / 1024
    added = (before - after) / 1024 / max(1, args.idle - args.sessions)
    print(
        f"idle worker memory  USS {uss:.1f} MB  PSS {pss:.1f} MB  "
        f"(MemAvailable fell {added:.1f} MB per extra worker)"
    )
    total_mb = _mem_available_kb() / 1024 + len(workers) * uss
    print(
        f"capacity  {len(workers)} workers alive; memory allows about {int(total_mb / max(uss, 0.1)):,} idle "
        f"workers ({total_mb / 1024:.1f} GiB available / {uss:.1f} MB each)"
    )
    # With every worker alive, a step in each in turn, and one step in many at once.
    latencies = []
    for w in workers:
        t = time.perf_counter()
        w(CODE)
        latencies.append((time.perf_counter() - t) * 1000)
    print(f"with {len(workers)} workers alive, one step each: {_ms(latencies)}")
    from concurrent.futures import ThreadPoolExecutor

    def timed(w: IsolatedExecutor) -> float:
        t = time.perf_counter()
        w("sum(range(2_000_000))")
        return (time.perf_counter() - t) * 1000

    alone = timed(workers[0])
    with ThreadPoolExecutor(len(workers)) as pool:
        t = time.perf_counter()
        together = list(pool.map(timed, workers))
        wall = time.perf_counter() - t
    print(
        f"{len(workers)} sessions stepping at once (a {alone:.0f} ms step each): all done in {wall:.2f} s, "
        f"p95 {sorted(together)[int(len(together) * 0.95) - 1]:.0f} ms: CPU-bound work is shared by 2 cores"
    )
    for w in workers:
        w.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
