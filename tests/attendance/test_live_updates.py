"""Live updates leave each room together (attendance/live.py, Outbox): a burst of
check-ins is a few messages to a dashboard, in order, without waiting for anyone to ask."""

from __future__ import annotations

import time

from attendance import live
from tests.attendance.conftest import emit


def _updates_within(sc, want: int, seconds: float = 5.0) -> list[dict]:
    """The `attendance:updates` messages `sc` got until `want` updates are in (the outbox
    sends on its own: nothing is flushed here)."""
    messages: list[dict] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        messages += [m["args"][0] for m in sc.get_received("/attendance")
                     if m["name"] == "attendance:updates"]
        if sum(len(m["updates"]) for m in messages) >= want:
            break
        time.sleep(0.05)
    return messages


def test_a_burst_of_check_ins_reaches_the_rooms_as_a_few_lists_in_order(att_socket, scene):
    occ = scene.occurrence.id
    dash, trainer = att_socket("organizer"), att_socket("trainer")
    assert emit(dash, "dashboard:join", {"occurrence_id": occ})["ok"]
    assert emit(trainer, "broadcast:join", {"occurrence_id": occ})["ok"]
    screen = att_socket("screen_a")
    assert emit(screen, "site:join", {"occurrence_id": occ, "site_id": scene.site_a.id})["ok"]
    for sc in (dash, trainer, screen):
        sc.get_received("/attendance")
    first, second = scene.members[0].id, scene.members[1].id
    marks = [(first, "present"), (second, "present"), (first, "checked_out"),
             (first, "present"), (second, "checked_out"), (second, "present")]
    for i, (member_id, state) in enumerate(marks):
        ack = emit(screen, "roll_call:mark", {
            "occurrence_id": occ, "site_id": scene.site_a.id, "member_ids": [member_id],
            "state": state, "event_id": f"b{i}"})
        assert ack["ok"], ack
        assert ack["stored"] == 1, ack

    to_dash = _updates_within(dash, len(marks))
    updates = [u for m in to_dash for u in m["updates"]]
    assert [(u["member_id"], u["present"]) for u in updates] == [
        (m, state == "present") for m, state in marks]
    assert len(to_dash) < len(marks)  # lists, not one message per check-in
    assert all(m["occurrence_id"] == occ for m in to_dash)
    assert {u["site_id"] for u in updates} == {scene.site_a.id}

    to_screen = [u for m in _updates_within(screen, len(marks)) for u in m["updates"]]
    assert [u["member_id"] for u in to_screen] == [m for m, _ in marks]
    to_trainer = [u for m in _updates_within(trainer, len(marks)) for u in m["updates"]]
    assert len(to_trainer) == len(marks)
    assert not any("name" in u for u in to_trainer)  # the counts room carries no names


def test_the_outbox_sends_each_rooms_list_once_and_then_rests(app):
    from extensions import socketio

    box = live.Outbox(socketio.server, window=0.05)
    with app.app_context():
        for i in range(5):
            box.put(live.occurrence_room(7), 7, {"member_id": i})
        box.put(live.site_room(7, 3), 7, {"member_id": 9})
        deadline = time.monotonic() + 5
        while box._rooms._running and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not box._rooms._running  # nothing left: the task ended
        assert box.flush() == 0  # everything went


def test_screens_joining_at_once_share_one_snapshot_started_after_they_all_asked():
    import threading

    shared = live.SharedSnapshots(gather=0.05)
    started: list[float] = []

    def compute():
        started.append(time.monotonic())
        n = len(started)
        time.sleep(0.2)
        return {"n": n}

    asked: list[float] = []
    got: list[dict] = []

    def join():
        asked.append(time.monotonic())
        got.append(shared.get(7, compute))

    first = [threading.Thread(target=join) for _ in range(5)]
    for t in first:
        t.start()
    time.sleep(0.1)  # the computation has started: a screen joining now takes the next
    late = threading.Thread(target=join)
    late.start()
    for t in [*first, late]:
        t.join(5)
    assert shared.computed == 2
    assert [g["n"] for g in got].count(1) == 5
    assert [g["n"] for g in got].count(2) == 1
    assert max(asked[:5]) <= started[0]  # every sharer asked before it started
    assert asked[5] <= started[1]
    assert shared.get(8, lambda: "other") == "other"  # one flight per occurrence


def test_a_failed_shared_snapshot_fails_every_sharer():
    import threading

    import pytest

    shared = live.SharedSnapshots(gather=0.05)

    def compute():
        raise RuntimeError("database away")

    errors: list[BaseException] = []

    def join():
        try:
            shared.get(7, compute)
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=join) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(errors) == 3
    with pytest.raises(RuntimeError):  # the next asker computes again (and fails again)
        shared.get(7, compute)
