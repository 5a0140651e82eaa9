"""Login throttling: failed logins counted per username and per client address.

The first `free` failures of a key cost nothing; each one after that makes the next
attempt wait twice as long as the last (1, 2, 4, 8 … seconds after the latest failure);
`lock` failures lock the key for `lock_seconds`. Meanwhile every attempt, even with the
right password, is refused with 429 and Retry-After, before the password is checked (so
the refusal costs the same for unknown users). Failures are forgotten twice `lock_seconds`
after the latest (a delay never outlasts its count); a successful login forgets its
username's; an admin (or the user's organizer) unlocks a user (`unlock`), and both lock
and unlock go to the audit log.

An address has higher thresholds than a username: a meeting room's phones share one.
The counts live in Redis when REDIS_URL is set (shared by every worker; while Redis
cannot be reached they go on in this process), else in this process. Plain request
rates (logins per username a minute) are Flask-Limiter's, in core.ratelimit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app
from sqlalchemy.orm import Session

from accounts.models import User

EXTENSION = "yuanjiao_login_throttle"


@dataclass(frozen=True)
class Failures:
    """A key's failures: how many, and the time of the latest."""

    count: int = 0
    last: float = 0.0


class MemoryFailures:
    """Failure counts in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, Failures] = {}

    def get(self, key: str, now: float, ttl: float) -> Failures:
        with self._lock:
            row = self._rows.get(key)
            if row is not None and row.last <= now - ttl:
                del self._rows[key]
                row = None
            return row or Failures()

    def add(self, key: str, now: float, ttl: float) -> Failures:
        with self._lock:
            row = self._rows.get(key)
            count = row.count if row is not None and row.last > now - ttl else 0
            self._rows[key] = Failures(count + 1, now)
            return self._rows[key]

    def clear(self, key: str) -> None:
        with self._lock:
            self._rows.pop(key, None)


class RedisFailures:
    """Failure counts in a Redis hash per key, expiring `ttl` after the latest failure."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self.redis = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        self.prefix = prefix

    def get(self, key: str, now: float, ttl: float) -> Failures:
        count, last = self.redis.hmget(self.prefix + key, "count", "last")
        if count is None or last is None or float(last) <= now - ttl:
            return Failures()
        return Failures(int(count), float(last))

    def add(self, key: str, now: float, ttl: float) -> Failures:
        name = self.prefix + key
        with self.redis.pipeline() as pipe:  # MULTI/EXEC: workers count together
            pipe.hincrby(name, "count", 1)
            pipe.hset(name, "last", f"{now:.6f}")
            pipe.expire(name, int(ttl) + 1)
            count, _set, _expire = pipe.execute()
        return Failures(int(count), now)

    def clear(self, key: str) -> None:
        self.redis.delete(self.prefix + key)


class FallbackFailures:
    """Redis, or this process's memory while Redis cannot be reached: the throttle is
    never a reason to refuse a login."""

    def __init__(self, primary: RedisFailures) -> None:
        self.primary = primary
        self.local = MemoryFailures()

    def _call(self, name: str, *args: Any) -> Any:
        import redis

        try:
            return getattr(self.primary, name)(*args)
        except redis.RedisError:
            return getattr(self.local, name)(*args)

    def get(self, key: str, now: float, ttl: float) -> Failures:
        return self._call("get", key, now, ttl)

    def add(self, key: str, now: float, ttl: float) -> Failures:
        return self._call("add", key, now, ttl)

    def clear(self, key: str) -> None:
        self.local.clear(key)
        self._call("clear", key)


@dataclass(frozen=True)
class Rule:
    """Free failures, then a doubling delay, then a lock at `lock` failures."""

    free: int
    lock: int
    lock_seconds: float

    @property
    def memory(self) -> float:
        """Seconds after the latest failure that the count is kept."""
        return 2 * self.lock_seconds

    def wait(self, failures: Failures, now: float) -> float:
        """Seconds until this key may try again (0: now)."""
        if failures.count < self.free:
            return 0.0
        if failures.count >= self.lock:
            delay = self.lock_seconds
        else:
            delay = min(2.0 ** (failures.count - self.free), self.lock_seconds)
        return max(0.0, failures.last + delay - now)


