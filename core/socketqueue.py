"""Socket.IO's Redis message queue, one PUBLISH per batch of emits instead of one per emit.

python-socketio's `RedisManager` publishes every emit to Redis from the handler that emits
it, and waits for Redis's answer there: under gevent each of a burst's handlers then takes
a pooled Redis connection (the pool grows to the burst's concurrency, making connections
as it goes) for one round trip. Profiled with py-spy in bench/stack.py (500 connections,
check-ins at 500/s), that was a third of a web process's CPU.

`BatchedRedisManager` delivers to this process's own sockets at once, as before, and hands
the message to one flusher task, which publishes whatever has queued meanwhile as one
message: ``B<host id><c or ->`` then the JSON list. Receivers unpack the list in order; a
process skips its own batches without decoding them (it delivered them already), unless
one carries a `callback` (acks routed through the queue are for whichever process waits).
Plain messages (another sender's, or a single one) are published as before, so processes
of both kinds on one channel understand each other.

The handlers never wait for Redis: with Redis away the flusher retries once, logs, and
drops the batch (the process's own sockets got their emits), as `RedisManager` gave up.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import socketio

from core.coalesce import Coalescer

log = logging.getLogger(__name__)

#: The flusher waits this long after the first queued message (seconds): the messages of a
#: burst then share one PUBLISH; a remote page sees its update this much later.
LINGER = 0.005
#: At most this many messages wait for the flusher (Redis away): older ones are dropped.
MAX_PENDING = 20000
BATCH = b"B"


def _queue(pending: list[dict[str, Any]], data: dict[str, Any]) -> None:
    pending.append(data)
    if len(pending) > MAX_PENDING:
        del pending[:len(pending) - MAX_PENDING]


class BatchedRedisManager(socketio.RedisManager):
    """A `socketio.RedisManager` whose publishes leave in batches (see the module)."""

    name = "redis-batched"
    connected: bool

    def __init__(self, url: str, channel: str = "socketio", linger: float = LINGER,
                 **kwargs: Any) -> None:
        super().__init__(url, channel=channel, **kwargs)
        self.linger = linger
        self._outgoing: Coalescer[list[dict[str, Any]]] | None = None
        self._outgoing_lock = threading.Lock()

    def _publish(self, data: dict[str, Any]) -> None:
        if self.server is None:  # a write-only emitter of another process: as before
            super()._publish(data)
            return
        outgoing = self._outgoing
        if outgoing is None:  # made once the server is known (it runs the flusher)
            with self._outgoing_lock:
                if self._outgoing is None:
                    self._outgoing = Coalescer(self.server, self.linger, list, self._send)
                outgoing = self._outgoing
        outgoing.add(lambda pending: _queue(pending, data))

    def _send(self, batch: list[dict[str, Any]]) -> None:
        if len(batch) == 1:
            payload: str | bytes = self.json.dumps(batch[0])
        else:
            flag = "c" if any(m.get("method") == "callback" for m in batch) else "-"
            payload = f"B{self.host_id}{flag}{self.json.dumps(batch)}"
        for attempt in range(2):
            try:
                if not self.connected:
                    self._redis_connect()
                self.redis.publish(self.channel, payload)
                return
            except Exception as exc:
                self.connected = False
                if attempt:
                    log.error("cannot publish to Redis, %d Socket.IO messages dropped: %s",
                              len(batch), exc)

    def _listen(self):
        own = self.host_id.encode()
        for raw in super()._listen():
            if isinstance(raw, str):
                raw = raw.encode()
            if raw[:1] != BATCH:
                yield raw
                continue
            host, flag, body = raw[1:33], raw[33:34], raw[34:]
            if host == own and flag != b"c":
                continue  # delivered here when it was emitted
            yield from self.json.loads(body)
