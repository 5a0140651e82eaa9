"""Authorization epochs: a long connection's cached rights hold until what they rest on changes.

A meeting room's screen or a member's phone keeps its Socket.IO connection for a whole
lecture and sends an event every few seconds; what it was allowed (to operate its site, to
act as its member) is checked once and cached on the connection (attendance/events.py).
Cached for a fixed 30 s, every connection re-read its user, token, site and occurrence
twice a minute: with 10,000 phones that was a third of a web process's CPU at idle
(bench/stack.py, py-spy), to notice changes that happen a few times a day.

Here a cached right carries the epoch it was checked at and holds while the epoch has not
moved (and for at most `YUANJIAO_ATTENDANCE_GRANT_MAX_AGE` seconds, a backstop for changes
made behind the application's back, such as SQL by hand). Every commit that adds, changes
or deletes a row that rights rest on moves the epoch. The domains name those rows
(`watch`: users and tokens, org units, sites and members, sessions, their targets and
occurrences), leaving out columns that decide nothing (a token's last use).

With REDIS_URL the epoch is a value in Redis (``<prefix>:auth-epoch``, a random one per
move, so that a Redis restart cannot bring back an old one), read by each process at most
every `POLL` seconds: a revoked right is noticed within that by every web process, at once
by the one that revoked it (its own count moves too). When Redis cannot be read the epoch
is unknown (None) and cached rights fall back to `YUANJIAO_ATTENDANCE_AUTH_TTL` (30 s);
a move that could not be written is written when Redis answers again.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Hashable, Iterable
from typing import Any

from flask import Flask, current_app, has_app_context
from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from core.rediskeys import redis_prefix

log = logging.getLogger(__name__)

#: A process reads the shared epoch at most this often (seconds).
POLL = 0.5
#: After Redis failed, a process asks again this much later (seconds).
RETRY = 2.0

#: mapped class -> the attributes whose change decides nothing (None: none of them)
_watched: dict[type, frozenset[str]] = {}
_INFO_KEY = "auth_epoch_moved"


def watch(cls: type, *, ignore: Iterable[str] = ()) -> None:
    """Rights rest on rows of `cls`: a commit adding, deleting or changing one (other than
    its `ignore`d attributes alone) moves the epoch. Changes to a many-to-many collection
    of `cls` count as changes of `cls`."""
    _watched[cls] = frozenset(ignore)


class Epoch:
    """One app's epoch (see the module)."""

    def __init__(self, redis_url: str | None = None, key: str = "yuanjiao:auth-epoch") -> None:
        self._lock = threading.Lock()
        self._local = 0
        self._key = key
        self._redis: Any = None
        if redis_url:
            import redis

            self._redis = redis.Redis.from_url(redis_url, socket_timeout=1,
                                               socket_connect_timeout=1)
        self._shared: bytes | None = None
        self._read_at = float("-inf")
        #: Whether `_shared` is a value read from Redis (not before the first read ends:
        #: events handled meanwhile see an unknown epoch, never an empty one).
        self._ok = False
        self._owed = False

    def move(self) -> None:
        """Something rights rest on changed: cached rights are checked again."""
        with self._lock:
            self._local += 1
            self._read_at = float("-inf")  # this process reads the new shared value next
        if self._redis is None:
            return
        try:
            self._redis.set(self._key, secrets.token_hex(8))
        except Exception:
            log.warning("could not move the shared authorization epoch; will retry",
                        exc_info=True)
            with self._lock:
                self._owed = True

    def current(self) -> Hashable | None:
        """The epoch now, or None when it cannot be known (Redis away)."""
        if self._redis is None:
            return self._local
        now = time.monotonic()
        with self._lock:
            if now - self._read_at < (POLL if self._ok else RETRY):
                return (self._local, self._shared) if self._ok else None
            self._read_at = now  # one reader at a time; the others take the cached value
            owed = self._owed
        try:
            if owed:
                self._redis.set(self._key, secrets.token_hex(8))
            value = self._redis.get(self._key)
            if value is None:  # a new Redis, or one that restarted: start an epoch
                self._redis.set(self._key, secrets.token_hex(8), nx=True)
                value = self._redis.get(self._key)
        except Exception:
            with self._lock:
                self._ok = False
            log.warning("could not read the shared authorization epoch", exc_info=True)
            return None
        with self._lock:
            self._ok, self._shared = True, value
            if owed:
                self._owed = False
            return self._local, self._shared


def epoch(app: Flask | None = None) -> Epoch:
    """This app's epoch (made by `init_app`; a bare one for an app without)."""
    app = app or current_app
    found = app.extensions.get("auth_epoch")
    if found is None:
        found = app.extensions.setdefault("auth_epoch", Epoch())
    return found


def _moves(session: Session) -> bool:
    for obj in list(session.new) + list(session.deleted):
        if type(obj) in _watched:
            return True
    for obj in session.dirty:
        ignore = _watched.get(type(obj))
        if ignore is None:
            continue
        state = inspect(obj)
        for attr in state.mapper.attrs:
            if attr.key in ignore:
                continue
            if state.attrs[attr.key].history.has_changes():
                return True
    return False


def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    if _watched and not session.info.get(_INFO_KEY) and _moves(session):
        session.info[_INFO_KEY] = True


def _on_execute(state: Any) -> None:
    """A bulk UPDATE or DELETE through the ORM on a watched class moves the epoch too,
    unless it only sets ignored columns (a token's last use)."""
    if not (state.is_update or state.is_delete) or state.bind_mapper is None:
        return
    ignore = _watched.get(state.bind_mapper.class_)
    if ignore is None:
        return
    if state.is_update:
        values = getattr(state.statement, "_values", None)
        if values and all(getattr(col, "key", None) in ignore for col in values):
            return
    state.session.info[_INFO_KEY] = True


def _after_commit(session: Session) -> None:
    if session.info.pop(_INFO_KEY, False) and has_app_context():
        epoch().move()


def _after_rollback(session: Session) -> None:
    session.info.pop(_INFO_KEY, None)


_listening = False


def init_app(app: Flask) -> None:
    """Give the app its epoch (shared through Redis when REDIS_URL is set) and listen for
    commits (once per process: the listeners are on SQLAlchemy's Session class)."""
    global _listening
    url = app.config.get("REDIS_URL")
    app.extensions["auth_epoch"] = made = Epoch(
        url, key=f"{redis_prefix(app.config)}:auth-epoch") if url else Epoch()
    made.current()  # read now, before the first connections are checked
    if not _listening:
        event.listen(Session, "before_flush", _before_flush)
        event.listen(Session, "do_orm_execute", _on_execute)
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_soft_rollback", lambda s, _prev: _after_rollback(s))
        _listening = True
