"""core.coalesce: many adds, one background task, one send per window."""

from __future__ import annotations

import threading
import time

from core.coalesce import Coalescer


class Server:
    """The two calls a Socket.IO server lends the coalescer (threading mode)."""

    def start_background_task(self, fn):
        thread = threading.Thread(target=fn, daemon=True)
        thread.start()
        return thread

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _rest(box: Coalescer, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while box._running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not box._running


def test_adds_within_a_window_leave_together_in_order_then_the_task_rests():
    sent: list[list[int]] = []
    box: Coalescer[list[int]] = Coalescer(Server(), 0.1, list, sent.append)
    for i in range(5):
        box.add(lambda pending, i=i: pending.append(i))
    _rest(box)
    assert sent == [[0, 1, 2, 3, 4]]
    box.add(lambda pending: pending.append(5))  # a new task for a new item
    _rest(box)
    assert sent == [[0, 1, 2, 3, 4], [5]]


def test_flush_sends_at_once_and_a_failed_send_does_not_stop_the_task():
    sent: list[list[int]] = []

    def send(batch: list[int]) -> None:
        if batch == [1]:
            raise RuntimeError("Redis away")
        sent.append(batch)

    box: Coalescer[list[int]] = Coalescer(Server(), 0.05, list, send)
    box.add(lambda pending: pending.append(0))
    assert box.flush() == [0]  # before the window is up
    assert sent == [[0]]
    assert box.flush() == []  # nothing left: nothing sent
    box.add(lambda pending: pending.append(1))
    time.sleep(0.12)
    box.add(lambda pending: pending.append(2))
    _rest(box)
    assert sent == [[0], [2]]
