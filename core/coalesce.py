"""Gather what many handlers send, and let one background task send it together.

Two places send in windows: the live updates of a room (`attendance.live.Outbox`, every
250 ms) and Socket.IO's publishes to Redis (`core.socketqueue.BatchedRedisManager`, every
5 ms). Both are this: the first item starts one task on the Socket.IO server (a greenlet
under gevent, a thread otherwise); the task sleeps a window, takes what gathered and sends
it, and ends after a window that brought nothing. Handlers never wait for the sending.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Coalescer(Generic[T]):
    """What gathered since the last send (`T`, made by `empty`), sent by one task."""

    def __init__(self, server: Any, window: float, empty: Callable[[], T],
                 send: Callable[[T], None]) -> None:
        #: A Socket.IO server: `start_background_task` and `sleep` of its async mode.
        self.server = server
        self.window = window
        self._empty = empty
        self._send = send
        self._lock = threading.Lock()
        #: Held while a batch is sent: `flush` waits for a send in progress.
        self._sending = threading.Lock()
        self._pending = empty()
        self._running = False

    def add(self, put: Callable[[T], None]) -> None:
        """`put` the item into what is gathering (under the lock); start the task if
        none is running."""
        with self._lock:
            put(self._pending)
            if self._running:
                return
            self._running = True
        self.server.start_background_task(self._run)

    def _take(self) -> T:
        with self._lock:
            batch, self._pending = self._pending, self._empty()
            return batch

    def _run(self) -> None:
        while True:
            self.server.sleep(self.window)
            with self._sending:
                with self._lock:
                    batch, self._pending = self._pending, self._empty()
                    if not batch:
                        self._running = False
                        return
                try:
                    self._send(batch)
                except Exception:  # the task goes on; what failed is the sender's to log
                    log.exception("could not send a batch")

    def flush(self) -> T:
        """Send what has gathered now (waiting for a send in progress); what was sent."""
        with self._sending:
            batch = self._take()
            if batch:
                self._send(batch)
            return batch
