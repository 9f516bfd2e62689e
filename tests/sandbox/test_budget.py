"""The code memory budget (sandbox/budget.py) and what it reads (sandbox/memory.py).

Most tests use fake workers whose sizes come from a dictionary (resident_mb is replaced), a fake
clock and no reaper thread, so every figure is exact and nothing depends on timing. A few use real
processes: one holding memory that the budget measures and kills, and the real sandbox, where
three chats each hold 300 MB under a 1,200 MB budget.
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from config.settings import settings_from_env
from sandbox import budget as budget_module
from sandbox import memory
from sandbox.budget import CLEARED, MIN_WORKER_MB, REFUSED, MemoryBudget, MemoryRefused, Slot

# Above the kernel's largest pid (2^22): never a real process.
_fake_pids = itertools.count(5_000_000)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeWorker:
    """A worker as the budget sees it; its size is whatever `sizes` says."""

    def __init__(self, sizes: dict[int, float], size_mb: float, on_kill: Callable[[], None] | None = None):
        self.pid = next(_fake_pids)
        self.dead = False
        self.kills: list[float] = []
        self.on_kill = on_kill
        sizes[self.pid] = size_mb

    def kill(self, wait_s: float = 0.0) -> None:
        self.kills.append(wait_s)
        self.dead = True
        if self.on_kill is not None:
            hook, self.on_kill = self.on_kill, None
            hook()


@pytest.fixture
def sizes(monkeypatch: pytest.MonkeyPatch) -> dict[int, float]:
    """Resident sizes by pid, for the workers (budget.resident_mb) and the fixed part (memory.resident_mb)."""
    table: dict[int, float] = {}

    def fake(pid: int) -> float:
        return table.get(pid, 0.0)

    monkeypatch.setattr(budget_module, "resident_mb", fake)
    monkeypatch.setattr(memory, "resident_mb", fake)
    return table


def _budget(total: float, step: float, clock: Clock, **kwargs) -> MemoryBudget:
    kwargs.setdefault("wait_s", 0.0)
    return MemoryBudget(total, step, kwargs.pop("idle_s", 600.0), clock=clock, reaper=False, **kwargs)


def _park(budget: MemoryBudget, sizes: dict[int, float], owner: str, size_mb: float, **kw) -> Slot:
    """A chat that ran one step and now holds `size_mb` in its stopped worker."""
    slot = budget.slot(owner)
    assert budget.admit(slot) is False
    budget.attach(slot, FakeWorker(sizes, size_mb, **kw))
    budget.release(slot)
    assert slot.held_mb == size_mb and not slot.running
    return slot


class _WatchedCondition(threading.Condition):
    """The budget's condition, telling the test when a step has started to wait; with
    `only_on_notify` a wait ignores its timeout, so a waiting step moves only when woken."""

    def __init__(self, only_on_notify: bool = False) -> None:
        super().__init__()
        self.waiting = threading.Event()
        self.only_on_notify = only_on_notify

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        return super().wait(None if self.only_on_notify else timeout)


def _watch(budget: MemoryBudget, only_on_notify: bool = False) -> _WatchedCondition:
    condition = budget._cond = _WatchedCondition(only_on_notify)
    return condition


def _wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


# --- admission arithmetic


def test_a_step_reserves_its_worker_plus_the_step_limit_next_to_the_fixed_part(sizes):
    sizes[1], sizes[2] = 60.0, 40.0  # the zygote and the model process
    clock = Clock()
    budget = _budget(1000, 200, clock, fixed_pids=lambda: [1, 2])
    first = budget.slot("first")
    assert budget.admit(first) is False
    # Fixed 100 + a fresh worker (at least MIN_WORKER_MB) + the 200 MB the step may add.
    assert budget.fixed_mb == 100
    assert budget.used_mb() == 100 + MIN_WORKER_MB + 200
    budget.attach(first, FakeWorker(sizes, 150))
    budget.release(first)
    assert budget.used_mb() == 100 + 150, "between steps a worker counts for its measured size"
    assert budget.idle_workers() == 1

    # Its next step: its own size (150) plus the step, its current 150 not counted twice.
    assert budget.admit(first) is False
    assert budget.used_mb() == 100 + 150 + 200
    budget.release(first)

    # A new worker starts as a copy of the zygote: the zygote's size when it is larger.
    budget.set_fresh_mb(80)
    second = budget.slot("second")
    budget.admit(second)
    assert budget.used_mb() == 100 + 150 + 80 + 200
    budget.drop(second)
    budget.drop(first)
    assert budget.used_mb() == 100


def test_a_step_that_fits_exactly_evicts_nothing_and_one_mb_more_evicts(sizes):
    clock = Clock()
    # Fixed 0; "old" holds 150; a fresh step needs 32 + 200 = 232: 382 fits exactly.
    budget = _budget(382, 200, clock)
    old = _park(budget, sizes, "old", 150)
    new = budget.slot("new")
    budget.admit(new)
    assert old.worker.kills == [] and budget.evicted == 0

    budget2 = _budget(381, 200, clock)
    old2 = _park(budget2, sizes, "old", 150)
    budget2.admit(budget2.slot("new"))
    assert old2.worker is None and budget2.evicted == 1 and old2.cleared


def test_the_fixed_part_is_measured_again_every_few_seconds(sizes):
    sizes[1] = 100.0
    clock = Clock()
    budget = _budget(1000, 200, clock, fixed_pids=lambda: [1])
    slot = budget.slot("a")
    budget.admit(slot)
    budget.release(slot)
    assert budget.fixed_mb == 100
    sizes[1] = 800.0  # the model process grew
    budget.admit(slot)
    budget.release(slot)
    assert budget.fixed_mb == 100, "measured at most every FIXED_REFRESH_S"
    clock.advance(budget_module.FIXED_REFRESH_S)
    with pytest.raises(MemoryRefused):
        budget.admit(slot)  # 800 fixed + 32 + 200 > 1000
    assert budget.fixed_mb == 800


# --- eviction


def test_least_recently_used_idle_workers_go_first_and_only_as_many_as_needed(sizes):
    clock = Clock()
    budget = _budget(1100, 300, clock)
    a, b, c, d = (_park(budget, sizes, name, 200) for name in "abcd")
    workers = {s.owner: s.worker for s in (a, b, c, d)}
    clock.advance(1)
    assert budget.admit(b) is False  # b is used again (500 of 1100 - 600): now the most recent
    budget.release(b)
    assert budget.used_mb() == 800 and budget.evicted == 0

    def killed() -> str:
        return "".join(name for name, worker in workers.items() if worker.kills)

    e = budget.slot("e")  # needs 332 of 300 free: one worker goes, the least recent
    budget.admit(e)
    assert killed() == "a" and a.cleared and a.held_mb == 0
    f = budget.slot("f")  # needs 332 of 1100 - 600 - 332 = 168: one more (c), not two
    budget.admit(f)
    assert killed() == "ac"
    g = budget.slot("g")  # needs 332 of 36: d, then b (the most recent) last
    budget.admit(g)
    assert killed() == "abcd" and budget.evicted == 4
    assert not e.cleared and not f.cleared, "a running step is never a victim"
    assert budget.used_mb() == 3 * 332


def test_a_chat_running_its_next_step_is_never_a_victim(sizes):
    clock = Clock()
    budget = _budget(1000, 300, clock)
    older = _park(budget, sizes, "older", 200)  # least recent, but running again below
    newer = _park(budget, sizes, "newer", 200)
    budget.admit(older)  # 500 reserved; 200 idle
    worker = older.worker
    budget.admit(budget.slot("new"))  # needs 332 of 300 free: only newer may go
    assert newer.cleared and not older.cleared and worker.kills == []
    assert budget.used_mb() == 500 + 332


def test_the_requesting_chat_is_never_its_own_victim(sizes):
    clock = Clock()
    budget = _budget(1000, 300, clock)
    other = _park(budget, sizes, "other", 300)
    mine = _park(budget, sizes, "mine", 600)
    own_worker = mine.worker
    # Needs 600 + 300 = 900; 1000 - 300 (other) = 700: other goes, never mine.
    assert budget.admit(mine) is False
    assert own_worker.kills == [] and mine.worker is own_worker
    assert other.cleared and budget.evicted == 1
    budget.release(mine)

    small = _budget(800, 300, clock)
    alone = _park(small, sizes, "alone", 600)
    worker = alone.worker
    with pytest.raises(MemoryRefused):
        small.admit(alone)  # 900 > 800, and nothing else to stop
    assert worker.kills == [] and not alone.cleared and small.idle_workers() == 1
    assert small.used_mb() == 600


def test_a_pinned_worker_is_never_killed(sizes):
    clock = Clock()
    budget = _budget(600, 300, clock)
    first = _park(budget, sizes, "first", 200)
    second = _park(budget, sizes, "second", 200)
    with budget.pinned(first):
        budget.admit(budget.slot("new"))  # needs 332 of 200 free: first is older but pinned
        assert not first.cleared and first.worker.kills == []
        assert second.cleared
    with budget.pinned(first):
        with pytest.raises(MemoryRefused):
            budget.admit(budget.slot("newer"))  # 332 of 68 free: only the pinned one could go
    clock.advance(10_000)
    with budget.pinned(first):
        assert budget.stop_idle() == 0, "idle but pinned: a message is being sent to it"
    assert first.worker.kills == []


def test_a_message_sent_between_steps_recounts_the_stopped_worker(sizes):
    clock = Clock()
    budget = _budget(1000, 300, clock)
    slot = _park(budget, sizes, "chat", 100)
    with budget.pinned(slot):
        sizes[slot.worker.pid] = 180.0  # the variables sent made it larger
    assert slot.held_mb == 180 and slot.size_mb == 180 and budget.used_mb() == 180
    assert budget.idle_workers() == 1

    with budget.pinned(slot):
        budget.drop(slot)  # its executor killed it meanwhile
        sizes[slot.worker.pid] = 300.0
    assert budget.used_mb() == 0 and budget.idle_workers() == 0, "a dropped worker is not counted again"


def test_cleared_is_reported_exactly_once_at_the_next_step(sizes):
    clock = Clock()
    budget = _budget(500, 300, clock)
    victim = _park(budget, sizes, "victim", 200)
    hog = budget.slot("hog")
    budget.admit(hog)  # needs 332 of 300 free: the victim's worker goes
    assert victim.cleared and victim.worker is None
    budget.release(hog)  # hog's worker never attached: it holds nothing

    assert budget.admit(victim) is True, "the victim's next step hears about it"
    budget.attach(victim, FakeWorker(sizes, 100))
    budget.release(victim)
    assert budget.admit(victim) is False, "and only once"
    budget.release(victim)


def test_cleared_survives_a_refused_step(sizes):
    clock = Clock()
    budget = _budget(500, 300, clock)
    victim = _park(budget, sizes, "victim", 200)
    hog = budget.slot("hog")
    budget.admit(hog)
    budget.attach(hog, FakeWorker(sizes, 400))  # still running: 332 reserved
    with pytest.raises(MemoryRefused):
        budget.admit(victim)
    budget.release(hog)  # 400 idle now; the victim's step evicts it
    assert budget.admit(victim) is True


# --- waiting and refusing


def test_a_step_waits_then_is_refused_with_the_sentence(sizes):
    clock = Clock()
    budget = _budget(600, 300, clock, wait_s=5.0)
    condition = _watch(budget)
    running = budget.slot("running")
    budget.admit(running)  # 332 reserved, never released in this test
    outcome: list[object] = []

    def step() -> None:
        try:
            outcome.append(budget.admit(budget.slot("late")))
        except MemoryRefused as exc:
            outcome.append(exc)

    thread = threading.Thread(target=step, daemon=True)
    thread.start()
    assert condition.waiting.wait(5)
    assert not outcome, "refused before its wait was over"
    clock.advance(5.0)  # the wait rechecks the clock at least every 0.5 s
    thread.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], MemoryRefused)
    assert str(outcome[0]) == REFUSED
    assert budget.refused == 1 and budget.evicted == 0
    assert budget.used_mb() == 332


def test_a_release_wakes_a_waiting_step(sizes):
    clock = Clock()  # never advances: only a release can let the step in
    budget = _budget(600, 300, clock, wait_s=5.0)
    condition = _watch(budget, only_on_notify=True)
    running = budget.slot("running")
    budget.admit(running)
    budget.attach(running, FakeWorker(sizes, 250))
    admitted = threading.Event()
    waiting = budget.slot("waiting")

    def step() -> None:
        budget.admit(waiting)
        admitted.set()

    threading.Thread(target=step, daemon=True).start()
    assert condition.waiting.wait(5) and not admitted.is_set()
    budget.release(running)  # 332 reserved -> 250 measured: now it fits
    assert admitted.wait(5)
    assert waiting.running and not running.cleared and budget.refused == 0
    assert budget.used_mb() == 250 + 332


def test_a_drop_wakes_a_waiting_step_and_returns_the_memory(sizes):
    clock = Clock()
    budget = _budget(600, 300, clock, wait_s=5.0)
    condition = _watch(budget, only_on_notify=True)
    running = budget.slot("running")
    budget.admit(running)
    admitted = threading.Event()
    threading.Thread(target=lambda: (budget.admit(budget.slot("w")), admitted.set()), daemon=True).start()
    assert condition.waiting.wait(5) and not admitted.is_set()
    budget.drop(running)  # its executor killed its worker (a limit): the memory is back
    assert admitted.wait(5)
    assert budget.used_mb() == 332 and not running.running


def test_drop_of_an_idle_worker_returns_its_memory_without_killing_it(sizes):
    clock = Clock()
    budget = _budget(1000, 300, clock)
    gone = _park(budget, sizes, "gone", 400)
    worker = gone.worker
    budget.drop(gone)
    assert budget.used_mb() == 0 and budget.idle_workers() == 0
    assert worker.kills == [], "drop: its own executor kills it"
    budget.admit(budget.slot("big"))
    budget.admit(budget.slot("big2"))  # 664 of 1000: the dropped chat is no longer a victim
    assert budget.evicted == 0 and not gone.cleared


def test_a_dead_worker_counts_for_nothing_after_its_step(sizes):
    clock = Clock()
    budget = _budget(1000, 300, clock)
    slot = budget.slot("crashed")
    budget.admit(slot)
    worker = FakeWorker(sizes, 400)
    budget.attach(slot, worker)
    worker.dead = True  # killed by a limit during the step
    budget.release(slot)
    assert budget.used_mb() == 0 and slot.worker is None and budget.idle_workers() == 0


# --- idle workers


def test_workers_idle_for_idle_s_are_stopped_and_told(sizes):
    clock = Clock(0.0)
    budget = _budget(2000, 300, clock, idle_s=600)
    early = _park(budget, sizes, "early", 100)
    clock.advance(300)
    late = _park(budget, sizes, "late", 100)
    running = budget.slot("running")
    budget.admit(running)
    budget.attach(running, FakeWorker(sizes, 100))
    early_worker, late_worker = early.worker, late.worker

    clock.advance(299)
    assert budget.stop_idle() == 0
    clock.advance(1)  # early: idle 600 s
    assert budget.stop_idle() == 1
    assert early_worker.kills and early_worker.kills[0] > 0, "waited for, so its memory is free"
    assert early.cleared and not late.cleared and late_worker.kills == []
    assert budget.used_mb() == 100 + 332
    clock.advance(300)
    assert budget.stop_idle() == 1 and late.cleared
    clock.advance(10_000)
    assert budget.stop_idle() == 0 and running.worker.kills == [], "a running step is not idle"
    assert budget.idled == 2
    assert budget.admit(early) is True


def test_killed_victims_are_waited_for(sizes):
    clock = Clock()
    budget = _budget(500, 300, clock)
    victim = _park(budget, sizes, "victim", 200)
    worker = victim.worker
    budget.admit(budget.slot("new"))
    assert worker.kills and all(w > 0 for w in worker.kills)


def _holding_process(mb: int, untouched_mb: int = 0) -> subprocess.Popen[bytes]:
    """A process holding `mb` MB resident (and `untouched_mb` mapped but never touched)."""
    code = (
        "import mmap, sys, time\n"
        f"x = bytearray({mb} * 1024 * 1024)\n"
        "for i in range(0, len(x), 4096): x[i] = 1\n"
        f"y = mmap.mmap(-1, {untouched_mb} * 1024 * 1024) if {untouched_mb} else None\n"
        "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    return process


class ProcessWorker:
    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.pid = process.pid
        self.dead = False
        self.kills: list[float] = []

    def kill(self, wait_s: float = 0.0) -> None:
        self.kills.append(wait_s)
        self.dead = True
        self.process.kill()
        if wait_s > 0:
            self.process.wait(wait_s)


def test_real_sizes_are_read_and_a_victim_is_gone_before_the_step_starts():
    clock = Clock()
    budget = _budget(300, 200, clock)
    process = _holding_process(150)
    try:
        slot = budget.slot("holder")
        budget.admit(slot)
        budget.attach(slot, ProcessWorker(process))
        budget.release(slot)
        assert 150 <= slot.size_mb < 250, slot.size_mb
        assert budget.used_mb() == slot.size_mb
        # A fresh step needs 232 of 300 - ~160: the holder goes, and is gone when admit returns.
        budget.admit(budget.slot("new"))
        assert process.poll() is not None, "the victim still runs while the new step starts"
        assert slot.cleared
    finally:
        process.kill()
        process.wait()


# --- concurrency


def test_many_threads_never_take_more_than_the_total(sizes):
    total, step = 2000.0, 300.0
    budget = MemoryBudget(total, step, 600, wait_s=10.0, reaper=False)
    over: list[float] = []
    errors: list[BaseException] = []
    refused: list[str] = []
    stop = threading.Event()
    rng_lock = threading.Lock()
    rng = random.Random(23)

    def watch() -> None:
        while not stop.is_set():
            used = budget.used_mb()
            if used > total:
                over.append(used)

    threads_n = 12
    start, end = threading.Barrier(threads_n), threading.Barrier(threads_n)

    def chat(n: int) -> None:
        slot = budget.slot(f"chat{n}")
        try:
            start.wait(10)
            for _ in range(150):
                try:
                    cleared = budget.admit(slot)
                except MemoryRefused:
                    refused.append(slot.owner)
                    continue
                used = budget.used_mb()
                if used > total:
                    over.append(used)
                if cleared or slot.worker is None or slot.worker.dead:
                    with rng_lock:  # a fresh worker: at most the 32 + 300 reserved
                        size = float(rng.randint(32, 332))
                    budget.attach(slot, FakeWorker(sizes, size))
                elif slot.worker is not None:
                    with rng_lock:  # it grew during the step, within what the step reserved
                        sizes[slot.worker.pid] = float(min(slot.size_mb + rng.randint(0, 300), 600))
                budget.release(slot)
                time.sleep(0)  # let the other chats in between steps
            end.wait(10)  # every chat's worker is still counted until all are done
            budget.drop(slot)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    threads = [threading.Thread(target=chat, args=(n,), daemon=True) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    stop.set()
    watcher.join(5)
    assert not any(t.is_alive() for t in threads), "a step waited forever"
    assert errors == []
    assert over == [], f"the ledger went over the total: {max(over)} > {total}"
    assert budget.evicted > 0, "the test never made the budget evict"
    assert abs(budget.used_mb()) < 1e-6 and budget.idle_workers() == 0, "memory leaked from the ledger"


# --- bugs found in review: a victim must be killed before anyone counts on its memory


def _three_chats_and_a_waiting_step(sizes) -> tuple[MemoryBudget, dict[str, Slot], threading.Event]:
    """victim (100, least recent) and waiter (200) stopped; busy running (300 + 300 reserved).
    waiter's next step needs 500 of 1000 - 700: it cannot fit until busy's step ends."""
    budget = _budget(1000, 300, Clock(), wait_s=5.0)  # the clock never advances
    condition = _watch(budget)
    slots = {name: _park(budget, sizes, name, size) for name, size in (("victim", 100), ("waiter", 200))}
    slots["busy"] = _park(budget, sizes, "busy", 300)
    budget.admit(slots["busy"])
    admitted = threading.Event()
    threading.Thread(target=lambda: (budget.admit(slots["waiter"]), admitted.set()), daemon=True).start()
    assert condition.waiting.wait(5) and not admitted.is_set()
    return budget, slots, admitted


def _step_as_the_executor_does(budget: MemoryBudget, sizes, slot: Slot) -> FakeWorker:
    if budget.admit(slot) or slot.worker is None or slot.worker.dead:
        budget.attach(slot, FakeWorker(sizes, 50))  # told, and a fresh worker
    return slot.worker


def test_an_evicted_worker_is_killed_before_another_step_counts_on_its_memory(sizes):
    """Today a step that evicts, finds it is still not enough and waits keeps its victims alive
    while it waits (up to ADMIT_WAIT_S), yet their memory is already free in the ledger: another
    chat's step is admitted on memory that a live process still holds."""
    budget, slots, admitted = _three_chats_and_a_waiting_step(sizes)
    workers = {name: slot.worker for name, slot in slots.items()}
    other = budget.slot("other")
    budget.admit(other)
    try:
        uncounted_alive = [
            name
            for name, worker in workers.items()
            if not worker.kills and slots[name].held_mb == 0 and not slots[name].running
        ]
        assert uncounted_alive == [], (
            f"{uncounted_alive} still alive but no longer counted, while a new step was admitted: "
            f"ledger {budget.used_mb():.0f} MB of {budget.total_mb:.0f}"
        )
    finally:
        budget.release(slots["busy"])
        budget.release(other)
        admitted.wait(5)


