"""One memory budget for the model's code across every session: CODE_TOTAL_MEMORY_MB.

Each worker is capped on its own (CODE_MEMORY_MB), but sessions cost nothing to open, and a
worker keeps its variables between steps: 30 strangers each holding 400 MB fill a host, and then
the kernel's OOM killer picks a victim. The budget bounds the sum.

What it counts, per worker (a `Slot`):
- between steps the worker is stopped (SIGSTOP), so its size cannot change: it is read once,
  when it pauses (/proc/PID/statm, about 20 µs);
- during a step: that size plus CODE_MEMORY_MB, the most the step may add (RLIMIT_AS);
- besides the workers, a fixed part (the zygote, the model process, an agent process itself),
  measured every few seconds.

A step is admitted when everything fits. If not, the least recently used stopped workers are
killed first (their sessions are told at their next step that earlier variables were cleared);
if that is not enough it waits a few seconds for running steps to end, then the step is refused
with a sentence. Workers idle for CODE_IDLE_S are stopped the same way. Nothing here ever blocks
for longer than a lock on a few dictionaries, and killing happens outside the lock.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from sandbox.memory import resident_mb, total_resident_mb

log = logging.getLogger(__name__)

# Said at the session's next step, in its logs (the model reads it) and in its steps (the user).
CLEARED = (
    "Note: this chat's earlier variables were cleared to free memory for other users; "
    "define them again if you need them."
)
REFUSED = (
    "The server is short of memory for running code right now (other chats' code is using "
    "its budget); please try again in a minute."
)
# A step waits this long for running steps to give memory back before it is refused.
ADMIT_WAIT_S = 5.0
# How often the fixed part (zygote, model process, agent process) is measured again.
FIXED_REFRESH_S = 5.0
# A worker's size before its first pause: the zygote it is forked from, at least this.
MIN_WORKER_MB = 32.0


class Killable(Protocol):
    pid: int
    dead: bool

    def kill(self, wait_s: float = 0.0) -> None: ...


class MemoryRefused(RuntimeError):
    """The step does not fit in the budget; the message is the sentence the chat shows."""


@dataclass(eq=False)
class Slot:
    """One session's place in the budget: its worker (if any) and what it holds."""

    owner: str
    worker: Killable | None = None
    running: bool = False
    size_mb: float = 0.0  # resident size at the last pause
    held_mb: float = 0.0  # what the budget counts for it now
    pinned: int = 0  # messages being sent between steps: never killed meanwhile
    last_used: float = 0.0
    cleared: bool = False  # its worker was killed for memory or idleness: say so at the next step


