"""The model's code is hostile: every attack in tests/attacks/ must be blocked.

Each probe is model code sent through the real chat path; it is breached only when an objective
side effect shows (a canary in the chat or the traces, a file outside the folder, a process that
ran, a connection to a local listener, a change another session sees, a bomb that was not stopped
or froze the app). The last test runs the same probes against smolagents' in-process executor,
to show that the suite can fail.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.attacks import PROBES, PROJECT_ROOT, run_probe


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_attack_is_blocked(probe, tmp_path):
    # The default executor: the settings do not set CODE_EXECUTOR.
    result = run_probe(probe, {}, tmp_path)
    assert result.blocked, f"{probe.category} / {probe.name} ({probe.why}) got through: {result.detail}"


def test_probes_detect_breaches_when_isolation_is_off():
    """With CODE_EXECUTOR=local-unsafe (the model's code in the app's process) the probes get through.

    Run in a child process: a probe that gets through changes shared modules, forks and writes
    files, and none of that may leak into this test process.
    """
    done = subprocess.run(
        [sys.executable, "-m", "tests.attacks", "--executor", "local-unsafe", "--json"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    results = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            data = json.loads(line)
            results[data["name"]] = data
    safe = [p for p in PROBES if p.in_process_safe]
    assert sorted(results) == sorted(p.name for p in safe), done.stderr[-2000:]
    expected = [p.name for p in safe if p.breaks_in_process]
    breached = sorted(name for name, r in results.items() if not r["blocked"])
    missed = [name for name in expected if results[name]["blocked"]]
    assert not missed, "these probes should get through the in-process executor: " + "; ".join(
        f"{name}: {results[name]['detail']}" for name in missed
    )
    print(f"{len(breached)} of {len(results)} probes get through in-process: {', '.join(breached)}")
    assert len(breached) >= 30, f"only {len(breached)} probes got through in-process: {breached}"
    # Bombs are never run in-process (they would freeze or exhaust this app).
    assert all(p.bomb for p in PROBES if not p.in_process_safe)