def test_an_eviction_never_kills_the_fresh_worker_of_the_evicted_chat(sizes):
    """The victim's chat may start its next step (with a fresh worker) before the evicting step
    gets round to killing; today the evicting step reads slot.worker only then, and kills the
    fresh worker in the middle of its step."""
    budget, slots, admitted = _three_chats_and_a_waiting_step(sizes)
    victim = slots["victim"]
    current = _step_as_the_executor_does(budget, sizes, victim)
    budget.release(slots["busy"])  # lets the waiting step in
    assert admitted.wait(5)
    assert victim.running and current.kills == [], "a running step's worker was killed by the budget"


def test_stopping_idle_workers_never_kills_a_worker_attached_meanwhile(sizes):
    """stop_idle kills its victims one by one outside the lock (each waited for); meanwhile a
    victim's chat may already have a fresh worker."""
    clock = Clock(0.0)
    budget = _budget(5000, 300, clock, idle_s=600)
    fresh: list[FakeWorker] = []

    def second_chat_starts_a_step() -> None:
        # Runs while the first victim is being killed: the second victim's chat steps again.
        assert budget.admit(second) is True
        fresh.append(FakeWorker(sizes, 50))
        budget.attach(second, fresh[0])

    _park(budget, sizes, "first", 100, on_kill=second_chat_starts_a_step)
    second = _park(budget, sizes, "second", 100)
    clock.advance(600)
    assert budget.stop_idle() == 2
    assert fresh and fresh[0].kills == [], "stop_idle killed a worker that had just started a step"