class MemoryBudget:
    """The ledger; one per code sandbox (an app's, or an agent process's share)."""

    def __init__(
        self,
        total_mb: float,
        step_mb: float,
        idle_s: float,
        fixed_pids: Callable[[], Iterable[int]] = tuple,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait_s: float = ADMIT_WAIT_S,
        reaper: bool = True,
    ) -> None:
        self.total_mb = float(total_mb)
        self.step_mb = float(step_mb)
        self.idle_s = float(idle_s)
        self.wait_s = wait_s
        self._fixed_pids = fixed_pids
        self._clock = clock
        self._cond = threading.Condition()
        self._idle: OrderedDict[int, Slot] = OrderedDict()  # stopped workers, least recent first
        self._held = 0.0  # sum of every slot's held_mb
        self._dying = 0.0  # memory of evicted workers not yet seen gone
        self.fixed_mb = 0.0
        self._fixed_at = -float("inf")
        # Counters for the log, the banner and the benchmarks.
        self.evicted = 0
        self.idled = 0
        self.refused = 0
        self._closed = False
        # The reaper's own wake-up: the condition above is notified after every step.
        self._reaper_stop = threading.Event()
        if reaper:
            threading.Thread(
                target=_reap, args=(weakref.ref(self),), name="code-memory-reaper", daemon=True
            ).start()

    # --- what the executor calls

    def slot(self, owner: str) -> Slot:
        return Slot(owner, last_used=self._clock())

    def admit(self, slot: Slot) -> bool:
        """Reserve memory for a step of `slot`; True if its worker was cleared since its last step.

        Raises MemoryRefused when it cannot fit even after stopping every idle worker and waiting.
        """
        deadline = self._clock() + self.wait_s
        while True:
            victims: list[tuple[Slot, Killable | None, float]] = []
            with self._cond:
                self._refresh_fixed_locked()
                need = max(slot.size_mb, self._fresh_mb()) + self.step_mb
                # Workers being killed still hold their memory until they are seen gone.
                free = self.total_mb - self.fixed_mb - self._dying - (self._held - slot.held_mb)
                if free >= need:
                    self._idle.pop(id(slot), None)
                    self._set_held_locked(slot, need)
                    slot.running = True
                    slot.last_used = self._clock()
                    cleared, slot.cleared = slot.cleared, False
                    return cleared
                # The least recently used stopped workers go first, never this session's own,
                # and only when stopping them makes the step fit.
                evictable = [o for o in self._idle.values() if o is not slot and not o.pinned]
                if free + sum(o.held_mb for o in evictable) >= need:
                    for other in evictable:
                        if free >= need:
                            break
                        free += other.held_mb
                        victims.append(self._evict_locked(other))
                        self.evicted += 1
                else:
                    left = deadline - self._clock()
                    if left <= 0:
                        self.refused += 1
                        log.warning(
                            "Code step of %s refused: needs %.0f MB, %.0f MB free of %.0f MB",
                            slot.owner,
                            need,
                            free,
                            self.total_mb,
                        )
                        raise MemoryRefused(REFUSED)
                    self._cond.wait(min(left, 0.5))
                    continue
            # Outside the lock; then the loop takes the memory they gave back (or, if another
            # step took it meanwhile, stops more or waits).
            self._kill(victims, "to free memory for another chat's code")

    def attach(self, slot: Slot, worker: Killable) -> None:
        """A fresh worker for this slot (its reservation already covers it)."""
        with self._cond:
            slot.worker = worker

    def release(self, slot: Slot) -> None:
        """The step ended: count the stopped worker's real size (or nothing, if it is gone)."""
        worker = slot.worker
        size = resident_mb(worker.pid) if worker is not None and not worker.dead else 0.0
        with self._cond:
            slot.running = False
            slot.last_used = self._clock()
            if slot.worker is None or slot.worker.dead or size <= 0:
                slot.worker = None
                slot.size_mb = 0.0
                self._set_held_locked(slot, 0.0)
            else:
                slot.size_mb = size
                self._set_held_locked(slot, size)
                self._idle[id(slot)] = slot
                self._idle.move_to_end(id(slot))
            self._cond.notify_all()

    def drop(self, slot: Slot) -> None:
        """The slot's worker was killed by its own executor (a limit, or the session ended)."""
        with self._cond:
            self._take_locked(slot)
            slot.running = False
            self._cond.notify_all()

    @contextmanager
    def pinned(self, slot: Slot) -> Iterator[None]:
        """While a message is sent to a stopped worker, it is not killed under the sender."""
        with self._cond:
            slot.pinned += 1
        try:
            yield
        finally:
            # What was sent (variables) may have made the stopped worker larger: count it.
            worker = slot.worker
            size = resident_mb(worker.pid) if worker is not None and not worker.dead else 0.0
            with self._cond:
                slot.pinned -= 1
                if size > 0 and id(slot) in self._idle and slot.worker is worker:
                    slot.size_mb = size
                    self._set_held_locked(slot, size)

    # --- the reaper, the banner, the benchmarks

    def stop_idle(self) -> int:
        """Kill workers idle for longer than idle_s; how many."""
        now = self._clock()
        victims = []
        with self._cond:
            for other in list(self._idle.values()):
                if now - other.last_used < self.idle_s:
                    break  # ordered by last use: the rest are more recent
                if other.pinned:
                    continue
                victims.append(self._evict_locked(other))
            self.idled += len(victims)
            if victims:
                self._cond.notify_all()
        self._kill(victims, f"after {self.idle_s:.0f} s idle")
        return len(victims)

    def used_mb(self) -> float:
        with self._cond:
            return self.fixed_mb + self._held + self._dying

    def idle_workers(self) -> int:
        with self._cond:
            return len(self._idle)

    def describe(self) -> str:
        return (
            f"code memory budget: {self.total_mb:,.0f} MB for all sessions' code "
            f"(a step reserves {self.step_mb:,.0f} MB; idle workers stop after {self.idle_s:,.0f} s)"
        )

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._reaper_stop.set()

    # --- internals

    def _fresh_mb(self) -> float:
        return max(MIN_WORKER_MB, self._zygote_mb)

    _zygote_mb = MIN_WORKER_MB

    def set_fresh_mb(self, size_mb: float) -> None:
        """The zygote's size: a new worker starts as a copy of it."""
        self._zygote_mb = max(MIN_WORKER_MB, float(size_mb))

    def _refresh_fixed_locked(self, force: bool = False) -> None:
        now = self._clock()
        if force or now - self._fixed_at >= FIXED_REFRESH_S:
            self._fixed_at = now
            try:
                self.fixed_mb = total_resident_mb(self._fixed_pids())
            except Exception:  # noqa: BLE001 - keep the last figure; the budget still holds
                log.exception("Could not measure the model and zygote processes")

    def refresh_fixed(self) -> None:
        with self._cond:
            self._refresh_fixed_locked(force=True)

    def _set_held_locked(self, slot: Slot, value: float) -> None:
        self._held += value - slot.held_mb
        slot.held_mb = value

    def _take_locked(self, slot: Slot) -> None:
        """Out of the ledger (its worker is about to be killed, or already was)."""
        self._idle.pop(id(slot), None)
        self._set_held_locked(slot, 0.0)
        slot.size_mb = 0.0

    def _evict_locked(self, slot: Slot) -> tuple[Slot, Killable | None, float]:
        """Out of the ledger now, its worker taken (a fresh one attached later is not killed);
        its memory counts as dying until `_kill` has seen the process gone."""
        size = slot.held_mb
        self._take_locked(slot)
        slot.cleared = True
        worker, slot.worker = slot.worker, None
        self._dying += size
        return slot, worker, size

    def _kill(self, victims: list[tuple[Slot, Killable | None, float]], why: str) -> None:
        for victim, worker, size in victims:
            try:
                if worker is not None:
                    # Waits until the process is gone (a few ms): the kernel frees its pages
                    # before it reports the exit.
                    worker.kill(wait_s=2.0)
                    log.info("Code worker of %s stopped %s", victim.owner, why)
            finally:
                with self._cond:
                    self._dying -= size
                    self._cond.notify_all()


def _reap(ref: weakref.ref[MemoryBudget]) -> None:
    """Stops idle workers and measures the fixed part; ends with its budget."""
    while True:
        budget = ref()
        if budget is None or budget._closed:
            return
        interval = max(0.2, min(budget.idle_s / 4, FIXED_REFRESH_S))
        try:
            budget.stop_idle()
            budget.refresh_fixed()
        except Exception:  # noqa: BLE001 - the reaper never dies of one bad round
            log.exception("The code memory reaper failed a round")
        stop = budget._reaper_stop
        del budget  # not held while waiting: a budget nobody uses any more is freed
        if stop.wait(interval):
            return


__all__ = ["CLEARED", "REFUSED", "MemoryBudget", "MemoryRefused", "Slot"]
