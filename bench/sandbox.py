"""The attack suite against the model's code sandbox, one line per probe.

    python -m bench.sandbox                          # the isolated worker (CODE_EXECUTOR=local-process)
    python -m bench.sandbox --executor local-unsafe  # smolagents' in-process executor, for comparison
    python -m bench.sandbox --only tcp-connect,os-fork
    python -m bench.sandbox --setting CODE_SANDBOX_LAYERS=none   # any app setting, e.g. fewer layers

Each probe is hostile model code sent through the real chat path (tests/attacks/ says how a
breach is detected). Prints `BLOCKED  category  name  detail` or `BREACHED ...` per probe, then a
summary; exits 1 if anything got through. Bombs are skipped for local-unsafe: in-process they
would freeze or exhaust the app. Every probe gets its own temporary DATA_DIR.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from tests.attacks import PROBES, ProbeResult, run_suite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executor", choices=["local-process", "local-unsafe"], default="local-process")
    parser.add_argument("--only", default="", help="comma-separated probe names")
    parser.add_argument(
        "--setting", action="append", default=[], metavar="NAME=VALUE", help="an app setting (repeatable)"
    )
    args = parser.parse_args(argv)
    if bad := [s for s in args.setting if "=" not in s]:
        parser.error(f"--setting takes NAME=VALUE, got {', '.join(bad)}")
    settings = dict(s.split("=", 1) for s in args.setting)
    for name in list(os.environ):  # a developer's real keys never reach the probes
        if name.startswith(("LANGFUSE_", "OPENAI_", "HF_TOKEN", "MODEL_", "OTEL_")):
            os.environ.pop(name)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    names = [n.strip() for n in args.only.split(",") if n.strip()] or None
    if names and (unknown := sorted(set(names) - {p.name for p in PROBES})):
        parser.error(f"unknown probes: {', '.join(unknown)}")

    def show(result: ProbeResult) -> None:
        print(result.line(), flush=True)

    started = time.monotonic()
    results = run_suite(args.executor, names=names, settings=settings, report=show)
    breached = [r for r in results if not r.blocked]
    skipped = ""
    if args.executor == "local-unsafe":
        bombs = [p for p in PROBES if not p.in_process_safe and (names is None or p.name in names)]
        skipped = f"; {len(bombs)} bombs skipped (unsafe in-process)" if bombs else ""
    label = " ".join([args.executor, *args.setting])
    print(
        f"{label}: {len(results)} probes, {len(results) - len(breached)} blocked, "
        f"{len(breached)} breached{skipped} ({time.monotonic() - started:.0f} s)"
    )
    return 1 if breached else 0


if __name__ == "__main__":
    sys.exit(main())