# --- sandbox/memory.py


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_limit_is_found_at_a_parent(tmp_path):
    proc = tmp_path / "cgroup"
    root = tmp_path / "sys"
    _write(proc, "0::/a/b\n")
    _write(root / "memory.max", "max\n")
    _write(root / "a" / "memory.max", "1073741824\n")
    _write(root / "a" / "b" / "memory.max", "max\n")
    assert memory.cgroup_limit_bytes(proc, root) == 1 << 30
    _write(root / "a" / "b" / "memory.max", str(512 << 20))
    assert memory.cgroup_limit_bytes(proc, root) == 512 << 20, "the tightest level wins"


def test_cgroup_v2_max_everywhere_is_no_limit(tmp_path):
    proc = tmp_path / "cgroup"
    root = tmp_path / "sys"
    _write(proc, "0::/a/b\n")
    for folder in (root, root / "a", root / "a" / "b"):
        _write(folder / "memory.max", "max\n")
    assert memory.cgroup_limit_bytes(proc, root) is None
    assert memory.cgroup_limit_bytes(tmp_path / "missing", root) is None


def test_cgroup_v1_limit_and_its_unlimited_value(tmp_path):
    proc = tmp_path / "cgroup"
    root = tmp_path / "sys"
    _write(proc, "12:pids:/x\n4:memory:/x\n1:name=systemd:/x\n")
    _write(root / "memory" / "memory.limit_in_bytes", "9223372036854771712\n")
    _write(root / "memory" / "x" / "memory.limit_in_bytes", "9223372036854771712\n")
    assert memory.cgroup_limit_bytes(proc, root) is None, "2^63 rounded to a page means no limit"
    _write(root / "memory" / "x" / "memory.limit_in_bytes", str(3 << 30))
    assert memory.cgroup_limit_bytes(proc, root) == 3 << 30
    _write(proc, "4:cpu,memory:/x\n")  # controllers mounted together
    assert memory.cgroup_limit_bytes(proc, root) == 3 << 30


