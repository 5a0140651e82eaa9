"""Rate limits: events counted per key in a sliding window, in this process or in Redis.

One store per app (Redis when REDIS_URL is set, so every worker counts together). The
login throttle (accounts.throttle) counts failures in it; `hit` limits an action, such
as imports per user or QR check-ins per member, answering 429 with Retry-After.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from typing import Any, cast

from flask import Flask, current_app

from core.errors import TooManyRequests

EXTENSION = "yuanjiao_rate_store"


class MemoryStore:
    """Event times per key, in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, deque[float]] = defaultdict(deque)

    def _trim(self, key: str, now: float, window: float) -> deque[float]:
        times = self._events[key]
        while times and times[0] <= now - window:
            times.popleft()
        if not times:
            self._events.pop(key, None)
        return times

    def recent(self, key: str, now: float, window: float) -> list[float]:
        with self._lock:
            return list(self._trim(key, now, window))

    def add(self, key: str, now: float, window: float) -> None:
        with self._lock:
            self._trim(key, now, window)
            self._events[key].append(now)

    def clear(self, key: str) -> None:
        with self._lock:
            self._events.pop(key, None)


class RedisStore:
    """Event times per key in a Redis sorted set that expires with the window."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self.redis = redis.Redis.from_url(url)
        self.prefix = prefix

    def recent(self, key: str, now: float, window: float) -> list[float]:
        name = self.prefix + key
        self.redis.zremrangebyscore(name, 0, now - window)
        rows = cast(list[tuple[bytes, float]], self.redis.zrange(name, 0, -1, withscores=True))
        return [score for _member, score in rows]

    def add(self, key: str, now: float, window: float) -> None:
        name = self.prefix + key
        with self.redis.pipeline() as pipe:
            pipe.zadd(name, {f"{now:.6f}": now})
            pipe.expire(name, int(window) + 1)
            pipe.execute()

    def clear(self, key: str) -> None:
        self.redis.delete(self.prefix + key)


class FallbackStore:
    """Redis, or this process's memory while Redis cannot be reached: a limit is never a
    reason to refuse a login or a check-in (the UI says degraded meanwhile)."""

    def __init__(self, primary: RedisStore) -> None:
        self.primary = primary
        self.local = MemoryStore()

    def _call(self, name: str, *args: Any) -> Any:
        import redis

        try:
            return getattr(self.primary, name)(*args)
        except redis.RedisError:
            return getattr(self.local, name)(*args)

    def recent(self, key: str, now: float, window: float) -> list[float]:
        return self._call("recent", key, now, window)

    def add(self, key: str, now: float, window: float) -> None:
        self._call("add", key, now, window)

    def clear(self, key: str) -> None:
        self.local.clear(key)
        self._call("clear", key)


def init_app(app: Flask) -> None:
    url = app.config.get("REDIS_URL")
    app.extensions[EXTENSION] = (FallbackStore(RedisStore(url, "yuanjiao:rate:")) if url
                                 else MemoryStore())


def store(app: Flask | None = None) -> Any:
    return (app or current_app).extensions[EXTENSION]


def wait_for(times: list[float], limit: int, window: float, now: float) -> int | None:
    """Seconds until fewer than `limit` of `times` lie in the window (None: not limited)."""
    if len(times) < limit:
        return None
    return max(1, int(times[-limit] + window - now + 0.999))


def hit(action: str, key: str, *, limit: int, window: float, message: str) -> None:
    """Count one `action` for `key`; beyond `limit` within `window` seconds: 429."""
    now = time.time()
    name = f"{action}:{key}"
    wait = wait_for(store().recent(name, now, window), limit, window, now)
    if wait is not None:
        raise TooManyRequests(message, code="too_many_requests",
                              details={"retry_after": wait, "limit": limit,
                                       "window_seconds": int(window)})
    store().add(name, now, window)


def limit_imports(user_id: int) -> None:
    """Imports are expensive (a file parsed and checked row by row): a few a minute."""
    hit("import", f"user:{user_id}",
        limit=int(current_app.config["YUANJIAO_IMPORTS_PER_MINUTE"]), window=60,
        message="导入过于频繁，请稍后再试")


def limit_qr_check_ins(member_id: int) -> None:
    """A member checks in once; a phone retrying is a few: many more is a script."""
    hit("qr", f"member:{member_id}",
        limit=int(current_app.config["YUANJIAO_QR_CHECKINS_PER_MINUTE"]), window=60,
        message="签到过于频繁，请稍后再试")
