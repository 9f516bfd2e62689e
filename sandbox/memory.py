"""How much memory processes hold, and how much this app may use: read from /proc and cgroups.

Only world-readable files are read (/proc/PID/statm, not smaps): the code workers are not
dumpable, and on a Space the app is an ordinary user, so anything needing ptrace access would
work on a developer's root shell and fail where it matters.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
# A cgroup limit this large means "no limit" (cgroup v1 writes 2^63 rounded down to a page).
UNLIMITED_BYTES = 1 << 60
# The share of the memory the app may use that the model's code, agent processes and the model
# process may hold together when CODE_TOTAL_MEMORY_MB is not set.
DEFAULT_SHARE = 0.5


def resident_mb(pid: int) -> float:
    """A process's resident size in MB (0 once it has ended): one read of /proc/PID/statm.

    Resident, not proportional: pages a worker shares with the zygote are counted in each, so
    the budget errs on the safe side, and the figure is the one `ps` and `top` show.
    """
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_MB
    except (OSError, IndexError, ValueError):
        return 0.0


def total_resident_mb(pids: Iterable[int]) -> float:
    return sum(resident_mb(pid) for pid in pids)


def _read_limit(path: Path) -> int | None:
    try:
        raw = path.read_text().strip()
    except OSError:
        return None
    if not raw or raw == "max":
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if 0 < value < UNLIMITED_BYTES else None


def cgroup_limit_bytes(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")
) -> int | None:
    """The tightest memory limit of this process's cgroup and its parents (v2 or v1); None if none."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits: list[int] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        rel = path.strip("/")
        if controllers == "":  # cgroup v2: one unified hierarchy
            base, name = root, "memory.max"
        elif "memory" in controllers.split(","):
            base, name = root / "memory", "memory.limit_in_bytes"
        else:
            continue
        # Inside a container the cgroup's own folder is often mounted as the root itself.
        candidates = [base / rel] if rel else []
        candidates.append(base)
        for folder in candidates:
            current = folder
            while True:
                value = _read_limit(current / name)
                if value is not None:
                    limits.append(value)
                if current == base or base not in current.parents:
                    break
                current = current.parent
    return min(limits) if limits else None


def host_memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_memory() -> tuple[int, str]:
    """The memory the app may use in MB, and where that figure comes from (for the banner)."""
    host = host_memory_bytes()
    group = cgroup_limit_bytes()
    if group is not None and (host is None or group < host):
        return group // (1024 * 1024), "the container's memory limit"
    if host is not None:
        return host // (1024 * 1024), "the host's memory"
    return 4096, "an assumed 4 GB (neither /proc/meminfo nor a cgroup limit could be read)"


def default_budget_mb() -> tuple[int, str]:
    """CODE_TOTAL_MEMORY_MB when not set: DEFAULT_SHARE of available_memory()."""
    total, source = available_memory()
    return int(total * DEFAULT_SHARE), f"half of {source}, {total:,} MB"