@pytest.mark.parametrize(
    "line, name",
    [("0::/kubepods/pod1/ctr\n", "memory.max"), ("7:memory:/docker/abc\n", "memory/memory.limit_in_bytes")],
)
def test_cgroup_container_with_its_own_folder_mounted_as_the_root(tmp_path, line, name):
    proc = tmp_path / "cgroup"
    root = tmp_path / "sys"
    _write(proc, line)
    _write(root / name, str(2 << 30))  # no kubepods/... folders inside the container
    assert memory.cgroup_limit_bytes(proc, root) == 2 << 30


def test_cgroup_hybrid_and_garbage(tmp_path):
    proc = tmp_path / "cgroup"
    root = tmp_path / "sys"
    _write(proc, "garbage\n0::/user.slice\n5:memory:/user.slice\n")
    _write(root / "memory" / "user.slice" / "memory.limit_in_bytes", str(1 << 30))
    assert memory.cgroup_limit_bytes(proc, root) == 1 << 30
    _write(root / "memory" / "user.slice" / "memory.limit_in_bytes", "lots\n")
    assert memory.cgroup_limit_bytes(proc, root) is None
    _write(root / "memory" / "user.slice" / "memory.limit_in_bytes", "0\n")
    assert memory.cgroup_limit_bytes(proc, root) is None


