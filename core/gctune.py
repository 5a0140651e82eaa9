"""The garbage collector of a long-lived server with thousands of connections.

A full collection walks every object the collector tracks and stops every connection of
the process meanwhile: with 10,000 connections (bench/stack.py) it took 160-440 ms, and
when one fell into a roll call (1,000 check-ins a second) it was the acks' p99.

- `tune_gc` (at start): the startup objects frozen out of the collector's walks; young
  collections rarer (every 20,000 allocations), full ones after 100 middle ones.
- `GcUpkeep` (a background task of each serving process): every `FREEZE_SECONDS`
  `gc.freeze()`, so what has lived that long (connections, their greenlets, cached
  rights) leaves the walks too: the collections the interpreter starts by itself walk
  only what came since, a few milliseconds. Before freezing, at a moment without a roll
  call (`quiet`: no check-in for 30 s), a middle collection, so that young garbage is not
  frozen; during a roll call the freeze alone (the middle collection of 30 s of a
  10,000-connection process's survivors took 120-370 ms, the whole process waiting,
  bench/stack.py with py-spy: it was the acks' p99 and 7 % of each process's CPU in the
  burst). What is frozen is never collected, so every `FULL_SECONDS`, at a quiet moment,
  everything is unfrozen and collected once (the garbage cycles of connections that have
  gone, and what a roll call froze), and frozen again; at the latest after
  `FULL_LATEST_SECONDS` even if no moment was quiet.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: A full collection that stalls the process this long is logged (milliseconds).
GC_STALL_WARN_MS = 100
FREEZE_SECONDS = 30.0
FULL_SECONDS = 600.0
FULL_LATEST_SECONDS = 1800.0

_tuned = False
_upkeep: GcUpkeep | None = None
#: Set while the upkeep's own full collection runs (logged as upkeep, not as a stall).
_in_upkeep = threading.local()


def tune_gc() -> None:
    """Set the garbage collector up for a long-lived server with many connections.

    The objects made while starting (modules, the app, the mappers) live as long as the
    process; `gc.freeze` moves them out of the collector's generations, so a full
    collection no longer walks them. With 2,000 connections, full collections over every
    object stalled all connections for 100-250 ms each (bench/attendance.py).
    """
    global _tuned
    gc.collect()
    gc.freeze()
    # Young collections every 20,000 allocations instead of 700: an event's objects live
    # for its commit (~10 ms) and die young instead of being promoted; a full collection
    # after 100 middle ones instead of 10. Measured at 2,000 connections and 1,000
    # check-ins a second (bench/attendance.py, SQLite): ack p99 179 ms with the defaults,
    # 32 ms with (700, 10, 100), 27 ms with (20000, 10, 100), at the same memory.
    gc.set_threshold(20_000, 10, 100)
    watch_gc()
    _tuned = True


def watch_gc() -> None:
    """Log each full or middle garbage collection that stalled the process (every
    connection waits for it): the first thing to look at when acks have a long tail
    (bench/stack.py prints these lines)."""
    started = [0.0]

    def timed(phase: str, info: dict) -> None:
        generation = info.get("generation")
        if generation not in (1, 2):
            return
        if phase == "start":
            started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - started[0]) * 1000
        kind = "full" if generation == 2 else "middle"
        if getattr(_in_upkeep, "on", False):
            if generation == 2 or ms >= GC_STALL_WARN_MS:
                log.info("%s garbage collection at a quiet moment: %.0f ms (%d collected)",
                         kind, ms, info.get("collected", 0))
        elif ms >= GC_STALL_WARN_MS:
            log.warning("%s garbage collection stalled the process for %.0f ms (%d "
                        "collected)", kind, ms, info.get("collected", 0))

    if not any(getattr(cb, "__name__", "") == "timed" for cb in gc.callbacks):
        gc.callbacks.append(timed)


def _collect(generation: int) -> None:
    """The upkeep's own collection (`watch_gc` logs it as such, not as a stall)."""
    _in_upkeep.on = True
    try:
        gc.collect(generation)
    finally:
        _in_upkeep.on = False


class GcUpkeep:
    """Freeze what has lived a while; collect everything now and then when quiet."""

    def __init__(self, quiet: Callable[[], bool], *, full_seconds: float = FULL_SECONDS,
                 full_latest_seconds: float = FULL_LATEST_SECONDS,
                 now: float | None = None) -> None:
        self.quiet = quiet
        self.full_seconds = full_seconds
        self.full_latest_seconds = full_latest_seconds
        self.last_full = time.monotonic() if now is None else now
        self.fulls = 0

    def step(self, now: float) -> str:
        """One turn: "full" (unfreeze, collect all), "young" (collect the young
        generations: quiet) or "freeze" (a roll call is on: no collection); then freeze
        whatever is left."""
        since = now - self.last_full
        quiet = self.quiet()
        if since >= self.full_seconds and (since >= self.full_latest_seconds or quiet):
            gc.unfreeze()
            _collect(2)
            self.last_full = now
            self.fulls += 1
            kind = "full"
        elif quiet:
            _collect(1)
            kind = "young"
        else:
            kind = "freeze"
        gc.freeze()
        return kind

    def run(self, every: float = FREEZE_SECONDS) -> None:
        while True:
            time.sleep(every)
            try:
                self.step(time.monotonic())
            except Exception:  # never let the task die
                log.exception("garbage collector upkeep failed")


def start_gc_upkeep(quiet: Callable[[], bool]) -> GcUpkeep | None:
    """Start the upkeep once in a serving process (one `tune_gc` set up); None elsewhere
    (tests, commands: they keep the collector as it is)."""
    global _upkeep
    if not _tuned:
        return None
    if _upkeep is None:
        _upkeep = GcUpkeep(quiet)
        threading.Thread(target=_upkeep.run, name="gc-upkeep", daemon=True).start()
    return _upkeep