@dataclass(frozen=True)
class Outcome:
    """What one failure did: the key it locked, if any ("user" or "address")."""

    locked: tuple[str, ...] = ()


class LoginThrottle:
    def __init__(self, store: Any, *, user: Rule, address: Rule,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.rules = {"user": user, "address": address}
        #: The time now, in epoch seconds (a test may stop it).
        self.clock = clock

    @staticmethod
    def user_key(username: str) -> str:
        return f"user:{(username or '').strip().lower()}"

    def _keys(self, username: str, address: str | None) -> list[tuple[str, str]]:
        keys = [("user", self.user_key(username))]
        if address:
            keys.append(("address", f"ip:{address}"))
        return keys

    def retry_after(self, username: str, address: str | None, now: float | None = None
                    ) -> int | None:
        """Whole seconds until a login may be tried again, or None when it may be now."""
        now = self.clock() if now is None else now
        wait = 0.0
        for kind, key in self._keys(username, address):
            rule = self.rules[kind]
            wait = max(wait, rule.wait(self.store.get(key, now, rule.memory), now))
        return max(1, int(wait + 0.999)) if wait > 0 else None

    def failed(self, username: str, address: str | None, now: float | None = None) -> Outcome:
        now = self.clock() if now is None else now
        locked = []
        for kind, key in self._keys(username, address):
            rule = self.rules[kind]
            if self.store.add(key, now, rule.memory).count == rule.lock:
                locked.append(kind)
        return Outcome(tuple(locked))

    def failures(self, username: str, now: float | None = None) -> Failures:
        now = self.clock() if now is None else now
        return self.store.get(self.user_key(username), now, self.rules["user"].memory)

    def locked_until(self, username: str, now: float | None = None) -> float | None:
        """When a username's refusals end (epoch seconds), or None when it is not held."""
        now = self.clock() if now is None else now
        failures = self.failures(username, now)
        wait = self.rules["user"].wait(failures, now)
        return now + wait if wait > 0 else None

    def succeeded(self, username: str) -> None:
        self.store.clear(self.user_key(username))

    def unlock(self, username: str) -> Failures:
        """Forget a username's failures (its lock and delay); returns what there was."""
        before = self.failures(username)
        self.store.clear(self.user_key(username))
        return before


def init_app(app: Flask) -> None:
    config = app.config
    # The rate limits' storage (core.ratelimit): Redis when REDIS_URL is set.
    storage = config.get("RATELIMIT_STORAGE_URI") or config.get("REDIS_URL") or ""
    url = storage if storage.startswith(("redis://", "rediss://")) else None
    prefix = config.get("RATELIMIT_KEY_PREFIX", "yuanjiao") + ":login:"
    store = FallbackFailures(RedisFailures(url, prefix)) if url else MemoryFailures()
    lock_seconds = float(config["YUANJIAO_LOGIN_LOCK_SECONDS"])
    app.extensions[EXTENSION] = LoginThrottle(
        store,
        user=Rule(int(config["YUANJIAO_LOGIN_MAX_FAILURES"]),
                  int(config["YUANJIAO_LOGIN_LOCK_FAILURES"]), lock_seconds),
        address=Rule(int(config["YUANJIAO_LOGIN_MAX_FAILURES_PER_IP"]),
                     int(config["YUANJIAO_LOGIN_LOCK_FAILURES_PER_IP"]), lock_seconds))


def throttle() -> LoginThrottle:
    return current_app.extensions[EXTENSION]


def unlock_login(session: Session, caller: User, user_id: int, *,
                 address: str | None = None) -> User:
    """Forget a managed user's failed logins (their delay and lock), with an audit entry:
    admins, and organizers for their subtree's users (the API and the users page)."""
    from accounts import service

    user = service.managed_user(session, caller, user_id)
    before = throttle().unlock(user.username)
    service.audit(session, "throttle_lifted", actor=caller, username=user.username,
                  target=f"user:{user.id}", address=address,
                  details={"failures": before.count})
    return user


def held_logins(users: list[User]) -> dict[int, int]:
    """Users whose logins are refused now (delay or lock): id -> seconds left."""
    limiter = throttle()
    now = limiter.clock()
    out = {}
    for user in users:
        until = limiter.locked_until(user.username, now)
        if until is not None:
            out[user.id] = max(1, int(until - now + 0.999))
    return out