def test_host_memory_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    _write(meminfo, "MemTotal:       16303412 kB\nMemFree:         1000 kB\n")
    assert memory.host_memory_bytes(meminfo) == 16303412 * 1024
    _write(meminfo, "MemFree: 1 kB\n")
    assert memory.host_memory_bytes(meminfo) is None
    _write(meminfo, "MemTotal: lots kB\n")
    assert memory.host_memory_bytes(meminfo) is None
    assert memory.host_memory_bytes(tmp_path / "missing") is None
    real = memory.host_memory_bytes()
    assert real is not None and real > 256 << 20


@pytest.mark.parametrize(
    "host, group, expected, source",
    [
        (16 << 30, 4 << 30, 2048, "the container's memory limit, 4,096 MB"),
        (16 << 30, None, 8192, "the host's memory, 16,384 MB"),
        (16 << 30, 32 << 30, 8192, "the host's memory"),
        (None, 6 << 30, 3072, "the container's memory limit"),
        (None, None, 2048, "assumed 4 GB"),
    ],
)
def test_default_budget_is_half_of_what_the_app_may_use(monkeypatch, host, group, expected, source):
    monkeypatch.setattr(memory, "host_memory_bytes", lambda *a: host)
    monkeypatch.setattr(memory, "cgroup_limit_bytes", lambda *a: group)
    mb, text = memory.default_budget_mb()
    assert mb == expected and source in text and text.startswith("half of")


