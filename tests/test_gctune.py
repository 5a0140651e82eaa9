"""core.gctune: what has lived a while leaves the collector's walks; a full collection
only at a quiet moment (or at the latest after a while), and then it frees the cycles."""

from __future__ import annotations

import gc
import weakref

import pytest

from core.gctune import GcUpkeep


class Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def collector():
    """Whatever a test froze is unfrozen again: the test process's collector as before."""
    yield
    gc.unfreeze()


def test_young_turns_freeze_survivors_and_a_quiet_full_turn_frees_their_cycles(collector):
    quiet = [False]
    upkeep = GcUpkeep(lambda: quiet[0], full_seconds=600, full_latest_seconds=1800, now=0)
    kept = Cycle()
    gone = Cycle()
    ref = weakref.ref(gone)
    frozen_before = gc.get_freeze_count()
    middle_before = gc.get_stats()[1]["collections"]
    assert upkeep.step(30) == "freeze"  # a roll call is on: no collection stalls it
    assert gc.get_stats()[1]["collections"] == middle_before
    assert gc.get_freeze_count() > frozen_before  # the survivors left the walks
    assert gc.is_tracked(kept)
    del gone  # a cycle that died after it was frozen: no collection can free it now
    gc.collect()
    assert ref() is not None
    assert upkeep.step(600) == "freeze"  # due, but a roll call is on
    assert ref() is not None
    quiet[0] = True
    assert upkeep.step(630) == "full"  # quiet: unfrozen, collected, frozen again
    assert ref() is None
    assert upkeep.fulls == 1
    assert upkeep.step(660) == "young"  # the next one is 600 s away
    assert gc.get_stats()[1]["collections"] > middle_before  # quiet: young garbage first


def test_a_quiet_young_turn_collects_young_garbage_before_freezing_the_rest(collector):
    upkeep = GcUpkeep(lambda: True, full_seconds=600, full_latest_seconds=1800, now=0)
    gc.collect()
    gone = Cycle()
    ref = weakref.ref(gone)
    del gone
    assert upkeep.step(30) == "young"
    assert ref() is None  # collected, not frozen


def test_a_full_turn_comes_at_the_latest_even_without_a_quiet_moment(collector):
    upkeep = GcUpkeep(lambda: False, full_seconds=600, full_latest_seconds=1800, now=0)
    assert upkeep.step(1799) == "freeze"
    assert upkeep.step(1800) == "full"
    assert upkeep.last_full == 1800


def test_the_writer_is_quiet_until_a_check_in_and_again_30_s_after(app):
    import time

    from attendance.writer import QUIET_SECONDS, Request, writer_for, writer_quiet
    from core.types import utcnow

    assert writer_quiet(app)
    writer = writer_for(app)
    writer.submit(Request([], utcnow(), linger=0.25))  # a heartbeat: nobody waits
    assert writer_quiet(app)
    writer.submit(Request([], utcnow()))
    assert not writer_quiet(app)
    writer.last_hurried = time.monotonic() - QUIET_SECONDS
    assert writer_quiet(app)


def test_tests_and_commands_start_no_upkeep():
    from core.gctune import start_gc_upkeep

    assert start_gc_upkeep(lambda: True) is None  # no tune_gc: not a serving process


def test_a_middle_collection_that_stalls_is_logged_and_the_upkeeps_own_is_not_a_stall(
        caplog, monkeypatch):
    import logging

    import core.gctune as gctune

    monkeypatch.setattr(gctune, "GC_STALL_WARN_MS", 0)  # every collection "stalls"
    before = list(gc.callbacks)
    gctune.watch_gc()
    try:
        with caplog.at_level(logging.INFO, logger="core.gctune"):
            gc.collect(1)
            assert "middle garbage collection stalled the process" in caplog.text
            caplog.clear()
            gctune._collect(1)
            assert "middle garbage collection at a quiet moment" in caplog.text
            assert "stalled" not in caplog.text
    finally:
        gc.callbacks[:] = before
