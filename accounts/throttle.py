"""Login throttling: failed logins counted per username and per client address.

After `max_failures` failures within `window` seconds for a username (or
`max_failures_per_ip` from one address), logins for it are refused with 429 and a
Retry-After until the oldest counted failure leaves the window; even the right password
is refused meanwhile, so guessing does not go on at full speed. A successful login clears
the username's count. The counts live in Redis when REDIS_URL is set (shared by every
worker), else in this process.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from typing import Any

from flask import Flask, current_app

EXTENSION = "yuanjiao_login_throttle"


class MemoryStore:
    """Failure times per key, in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def _trim(self, key: str, now: float, window: float) -> deque[float]:
        times = self._failures[key]
        while times and times[0] <= now - window:
            times.popleft()
        if not times:
            self._failures.pop(key, None)
        return times

    def recent(self, key: str, now: float, window: float) -> list[float]:
        with self._lock:
            return list(self._trim(key, now, window))

    def add(self, key: str, now: float, window: float) -> None:
        with self._lock:
            self._trim(key, now, window)
            self._failures[key].append(now)

    def clear(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


class RedisStore:
    """Failure times per key in a Redis sorted set that expires with the window."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self.redis = redis.Redis.from_url(url)
        self.prefix = prefix

    def recent(self, key: str, now: float, window: float) -> list[float]:
        name = self.prefix + key
        self.redis.zremrangebyscore(name, 0, now - window)
        return [score for _member, score in self.redis.zrange(name, 0, -1, withscores=True)]

    def add(self, key: str, now: float, window: float) -> None:
        name = self.prefix + key
        with self.redis.pipeline() as pipe:
            pipe.zadd(name, {f"{now:.6f}": now})
            pipe.expire(name, int(window) + 1)
            pipe.execute()

    def clear(self, key: str) -> None:
        self.redis.delete(self.prefix + key)


class LoginThrottle:
    def __init__(self, store: Any, *, max_failures: int, max_failures_per_ip: int,
                 window: float) -> None:
        self.store = store
        self.max_failures = max_failures
        self.max_failures_per_ip = max_failures_per_ip
        self.window = window

    def _keys(self, username: str, address: str | None) -> list[tuple[str, int]]:
        keys = [(f"user:{(username or '').strip().lower()}", self.max_failures)]
        if address:
            keys.append((f"ip:{address}", self.max_failures_per_ip))
        return keys

    def retry_after(self, username: str, address: str | None, now: float | None = None
                    ) -> int | None:
        """Seconds until a login may be tried again, or None when it may be now."""
        now = time.time() if now is None else now
        wait = 0.0
        for key, limit in self._keys(username, address):
            times = self.store.recent(key, now, self.window)
            if len(times) >= limit:
                # The count drops below the limit when the limit-th newest failure expires.
                wait = max(wait, times[-limit] + self.window - now)
        return max(1, int(wait + 0.999)) if wait > 0 else None

    def failed(self, username: str, address: str | None, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for key, _limit in self._keys(username, address):
            self.store.add(key, now, self.window)

    def succeeded(self, username: str) -> None:
        self.store.clear(f"user:{(username or '').strip().lower()}")


def init_app(app: Flask) -> None:
    url = app.config.get("REDIS_URL")
    store: Any = RedisStore(url, "yuanjiao:login-failures:") if url else MemoryStore()
    app.extensions[EXTENSION] = LoginThrottle(
        store, max_failures=int(app.config["YUANJIAO_LOGIN_MAX_FAILURES"]),
        max_failures_per_ip=int(app.config["YUANJIAO_LOGIN_MAX_FAILURES_PER_IP"]),
        window=float(app.config["YUANJIAO_LOGIN_WINDOW_SECONDS"]))


def throttle() -> LoginThrottle:
    return current_app.extensions[EXTENSION]