def test_resident_size_of_a_real_process_and_of_a_gone_one():
    own = memory.resident_mb(os.getpid())
    assert 10 < own < 4096
    process = _holding_process(64, untouched_mb=512)
    try:
        assert 64 <= memory.resident_mb(process.pid) < 64 + 100, "resident, not mapped"
        assert memory.total_resident_mb([process.pid, os.getpid()]) >= own + 64
    finally:
        process.kill()
        process.wait()
    assert memory.resident_mb(process.pid) == 0.0


# --- the real sandbox: three chats holding 300 MB each in a 1,200 MB budget


def _sandbox_settings(tmp_path: Path, total: str, step: str = "512"):
    data = tmp_path / "data"
    (data / "agent_files").mkdir(parents=True)
    return settings_from_env(
        {"DATA_DIR": str(data), "CODE_TOTAL_MEMORY_MB": total, "CODE_MEMORY_MB": step, "CODE_TIMEOUT_S": "20"}
    )


def test_real_sandbox_evicts_the_least_recent_chat_and_tells_it(tmp_path):
    from sandbox.executor import CodeSandbox, IsolatedExecutor

    sandbox = CodeSandbox(_sandbox_settings(tmp_path, "1200"))
    sandbox.start()
    budget = sandbox.budget
    peak = [0.0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], budget.used_mb())
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    executors = [IsolatedExecutor(sandbox, sandbox.files_dir / f"chat{n}") for n in range(3)]
    try:
        for executor in executors:
            executor.send_tools({})
            executor.send_variables({})
        for executor in executors[:2]:
            executor("held = b'x' * (300 * 1024 * 1024)\nprint('held', len(held))")
        first = executors[0].worker
        assert first is not None and budget.idle_workers() == 2
        assert budget.used_mb() >= 600, "the two stopped workers are counted at their real size"

        out = executors[2]("held = b'x' * (300 * 1024 * 1024)\nprint('held', len(held))")
        assert not out.logs.startswith(CLEARED)
        assert first.dead, "the least recent chat's worker was not stopped"
        assert not executors[1].worker.dead

        out = executors[0]("print('back')")
        assert out.logs.startswith(CLEARED), out.logs
        assert "back" in out.logs
        out = executors[0]("print('again')")
        assert not out.logs.startswith(CLEARED), "said once"
        assert budget.evicted >= 2 and budget.refused == 0
    finally:
        stop.set()
        watcher.join(5)
        for executor in executors:
            executor.cleanup()
        sandbox.close()
        sandbox.zygote.close()
    assert peak[0] <= budget.total_mb, f"the ledger reached {peak[0]:.0f} MB of {budget.total_mb:.0f}"
    assert budget.used_mb() <= budget.fixed_mb + 1e-6


