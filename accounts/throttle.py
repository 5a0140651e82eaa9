"""Login throttling: failed logins counted per username and per client address.

After `max_failures` failures within `window` seconds for a username (or
`max_failures_per_ip` from one address), logins for it are refused with 429 and a
Retry-After until the oldest counted failure leaves the window; even the right password
is refused meanwhile, so guessing does not go on at full speed. A successful login clears
the username's count. The counts live in Redis when REDIS_URL is set (shared by every
worker), else in this process.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, current_app

from core import ratelimit

EXTENSION = "yuanjiao_login_throttle"


class LoginThrottle:
    def __init__(self, store: Any, *, max_failures: int, max_failures_per_ip: int,
                 window: float) -> None:
        self.store = store
        self.max_failures = max_failures
        self.max_failures_per_ip = max_failures_per_ip
        self.window = window

    def _keys(self, username: str, address: str | None) -> list[tuple[str, int]]:
        keys = [(f"login:user:{(username or '').strip().lower()}", self.max_failures)]
        if address:
            keys.append((f"login:ip:{address}", self.max_failures_per_ip))
        return keys

    def retry_after(self, username: str, address: str | None, now: float | None = None
                    ) -> int | None:
        """Seconds until a login may be tried again, or None when it may be now."""
        now = time.time() if now is None else now
        wait = 0.0
        for key, limit in self._keys(username, address):
            # The count drops below the limit when the limit-th newest failure expires.
            key_wait = ratelimit.wait_for(self.store.recent(key, now, self.window), limit,
                                          self.window, now)
            wait = max(wait, key_wait or 0)
        return int(wait) if wait > 0 else None

    def failed(self, username: str, address: str | None, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for key, _limit in self._keys(username, address):
            self.store.add(key, now, self.window)

    def succeeded(self, username: str) -> None:
        self.store.clear(f"login:user:{(username or '').strip().lower()}")


def init_app(app: Flask) -> None:
    if ratelimit.EXTENSION not in app.extensions:
        ratelimit.init_app(app)
    app.extensions[EXTENSION] = LoginThrottle(
        ratelimit.store(app), max_failures=int(app.config["YUANJIAO_LOGIN_MAX_FAILURES"]),
        max_failures_per_ip=int(app.config["YUANJIAO_LOGIN_MAX_FAILURES_PER_IP"]),
        window=float(app.config["YUANJIAO_LOGIN_WINDOW_SECONDS"]))


def throttle() -> LoginThrottle:
    return current_app.extensions[EXTENSION]
