"""Whether the shared services this process leans on answer: Redis, for now.

Several web processes share Socket.IO rooms and site presence through Redis. When Redis is
away a process keeps working on its own (its own sockets get every message it emits, site
presence is counted in the process), but messages no longer cross to the other processes:
the pages say so (a banner, `service_degraded`) and `GET /api/health` reports it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from flask import Flask, current_app, jsonify

#: A ping's answer is reused for this long (a page view must not cost a round trip each).
CHECK_EVERY_SECONDS = 3.0
EXTENSION = "core_health"


class RedisHealth:
    def __init__(self, url: str | None) -> None:
        self.url = url
        self._client: Any = None
        self._lock = threading.Lock()
        self._checked = 0.0
        self._ok = True

    def ok(self) -> bool | None:
        """True/False for Redis reachable; None when this deployment has no Redis."""
        if not self.url:
            return None
        now = time.monotonic()
        if now - self._checked < CHECK_EVERY_SECONDS:
            return self._ok
        with self._lock:
            if now - self._checked >= CHECK_EVERY_SECONDS:
                self._ok = self._ping(self.url)
                self._checked = time.monotonic()
        return self._ok

    def _ping(self, url: str) -> bool:
        import redis

        try:
            if self._client is None:
                self._client = redis.Redis.from_url(url, socket_timeout=1,
                                                    socket_connect_timeout=1)
            return bool(self._client.ping())
        except (redis.RedisError, OSError):
            return False


def health(app: Flask | None = None) -> RedisHealth:
    app = app or current_app
    state = app.extensions.get(EXTENSION)
    if state is None:
        state = app.extensions.setdefault(EXTENSION, RedisHealth(app.config.get("REDIS_URL")))
    return state


def degraded(app: Flask | None = None) -> bool:
    """Redis is configured but does not answer."""
    return health(app).ok() is False


def init_app(app: Flask) -> None:
    health(app)

    @app.context_processor
    def _inject_health() -> dict[str, Any]:
        return {"service_degraded": degraded()}

    @app.get("/api/health")
    def api_health():
        """Liveness and what is degraded (no login: load balancers ask it)."""
        ok = health().ok()
        return jsonify({"ok": True, "degraded": ok is False,
                        "redis": "off" if ok is None else ("ok" if ok else "down")})