def test_real_sandbox_refuses_to_start_with_a_budget_too_small_for_one_step(tmp_path):
    from sandbox.executor import CodeSandbox, SandboxError

    # The app's own process counted as fixed (it is large): 640 MB cannot hold it, a worker and 512.
    sandbox = CodeSandbox(_sandbox_settings(tmp_path, "640"), fixed_pids=lambda: [os.getpid()])
    try:
        with pytest.raises(SandboxError) as caught:
            sandbox.start()
        message = str(caught.value)
        assert "640 MB" in message and "CODE_TOTAL_MEMORY_MB" in message and "CODE_MEMORY_MB" in message
    finally:
        sandbox.close()
        sandbox.zygote.close()


def test_the_oom_killer_takes_a_worker_before_the_app(tmp_path):
    """If memory runs out anyway (another program on the host), the kernel's choice is a code
    worker: it and its zygote raised their oom_score_adj; the app's own stays as it was."""
    from sandbox.confine import OOM_SCORE_WORKER
    from sandbox.executor import CodeSandbox, IsolatedExecutor

    sandbox = CodeSandbox(_sandbox_settings(tmp_path, "1200"))
    sandbox.start()
    executor = IsolatedExecutor(sandbox, sandbox.files_dir / "chat")
    try:
        executor.send_tools({})
        executor("x = 1")
        assert executor.worker is not None

        def score(pid: int | str) -> int:
            return int(Path(f"/proc/{pid}/oom_score_adj").read_text())

        assert score(executor.worker.pid) == OOM_SCORE_WORKER
        assert score(sandbox.zygote.pid) == OOM_SCORE_WORKER
        assert score("self") < OOM_SCORE_WORKER
        assert int(Path(f"/proc/{executor.worker.pid}/oom_score").read_text()) > int(
            Path("/proc/self/oom_score").read_text()
        )
    finally:
        executor.cleanup()
        sandbox.close()
